"""One training process of tests/test_distributed.py (run as a script, never imported by pytest).

Usage::

    python tests/distributed_worker.py mirrored LOG_DIR RESULT_JSON
    TF_CONFIG=... python tests/distributed_worker.py multiworker LOG_DIR RESULT_JSON

``mirrored``: ``MirroredStrategy`` over two logical CPU devices (set up here,
before TensorFlow initialises its devices). ``multiworker``:
``MultiWorkerMirroredStrategy``, one of the workers named in ``TF_CONFIG``.
Each fits a small CNN (BatchNorm and Dropout included) with two
``ActivationCallback`` s, per epoch and every 3 batches, and writes what the
parent test checks to ``RESULT_JSON``: chief or not, pid, callback failures,
per-epoch wall times, the op types of the extraction graph, and whether the
logged activations equal a plain (undistributed) forward pass on the local
first replica's weights.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EPOCHS = 3
BATCHES = 4  # per epoch
GLOBAL_BATCH = 8


def _model(keras):
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.BatchNormalization(name="bn1"),
            keras.layers.MaxPooling2D(name="pool1"),
            keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.Dropout(0.3, name="drop"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ],
        name="dist_cnn",
    )


def _patch_keras_for_multi_worker(keras, tf, model, strategy, local_batch) -> None:
    """Work around two Keras 3 bugs that stop ``fit`` under ``MultiWorkerMirroredStrategy``.

    keras-team/keras#20585: (1) the symbolic build reduces a distributed
    ``(x, y)`` batch across workers, which fails: build from a local batch
    instead; (2) the per-step logs are reduced with ``axis=0``, which fails
    for scalars: reduce them with ``axis=None`` (still a cross-worker mean).
    Neither touches tb_activations; without them ``fit`` raises before the
    first batch, with or without the callback.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    def build_from_a_local_batch(iterator=None, data_batch=None):
        with strategy.scope():
            model._symbolic_build(data_batch=local_batch)

    model._maybe_symbolic_build = build_from_a_local_batch
    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy_, reduction):
        if reduction in ("auto", "mean"):
            return keras.tree.map_structure(
                lambda v: strategy_.reduce("MEAN", v, axis=None), values
            )
        return original(values, strategy_, reduction)

    tf_trainer.reduce_per_replica = reduce_per_replica


def main(mode: str, log_dir: str, result_path: str) -> None:
    import tensorflow as tf

    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    elif mode == "multiworker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        raise SystemExit(f"unknown mode {mode!r}")

    import keras
    import numpy as np

    if os.environ.get("FULL_TRACEBACKS"):  # a debugging aid
        keras.config.disable_traceback_filtering()

    from tb_activations import ActivationCallback, Probes

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n = GLOBAL_BATCH * BATCHES
    x = rng.random((n, 16, 16, 3), dtype=np.float32)
    y = (x[:, :8].mean(axis=(1, 2, 3)) > x[:, 8:].mean(axis=(1, 2, 3))).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    data = data.with_options(options)

    with strategy.scope():
        model = _model(keras)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    if mode == "multiworker":
        _patch_keras_for_multi_worker(
            keras, tf, model, strategy, (x[:GLOBAL_BATCH], y[:GLOBAL_BATCH])
        )

    probes = Probes(x[:4])
    per_epoch = ActivationCallback(probes, log_dir, layers=["conv*", "bn1", "pool1"])
    per_batch = ActivationCallback(probes, log_dir, layers=["pool1"], freq=3, run_name="batches")

    epoch_seconds: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_seconds.append(time.perf_counter() - self.start)

    start = time.perf_counter()
    model.fit(
        data, epochs=EPOCHS, verbose=0, shuffle=False, callbacks=[Timer(), per_epoch, per_batch]
    )
    fit_seconds = time.perf_counter() - start

    result = {
        "mode": mode,
        "pid": os.getpid(),
        "writes": [per_epoch.writes, per_batch.writes],
        "failures": per_epoch.failures + per_batch.failures,
        "replicas": strategy.num_replicas_in_sync,
        "fit_seconds": fit_seconds,
        "epoch_seconds": epoch_seconds,
        "writer_opened": [cb.logger._writer.path is not None for cb in (per_epoch, per_batch)],
    }
    graph = per_epoch.logger.extractor._fn.get_concrete_function().graph
    result["op_types"] = sorted({op.type for op in graph.get_operations()})

    # The chief's replica: the local first component of every distributed variable.
    def components(variable):
        value = getattr(variable, "value", variable)
        return list(getattr(value, "values", (value,)))

    first = [components(w)[0].numpy() for w in model.weights]
    result["components"] = len(components(model.weights[0]))
    if result["components"] > 1:
        # Make the second replica differ: the extraction must keep reading the first.
        for w in model.weights:
            other = components(w)[1]
            other.assign(other + 0.5)
    acts = per_epoch.logger.activations()
    plain = _model(keras)
    plain.set_weights(first)
    layer_names = list(acts)
    probe_model = keras.Model(plain.inputs, [plain.get_layer(p).output for p in layer_names])
    expected = probe_model([probes.inputs], training=False)
    result["first_replica_max_diff"] = max(
        float(np.max(np.abs(acts[name] - np.asarray(e)))) for name, e in zip(layer_names, expected)
    )
    if result["components"] > 1:
        second = [components(w)[1].numpy() for w in model.weights]
        plain.set_weights(second)
        expected = probe_model([probes.inputs], training=False)
        result["second_replica_max_diff"] = max(
            float(np.max(np.abs(acts[name] - np.asarray(e))))
            for name, e in zip(layer_names, expected)
        )
    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
