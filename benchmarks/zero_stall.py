"""Benchmark of background logging (issue "Zero-stall logging"), as ratios measured in one run.

Usage: ``python benchmarks/zero_stall.py`` (several minutes on 2 cores) or
``python benchmarks/zero_stall.py --quick``. Prints a markdown table.

1. Training stall per logged step, VGG16 (``weights=None``), 8 probes at 224 px,
   all 18 conv/pool layers (the default selection), mosaic + top-5 + overlay:
   the time the calling thread spends in ``log(blocking=False)`` against the
   bare forward pass of the probes (target: at most 1.15x), with Grad-CAM off
   (``attribution=()``) and with the default (Grad-CAM, against a forward +
   backward pass); the blocking ``log()`` beside it. Between two steps the
   worker is given the time to finish, as training would.
2. The small-CNN fit of ``benchmarks/run.py`` (3 conv layers, 32x32x3, 4096
   samples, batch 64, 8 probes, every epoch, every conv layer, Grad-CAM on by
   default): the callback's own time on the training thread per epoch (its
   ``on_epoch_begin`` and ``on_epoch_end``; target: at most 1 % of the epoch),
   and end-to-end epoch time (target: within 3 %): medians over 5 alternating
   fits without and with the callback (5 epochs each; epoch 0, where the
   logger traces its functions and writes the probes, is reported apart), in
   both modes and with Grad-CAM off; and the worker's seconds per step
   (``_tb_activations/worker_seconds``), which on 2 cores compete with training.
3. The same small CNN's background ``log()`` on the calling thread with the
   worker idle (the fit's hooks without the fit, less noisy), Grad-CAM on and
   off, interleaved.

The machine is shared and noisy: compare the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np


def bench_stall(quick: bool, tmp: str) -> list[tuple[str, float, float]]:
    import keras
    import tensorflow as tf

    from tb_activations import ActivationLogger, Probes

    size = 96 if quick else 224
    model = keras.applications.VGG16(weights=None, input_shape=(size, size, 3))
    x = np.random.default_rng(0).integers(0, 256, (8, size, size, 3), dtype=np.uint8)
    xf = x.astype(np.float32)
    forward = tf.function(lambda t: model(t, training=False))

    @tf.function
    def forward_backward(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = model(t, training=False)
            score = tf.reduce_sum(tf.reduce_max(y, axis=-1))
        return tape.gradient(score, t)

    forward(xf).numpy()
    forward_backward(xf).numpy()
    rows = []
    repeat = 2 if quick else 5
    for label, options, floor in (
        ("Grad-CAM off", {"attribution": ()}, lambda: forward(xf).numpy()),
        ("defaults (Grad-CAM on)", {}, lambda: forward_backward(xf).numpy()),
    ):
        for blocking in (False, True):
            name = f"{label}, {'blocking' if blocking else 'background'}"
            logger = ActivationLogger(
                model,
                Probes(x),
                os.path.join(tmp, name.replace(" ", "_")),
                blocking=blocking,
                **options,
            )
            logger.log(0)  # build and trace; the probe images are written once
            logger.flush()
            floors, stalls, workers = [], [], []
            for step in range(1, repeat + 1):  # interleaved: both see the same load
                t = time.perf_counter()
                floor()
                floors.append(time.perf_counter() - t)
                t = time.perf_counter()
                logger.log(step)
                stalls.append(time.perf_counter() - t)
                t = time.perf_counter()
                logger.flush()  # training would run meanwhile
                workers.append(time.perf_counter() - t)
            logger.close()
            f, s = statistics.median(floors), statistics.median(stalls)
            rows.append((name, f, s))
            print(
                f"  {name}: floor {f:.3f} s, stall {s:.3f} s ({s / f:.2f}x), "
                f"worker after return {statistics.median(workers):.3f} s",
                file=sys.stderr,
            )
    return rows


def small_cnn():
    """The performance benchmark's small CNN (3 conv layers, 32x32x3, 10 classes), seeded."""
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu", name="conv3"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def bench_fit(quick: bool, tmp: str) -> list[tuple[str, float, float, float]]:
    import keras

    from tb_activations import ActivationCallback, Probes

    n = 1024 if quick else 4096
    rng = np.random.default_rng(0)
    x = rng.random((n, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, n)
    model = small_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)  # trace the train step

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._t)

    def hook_timer(cb):
        """Per epoch, the seconds the callback's hooks took on the training thread."""
        spent: dict[int, float] = {}
        for name in ("on_epoch_begin", "on_epoch_end"):
            original = getattr(cb, name)

            def timed(epoch, *args, _orig=original, **kwargs):
                t = time.perf_counter()
                _orig(epoch, *args, **kwargs)
                spent[epoch] = spent.get(epoch, 0.0) + time.perf_counter() - t

            setattr(cb, name, timed)
        return spent

    def worker_seconds(run_dir):
        from tensorboard.backend.event_processing import event_accumulator
        from tensorboard.util import tensor_util

        from tb_activations import metadata

        acc = event_accumulator.EventAccumulator(run_dir, size_guidance={"tensors": 0})
        acc.Reload()
        events = acc.Tensors(metadata.WORKER_SECONDS_TAG)[1:]  # step 0 writes the probes too
        return [float(tensor_util.make_ndarray(e.tensor_proto)) for e in events]

    rows = []
    epochs = 3 if quick else 5
    runs = 3 if quick else 5
    for blocking, options in ((False, {}), (False, {"attribution": ()}), (True, {})):
        mode = ("blocking" if blocking else "background") + (", Grad-CAM off" if options else "")
        with_cb, without, hooks, first, worker = [], [], [], [], []
        for run in range(runs):  # alternating runs: without, then with the callback
            timer = EpochTimer()
            model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[timer])
            without.append(statistics.median(timer.times[1:]))
            log_dir = os.path.join(tmp, f"fit_{blocking}_{len(rows)}_{run}")
            cb = ActivationCallback(
                Probes((x[:8] * 255).astype(np.uint8)),
                log_dir,
                layers=["conv1", "conv2", "conv3"],
                blocking=blocking,
                **options,
            )
            spent = hook_timer(cb)
            timer = EpochTimer()
            # The timer runs after the callback: the epoch time includes its hook.
            model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[cb, timer])
            # Epoch 0 traces the logger's functions and writes the probes: one-time costs,
            # left out of both the epoch time and the hooks' time, reported apart.
            with_cb.append(statistics.median(timer.times[1:]))
            hooks.append(statistics.median(spent[e] for e in range(1, epochs)))
            first.append(spent[0])
            worker.extend(worker_seconds(os.path.join(log_dir, "activations")))
        w, wo = statistics.median(with_cb), statistics.median(without)
        h, f0, wk = statistics.median(hooks), statistics.median(first), statistics.median(worker)
        rows.append((mode, wo, w, h, wk))
        print(
            f"  fit, {mode}: epoch {wo:.3f} s without, {w:.3f} s with "
            f"(+{(w / wo - 1) * 100:.1f} %, median of {runs} alternating runs of epochs "
            f"1-{epochs - 1}); hooks {h * 1000:.1f} ms/epoch ({h / wo * 100:.2f} % of the "
            f"epoch), first epoch {f0 * 1000:.0f} ms (first log); worker {wk * 1000:.0f} ms/step",
            file=sys.stderr,
        )
    return rows


