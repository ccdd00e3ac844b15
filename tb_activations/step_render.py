"""Rendering one logged step: each layer's views, statistics and colour scale as summary values.

The middle of :class:`~tb_activations.ActivationLogger`'s pipeline: it takes the
step's activations (and what the device reduced with them) from the extraction,
and hands summary values (images encoded in the logger's thread pool) to the
diagnostics and the writer. Functions take the logger for its options and its
rendering state (``_fixed_scales``, ``_executor``, the fitted overlay display).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tb_activations import metadata
from tb_activations.colormaps import palette
from tb_activations.diagnostics import FIXED_SCALES
from tb_activations.encode import (
    default_executor,
    encode_jpeg,
    encode_palette_png,
    encode_rgb_png,
)
from tb_activations.layer_selection import LayerInfo
from tb_activations.render import (
    Grid,
    fit_images,
    render_views,
    value_range,
    value_range_from_stats,
)
from tb_activations.stats import ChannelStats, channel_stats, top_channels
from tb_activations.summary import float_tensor_value, image_value, scalar_value

if TYPE_CHECKING:
    from tb_activations.logger import ActivationLogger


@dataclass(frozen=True)
class LayerRecord:
    """What one ``log()`` computed for one layer (returned to the caller, plain data).

    Attributes:
        info: The layer.
        stats: Per-channel statistics.
        top: int ``(N, k)`` top channels per probe, strongest first.
        grid: Mosaic geometry in PNG pixels.
        scale: ``(lo, hi)`` colour scale used.
    """

    info: LayerInfo
    stats: ChannelStats
    top: np.ndarray
    grid: Grid
    scale: tuple[Any, Any]


#: ``images_every="auto"``: every log of the first ``AUTO_IMAGES_FIRST`` writes the
#: pictures, then every ``AUTO_IMAGES_EVERY``-th (19 of 100 logs; 82 MB a VGG16 step).
AUTO_IMAGES_FIRST = 10
AUTO_IMAGES_EVERY = 10


def images_due(images_every: int | str, index: int) -> bool:
    """Whether log number ``index`` (0-based, per logger) writes the pictures.

    ``"auto"``: ``index < 10 or index % 10 == 0``; an int ``k``: ``index % k == 0``.
    """
    if images_every == "auto":
        return index < AUTO_IMAGES_FIRST or index % AUTO_IMAGES_EVERY == 0
    return index % int(images_every) == 0


def render_step(
    logger: ActivationLogger,
    acts: dict[str, np.ndarray],
    step: int,
    reduced: dict[str, np.ndarray] | None = None,
    mean_maps: dict[str, np.ndarray] | None = None,
    levels: dict[str, np.ndarray] | None = None,
    *,
    images: bool = True,
) -> tuple[dict[str, LayerRecord], list]:
    """Render one step's layers and encode their images (in the logger's thread pool).

    Each layer goes through ``logger._render_layer`` (what a test may replace).

    Returns:
        ``({layer_path: LayerRecord}, summary values)``: the layers' images,
        scalars, statistics and colour scales, in layer order.
    """
    if logger._executor is None:
        logger._executor = default_executor(background=not logger.blocking)
    records: dict[str, LayerRecord] = {}
    encoded: list = []  # futures, in slot order
    slots: list[tuple[str, str, int, int, str]] = []
    values: list = []
    pal = palette(logger.colormap)
    for info in logger.layers:
        a = acts[info.path]
        stats = (
            ChannelStats.from_reduced(reduced[info.path], a.shape[1] * a.shape[2])
            if reduced is not None
            and a.shape[-1] > 0
            # A float32 sum overflowed on the device (finite values near 3e38):
            # this layer's statistics are redone on the host in float64.
            and np.isfinite(reduced[info.path]).all()
            else None
        )
        means = None if mean_maps is None else mean_maps[info.path]
        # Device levels exist only where they match this layer's scale: the extractor
        # makes them for normalize="layer" alone, and drops a layer whose statistics
        # are not finite (then `stats` is None and the host redoes both).
        q = None if levels is None else levels.get(info.path)
        record, layer_jobs, layer_slots = logger._render_layer(
            info, a, pal, step, stats, means, q, images=images
        )
        records[info.path] = record
        # Encoding starts now, in the pool, while the next layers are rendered.
        encoded.extend(logger._executor.submit(fn, *args) for fn, *args in layer_jobs)
        slots.extend(layer_slots)
        values.extend(layer_values(logger, record, a))
    pngs = [future.result() for future in encoded]
    # Group the PNGs of each (layer, view) into one image summary.
    start = 0
    for tag, desc, width, height, count in slots:
        values.append(
            image_value(
                tag, pngs[start : start + count], width=width, height=height, description=desc
            )
        )
        start += count
    return records, values


def render_layer(
    logger: ActivationLogger,
    info: LayerInfo,
    a: np.ndarray,
    pal: np.ndarray,
    step: int,
    stats: ChannelStats | None = None,
    mean_maps: np.ndarray | None = None,
    levels: np.ndarray | None = None,
    *,
    images: bool = True,
) -> tuple[LayerRecord, list[tuple], list[tuple]]:
    """Render one layer's views at this step (images not encoded yet).

    With ``images=False`` (a step off the logger's ``images_every`` schedule)
    no view is rendered: the record, its grid and no jobs.

    Returns:
        ``(record, jobs, slots)``: the layer's :class:`LayerRecord`; the encoding
        jobs ``(encode_fn, *args)``, one per image; and per (layer, view) the
        image summary to group them in, ``(tag, description, width, height, count)``.

    Raises:
        ValueError: for a layer with zero channels.
    """
    n, c = a.shape[0], a.shape[-1]
    if c == 0:
        raise ValueError(
            f"Layer {info.path!r} has an output with zero channels (shape {a.shape[1:]}); nothing to render."
        )
    if stats is None:
        stats = channel_stats(a)
    top = top_channels(stats.by(logger.rank_by), logger.top_k)
    lo, hi = color_scale(logger, info, a, stats)
    rendered = render_views(
        a,
        logger._overlay_display(),
        top,
        (lo, hi),
        views=logger.views if images else (),
        colormap=logger.colormap,
        alpha=logger.alpha,
        max_size=logger.max_image_size,
        mean_maps=mean_maps,
        all_finite=stats.nonfinite_count == 0,
        levels=levels,
    )
    grid = rendered.grid
    record = LayerRecord(info=info, stats=stats, top=top, grid=grid, scale=(lo, hi))
    jobs: list[tuple] = []
    slots: list[tuple] = []
    desc = description(logger, info, a.shape[1:], stats)
    for view, images in (("mosaic", rendered.mosaic), ("topk", rendered.topk)):
        if images is not None:
            jobs += [(encode_palette_png, img, pal, logger.compress_level) for img in images]
            tag = metadata.view_tag(info.path, view)
            slots.append((tag, desc, images.shape[2], images.shape[1], n))
    if rendered.overlay is not None:
        if logger.overlay_format == "jpeg":
            jobs += [(encode_jpeg, p, logger.overlay_quality) for p in rendered.overlay]
        else:
            jobs += [(encode_rgb_png, p, logger.compress_level) for p in rendered.overlay]
        height, width = rendered.overlay.shape[1:3]
        slots.append((metadata.view_tag(info.path, "overlay"), desc, width, height, n))
    return record, jobs, slots


def color_scale(
    logger: ActivationLogger, info: LayerInfo, a: np.ndarray, stats: ChannelStats | None = None
) -> tuple[Any, Any]:
    """The ``(lo, hi)`` colour scale of layer ``info`` for activations ``a`` at this step."""

    def of(mode: str) -> tuple[Any, Any]:
        # From the reduced statistics when there are some: no pass over `a`.
        return value_range(a, mode) if stats is None else value_range_from_stats(stats, mode)

    if logger.normalize not in FIXED_SCALES:
        return of(logger.normalize)
    lo, hi = of("layer")
    fixed = logger._fixed_scales.get(info.path)
    if fixed is None or logger.normalize == "running_max":
        if fixed is not None:
            lo, hi = np.minimum(fixed[0], lo), np.maximum(fixed[1], hi)
        fixed = logger._fixed_scales[info.path] = (lo, hi)
    return fixed


def scale_of(info: LayerInfo, a: np.ndarray, reduced: np.ndarray) -> tuple[Any, Any]:
    """The layer scale of ``a`` from its device-reduced statistics (host pass if they overflowed)."""
    if a.shape[-1] == 0 or not np.isfinite(reduced).all():
        return value_range(a, "layer")
    stats = ChannelStats.from_reduced(reduced, a.shape[1] * a.shape[2])
    return value_range_from_stats(stats, "layer")


def layer_values(logger: ActivationLogger, record: LayerRecord, a: np.ndarray) -> list:
    """The scalars, statistics and colour scale of one layer at this step (summary values)."""
    info, stats = record.info, record.stats
    # float64: the float32 mean of huge (finite) channel means can overflow.
    finite_mean = float(np.mean(stats.mean, dtype=np.float64)) if stats.mean.size else 0.0
    content = layer_content(logger, info, a.shape[1:], record.grid)
    return [
        scalar_value(
            metadata.scalar_tag(info.path, "mean_activation"),
            finite_mean,
            description=f"Mean activation of `{info.path}` over probes, positions and channels.",
        ),
        scalar_value(
            metadata.scalar_tag(info.path, "dead_fraction"),
            stats.dead_fraction,
            description=f"Fraction of channels of `{info.path}` that are zero on every probe.",
        ),
        scalar_value(
            metadata.scalar_tag(info.path, "nonfinite_count"),
            float(stats.nonfinite_count),
            description=f"NaN/Inf values in `{info.path}`.",
        ),
        float_tensor_value(
            metadata.stats_tag(info.path),
            stats.stacked(),
            content=content,
            description=f"Per-probe, per-channel mean/max/min/std of `{info.path}`.",
        ),
        # The colour scale of this step's views: the dashboard's colour bar.
        float_tensor_value(
            metadata.scale_tag(info.path),
            np.stack(np.broadcast_arrays(*record.scale)),
            content=metadata.create_scale_content(logger.colormap),
            description=f"Colour scale [lo, hi] of the views of `{info.path}` at this step.",
        ),
    ]


def no_cka_note(logger: ActivationLogger, shape: tuple) -> str | None:
    """Why a layer whose maps are ``shape`` ``(H, W, C)`` gets no CKA, or ``None``."""
    tracker = logger._diagnostics.tracker
    full = (len(logger.probes.names), *shape)
    if tracker is None or tracker.has_cka(full):
        return None
    from tb_activations.drift import MIN_CKA_SAMPLES

    n, samples = len(logger.probes.names), tracker.samples(full)
    return (
        f"No CKA drift: {samples} samples ({n} probes x {samples // max(1, n)} positions), fewer than the {MIN_CKA_SAMPLES} CKA needs to "
        "mean anything. Log more probes."
    )


def layer_content(
    logger: ActivationLogger, info: LayerInfo, shape: tuple, grid: Grid
) -> dict[str, Any]:
    """The plugin content of a layer whose maps are ``shape`` ``(H, W, C)``."""
    content = metadata.create_layer_content(
        layer=info.path,
        index=info.index,
        class_name=info.class_name,
        shape=shape,
        probes=logger.probes.names,
        labels=logger.probes.labels,
        grid=grid.as_dict(),
        top_k=min(logger.top_k, shape[-1]),
        rank_by=logger.rank_by,
        colormap=logger.colormap,
        normalize=logger.normalize,
    )
    content["views"] = {
        v: t
        for v, t in content["views"].items()
        if v in logger.views and (v != "overlay" or shape[0] > 1)
    }
    return content


def description(
    logger: ActivationLogger, info: LayerInfo, shape: tuple, stats: ChannelStats
) -> str:
    """The layer's description: what holds at every step only, since TensorBoard keeps
    a tag's first description (step values go to the scalars and the step's text)."""
    k = min(logger.top_k, shape[-1])
    lines = [
        f"**`{info.path}`** ({info.class_name}), output {' x '.join(str(s) for s in shape)}, "
        f"{shape[-1]} channels.",
        "",
        f"Mosaic: every channel; top-k strip: the top {k} channels by {logger.rank_by} of each "
        f"probe at that step (listed per step in `{metadata.CHANNEL_PROBES_TAG}`); dead "
        f"channels per step in `{metadata.scalar_tag(info.path, 'dead_fraction')}`.",
    ]
    note = no_cka_note(logger, shape)
    if note:
        lines += ["", note]
    if shape[0] == 1 and "overlay" in logger.views:
        lines += [
            "",
            "No overlay: the output is one pixel tall (a 1-D or dense output), with no "
            "spatial extent to lay over the probe image.",
        ]
    lines += [
        "",
        "NaN/Inf values, shown in magenta, are counted per step in "
        f"`{metadata.scalar_tag(info.path, 'nonfinite_count')}`.",
    ]
    return "\n".join(lines)


def warn_no_cka(logger: ActivationLogger, acts: dict[str, np.ndarray]) -> None:
    """Warn once (at the first log) about the layers that get no CKA, and why."""
    import warnings

    short = [p for p, a in acts.items() if no_cka_note(logger, a.shape[1:])]
    if short:
        note = no_cka_note(logger, acts[short[0]].shape[1:])
        warnings.warn(
            f"tb_activations: no CKA drift for {len(short)} layer(s) "
            f"({', '.join(short[:5])}{' ...' if len(short) > 5 else ''}): too few samples. "
            f"{short[0]}: {note}",
            RuntimeWarning,
            stacklevel=3,
        )


def probe_images(logger: ActivationLogger):
    """The probes' display images, written once per logger, for the dashboard's overlays."""
    display = fit_images(logger.probes.display, logger.max_image_size, logger.max_image_size)
    pngs = [encode_rgb_png(img, logger.compress_level) for img in display]
    names = ", ".join(logger.probes.names)
    return image_value(
        metadata.PROBE_IMAGES_TAG,
        pngs,
        width=display.shape[2],
        height=display.shape[1],
        description=f"The probe images, in order: {names}.",
    )
