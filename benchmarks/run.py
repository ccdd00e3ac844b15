"""Benchmarks of tb_activations, as ratios measured in one run.

Usage: ``python benchmarks/run.py`` (full, several minutes on 2 cores) or
``python benchmarks/run.py --quick`` (CI-sized). Prints a markdown table.

Workloads (issue "Performance"); the probes are random pixels (the worst case
for image compression) unless said otherwise: real photographs (crops of the
two that scikit-learn ships) and drawn images (examples/images) are run too.
  1. ``log()`` against the bare forward pass of the same probes, VGG16
     (``weights=None``, 8 probes 224x224): the five pooling layers, and all 18
     conv/pool layers.
  2. Event bytes per logged step (steady state: the probe images, written
     once, are not counted), at full resolution and with the size knobs
     ``overlay_quality`` and ``max_image_size``.
  3. Callback overhead on a small CNN: 3 conv layers, 32x32x3, 4096 samples,
     batch 64, 8 probes, every epoch, every conv layer.
  4. Memory, in a fresh process: the peak RSS of the logger above a process
     that ran the bare forward pass, against the bytes of the activations
     plus the images of a step; RSS before and after many ``log()`` calls.
  5. The same job done the ways users do it today: the article's
     matplotlib/seaborn heatmaps, keract, tf-explain.
  6. The default layers (``layers=None``) on larger architectures, 8 probes
     224x224: ResNet50, MobileNetV2 and EfficientNetB0 (``weights=None``), with
     the targets of ResNet50's defaults: at most 3x its forward pass and 30 MB
     per step; and the memory of ResNet50's defaults in a fresh process.
     ``--architectures`` runs this section alone.

Timings are medians of repeated runs in this process; the machine is shared
and noisy, so compare the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run_bytes(run_dir: str) -> int:
    return sum(
        os.path.getsize(p) for p in glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))
    )


def bench_log(rows, model, probes, layers, label, repeat, tmp, **kwargs):
    import tensorflow as tf

    from tb_activations import ActivationLogger

    forward = tf.function(lambda x: model(x, training=False))
    x = probes.inputs
    forward(x)  # trace
    log_dir = os.path.join(tmp, label.replace(" ", "_"))
    logger = ActivationLogger(model, probes, log_dir, layers=layers, **kwargs)
    logger.log(0)  # build + trace; also writes the probe images, once
    first = run_bytes(logger.run_dir)
    step = iter(range(1, 10_000))
    # Interleave so that both see the same machine load.
    fwd, lg = [], []
    for _ in range(repeat):
        fwd.append(median_time(lambda: forward(x), 1))
        lg.append(median_time(lambda: logger.log(next(step)), 1))
    f, g = statistics.median(fwd), statistics.median(lg)
    size = (run_bytes(logger.run_dir) - first) / repeat  # each step flushes: steady-state bytes
    logger.close()
    rows.append(
        (
            f"`log()` {label}",
            f"{g:.2f} s vs forward {f:.2f} s",
            f"**{g / f:.2f}x** forward",
            f"{size / 1e6:.1f} MB/step",
        )
    )
    return g / f, size


def bench_callback(rows, quick, tmp):
    import keras

    from tb_activations import ActivationCallback, Probes

    n = 1024 if quick else 4096
    rng = np.random.default_rng(0)
    x = rng.random((n, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, n)

    def model():
        keras.utils.set_random_seed(0)
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
        """Measures the time the callback itself takes at each epoch end."""

        own: list[float]

        def on_epoch_end(self, epoch, logs=None):
            t = time.perf_counter()
            super().on_epoch_end(epoch, logs)
            self.own.append(time.perf_counter() - t)

    epochs, rounds = (3, 1) if quick else (4, 3)
    results: dict[str, list[float]] = {"plain": [], "callback": [], "own": []}
    # Alternate plain and with-callback fits so that changes in machine load hit both.
    for r in range(rounds):
        for label in ("plain", "callback"):
            timer = Timer()
            timer.times = []
            cbs = [timer]
            if label == "callback":
                # The activation callback first: the timer's on_epoch_end then includes its work.
                cb = TimedActivationCallback(
                    Probes(x[:8]), os.path.join(tmp, f"cb{r}"), layers=["conv*"]
                )
                cb.own = []
                cbs = [cb, timer]
            model().fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=cbs)
            results[label].extend(timer.times[1:])  # epoch 0 includes tracing
            if label == "callback":
                results["own"].extend(cb.own[1:])
    plain, with_cb = statistics.median(results["plain"]), statistics.median(results["callback"])
    own = statistics.median(results["own"])
    # Epoch times on a shared machine vary by +-50%; the callback's own time per
    # epoch against the plain epoch is the steadier figure of its overhead.
    rows.append(
        (
            "callback, small CNN (3 conv, 32x32, 4096 samples, batch 64), 8 probes, every epoch",
            f"callback's own time {own * 1000:.0f} ms per epoch; epochs {with_cb:.2f} s with, "
            f"{plain:.2f} s without (median of {len(results['plain'])})",
            f"**+{own / plain * 100:.1f}%** epoch time",
            "",
        )
    )


def bench_memory(rows, quick, layers, steps, label, model="VGG16"):
    """Memory in a fresh process, so that no other workload's allocations hide it."""
    import json
    import subprocess

    spec = json.dumps({"quick": quick, "layers": layers, "steps": steps, "model": model})
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--memory-child", spec],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if out.returncode != 0:
        rows.append((f"memory, {label}", f"failed: {out.stderr[-300:]}", "", ""))
        return
    m = json.loads(out.stdout.strip().splitlines()[-1])
    budget = m["activations_mb"] + m["images_mb"]
    rows.append(
        (
            f"memory over {steps} `log()` calls, {label}",
            f"RSS after the forward pass {m['baseline']:.0f} MB; with the logger, "
            f"{m['before']:.0f} -> {m['after']:.0f} MB over the calls; peak "
            f"+{m['peak']:.0f} MB over the forward pass alone",
            f"growth {m['after'] - m['before']:+.0f} MB; peak = "
            f"**{m['peak'] / budget:.2f}x** (activations + images)",
            f"activations {m['activations_mb']:.0f} MB, images {m['images_mb']:.1f} MB/step",
        )
    )