def bench_calls(quick: bool, tmp: str) -> list[tuple[str, float]]:
    """The small CNN's background ``log()`` on the calling thread, the worker idle.

    What the fit's hooks measure, without the fit: one step of each logger in turn
    (Grad-CAM on, off), each followed by a flush outside the timing, as training
    would leave the worker the epoch to finish.
    """

    from tb_activations import ActivationLogger, Probes

    rng = np.random.default_rng(0)
    probes = Probes(rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8))
    model = small_cnn()
    loggers = {
        label: ActivationLogger(
            model,
            probes,
            os.path.join(tmp, f"calls_{i}"),
            layers=["conv1", "conv2", "conv3"],
            blocking=False,
            **options,
        )
        for i, (label, options) in enumerate(
            (("defaults (Grad-CAM on)", {}), ("Grad-CAM off", {"attribution": ()}))
        )
    }
    times: dict[str, list[float]] = {label: [] for label in loggers}
    for step in range(10 if quick else 41):  # the first of each traces: left out
        for label, logger in loggers.items():
            t = time.perf_counter()
            logger.log(step)
            times[label].append(time.perf_counter() - t)
            logger.flush()
    rows = []
    for label, logger in loggers.items():
        logger.close()
        rows.append((label, statistics.median(times[label][1:])))
        print(
            f"  small CNN, background log(), {label}: {rows[-1][1] * 1000:.2f} ms", file=sys.stderr
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    parser.add_argument("--only", choices=("stall", "fit", "calls"), help="run one section")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        stall = bench_stall(args.quick, tmp) if args.only in (None, "stall") else []
        fit = bench_fit(args.quick, tmp) if args.only in (None, "fit") else []
        calls = bench_calls(args.quick, tmp) if args.only in (None, "calls") else []
    print("| workload | floor / plain epoch (s) | with logging (s) | ratio |")
    print("|---|---|---|---|")
    for name, floor, stall_s in stall:
        print(
            f"| VGG16 18 layers, stall, {name} | {floor:.3f} | {stall_s:.3f} | {stall_s / floor:.2f}x |"
        )
    for name, without, with_cb, hooks, worker in fit:
        print(
            f"| small CNN fit, {name}: epoch | {without:.3f} | {with_cb:.3f} | "
            f"{with_cb / without:.3f}x (hooks {hooks / without * 100:.2f} % of the epoch; "
            f"worker {worker * 1000:.0f} ms/step) |"
        )
    for name, seconds in calls:
        print(f"| small CNN, background log() on the calling thread, {name} | | {seconds:.4f} | |")


if __name__ == "__main__":
    main()
