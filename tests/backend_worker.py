"""One process of tests/test_backends.py (run as a script under a KERAS_BACKEND, never imported).

Usage::

    KERAS_BACKEND=jax python tests/backend_worker.py fit LOG_DIR OUT
    KERAS_BACKEND=numpy python tests/backend_worker.py unsupported LOG_DIR OUT
    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
        python tests/backend_worker.py jax_data_parallel LOG_DIR OUT
    KERAS_BACKEND=torch RANK=r WORLD_SIZE=2 MASTER_PORT=p \\
        python tests/backend_worker.py torch_distributed LOG_DIR OUT

Each mode writes what the parent test checks to ``OUT`` (``.npz``: arrays and
a JSON string ``info``). The parent reads the event files with TensorBoard's
readers; this process must not need TensorFlow.
"""

from __future__ import annotations

import json
import sys

import numpy as np

#: Integer inputs and weights: every backend computes these activations exactly.
X = np.random.default_rng(0).integers(0, 10, (3, 6, 6, 2)).astype(np.float32)
KERNEL = np.random.default_rng(1).integers(-2, 3, (1, 1, 2, 4)).astype(np.float32)
BIAS = np.array([0.0, 1.0, -3.0, 2.0], np.float32)


def exact_model(keras):
    """A 1x1 conv with integer weights, ReLU and pooling: exact in float32 on any backend."""
    inputs = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(4, 1, name="conv")
    x = keras.layers.ReLU(name="relu")(conv(inputs))
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x), name="exact")
    conv.set_weights([KERNEL, BIAS])
    model.get_layer("head").set_weights([np.ones((4, 2), np.float32), np.zeros(2, np.float32)])
    return model


def _fit(keras, log_dir: str) -> dict:
    import tb_activations as tba

    model = exact_model(keras)
    layers = tba.select_layers(model, ["conv", "relu", "pool"])
    result = tba.ActivationExtractor(model, layers, levels=True).run_with_summaries(X)
    out = {f"act/{k}": v for k, v in result.activations.items()}
    out |= {f"stats/{k}": v for k, v in result.stats.items()}
    out |= {f"gram/{k}": v for k, v in result.grams.items()}
    out |= {f"levels/{k}": v for k, v in result.levels.items()}
    # One logged step on the hand-set weights: the pictures, for a comparison across backends.
    logger = tba.ActivationLogger(
        model, tba.Probes(X), log_dir + "/exact", layers=["relu"], views=["mosaic", "topk"]
    )
    logger.log(0)
    logger.close()
    # Activations follow weight changes: a compiled pass that baked the weights in would not.
    ex = tba.ActivationExtractor(model, layers)
    before = ex(X)["conv"]
    model.get_layer("conv").set_weights([KERNEL * 2, BIAS * 2])
    out["conv_doubled"] = ex(X)["conv"]
    out["conv_before"] = before
    model.get_layer("conv").set_weights([KERNEL, BIAS])
    # A fit with the callback: the weights the callback sees move with training.
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    y = np.zeros((3, 2), np.float32)
    cb = tba.ActivationCallback(tba.Probes(X), log_dir, layers=["conv", "relu"], freq=1)
    model.fit(X, y, epochs=2, batch_size=3, verbose=0, callbacks=[cb])
    out["conv_after_fit"] = ex(X)["conv"]
    out["conv_fit_reference"] = keras.ops.convert_to_numpy(
        keras.Model(model.inputs, model.get_layer("conv").output)(X)
    )
    cb.logger.close()
    return out


def _subclassed(keras) -> dict:
    import tb_activations as tba

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 1, name="conv")
            self.pool = keras.layers.GlobalAveragePooling2D()

        def call(self, x):
            return self.pool(self.conv(x))

    net = Net()
    net(X[:1])
    net.conv.set_weights([KERNEL, BIAS])
    ex = tba.ActivationExtractor(net, tba.select_layers(net, ["conv"]), input_shape=(6, 6, 2))
    first = ex(X)["conv"]
    net.conv.set_weights([KERNEL * 2, BIAS * 2])
    return {
        "sub_first": first,
        "sub_doubled": ex(X)["conv"],
        "sub_hooks_left": np.array("call" in vars(net.conv)),
    }