def memory_child(spec: str) -> None:
    """Runs in its own process: RSS of a bare forward pass, then of ``log()`` on top of it."""
    import json

    import keras
    import tensorflow as tf

    from tb_activations import ActivationLogger, Probes

    cfg = json.loads(spec)
    size, n = (96, 2) if cfg["quick"] else (224, 8)
    name = cfg.get("model", "VGG16")
    model = getattr(keras.applications, name)(
        weights=None, include_top=not cfg["quick"], input_shape=(size, size, 3)
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    probes = Probes(images, preprocess=ARCHITECTURES.get(name, _vgg16_preprocess)())
    forward = tf.function(lambda x: model(x, training=False))
    for _ in range(3):
        forward(probes.inputs)
    baseline = rss_mb()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Linux: resets the peak RSS (VmHWM) to the current RSS
    tmp = tempfile.mkdtemp(prefix="tb_activations_mem_")
    try:
        logger = ActivationLogger(model, probes, tmp, layers=cfg["layers"])
        acts = logger.activations()
        act_mb = sum(a.nbytes for a in acts.values()) / 1e6
        del acts
        logger.log(0)
        logger.log(1)
        before, first = rss_mb(), run_bytes(logger.run_dir)
        for s in range(2, 2 + cfg["steps"]):
            logger.log(s)
        after = rss_mb()
        images_mb = (run_bytes(logger.run_dir) - first) / cfg["steps"] / 1e6
        logger.close()
        with open("/proc/self/status") as f:
            hwm = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "baseline": baseline,
        "before": before,
        "after": after,
        "peak": hwm - baseline,
        "activations_mb": act_mb,
        "images_mb": images_mb,
    }
    print(json.dumps(result))


