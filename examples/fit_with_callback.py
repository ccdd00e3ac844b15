"""Watch a CNN learn: ActivationCallback next to keras.callbacks.TensorBoard in ``fit``.

The data are drawn here (no download): 32x32 grey images with one bright
bar, horizontal (class 0) or vertical (class 1), on noise. The first conv
layer soon grows horizontal and vertical edge detectors; the mosaics show it.

Run::

    python examples/fit_with_callback.py
    tensorboard --logdir out/fit_with_callback --samples_per_plugin=images=100000,activations=100000,histograms=100000

``--quick`` (used by the tests) trains on fewer images for two epochs.
"""

from __future__ import annotations

import argparse

import keras
import numpy as np

from tb_activations import ActivationCallback, Probes
from tb_activations.metadata import tensorboard_command


def bars(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (n, 32, 32, 1) float32 in [0, 1] with one bar each, and labels 0/1."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 0.3, size=(n, 32, 32, 1)).astype("float32")
    y = rng.integers(0, 2, size=n)
    for img, label, pos in zip(x, y, rng.integers(4, 28, size=n)):
        if label == 0:
            img[pos - 2 : pos + 2, 4:28] = 1.0  # horizontal bar
        else:
            img[4:28, pos - 2 : pos + 2] = 1.0  # vertical bar
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log-dir", default="out/fit_with_callback")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="256 images, 2 epochs (for tests)")
    args = parser.parse_args()
    n, epochs = (256, 2) if args.quick else (2000, args.epochs)

    keras.utils.set_random_seed(0)
    x, y = bars(n)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", padding="same", name="conv1"),
            keras.layers.MaxPooling2D(name="pool1"),
            keras.layers.Conv2D(16, 3, activation="relu", padding="same", name="conv2"),
            keras.layers.GlobalMaxPooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])

    # Probes: a few fixed images, the same at every epoch, so the pictures are comparable;
    # 8 of them, enough CKA samples for the drift curves (see docs/guide/drift.md).
    px, py = bars(8, seed=1)
    labels = [("horizontal", "vertical")[int(v)] for v in py]
    probes = Probes(px, names=[f"bar_{i}" for i in range(8)], labels=labels)

    model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=32,
        validation_split=0.2,
        verbose=2,
        callbacks=[
            # Mosaics, top-k strips and overlays of conv1, pool1 and conv2, every epoch,
            # to <log_dir>/activations ...
            ActivationCallback(probes, args.log_dir, layers=["conv*", "pool1"], freq="epoch"),
            # ... next to the usual loss and accuracy curves in <log_dir>/train and /validation.
            keras.callbacks.TensorBoard(args.log_dir),
        ],
    )
    print(f"view in TensorBoard: {tensorboard_command(args.log_dir)}")


if __name__ == "__main__":
    main()