def _switch(keras, log_dir: str) -> dict:
    import tb_activations as tba

    model = exact_model(keras)
    ex = tba.ActivationExtractor(model, tba.select_layers(model, ["conv"]))
    ex(X)
    logger = tba.ActivationLogger(model, tba.Probes(X), log_dir + "/switch", layers=["conv"])
    logger.log(0)
    other = "torch" if keras.config.backend() == "jax" else "jax"
    keras.config.set_backend(other)
    messages = {}
    try:
        ex(X)
    except RuntimeError as err:
        messages["extractor"] = str(err)
    try:
        logger.log(1)  # must not write step 1 from the old backend's model
    except RuntimeError as err:
        messages["logger"] = str(err)
    logger.close()
    try:
        import keras as new_keras

        tba.ActivationExtractor(model, tba.select_layers(model, ["conv"]))
        del new_keras
    except (TypeError, ValueError) as err:
        messages["rebuild"] = f"{type(err).__name__}: {err}"
    return {"messages": np.array(json.dumps(messages))}


def _unsupported(keras, log_dir: str) -> dict:
    import tb_activations as tba

    inputs = keras.Input((6, 6, 2))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 1, name="conv")(inputs))
    out = {"message": np.array(""), "logger_message": np.array("")}
    try:
        tba.ActivationExtractor(model, tba.select_layers(model, ["conv"]))
    except ValueError as err:
        out["message"] = np.array(str(err))
    try:
        tba.ActivationLogger(model, tba.Probes(X), log_dir, layers=["conv"])
    except ValueError as err:
        out["logger_message"] = np.array(str(err))
    return out


def _jax_data_parallel(keras, log_dir: str) -> dict:
    import jax

    import tb_activations as tba

    devices = jax.devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    model = exact_model(keras)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    x = np.tile(X, (4, 1, 1, 1))[:8]
    y = np.zeros((8, 2), np.float32)
    cb = tba.ActivationCallback(tba.Probes(X), log_dir, layers=["conv", "relu"], freq=1)
    model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[cb])
    cb.logger.close()
    got = cb.logger.extractor(X)
    reference = keras.Model(model.inputs, model.get_layer("conv").output)
    return {
        "devices": np.array(len(devices)),
        "conv": got["conv"],
        "conv_reference": keras.ops.convert_to_numpy(reference(X)),
        "writes": np.array(cb.writes),
    }


def _torch_distributed(keras, log_dir: str) -> dict:
    import torch.distributed as dist

    import tb_activations as tba

    dist.init_process_group("gloo", init_method="env://")
    try:
        model = exact_model(keras)
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        cb = tba.ActivationCallback(tba.Probes(X), log_dir, layers=["conv"], freq=1)
        model.fit(X, np.zeros((3, 2), np.float32), epochs=2, verbose=0, callbacks=[cb])
        dist.barrier()
        return {"rank": np.array(dist.get_rank()), "writes": np.array(cb.writes)}
    finally:
        dist.destroy_process_group()


def main() -> None:
    mode, log_dir, out_path = sys.argv[1:4]
    import keras

    out: dict = {}
    if mode == "fit":
        out["backend"] = np.array(keras.config.backend())
        out |= _fit(keras, log_dir) | _subclassed(keras)
        out["tensorflow_loaded"] = np.array("tensorflow" in sys.modules)
        out |= _switch(keras, log_dir)  # last: it re-imports Keras on the other backend
    elif mode == "unsupported":
        out = _unsupported(keras, log_dir)
    elif mode == "jax_data_parallel":
        out = _jax_data_parallel(keras, log_dir)
    elif mode == "torch_distributed":
        out = _torch_distributed(keras, log_dir)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    out.setdefault("tensorflow_loaded", np.array("tensorflow" in sys.modules))
    out.setdefault("backend", np.array(keras.config.backend()))
    np.savez(out_path, **{k.replace("/", "__"): v for k, v in out.items()})


if __name__ == "__main__":
    main()