def _vgg16_preprocess():
    import keras

    return keras.applications.vgg16.preprocess_input


def _preprocess(module):
    def get():
        import keras

        return getattr(keras.applications, module).preprocess_input

    return get


#: keras.applications models of section 6 and their preprocessing.
ARCHITECTURES = {
    "ResNet50": _preprocess("resnet50"),
    "MobileNetV2": _preprocess("mobilenet_v2"),
    "EfficientNetB0": _preprocess("efficientnet"),
}

#: Targets of issue 16 for ResNet50's default layers.
RESNET50_TARGETS = {"ratio": 3.0, "mb_per_step": 30.0}


def bench_architectures(rows, quick, tmp, repeat):
    """Section 6: ``log()`` with the default layers on ResNet50, MobileNetV2, EfficientNetB0."""
    import keras

    from tb_activations import Probes
    from tb_activations.layer_selection import select_layers

    size, n = (96, 2) if quick else (224, 8)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    for name, preprocess in ARCHITECTURES.items():
        model = getattr(keras.applications, name)(
            weights=None, include_top=not quick, input_shape=(size, size, 3)
        )
        chosen = select_layers(model, None)
        every = select_layers(model, "all")
        print(f"{name} default layers: {', '.join(i.path for i in chosen)}", file=sys.stderr)
        ratio, step_bytes = bench_log(
            rows,
            model,
            Probes(images, preprocess=preprocess()),
            None,
            f"{name}, {n} probes {size}x{size}, default layers "
            f"({len(chosen)} of the {len(every)} spatial ones), all options default",
            repeat,
            tmp,
        )
        row = len(rows) - 1
        if name == "ResNet50":
            # The layers' share alone: Grad-CAM (on by default for a classifier) is a
            # backward pass of its own.
            bench_log(
                rows,
                model,
                Probes(images, preprocess=preprocess()),
                None,
                f"{name}, same, `attribution=()` (the layers alone, no Grad-CAM)",
                repeat,
                tmp,
                attribution=(),
            )
            met = (
                ratio <= RESNET50_TARGETS["ratio"]
                and step_bytes / 1e6 <= RESNET50_TARGETS["mb_per_step"]
            )
            label, measured, rel, data = rows[row]
            rows[row] = (
                label,
                measured,
                rel + f" (target <= {RESNET50_TARGETS['ratio']:.0f}x)",
                data
                + f" (target <= {RESNET50_TARGETS['mb_per_step']:.0f} MB): "
                + ("**targets met**" if met else "**TARGET MISSED**"),
            )
        del model
        keras.backend.clear_session()
    bench_memory(rows, quick, None, 3, "ResNet50, default layers", model="ResNet50")


