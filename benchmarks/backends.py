"""Benchmarks per Keras backend (TensorFlow, JAX, PyTorch), as ratios measured in one run.

Usage: ``python benchmarks/backends.py`` (all installed backends, a few minutes on
2 cores) or ``python benchmarks/backends.py --quick``. Prints a markdown table.

Each backend runs in its own process (``KERAS_BACKEND`` is fixed at import):

1. ``log()`` of VGG16 (``weights=None``), 8 random probes at 224 px, the five
   pooling layers, mosaic + top-5 + overlay, against that backend's own bare
   forward pass of the probes, compiled by its own means (``tf.function``;
   ``jax.jit`` of a stateless call; ``torch.no_grad``). Target: at most 1.5x.
2. The callback's overhead on a small-CNN fit (3 conv layers, 32x32x3, 4096 samples, batch
   64, 8 probes, every epoch, every conv layer): its own time per epoch
   against a plain epoch. Target: under 5 %.

Timings are medians of repeated runs; the machine is shared and noisy, so
compare the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

BACKENDS = ("tensorflow", "jax", "torch")


def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_log(quick: bool, tmp: str) -> dict:
    import keras

    from tb_activations import ActivationLogger, Probes, backend

    size = 96 if quick else 224
    model = keras.applications.VGG16(
        weights=None, include_top=not quick, input_shape=(size, size, 3)
    )
    x = np.random.default_rng(0).random((8, size, size, 3), dtype=np.float32) * 255
    forward = backend.compile_function(
        lambda t: model(t, training=False), variables=model.variables, input_shape=x.shape[1:]
    )
    to_numpy = backend.to_numpy

    def bare():
        to_numpy(forward(x))  # to the host, as log() takes its activations there

    bare()  # compile
    logger = ActivationLogger(
        model,
        Probes(x.astype(np.uint8)),
        os.path.join(tmp, "log"),
        layers=["block*_pool"],
        views=["mosaic", "topk", "overlay"],
        top_k=5,
        attribution=(),  # the workload is the views (Grad-CAM, on by default, is benchmarked apart)
    )
    logger.log(0)  # build + compile; also writes the probe images, once
    steps = iter(range(1, 10_000))
    fwd, lg = [], []
    for _ in range(2 if quick else 4):  # interleaved: both see the same machine load
        fwd.append(_median_time(bare, 1))
        lg.append(_median_time(lambda: logger.log(next(steps)), 1))
    logger.close()
    f, g = statistics.median(fwd), statistics.median(lg)
    return {"forward_s": f, "log_s": g, "ratio": g / f, "size": size}


def bench_callback(quick: bool, tmp: str) -> dict:
    import keras

    from tb_activations import ActivationCallback, Probes

    n = 1024 if quick else 4096
    rng = np.random.default_rng(0)
    x = rng.random((n, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, n)

    def model():
        m = keras.Sequential(
            [
                keras.Input((32, 32, 3)),
                keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
                keras.layers.MaxPooling2D(),
                keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
                keras.layers.MaxPooling2D(),
                keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )
        m.compile("adam", "sparse_categorical_crossentropy")
        return m

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.t)

    class TimedActivationCallback(ActivationCallback):
        def on_epoch_end(self, epoch, logs=None):
            t = time.perf_counter()
            super().on_epoch_end(epoch, logs)
            self.own.append(time.perf_counter() - t)

    epochs, rounds = (3, 1) if quick else (4, 2)
    results: dict[str, list[float]] = {"plain": [], "callback": [], "own": []}
    for r in range(rounds):  # alternate, so that changes in machine load hit both
        for label in ("plain", "callback"):
            timer = Timer()
            timer.times = []
            cbs = [timer]
            if label == "callback":
                cb = TimedActivationCallback(
                    Probes(x[:8]), os.path.join(tmp, f"cb{r}"), layers=["conv*"]
                )
                cb.own = []
                cbs = [cb, timer]
            model().fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=cbs)
            results[label].extend(timer.times[1:])  # epoch 0 includes compiling
            if label == "callback":
                results["own"].extend(cb.own[1:])
    plain = statistics.median(results["plain"])
    own = statistics.median(results["own"])
    return {"epoch_s": plain, "own_s": own, "overhead": own / plain, "samples": n}


def child(quick: bool) -> None:
    import keras

    with tempfile.TemporaryDirectory() as tmp:
        out = {"backend": keras.config.backend()}
        out |= bench_log(quick, tmp)
        out |= bench_callback(quick, tmp)
        out["tensorflow_loaded"] = "tensorflow" in sys.modules
    print("RESULT " + json.dumps(out), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, fewer repeats")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.quick)
        return 0
    rows = []
    for name in args.backends.split(","):
        env = dict(os.environ, KERAS_BACKEND=name, TF_CPP_MIN_LOG_LEVEL="2")
        cmd = [sys.executable, __file__, "--child"] + (["--quick"] if args.quick else [])
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(lines[-1][len("RESULT ") :]))
    print("| backend | `log()` VGG16, 5 pools, 8 probes | ratio to forward | callback, small CNN |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['backend']} | {r['log_s']:.2f} s vs forward {r['forward_s']:.2f} s "
            f"({r['size']} px) | **{r['ratio']:.2f}x** | **+{r['overhead'] * 100:.1f}%** "
            f"({r['own_s'] * 1000:.0f} ms per {r['epoch_s']:.2f} s epoch; "
            f"TensorFlow loaded: {r['tensorflow_loaded']}) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
