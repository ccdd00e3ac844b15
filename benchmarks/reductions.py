"""What each part of one blocking ``log()`` costs, per reduction kind and per host stage.

Usage: ``python benchmarks/reductions.py [--model ResNet50] [--probes 8] [--repeat 5]``
(``--model`` among ResNet50, MobileNetV2, EfficientNetB0, VGG16; ``weights=None``,
random probes at 224 px, the default layers). Prints a markdown table of the
median CPU time (all threads of the process) and wall time of:

- the device side: the bare forward pass, the extraction pass (forward and the
  selected layers' outputs), and each reduction the logger runs on those
  outputs, alone, compiled as the extractor compiles them: per-channel
  statistics, Gram matrices, channel-mean maps, the finiteness check,
  histograms (and, on TensorFlow, the ``segment_sum`` they used before) and
  palette levels;
- the host side: tiling the levels into mosaics (numpy, and the same tiling as
  ``keras.ops`` transposes on the device: whether device tiling pays), the
  top-k strips, the overlays, and encoding (mosaic and strip PNGs, overlay JPEGs).

CPU time is the steadier figure on a shared machine; wall time is what
``log()`` waits for (the device kernels and the encoders use several threads).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

MODELS = {
    "ResNet50": "resnet50",
    "MobileNetV2": "mobilenet_v2",
    "EfficientNetB0": "efficientnet",
    "VGG16": "vgg16",
}


def measure(fn, repeat: int) -> tuple[float, float]:
    """Median ``(cpu, wall)`` seconds of ``fn()`` over ``repeat`` calls, after one warm-up."""
    fn()
    cpu, wall = [], []
    for _ in range(repeat):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return statistics.median(cpu), statistics.median(wall)


def device_tile(levels, cols: int, rows: int, sep: int = 1):
    """:func:`tb_activations.render.mosaic_levels` (one pixel per cell) in ``keras.ops``."""
    from keras import ops

    from tb_activations.colormaps import BACKGROUND_INDEX

    n, h, w, c = levels.shape
    cells = ops.transpose(levels, (0, 3, 1, 2))
    pad = ((0, 0), (0, rows * cols - c), (0, sep), (0, sep))
    cells = ops.pad(cells, pad, constant_values=BACKGROUND_INDEX)
    cells = ops.transpose(ops.reshape(cells, (n, rows, cols, h + sep, w + sep)), (0, 1, 3, 2, 4))
    out = ops.reshape(cells, (n, rows * (h + sep), cols * (w + sep)))
    return out[:, : rows * (h + sep) - sep, : cols * (w + sep) - sep]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ResNet50", choices=sorted(MODELS))
    parser.add_argument("--probes", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    import keras
    from keras import ops

    from tb_activations import backend, extraction, render
    from tb_activations.colormaps import palette
    from tb_activations.encode import encode_jpeg, encode_palette_png
    from tb_activations.layer_selection import select_layers
    from tb_activations.probes import Probes
    from tb_activations.stats import ChannelStats, top_channels

    model = getattr(keras.applications, args.model)(weights=None, input_shape=(224, 224, 3))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.probes, 224, 224, 3), dtype=np.uint8)
    preprocess = getattr(keras.applications, MODELS[args.model]).preprocess_input
    probes = Probes(images, preprocess=preprocess)
    x = probes.inputs
    layers = select_layers(model, None)
    ex = extraction.ActivationExtractor(
        model, layers, include_output=True, levels=True, histogram_bins=30
    )
    compile_ = backend.compile_function
    to_numpy = backend.module(ex.backend).to_numpy
    maps = list(ex.tensors(x))[: len(layers)]
    shapes = ", ".join(f"{i.path} {tuple(m.shape[1:])}" for i, m in zip(layers, maps))
    print(f"{args.model}, {args.probes} probes, default layers: {shapes}", file=sys.stderr)
    rows: list[tuple[str, float, float]] = []

    def row(label, fn):
        cpu, wall = measure(fn, args.repeat)
        rows.append((label, cpu, wall))

    def each(fn):
        return compile_(lambda ms: [fn(m) for m in ms])

    forward = compile_(lambda t: model(t, training=False), variables=list(model.variables))
    row("forward pass (the model alone)", lambda: to_numpy(forward(x)))
    row("extraction pass (forward + the layers' outputs)", lambda: ex.tensors(x))
    row(
        "`run_with_summaries` (extraction + every reduction below)",
        lambda: ex.run_with_summaries(x),
    )
    row("reductions of the outputs alone (`summarize`)", lambda: ex.summarize(maps))

    def stats(t):
        mean = ops.mean(t, axis=(1, 2))
        dev = t - mean[:, None, None, :]
        return mean, ops.sqrt(ops.mean(dev * dev, axis=(1, 2)))

    row("reduction: per-channel mean and std", lambda: each(stats)(maps))
    row(
        "reduction: per-channel max and min",
        lambda: each(lambda t: (ops.max(t, (1, 2)), ops.min(t, (1, 2))))(maps),
    )

    def gram(t):
        flat = ops.reshape(t, (ops.shape(t)[0], -1))
        return ops.matmul(flat, ops.transpose(flat))

    row("reduction: Gram matrices (CKA)", lambda: each(gram)(maps))
    row(
        "reduction: channel-mean maps (overlay)", lambda: each(lambda t: ops.mean(t, axis=-1))(maps)
    )
    row("reduction: finiteness check", lambda: each(lambda t: ops.all(ops.isfinite(t)))(maps))
    reduced = [extraction._device_summary(m)[0] for m in maps]
    hist = compile_(lambda ms, ss: [extraction._device_histogram(m, s, 30) for m, s in zip(ms, ss)])
    row("reduction: histograms, 30 bins (bincount)", lambda: hist(maps, reduced))
    if ex.backend == "tensorflow":

        def segment_sum_histogram(t, s):
            lo, hi = ops.min(s[..., 2]), ops.max(s[..., 1])
            index = ops.cast(ops.clip((t - lo) / ((hi - lo) / 30), 0, 29), "int32")
            ones = ops.ones_like(index)
            return ops.segment_sum(ops.reshape(ones, (-1,)), ops.reshape(index, (-1,)), 30)

        old = compile_(lambda ms, ss: [segment_sum_histogram(m, s) for m, s in zip(ms, ss)])
        row("reduction: histograms, 30 bins (`segment_sum`, before)", lambda: old(maps, reduced))
    n = len(maps)
    los, scales = np.zeros(n, np.float32), np.full(n, 20.0, np.float32)
    row(
        "reduction: palette levels", lambda: [to_numpy(q) for q in ex._fn_levels(maps, los, scales)]
    )

    # Host side, on what the pass brought back.
    result = ex.run_with_summaries(x)
    display = render.fit_overlay_display(probes.display, render.DEFAULT_MAX_SIZE).view()
    display.setflags(write=False)
    work = []
    for info in layers:
        a = result.activations[info.path]
        st = ChannelStats.from_reduced(result.stats[info.path], a.shape[1] * a.shape[2])
        levels = result.levels.get(info.path)
        if levels is None:
            levels = render.to_levels(a, *render.value_range_from_stats(st))
        layout = render.mosaic_layout(*a.shape[1:])
        work.append((a, st, top_channels(st.by("mean"), 5), levels, layout, info.path))
    row(
        "mosaic tiling, numpy (host)",
        lambda: [render.mosaic_levels(q, layout=lay) for _, _, _, q, lay, _ in work],
    )
    plain = [w for w in work if w[4].factor == 1 and w[4].up == (1, 1)]
    tiles = compile_(lambda qs: [device_tile(q, w[4].cols, w[4].rows) for q, w in zip(qs, plain)])
    on_device = [ops.convert_to_tensor(w[3]) for w in plain]
    row(
        "mosaic tiling, `keras.ops` on the device, brought back",
        lambda: [to_numpy(t) for t in tiles(on_device)],
    )
    row(
        "top-k strips",
        lambda: [render.topk_strip(a, top, (0, 1), levels=q) for a, _, top, q, _, _ in work],
    )
    row(
        "overlays",
        lambda: [
            render.overlay_pairs(display, *render.overlay_heats(a, top, result.mean_maps[p]))
            for a, _, top, _, _, p in work
        ],
    )
    views = [
        render.render_views(
            a, display, top, render.value_range_from_stats(st), mean_maps=result.mean_maps[p]
        )
        for a, st, top, _, _, p in work
    ]
    pal = palette("magma")
    row(
        "encoding: mosaic PNGs",
        lambda: [encode_palette_png(m, pal) for v in views for m in v.mosaic],
    )
    row(
        "encoding: top-k strip PNGs",
        lambda: [encode_palette_png(m, pal) for v in views for m in v.topk],
    )
    row(
        "encoding: overlay JPEGs",
        lambda: [encode_jpeg(o) for v in views if v.overlay is not None for o in v.overlay],
    )

    print(
        f"\n{args.model} (`weights=None`), {args.probes} random probes 224x224, default "
        f"layers, backend {ex.backend}; medians of {args.repeat}\n"
    )
    print("| part | CPU ms | wall ms |")
    print("|---|---|---|")
    for label, cpu, wall in rows:
        print(f"| {label} | {cpu * 1000:.0f} | {wall * 1000:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
