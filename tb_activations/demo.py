"""The offline demo: a small CNN learns scikit-learn's bundled handwritten digits
while :class:`~tb_activations.ActivationCallback` logs its activations every epoch.

Everything ships with the packages (``sklearn.datasets.load_digits``: 1,797
8x8 grey digits), so the demo runs without internet. The digits are
upsampled (bilinear) to ``size`` x ``size`` so that the maps are big enough to
look at. Run it with ``tb-activations demo`` or::

    from tb_activations.demo import run_demo
    run_demo("logs/demo", epochs=15)

The log directory then holds three runs: ``train`` and ``validation`` from
``keras.callbacks.TensorBoard`` and ``activations`` from the callback, which
also writes, at the end of training, the 9 test digits that excite each
channel of ``conv3`` most (:func:`~tb_activations.top_examples`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

#: Default number of epochs: about a minute on two CPU cores, ~98% validation accuracy.
DEFAULT_EPOCHS = 15
#: Default size in px the 8x8 digits are upsampled to.
DEFAULT_SIZE = 64

#: Digits used as probes (the first test image of each): 8, enough CKA samples for the
#: drift curves without falling back to spatial positions (docs/guide/drift.md).
PROBE_DIGITS = (0, 1, 2, 3, 5, 6, 8, 9)


def load_digits_data(size: int = DEFAULT_SIZE, *, seed: int = 0) -> dict[str, np.ndarray]:
    """The digits as float32 images in [0, 1], split 80/20 (stratified, shuffled).

    Returns:
        ``{"x_train": (n, size, size, 1), "y_train": (n,), "x_test": ..., "y_test": ...}``.
    """
    import keras
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., None]  # (1797, 8, 8, 1), values 0..16
    if size != 8:
        # keras.ops: tf.image.resize on TensorFlow, and no TensorFlow on JAX / PyTorch.
        x = keras.ops.convert_to_numpy(
            keras.ops.image.resize(x, (size, size), interpolation="bilinear")
        )
    x = np.clip(x, 0.0, 1.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=seed, stratify=y
    )
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def build_model(size: int = DEFAULT_SIZE) -> Any:
    """The demo CNN: three conv + max-pool blocks, a hidden dense layer, then a softmax
    over the 10 digits.

    Layers with a spatial output (what the callback logs by default):
    ``conv1`` (size, size, 16), ``pool1``, ``conv2`` (size/2, size/2, 32),
    ``pool2``, ``conv3`` (size/4, size/4, 48), ``pool3``.
    """
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((size, size, 1)),
            layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            layers.MaxPooling2D(name="pool1"),
            layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(name="pool2"),
            layers.Conv2D(48, 3, padding="same", activation="relu", name="conv3"),
            layers.MaxPooling2D(name="pool3"),
            layers.Flatten(name="flatten"),
            # A hidden layer as VGG16's: straight from Flatten to the softmax, Grad-CAM's
            # position-averaged weights leave a map negative everywhere, zero after its
            # ReLU (docs/guide/attribution.md), and the demo's default would show nothing.
            layers.Dense(64, activation="relu", name="fc"),
            layers.Dropout(0.3, name="dropout"),
            layers.Dense(10, activation="softmax", name="digit"),
        ],
        name="digits_cnn",
    )


def demo_probes(data: dict[str, np.ndarray], digits: tuple[int, ...] = PROBE_DIGITS) -> Any:
    """Probes: the first test image of each of ``digits``, named ``digit_<d>`` and labelled ``d``."""
    from tb_activations.probes import Probes

    idx = [int(np.flatnonzero(data["y_test"] == d)[0]) for d in digits]
    return Probes(data["x_test"][idx], names=[f"digit_{d}" for d in digits], labels=list(digits))


def run_demo(
    log_dir: str | os.PathLike = "logs/demo",
    *,
    epochs: int = DEFAULT_EPOCHS,
    size: int = DEFAULT_SIZE,
    batch_size: int = 32,
    seed: int = 0,
    png_dir: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Train the demo CNN for ``epochs`` epochs, logging activations at the end of each.

    Args:
        log_dir: Shared by ``keras.callbacks.TensorBoard`` (runs ``train``,
            ``validation``) and the activation callback (run ``activations``).
            Defaults to ``"logs/demo"``.
        epochs: Defaults to ``DEFAULT_EPOCHS`` (about a minute on two CPU cores).
        size: Image size in px the 8x8 digits are upsampled to. Defaults to 64.
        batch_size: Defaults to 32.
        seed: Seed of Python, numpy and Keras. Defaults to 0.
        png_dir: Also write the last epoch's views as PNG files here
            (see :func:`tb_activations.export.save_pngs`). Defaults to ``None``.
        progress: Called with one line per stage and epoch; ``None`` for silence.

    Returns:
        ``{"seconds", "val_accuracy", "history", "log_dir", "layers"}``.
    """
    import keras

    from tb_activations.callback import ActivationCallback

    say = progress or (lambda _msg: None)
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    data = load_digits_data(size, seed=seed)
    probes = demo_probes(data)
    model = build_model(size)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    say(
        f"digits: {len(data['x_train'])} training and {len(data['x_test'])} test images, "
        f"{size}x{size}; probes: {', '.join(probes.names)}"
    )
    log_dir = os.fspath(log_dir)
    import tensorflow as tf

    # What each channel of the last conv layer detects: its 9 test digits, at the end.
    pool = tf.data.Dataset.from_tensor_slices((data["x_test"], data["y_test"]))
    activations = ActivationCallback(
        probes, log_dir, top_k=5, examples_pool=pool, examples_layers=["conv3"]
    )
    callbacks = [
        activations,
        keras.callbacks.TensorBoard(log_dir),
        _EpochLine(epochs, say),
    ]
    history = model.fit(
        data["x_train"],
        data["y_train"],
        validation_data=(data["x_test"], data["y_test"]),
        epochs=epochs,
        batch_size=batch_size,
        callbacks=callbacks,
        verbose=0,
    )
    if activations.failures:
        say(f"warning: activation logging failed {activations.failures} time(s); see warnings")
    if png_dir is not None:
        from tb_activations.export import save_pngs

        logger = activations.logger
        written = save_pngs(
            logger.activations(),
            probes.display,
            probes.names,
            png_dir,
            top_k=logger.top_k,
            colormap=logger.colormap,
        )
        say(f"wrote {len(written)} PNG files to {png_dir}")
    activations.logger.close()
    return {
        "seconds": time.perf_counter() - start,
        "val_accuracy": float(history.history["val_accuracy"][-1]),
        "history": history.history,
        "log_dir": log_dir,
        "layers": [i.path for i in activations.logger.layers],
    }


class _EpochLine:
    """A Keras callback printing one progress line per epoch (built lazily to keep imports cheap)."""

    def __new__(cls, epochs: int, say: Callable[[str], None]) -> Any:
        import keras

        class EpochLine(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
                self._t0 = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                logs = logs or {}
                say(
                    f"epoch {epoch + 1}/{epochs}: loss {logs.get('loss', float('nan')):.3f}, "
                    f"accuracy {logs.get('accuracy', float('nan')):.3f}, "
                    f"val_accuracy {logs.get('val_accuracy', float('nan')):.3f} "
                    f"({time.perf_counter() - self._t0:.1f} s)"
                )

        return EpochLine()


def serve(log_dir: str | os.PathLike, *, port: int = 6006, host: str = "127.0.0.1") -> int:
    """Run TensorBoard on ``log_dir`` in the foreground until it exits or Ctrl-C; returns its exit code."""
    from tb_activations.metadata import SAMPLING_FLAG

    cmd = [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        os.fspath(log_dir),
        "--host",
        host,
        "--port",
        str(port),
        SAMPLING_FLAG,
    ]
    proc = subprocess.Popen(cmd)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        return 0