def bench_article(rows, acts_by_layer, tmp, channels_sampled):
    """The article's way: one seaborn heatmap figure per channel, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        import seaborn as sns
    except ImportError:
        rows.append(("article (seaborn heatmaps)", "seaborn not installed", "", ""))
        return None
    total_channels = sum(a.shape[-1] for a in acts_by_layer.values())
    out = os.path.join(tmp, "article")
    os.makedirs(out, exist_ok=True)
    name, a = next(iter(acts_by_layer.items()))
    vmax = float(a.max())
    t = time.perf_counter()
    for c in range(channels_sampled):
        fig = plt.figure(figsize=(4, 4))
        sns.heatmap(a[0, :, :, c], vmin=0, vmax=vmax, xticklabels=False, yticklabels=False)
        fig.savefig(os.path.join(out, f"{name}_{c}.png"))
        plt.close(fig)
    per_channel = (time.perf_counter() - t) / channels_sampled
    est = per_channel * total_channels
    rows.append(
        (
            "article: seaborn heatmap per channel, PNG files, 1 probe",
            f"{per_channel * 1000:.0f} ms/channel x {total_channels} channels",
            f"~{est:.0f} s per probe (extrapolated from {channels_sampled})",
            "",
        )
    )
    return est


def bench_keract(rows, model, x1, layer_names, tmp):
    try:
        import keract
    except ImportError:
        rows.append(("keract", "not installed (`pip install keract`)", "", ""))
        return None
    import matplotlib

    matplotlib.use("Agg")
    out = os.path.join(tmp, "keract")
    t = time.perf_counter()
    try:
        acts = keract.get_activations(model, x1, layer_names=layer_names)
        t_get = time.perf_counter() - t
        keract.display_activations(acts, save=True, directory=out)
    except Exception as err:  # report, don't crash the benchmark
        rows.append(("keract", f"fails on Keras 3: {type(err).__name__}: {str(err)[:80]}", "", ""))
        return None
    total = time.perf_counter() - t
    rows.append(
        (
            "keract: get_activations + display_activations, 1 probe",
            f"{total:.1f} s (get {t_get:.2f} s)",
            "",
            "",
        )
    )
    return total


def bench_tf_explain(rows, model, x, layer_names, tmp):
    try:
        from tf_explain.callbacks.activations_visualization import (
            ActivationsVisualizationCallback,
        )
    except Exception as err:
        rows.append(
            (
                "tf-explain ActivationsVisualizationCallback",
                f"does not import: {type(err).__name__}: {str(err)[:80]}",
                "",
                "",
            )
        )
        return None

    def epoch_end(names):
        cb = ActivationsVisualizationCallback(
            validation_data=(x, np.zeros(len(x))),
            layers_name=names,
            output_dir=os.path.join(tmp, "tfx"),
        )
        cb.set_model(model)
        t = time.perf_counter()
        cb.on_epoch_end(0)
        return time.perf_counter() - t

    try:
        total = epoch_end(layer_names)
    except Exception as err:
        # On Keras 3 a model with several outputs returns a list: tf-explain 0.3.1 expects an array.
        failure = (
            f"{len(layer_names)} layers fail on Keras 3 ({type(err).__name__}: {str(err)[:60]})"
        )
        try:
            one = epoch_end(layer_names[:1])
        except Exception as err2:
            rows.append(
                (
                    "tf-explain ActivationsVisualizationCallback",
                    f"{failure}; one layer fails too: {type(err2).__name__}",
                    "",
                    "",
                )
            )
            return None
        rows.append(
            (
                "tf-explain ActivationsVisualizationCallback, one epoch end, 1 probe",
                f"{failure}; `{layer_names[0]}` alone: {one:.2f} s (one grey mosaic, no colour, no top-k, no overlay)",
                "",
                "",
            )
        )
        return None
    rows.append(
        (
            "tf-explain ActivationsVisualizationCallback, one epoch end, 1 probe",
            f"{total:.1f} s",
            "",
            "",
        )
    )
    return total


def _photo_probes(n: int, size: int):
    """``n`` crops of the two photographs scikit-learn ships (china.jpg, flower.jpg; offline)."""
    try:
        from sklearn.datasets import load_sample_images
    except ImportError:
        return None
    from PIL import Image

    photos = load_sample_images().images  # (427, 640, 3) each
    corners = [(0, 0), (0, 300), (200, 100), (200, 400)]
    crops = [
        photos[i % 2][y : y + 224, x : x + 224]
        for i, (y, x) in ((i, corners[(i // 2) % 4]) for i in range(n))
    ]
    return np.stack([np.asarray(Image.fromarray(c).resize((size, size))) for c in crops])


def _drawn_probes(n: int, size: int):
    """``n`` variants (shifted) of the drawn sample images shipped in examples/images/."""
    from PIL import Image

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = sorted(glob.glob(os.path.join(root, "examples", "images", "*.png")))
    if not paths:
        return None
    base = [np.asarray(Image.open(p).convert("RGB").resize((size, size))) for p in paths]
    return np.stack([np.roll(base[i % len(base)], (size // 9) * i, axis=1) for i in range(n)])


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        return "unknown CPU"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="CI-sized: small inputs, fewer repeats."
    )
    parser.add_argument("--memory-child", metavar="JSON", help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-alternatives",
        action="store_true",
        help="Skip the article/keract/tf-explain comparisons.",
    )
    parser.add_argument(
        "--architectures",
        action="store_true",
        help="Run section 6 alone: default layers on ResNet50, MobileNetV2, EfficientNetB0.",
    )
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child)
        return 0
    if args.architectures:
        rows: list[tuple[str, str, str, str]] = []
        tmp = tempfile.mkdtemp(prefix="tb_activations_bench_")
        try:
            bench_architectures(rows, args.quick, tmp, 2 if args.quick else 3)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print_table(rows, args.quick)
        return 0

    import keras

    from tb_activations import Probes

    size, n, repeat = (96, 2, 2) if args.quick else (224, 8, 5)
    rows: list[tuple[str, str, str, str]] = []
    tmp = tempfile.mkdtemp(prefix="tb_activations_bench_")
    try:
        model = keras.applications.VGG16(
            weights=None, include_top=not args.quick, input_shape=(size, size, 3)
        )
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        probes = Probes(images, preprocess=keras.applications.vgg16.preprocess_input)
        pools = ["block*_pool"]
        bench_log(
            rows,
            model,
            probes,
            pools,
            f"VGG16, {n} probes {size}x{size}, 5 pooling layers",
            repeat,
            tmp,
        )
        photos = _photo_probes(n, size)
        if photos is not None:
            # Real photographs: what probes usually are.
            photo_probes = Probes(photos, preprocess=keras.applications.vgg16.preprocess_input)
            label = f"VGG16, {n} photographs (scikit-learn's samples), 5 pooling layers"
            bench_log(rows, model, photo_probes, pools, label, repeat, tmp)
        drawn = _drawn_probes(n, size)
        if drawn is not None:
            # Random pixels are the worst case for PNG/JPEG; drawn pictures compress as photos do.
            drawn_probes = Probes(drawn, preprocess=keras.applications.vgg16.preprocess_input)
            label = f"VGG16, {n} drawn images (examples/images), 5 pooling layers"
            bench_log(rows, model, drawn_probes, pools, label, max(2, repeat - 2), tmp)
        bench_log(
            rows,
            model,
            probes,
            None,
            f"VGG16, {n} probes, all 18 conv/pool layers",
            max(2, repeat - 2),
            tmp,
        )
        bench_log(
            rows,
            model,
            probes,
            pools,
            "VGG16, 5 pooling layers, overlay_quality=75",
            max(2, repeat - 2),
            tmp,
            overlay_quality=75,
        )
        bench_log(
            rows,
            model,
            probes,
            pools,
            "VGG16, 5 pooling layers, max_image_size=512",
            max(2, repeat - 2),
            tmp,
            max_image_size=512,
        )
        bench_memory(rows, args.quick, pools, 5 if args.quick else 20, "5 pooling layers")
        bench_memory(rows, args.quick, None, 3 if args.quick else 5, "all 18 conv/pool layers")
        bench_callback(rows, args.quick, tmp)
        if not args.quick:  # a minute more: CI's quick run leaves it to --architectures
            bench_architectures(rows, args.quick, tmp, max(2, repeat - 2))
        if not args.no_alternatives:
            from tb_activations.extraction import ActivationExtractor
            from tb_activations.layer_selection import select_layers

            acts = ActivationExtractor(model, select_layers(model, pools))(probes.inputs[:1])
            bench_article(rows, acts, tmp, channels_sampled=8 if args.quick else 32)
            pool_names = [f"block{i}_pool" for i in range(1, 6)]
            bench_keract(rows, model, probes.inputs[:1], pool_names, tmp)
            bench_tf_explain(rows, model, probes.inputs[:1], pool_names, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print_table(rows, args.quick)
    return 0


def print_table(rows, quick: bool) -> None:
    print(
        f"\nMachine: {_cpu_name()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"TensorFlow {_version('tensorflow')}; {'quick' if quick else 'full'} run\n"
    )
    print("| workload | measured | ratio | event data |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    sys.exit(main())
