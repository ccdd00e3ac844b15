"""Benchmark of top examples and feature visualization (issue 14), ratios in one run.

Usage: ``python benchmarks/channel_examples.py`` (512 images, several minutes
on 2 cores) or ``--pool 64 --fv-steps 32`` for a quick look.

1. ``top_examples`` over a pool of random 224x224 images on VGG16
   (``weights=None``), the five pooling layers, k=9, against a bare
   ``model.predict`` of the same pool at the same batch size (target: at most
   1.3x). Both warm: each runs once before it is timed (tracing left out),
   then the median of ``--repeat`` runs.
2. ``visualize_channels`` on ``block4_conv1`` of VGG16 at 128x128: seconds
   per channel for 256 steps, channels batched together.
3. ``--memory``: in a fresh process per pool size, the peak RSS that
   ``top_examples`` adds to a process that already holds the model, the pool
   and a warm traced pass; it should not grow with the pool.

The machine is shared and noisy: compare the ratio, not the seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pool", type=int, default=512, help="pool images (default 512)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs, median (default 1)")
    parser.add_argument("--fv-steps", type=int, default=256, help="feature-vis steps (256)")
    parser.add_argument("--fv-channels", type=int, default=4, help="channels optimised together")
    parser.add_argument("--skip-fv", action="store_true", help="no feature visualization")
    parser.add_argument(
        "--memory", type=int, nargs="*", help="only the peak-memory check, for these pool sizes"
    )
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        memory_child(args.memory_child, args.batch)
        return
    if args.memory is not None:
        memory(args.memory or [64, 256], args.batch)
        return

    import keras
    import tensorflow as tf

    from tb_activations import top_examples, visualize_channels
    from tb_activations.extraction import ActivationExtractor
    from tb_activations.layer_selection import select_layers

    print(
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible; "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}"
    )
    model = keras.applications.VGG16(weights=None)
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, (args.pool, 224, 224, 3), dtype=np.uint8)
    floats = pool.astype(np.float32)
    layers = select_layers(model, ["block*_pool"])
    extractor = ActivationExtractor(model, layers)

    def predict() -> None:
        model.predict(floats, batch_size=args.batch, verbose=0)

    def examples() -> None:
        top_examples(
            model,
            pool,
            layers=[i.path for i in layers],
            k=9,
            batch_size=args.batch,
            extractor=extractor,
        )

    # Warm both (traces, oneDNN primitives) on one batch.
    model.predict(floats[: args.batch], batch_size=args.batch, verbose=0)
    top_examples(
        model,
        pool[: max(9, args.batch)],
        layers=[i.path for i in layers],
        k=9,
        batch_size=args.batch,
        extractor=extractor,
    )
    t_predict = median_time(predict, args.repeat)
    t_examples = median_time(examples, args.repeat)
    print()
    print("| workload | seconds | ratio |")
    print("|---|---|---|")
    print(
        f"| model.predict, {args.pool} images 224 px, batch {args.batch} | {t_predict:.1f} | 1.00 |"
    )
    print(
        f"| top_examples, 5 pooling layers, k=9 | {t_examples:.1f} | {t_examples / t_predict:.2f} |"
    )

    if not args.skip_fv:
        small = keras.applications.VGG16(weights=None, include_top=False, input_shape=(128, 128, 3))
        channels = list(range(args.fv_channels))
        # One short run first: the trace is not counted.
        visualize_channels(small, "block4_conv1", channels, steps=1, batch_size=len(channels))
        start = time.perf_counter()
        vis = visualize_channels(
            small, "block4_conv1", channels, steps=args.fv_steps, batch_size=len(channels)
        )
        seconds = time.perf_counter() - start
        print(
            f"| visualize_channels, block4_conv1, 128 px, {args.fv_steps} steps, "
            f"{len(channels)} channels together | {seconds / len(channels):.1f} s per channel "
            f"| objective {vis.history[0].mean():.3g} -> {vis.objective.mean():.3g} |"
        )


def _status(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory_child(n: int, batch: int) -> None:
    """Prints the peak RSS added by top_examples over a warm process holding model and pool."""
    import keras

    from tb_activations import top_examples
    from tb_activations.extraction import ActivationExtractor
    from tb_activations.layer_selection import select_layers

    model = keras.applications.VGG16(weights=None)
    pool = np.random.default_rng(0).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)
    layers = select_layers(model, ["block*_pool"])
    extractor = ActivationExtractor(model, layers)
    names = [i.path for i in layers]
    top_examples(model, pool[:batch], layers=names, k=9, batch_size=batch, extractor=extractor)
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS
        f.write("5")
    base = _status("VmRSS")
    top_examples(model, pool, layers=names, k=9, batch_size=batch, extractor=extractor)
    acts = sum(int(np.prod(i.shape)) for i in layers) * 4 * batch / 2**20
    print(f"{n} {_status('VmHWM') - base:.0f} {acts:.0f}")


def memory(sizes: list[int], batch: int) -> None:
    import subprocess
    import sys

    print(
        "| pool images | peak RSS added by top_examples (MB) | the 5 layers' activations of one batch (MB) |"
    )
    print("|---|---|---|")
    for n in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(n), "--batch", str(batch)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        print(f"| {out[0]} | {out[1]} | {out[2]} |")


if __name__ == "__main__":
    main()
