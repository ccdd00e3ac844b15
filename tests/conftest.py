"""Shared test helpers: small real models and TensorBoard's own event readers."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Under JAX and PyTorch the tests run as a user's process does: without TensorFlow.
NO_TENSORFLOW = os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow"

if NO_TENSORFLOW:
    # TensorBoard's readers and keras.utils.set_random_seed import TensorFlow where it is
    # installed, and once it is loaded the logger writes through tf.io.gfile: then the JAX
    # and PyTorch runs would test that path, not TensorBoard's own file layer that a user
    # without TensorFlow gets. TensorBoard's `notf` switch selects its stub; Keras is told
    # TensorFlow is unavailable (it then seeds Python, numpy and the backend only).
    import sys
    import types

    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    try:
        from keras.src.utils import module_utils

        module_utils.tensorflow._available = False
    except (ImportError, AttributeError):  # another Keras layout: TensorFlow may get loaded
        pass


def backend_env(backend: str, **extra: str) -> dict[str, str]:
    """The environment of a test subprocess on ``backend`` (os.environ, KERAS_BACKEND, extra).

    On JAX, XLA's LLVM backend compiles at optimisation level 0: the rerun's small models
    compile once per shape, and compilation was most of its time (131 s -> 87 s on 2 cores);
    the values are the same computation, only less optimised machine code.
    """
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    env.update(extra)
    if backend == "jax" and "xla_backend_optimization_level" not in env.get("XLA_FLAGS", ""):
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
        ).strip()
    return env


def pytest_terminal_summary(terminalreporter):
    if NO_TENSORFLOW:
        import sys

        loaded = "tensorflow" in sys.modules
        terminalreporter.write_line(f"tensorflow imported: {'yes' if loaded else 'no'}")


def read_run(run_dir: str):
    """An EventAccumulator over ``run_dir`` keeping every event (size guidance 0)."""
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(
        str(run_dir),
        size_guidance={"tensors": 0, "images": 0, "scalars": 0, "histograms": 0},
    )
    acc.Reload()
    return acc


def session_starts(run_dir) -> list[int]:
    """Steps of the ``SessionLog.START`` events in ``run_dir``'s event files, in file order."""
    from pathlib import Path

    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.compat.proto import event_pb2

    return [
        event.step
        for path in sorted(Path(run_dir).glob("events.out.tfevents.*"))
        for event in event_file_loader.EventFileLoader(str(path)).Load()
        if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START
    ]


def traces(fn) -> int | None:
    """How often ``fn`` (from ``backend.compile_function``) was traced; ``None`` on PyTorch.

    TensorFlow: the ``tf.function``'s tracing count; JAX: the ``jax.jit``'s cache size
    (one entry per trace); PyTorch runs eagerly, nothing is traced.
    """
    import keras

    name = keras.backend.backend()
    if name == "tensorflow":
        return fn.experimental_get_tracing_count()
    if name == "jax":
        return fn.jitted._cache_size()
    return None


def tensor_tags(acc) -> set[str]:
    return set(acc.Tags()["tensors"])


def steps_of(acc, tag: str) -> list[int]:
    return [e.step for e in acc.Tensors(tag)]


def scalar_values(acc, tag: str) -> list[float]:
    from tensorboard.util import tensor_util

    return [float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]


def images_at(acc, tag: str, step: int | None = None):
    """``(width, height, [PIL images])`` of an image tag at ``step`` (default: last)."""
    from PIL import Image
    from tensorboard.util import tensor_util

    events = acc.Tensors(tag)
    event = events[-1] if step is None else next(e for e in events if e.step == step)
    strings = tensor_util.make_ndarray(event.tensor_proto)
    width, height = int(strings[0]), int(strings[1])
    return width, height, [Image.open(io.BytesIO(s)) for s in strings[2:]]


def constant_channel_model(channels: int, size: int = 4):
    """A 1x1 conv with zero kernel and bias ``c + 1``: channel ``c`` is ``c + 1`` everywhere."""
    import keras

    inputs = keras.Input((size, size, 1))
    conv = keras.layers.Conv2D(channels, 1, name="const")
    outputs = conv(inputs)
    model = keras.Model(inputs, outputs)
    conv.set_weights(
        [np.zeros((1, 1, 1, channels), np.float32), np.arange(1, channels + 1, dtype=np.float32)]
    )
    return model


def small_cnn(input_shape=(16, 16, 3), classes: int = 3, seed: int = 0):
    """Three conv layers and a classifier; small enough for many tests."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(name="pool1"),
            keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="conv3"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(classes, activation="softmax", name="head"),
        ],
        name="small_cnn",
    )


def nested_backbone_model():
    """A small MobileNetV2 backbone (random weights) nested in a Sequential: transfer learning."""
    import keras

    base = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(32, 32, 3), alpha=0.35
    )
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            base,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    return base, model


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def images(rng):
    return rng.integers(0, 256, size=(3, 16, 16, 3), dtype=np.uint8)
