"""A custom training loop (tf.GradientTape) that calls ActivationLogger.log(step) itself.

Without ``fit`` there are no callbacks: create an :class:`ActivationLogger`
once and call ``log(step)`` whenever you want a picture, here every
``--log-every`` steps. ``log`` runs the probes in inference mode and never
touches the weights; it returns the statistics it wrote, so the loop can
react to them (here: print the fraction of dead channels of ``conv2``).

The data are drawn here (no download): noisy 28x28 images of a cross (0) or
a ring (1). Run::

    python examples/custom_training_loop.py
    tensorboard --logdir out/custom_training_loop --samples_per_plugin=images=100000,activations=100000,histograms=100000

``--quick`` (used by the tests) runs 20 steps.
"""

from __future__ import annotations

import argparse

import keras
import numpy as np
import tensorflow as tf

from tb_activations import ActivationLogger, Probes
from tb_activations.metadata import tensorboard_command


def crosses_and_rings(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float32 images (n, 28, 28, 1) in [0, 1] and labels 0 (cross) / 1 (ring)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28] - 13.5
    ring = ((np.hypot(yy, xx) > 7) & (np.hypot(yy, xx) < 10)).astype("float32")
    cross = ((abs(yy) < 2) | (abs(xx) < 2)).astype("float32") * (np.hypot(yy, xx) < 11)
    y = rng.integers(0, 2, size=n)
    x = np.where(y[:, None, None] == 0, cross, ring) + rng.normal(0, 0.2, (n, 28, 28))
    return np.clip(x, 0, 1).astype("float32")[..., None], y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log-dir", default="out/custom_training_loop")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--quick", action="store_true", help="20 steps (for tests)")
    args = parser.parse_args()
    steps, log_every = (20, 10) if args.quick else (args.steps, args.log_every)

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 5, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(name="pool1"),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv2"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    optimizer = keras.optimizers.Adam(3e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    # 8 probes: enough CKA samples for the drift curves (see docs/guide/drift.md).
    px, py = crosses_and_rings(8, seed=1)
    probes = Probes(px, names=[f"probe_{i}" for i in range(8)], labels=[int(v) for v in py])
    # Built once: the layer selection is checked here, the sub-model on the first log().
    logger = ActivationLogger(model, probes, args.log_dir, layers=["conv1", "conv2"], top_k=4)
    writer = tf.summary.create_file_writer(f"{args.log_dir}/train")  # the loss, next to it

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for step in range(steps + 1):
        x, y = crosses_and_rings(32, seed=100 + step)
        loss = float(train_step(x, y))
        with writer.as_default():
            tf.summary.scalar("loss", loss, step=step)
        if step % log_every == 0:
            records = logger.log(step)  # the same step axis as the loss curve
            dead = records["conv2"].stats.dead_fraction
            print(f"step {step}: loss {loss:.3f}, conv2 dead channels {dead:.0%}")
    logger.close()
    writer.close()
    print(f"view in TensorBoard: {tensorboard_command(args.log_dir)}")


if __name__ == "__main__":
    main()
