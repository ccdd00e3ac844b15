"""Rendering activations as pictures: mosaic, top-k strip and overlay.

Maps are first turned into uint8 *levels* (palette indices, see
:mod:`tb_activations.colormaps`), tiled as levels, and only then coloured:
one byte per pixel all the way to the palette PNG. Everything here is numpy
on channels-last arrays ``(N, H, W, C)``; nothing is dropped, nothing divides
by zero, and NaN/Inf get their own colour.
"""

from __future__ import annotations

import functools
import math
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from tb_activations.colormaps import BACKGROUND_INDEX, LEVELS, NAN_INDEX, palette

NORMALIZE = ("layer", "channel")

#: Default cap, in pixels, on the long side of a rendered image.
DEFAULT_MAX_SIZE = 2048
#: Top-k cells are enlarged (nearest neighbour) to at least this many pixels.
TOPK_MIN_CELL = 64
#: Maps one pixel tall (1-D outputs ``(N, L, C)`` and dense ones ``(N, C)``,
#: which the extractor returns as ``(N, 1, L, C)`` and ``(N, 1, 1, C)``) are
#: drawn this many pixels tall (and, when also one pixel wide, this wide).
STRIP_CELL = 8


@dataclass(frozen=True)
class Grid:
    """Geometry of a tiled image: ``cols`` x ``rows`` cells of ``cell_h`` x ``cell_w`` px, ``sep`` px apart."""

    cols: int
    rows: int
    cell_h: int
    cell_w: int
    sep: int

    @property
    def height(self) -> int:
        return self.rows * (self.cell_h + self.sep) - self.sep

    @property
    def width(self) -> int:
        return self.cols * (self.cell_w + self.sep) - self.sep

    def as_dict(self) -> dict[str, int]:
        return {
            "cols": self.cols,
            "rows": self.rows,
            "cell_h": self.cell_h,
            "cell_w": self.cell_w,
            "sep": self.sep,
        }


def grid_shape(
    channels: int,
    cell_h: int = 1,
    cell_w: int = 1,
    *,
    sep: int = 1,
    max_size: int | None = None,
) -> tuple[int, int]:
    """``(cols, rows)`` of the grid of ``channels`` cells of ``cell_h`` x ``cell_w`` px
    whose image is nearest a square *in pixels*.

    ``rows = ceil(C / cols)`` (every channel has a cell; the article's ``floor``
    dropped some), and ``cols`` makes the image, ``cols * (cell_w + sep) - sep``
    by ``rows * (cell_h + sep) - sep`` px, closest to square (the smallest ratio
    of its long side to its short side; a tie goes to more columns). For
    square cells this is the article's ``cols = ceil(sqrt(C))``; 12 maps of
    60 x 124 px get 2 columns (a 365 x 249 px image), not 4 (182 x 499).
    With ``max_size``, grids that fit it at one pixel per cell come first.

    Examples:
        >>> [grid_shape(c) for c in (1, 3, 5, 64, 96)]
        [(1, 1), (2, 2), (3, 2), (8, 8), (10, 10)]
        >>> grid_shape(12, 60, 124)
        (2, 6)
    """
    if channels < 1:
        raise ValueError(
            f"Cannot tile {channels} channels: a layer output needs at least one channel."
        )
    return _grid_shape(channels, max(1, cell_h), max(1, cell_w), sep, max_size or 0)


@functools.lru_cache(maxsize=1024)
def _grid_shape(channels: int, cell_h: int, cell_w: int, sep: int, cap: int) -> tuple[int, int]:
    best: tuple = ()
    for cols in range(1, channels + 1):
        rows = -(-channels // cols)
        if cols > 1 and -(-channels // (cols - 1)) == rows:
            continue  # as many rows with a column fewer: this one only adds empty cells
        width, height = cols * (cell_w + sep) - sep, rows * (cell_h + sep) - sep
        # Mirror-image grids divide the same two numbers: their ratios tie exactly.
        aspect = max(width, height) / min(width, height)
        floor = max(cols, rows) * (1 + sep) - sep  # the long side at one pixel per cell
        key = (0, aspect, -cols) if not cap or floor <= cap else (1, floor, aspect, -cols)
        if not best or key < best[0]:
            best = (key, cols, rows)
    return best[1], best[2]


@dataclass(frozen=True)
class Layout:
    """How a layer's maps become a mosaic: a ``cols`` x ``rows`` grid, maps
    mean-pooled by ``factor``, then enlarged (nearest) ``up = (up_h, up_w)`` times."""

    cols: int
    rows: int
    factor: int
    up: tuple[int, int] = (1, 1)


def mosaic_layout(
    h: int, w: int, c: int, *, sep: int = 1, max_size: int | None = DEFAULT_MAX_SIZE
) -> Layout:
    """The :class:`Layout` of ``c`` maps of ``h`` x ``w`` px in a mosaic at most ``max_size`` px.

    Maps taller than one pixel get the grid of :func:`grid_shape` (near-square
    in pixels), pooled until the image fits. Maps one pixel tall are *strips* (a 1-D
    output, one row per channel: a channels x positions heatmap) or, when also
    one pixel wide, *points* (a dense output); they are drawn
    :data:`STRIP_CELL` px tall (less if the image would not fit), in as
    many columns as keep the image near-square; only the width of strips is pooled.

    Examples:
        >>> mosaic_layout(1, 254, 6)     # Conv1D output (N, 254, 6): one column of 8 px strips
        Layout(cols=1, rows=6, factor=1, up=(8, 1))
    """
    cap = max_size if max_size is not None and max_size > 0 else None
    if h > 1:
        cols, rows = grid_shape(c, h, w, sep=sep, max_size=cap)
        return Layout(cols, rows, shrink_factor(h, w, cols, rows, sep, max_size))
    cols, rows = grid_shape(c)  # points: square cells
    up = STRIP_CELL
    if w <= 1:
        while up > 1 and cap is not None and max(cols, rows) * (up + sep) - sep > cap:
            up -= 1
        return Layout(cols, rows, 1, (up, up))
    cols = round(math.sqrt(c * (up + sep) / (w + sep)))
    if cap is not None:
        # At least one pixel per strip must fit the height: enough columns.
        cols = max(cols, math.ceil(c / max(1, (cap + sep) // (1 + sep))))
    cols = min(max(cols, 1), c)
    rows = math.ceil(c / cols)
    while up > 1 and cap is not None and rows * (up + sep) - sep > cap:
        up -= 1
    return Layout(cols, rows, shrink_factor(1, w, cols, rows, sep, max_size), (up, 1))


def value_range(acts: np.ndarray, normalize: str = "layer") -> tuple[np.ndarray, np.ndarray]:
    """The ``(lo, hi)`` colour scale of ``acts`` ``(N, H, W, C)``.

    ``"layer"`` (default): one scale for the layer, ``lo = min(0, min)`` and
    ``hi = max`` over all probes (the article's ``vmin=0, vmax=layer max``,
    extended to signed outputs); ``"channel"``: one scale per channel, shape
    ``(C,)``, from its own min to max (a constant channel has no contrast and
    renders at the low end). Non-finite values are ignored; with none finite the scale is ``(0, 0)``.
    """
    if normalize not in NORMALIZE:
        raise ValueError(
            f"Invalid value for argument `normalize`. Expected one of {NORMALIZE}. Received: {normalize!r}"
        )
    axis = None if normalize == "layer" else (0, 1, 2)
    if np.isfinite(acts).all():
        if acts.size == 0:
            return np.float32(0), np.float32(0)
        lo, hi = acts.min(axis=axis), acts.max(axis=axis)
    else:
        lo = np.where(np.isfinite(acts), acts, np.inf).min(axis=axis, initial=np.inf)
        hi = np.where(np.isfinite(acts), acts, -np.inf).max(axis=axis, initial=-np.inf)
        lo = np.where(np.isfinite(lo), lo, 0.0)
        hi = np.where(np.isfinite(hi), hi, 0.0)
    if normalize == "layer":
        lo = np.minimum(lo, 0.0)
    lo = np.asarray(lo, np.float32)
    return lo, np.maximum(np.asarray(hi, np.float32), lo)


def value_range_from_stats(stats: Any, normalize: str = "layer") -> tuple[np.ndarray, np.ndarray]:
    """:func:`value_range` from per-probe, per-channel ``min``/``max`` already reduced.

    ``stats`` is a :class:`~tb_activations.stats.ChannelStats` (its ``min``/``max``
    ignore non-finite values and are 0 for a map without finite values), so no
    pass over the activations is needed.
    """
    if normalize not in NORMALIZE:
        raise ValueError(
            f"Invalid value for argument `normalize`. Expected one of {NORMALIZE}. Received: {normalize!r}"
        )
    axis = None if normalize == "layer" else 0
    if stats.min.size == 0:
        return np.float32(0), np.float32(0)
    lo, hi = stats.min.min(axis=axis), stats.max.max(axis=axis)
    if normalize == "layer":
        lo = np.minimum(lo, 0.0)
    lo = np.asarray(lo, np.float32)
    return lo, np.maximum(np.asarray(hi, np.float32), lo)


def to_levels(
    acts: np.ndarray,
    lo: np.ndarray | float,
    hi: np.ndarray | float,
    *,
    all_finite: bool = False,
) -> np.ndarray:
    """uint8 levels ``0..LEVELS-1`` of ``acts`` on the scale ``[lo, hi]``; NaN/Inf -> ``NAN_INDEX``.

    ``lo``/``hi`` broadcast against the last axis (per-channel scales). Where
    ``hi <= lo`` (a constant or all-zero map) every value gets level 0, the
    colormap's low end: black in ``magma`` and ``gray``. ``all_finite=True``
    (the caller has counted no NaN/Inf) skips the search for them.
    """
    lo = np.asarray(lo, np.float32)
    # The span in float64: hi - lo can overflow float32 (e.g. -3e38..3e38).
    span = np.asarray(hi, np.float64) - lo
    scale = np.where(span > 0, (LEVELS - 1) / np.where(span > 0, span, 1.0), 0.0)
    if scale.max(initial=0.0) <= np.finfo(np.float32).max:
        scale = scale.astype(np.float32)
    else:  # a subnormal span: 253 / span needs float64, and so does this (rare) map
        acts = np.asarray(acts, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        # In place after the first operation: one float buffer for the whole chain.
        scaled = np.subtract(acts, lo, dtype=np.result_type(acts, scale))
        scaled *= scale
        np.clip(scaled, 0, LEVELS - 1, out=scaled)
        levels = np.rint(scaled, out=scaled).astype(np.uint8)
    if not all_finite:
        bad = ~np.isfinite(acts)
        if bad.any():
            levels[bad] = NAN_INDEX
    return levels


def pool(acts: np.ndarray, factor: int) -> np.ndarray:
    """Mean-pool the spatial axes of ``(N, H, W, C)`` by ``factor`` (edges padded by repetition)."""
    if factor <= 1:
        return acts
    n, h, w, c = acts.shape
    fh = 1 if h == 1 else factor  # a strip stays one row (no padded copies of it)
    hp, wp = math.ceil(h / fh) * fh, math.ceil(w / factor) * factor
    if (hp, wp) != (h, w):
        acts = np.pad(acts, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)), mode="edge")
    return acts.reshape(n, hp // fh, fh, wp // factor, factor, c).mean(
        axis=(2, 4), dtype=np.float32
    )


def shrink_factor(cell_h: int, cell_w: int, cols: int, rows: int, sep: int, max_size: int) -> int:
    """Smallest integer pooling factor that keeps the tiled image within ``max_size`` px."""
    if max_size is None or max_size <= 0:
        return 1
    factor = 1
    while True:
        h, w = math.ceil(cell_h / factor), math.ceil(cell_w / factor)
        if max(rows * (h + sep) - sep, cols * (w + sep) - sep) <= max_size or (h == 1 and w == 1):
            return factor
        factor += 1


def tile(cells: np.ndarray, cols: int, sep: int = 1) -> np.ndarray:
    """Tile level cells ``(N, K, h, w)`` into ``(N, rows*(h+sep)-sep, cols*(w+sep)-sep)``.

    Cells past ``K`` and separators get ``BACKGROUND_INDEX``.
    """
    n, k, h, w = cells.shape
    rows = math.ceil(k / cols)
    out = np.full((n, rows * (h + sep) - sep, cols * (w + sep) - sep), BACKGROUND_INDEX, np.uint8)
    # The cells' places in the image, as a (N, rows, h, cols, w) view of it: every cell is
    # copied once, straight to its place (a canvas then a transposed copy cost 2x).
    sn, sy, sx = out.strides
    grid = np.lib.stride_tricks.as_strided(
        out, (n, rows, h, cols, w), (sn, (h + sep) * sy, sy, (w + sep) * sx, sx), writeable=True
    )
    full = k // cols
    if full:
        grid[:, :full] = (
            cells[:, : full * cols].reshape(n, full, cols, h, w).transpose(0, 1, 3, 2, 4)
        )
    if k > full * cols:
        grid[:, full, :, : k - full * cols] = cells[:, full * cols :].transpose(0, 2, 1, 3)
    return out


def mosaic_levels(
    levels: np.ndarray, *, sep: int = 1, layout: Layout | None = None
) -> tuple[np.ndarray, Grid]:
    """Tile every channel of levels ``(N, H, W, C)`` in a grid.

    Args:
        levels: uint8 palette indices, already pooled by ``layout.factor``.
        sep: Separator width in px. Defaults to 1.
        layout: Grid and enlargement. Defaults to :func:`mosaic_layout` of
            ``levels`` without a size cap: the near-square grid, or strips
            :data:`STRIP_CELL` px tall for maps one pixel tall.

    Returns:
        ``(images, grid)``: uint8 ``(N, grid.height, grid.width)`` palette indices.
    """
    _n, h, w, c = levels.shape
    if layout is None:
        layout = mosaic_layout(h, w, c, sep=sep, max_size=None)
    cells = levels.transpose(0, 3, 1, 2)
    up_h, up_w = layout.up
    if up_h > 1:
        cells = cells.repeat(up_h, axis=2)
    if up_w > 1:
        cells = cells.repeat(up_w, axis=3)
    grid = Grid(cols=layout.cols, rows=layout.rows, cell_h=h * up_h, cell_w=w * up_w, sep=sep)
    return tile(cells, layout.cols, sep), grid


def _take_channels(maps: np.ndarray, channels: np.ndarray) -> np.ndarray:
    """``(N, H, W, k)``: the channels ``channels[i]`` ``(N, k)`` of each probe's ``maps[i]``.

    ``np.take_along_axis(maps, channels[:, None, None, :], axis=3)``, one ``np.take`` per
    probe: 7-20x faster than its broadcast fancy index (5 ms for (8, 112, 112, 64) maps).
    """
    if len(maps) == 0:
        return np.zeros((0, *maps.shape[1:3], channels.shape[-1]), maps.dtype)
    return np.stack([np.take(m, c, axis=-1) for m, c in zip(maps, channels)])


def topk_levels(
    levels: np.ndarray,
    channels: np.ndarray,
    *,
    sep: int = 1,
    min_cell: int = TOPK_MIN_CELL,
    max_size: int | None = None,
) -> np.ndarray:
    """One strip per probe of the ``channels`` ``(N, k)`` maps, enlarged to at least ``min_cell`` px.

    Maps one pixel tall (1-D outputs) are also made at least :data:`STRIP_CELL` px tall.
    With ``max_size``, the enlargement stops where the strip would exceed it
    (the maps are never shrunk here: :func:`topk_strip` pools them first).

    Returns:
        uint8 ``(N, h * up_h, k * (w * up + sep) - sep)`` with ``up = ceil(min_cell / max(h, w))``
        (at least 1) and ``up_h = max(up, STRIP_CELL)`` for ``h == 1``, else ``up``.
    """
    _n, h, w, _ = levels.shape
    k = channels.shape[1]
    picked = _take_channels(levels, channels).transpose(0, 3, 1, 2)
    up = max(1, math.ceil(min_cell / max(h, w)))
    cap = max_size if max_size is not None and max_size > 0 else None
    if cap is not None:
        while up > 1 and (k * (w * up + sep) - sep > cap or h * up > cap):
            up -= 1
    up_h = max(up, STRIP_CELL) if h == 1 else up
    if cap is not None:
        while up_h > up and h * up_h > cap:
            up_h -= 1
    if up_h > 1:
        picked = picked.repeat(up_h, axis=2)
    if up > 1:
        picked = picked.repeat(up, axis=3)
    return tile(picked, cols=k, sep=sep)


def topk_strip(
    acts: np.ndarray,
    top: np.ndarray,
    scale: tuple[Any, Any],
    *,
    sep: int = 1,
    max_size: int | None = DEFAULT_MAX_SIZE,
    levels: np.ndarray | None = None,
    levels_factor: int = 1,
    all_finite: bool = False,
) -> np.ndarray:
    """Levels ``(N, h, w)`` of the top-k strip, at most ``max_size`` px on its long side.

    The ``k`` maps are mean-pooled to fit, like the mosaic (never subsampled:
    a fine pattern is averaged, not aliased), then enlarged as
    :func:`topk_levels` allows within ``max_size``.

    Args:
        acts: float ``(N, H, W, C)`` activations.
        top: int ``(N, k)`` channels, strongest first.
        scale: ``(lo, hi)`` colour scale (scalars, or ``(C,)`` per channel).
        sep: Separator width in px.
        max_size: Cap on the long side; ``None`` or 0: none.
        levels: The mosaic's levels of ``acts`` when computed, pooled by
            ``levels_factor``; reused when that pooling is enough for the strip.
        levels_factor: Pooling factor of ``levels``.
        all_finite: The caller has counted no NaN/Inf in ``acts``.
    """
    _n, h, w, _c = acts.shape
    k = top.shape[1]
    cap = max_size if max_size is not None and max_size > 0 else None
    factor = 1 if cap is None else shrink_factor(h, w, k, 1, sep, cap)
    if levels is not None and levels_factor >= factor:
        strip = topk_levels(levels, top, sep=sep, max_size=cap)
    else:
        # Only the k strip channels are pooled, from the activations: cheap next to the mosaic.
        picked = _take_channels(acts, top)
        lo, hi = (np.asarray(v, np.float32) for v in scale)
        if lo.ndim == 1:  # per-channel scales follow their channel
            lo, hi = lo[top][:, None, None, :], hi[top][:, None, None, :]
        pooled = to_levels(pool(picked, factor), lo, hi, all_finite=all_finite)
        order = np.broadcast_to(np.arange(k), top.shape)
        strip = topk_levels(pooled, order, sep=sep, max_size=cap)
    if cap is not None and max(strip.shape[1:]) > cap:
        # Only when k cells of one pixel do not fit (k > max_size / 2): drop columns.
        step = -(-max(strip.shape[1:]) // cap)
        strip = strip[:, ::step, ::step]
    return strip


def colorize(levels: np.ndarray, colormap: str = "magma") -> np.ndarray:
    """RGB uint8 ``(..., 3)`` of palette indices ``levels`` in ``colormap``."""
    return palette(colormap)[levels]


def _unit(m: np.ndarray) -> np.ndarray:
    """Scale a map to [0, 1] by its own finite range; constant or non-finite maps become 0."""
    # float64: the range of float32 values can overflow float32 (-3e38..3e38).
    m = np.where(np.isfinite(m), m, np.nan).astype(np.float64)
    if np.isnan(m).all():
        return np.zeros(m.shape, dtype=np.float32)
    lo, hi = np.nanmin(m), np.nanmax(m)
    out = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    return np.nan_to_num(out, nan=0.0).astype(np.float32)


def _resize(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    h, w = size
    if m.shape == (h, w):
        return m
    return np.asarray(
        Image.fromarray(m.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR)
    )


def overlay(
    image: np.ndarray, heat: np.ndarray, *, colormap: str = "magma", alpha: float = 0.5
) -> np.ndarray:
    """Blend a heatmap ``(h, w)`` over ``image`` ``(H, W, 3)`` uint8, upsampled to its size.

    The heatmap is scaled to [0, 1] by its own range (the overlay shows *where*,
    not how much), coloured with ``colormap`` and blended with weight ``alpha``.
    """
    a = _alpha_weight(alpha)
    out = np.empty((*image.shape[:2], 3), np.uint8)
    idx = _heat_levels([heat], image.shape[:2])[0]
    _blend(_image_terms(image, a), idx, colormap, a, out)
    return out


def _alpha_weight(alpha: float) -> int:
    """``alpha`` in 1/256: the weight of the fixed-point blend."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(
            f"Invalid value for argument `alpha`. Expected a float in [0, 1]. Received: {alpha}"
        )
    return round(float(alpha) * 256)


def _heat_levels(heats: Any, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``(M, H, W)`` palette levels of heatmaps ``(h, w)``, each on its own range,
    upsampled (bilinear) to ``size``."""
    h, w = size
    units = np.empty((len(heats), h, w), np.float32)
    for i, heat in enumerate(heats):
        units[i] = _resize(_unit(np.asarray(heat, np.float32)), size)
    # In place, one float buffer for all maps: rint(unit * (LEVELS - 1)), clipped.
    units *= LEVELS - 1
    np.rint(units, out=units)
    np.clip(units, 0, LEVELS - 1, out=units)
    return units.astype(np.uint8)


# The blend ``(image * (256 - a) + colour * a + 128) >> 8`` per channel, in uint16
# (at most 255 * 256 + 128, no overflow), computed for the three channels at once:
# each pixel's channels are 16-bit lanes of one little-endian uint64 (the fourth lane
# unused), the image's share is computed once per image and the colour's share is a
# 256-entry table, so a pixel costs one table look-up and one addition; no lane
# overflows, so lanes never carry into each other, and the high byte of each lane is
# the blended channel. Bit for bit the per-channel uint16 arithmetic.
_LANES = np.dtype("<u2")
_PACKED = np.dtype("<u8")


@functools.lru_cache(maxsize=64)
def _colour_terms(colormap: str, a: int) -> np.ndarray:
    """``(256,)`` packed ``colour * a`` of each palette index of ``colormap``."""
    lanes = np.zeros((256, 4), _LANES)
    lanes[:, :3] = palette(colormap)
    lanes *= a
    terms = lanes.view(_PACKED)[:, 0]
    terms.setflags(write=False)
    return terms


def _image_terms(images: np.ndarray, a: int) -> np.ndarray:
    """Packed ``image * (256 - a) + 128`` of uint8 RGB images ``(..., H, W, 3)``: ``(..., H, W)``.

    The last result for a read-only batch ``(N, H, W, 3)`` is kept while that array
    lives: a logger draws every layer's overlays on the same images.
    """
    global _last_terms
    if images.ndim != 4 or images.flags.writeable:
        return _compute_image_terms(images, a)
    last = _last_terms
    if last is not None and last[0]() is images and last[1] == a:
        return last[2]
    terms = _compute_image_terms(images, a)
    _last_terms = (weakref.ref(images, _forget_terms), a, terms)
    return terms


def _forget_terms(ref: weakref.ref) -> None:
    """The images of the kept terms are gone: so are the terms."""
    global _last_terms
    last = _last_terms
    if last is not None and last[0] is ref:
        _last_terms = None


_last_terms: tuple[weakref.ref, int, np.ndarray] | None = None


def _compute_image_terms(images: np.ndarray, a: int) -> np.ndarray:
    lanes = np.zeros((*images.shape[:-1], 4), _LANES)
    lanes[..., :3] = images
    lanes *= 256 - a
    lanes += 128
    return lanes.view(_PACKED)[..., 0]


def _blend(
    image_terms: np.ndarray, levels: np.ndarray, colormap: str, a: int, out: np.ndarray
) -> None:
    """Write into ``out`` ``(..., H, W, 3)`` uint8 the blend of the images (their packed
    terms) with the colours of palette ``levels`` ``(..., H, W)``."""
    packed = np.take(_colour_terms(colormap, a), levels)
    packed += image_terms
    high = packed.view(np.uint8).reshape(*packed.shape, 8)
    for c in range(3):  # one channel at a time: long inner loops (2x faster than [..., 1:6:2])
        out[..., c] = high[..., 2 * c + 1]


def _channel_mean(maps: np.ndarray, mean_map: np.ndarray | None = None) -> np.ndarray:
    """The mean over channels of ``maps`` ``(h, w, C)`` (non-finite values as 0): ``mean_map``
    when given and finite (reduced on the device), else computed here."""
    if mean_map is None or not np.isfinite(mean_map).all():
        finite = np.where(np.isfinite(maps), maps, 0.0)
        with np.errstate(over="ignore"):
            mean_map = finite.mean(axis=-1)
    if not np.isfinite(mean_map).all():
        finite = np.where(np.isfinite(maps), maps, 0.0)
        # The float32 sum of huge finite values overflowed: redo this probe in float64.
        mean_map = finite.mean(axis=-1, dtype=np.float64)
    return mean_map


def overlay_pair(
    image: np.ndarray,
    maps: np.ndarray,
    channel: int,
    *,
    colormap: str = "magma",
    alpha: float = 0.5,
    sep: int = 1,
    mean_map: np.ndarray | None = None,
) -> np.ndarray:
    """The overlay view of one probe: ``[strongest channel | mean over channels]`` side by side.

    Args:
        image: uint8 ``(H, W, 3)`` display image of the probe.
        maps: float32 ``(h, w, C)`` activations of the probe.
        channel: Index of the strongest channel.
        mean_map: The mean over channels ``(h, w)`` when already computed
            (on the device); computed from ``maps`` when ``None`` or not finite.

    Returns:
        uint8 RGB ``(H, 2 * W + sep, 3)``, separator in the background colour.
    """
    return overlay_pairs(
        image[None],
        maps[None, :, :, channel],
        _channel_mean(maps, mean_map)[None],
        colormap=colormap,
        alpha=alpha,
        sep=sep,
    )[0]


def overlay_heats(
    acts: np.ndarray, top: np.ndarray, mean_maps: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The two heatmaps of each probe's overlay view: ``(strongest, mean)``, each ``(N, h, w)``.

    Args:
        acts: float32 ``(N, h, w, C)`` activations.
        top: int ``(N, k)`` channels, strongest first.
        mean_maps: ``(N, h, w)`` channel means when already reduced (on the device).
    """
    strongest = _take_channels(acts, np.asarray(top)[:, :1])[..., 0]
    means = [
        _channel_mean(acts[i], None if mean_maps is None else mean_maps[i])
        for i in range(len(acts))
    ]
    return strongest, np.stack(means) if means else np.zeros(strongest.shape, np.float32)


def overlay_pairs(
    display: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    *,
    colormap: str = "magma",
    alpha: float = 0.5,
    sep: int = 1,
) -> np.ndarray:
    """Overlay views of several probes at once: ``[left | right]`` heatmaps over each image.

    Args:
        display: uint8 ``(N, H, W, 3)`` probe images.
        left: ``(N, h, w)`` heatmaps of the left halves (the strongest channel).
        right: ``(N, h, w)`` heatmaps of the right halves (the mean over channels).

    Returns:
        uint8 RGB ``(N, H, 2 * W + sep, 3)``: each pair as :func:`overlay_pair`.
    """
    a = _alpha_weight(alpha)
    n, h, w = display.shape[:3]
    out = np.empty((n, h, 2 * w + sep, 3), np.uint8)
    # A read-only display's terms are computed once, for all its layers.
    terms = _image_terms(display, a)
    levels = _heat_levels([*left, *right], (h, w))
    _blend(terms, levels[:n], colormap, a, out[:, :, :w])
    _blend(terms, levels[n:], colormap, a, out[:, :, w + sep :])
    out[:, :, w : w + sep] = palette(colormap)[BACKGROUND_INDEX]
    return out


def fit_images(images: np.ndarray, max_h: float, max_w: float) -> np.ndarray:
    """uint8 images ``(N, H, W, 3)`` box-filtered down to fit ``max_h`` x ``max_w``, aspect kept.

    The box filter is an area average, like the mean-pooled mosaics. Returns
    ``images`` itself when they already fit, so that callers may cache the
    result and pass it again at no cost.
    """
    n, h, w = images.shape[:3]
    if h <= max_h and w <= max_w:
        return images
    from PIL import Image

    s = min(max_h / h, max_w / w)
    size = (max(1, math.floor(w * s)), max(1, math.floor(h * s)))
    return np.stack(
        [np.asarray(Image.fromarray(images[i]).resize(size, Image.BOX)) for i in range(n)]
    )


def fit_overlay_display(display: np.ndarray, max_size: int, sep: int = 1) -> np.ndarray:
    """Probe images ``(N, H, W, 3)`` shrunk so that an overlay pair (``2 * W + sep`` px wide)
    fits ``max_size`` px; see :func:`fit_images`."""
    if max_size is None or max_size <= 0:
        return display
    return fit_images(display, max_size, (max_size - sep) / 2)


def render_mosaic(
    acts: np.ndarray,
    *,
    colormap: str = "magma",
    normalize: str = "layer",
    sep: int = 1,
    max_size: int = DEFAULT_MAX_SIZE,
) -> np.ndarray:
    """RGB mosaic of every channel: uint8 ``(rows*(h+sep)-sep, cols*(w+sep)-sep, 3)``.

    ``cols``, ``rows`` and the cell size ``h`` x ``w`` are those of
    :func:`mosaic_layout`: for maps taller than one pixel, the near-square
    grid of :func:`grid_shape` and the maps mean-pooled to fit ``max_size``;
    maps one pixel tall (1-D and dense outputs) are drawn as strips
    :data:`STRIP_CELL` px tall. The long side exceeds ``max_size`` only when
    even one pixel per channel does not fit.

    Args:
        acts: ``(H, W, C)`` for one probe, or ``(N, H, W, C)`` (then the result
            has a leading ``N``); any real dtype, computed as float32.
        colormap: See :func:`tb_activations.colormaps.palette`. Defaults to ``"magma"``.
        normalize: ``"layer"`` or ``"channel"``. Defaults to ``"layer"``.
        sep: Separator width in px. Defaults to 1.
        max_size: Cap on the long side; cells are mean-pooled to fit. Defaults to 2048.

    Examples:
        >>> render_mosaic(np.random.rand(7, 7, 5).astype("float32")).shape   # 3 x 2 grid
        (15, 23, 3)
    """
    acts, single = _batch(acts)
    lo, hi = value_range(acts, normalize)
    _, h, w, c = acts.shape
    layout = mosaic_layout(h, w, c, sep=sep, max_size=max_size)
    acts = pool(acts, layout.factor)
    images, _ = mosaic_levels(to_levels(acts, lo, hi), sep=sep, layout=layout)
    rgb = colorize(images, colormap)
    return rgb[0] if single else rgb


def render_topk(
    acts: np.ndarray,
    k: int = 5,
    *,
    rank_by: str = "mean",
    colormap: str = "magma",
    normalize: str = "layer",
    sep: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """RGB strip of the ``k`` strongest channels and their indices.

    Returns:
        ``(image, channels)``: uint8 ``(N?, h', k'*(w'+sep)-sep, 3)`` and int
        ``(N?, k')``, ``k' = min(k, C)``, with the cell size ``h'`` x ``w'`` of
        :func:`topk_levels` (no size cap here; :func:`topk_strip` pools to a cap).
    """
    from tb_activations.stats import channel_stats, top_channels

    acts, single = _batch(acts)
    lo, hi = value_range(acts, normalize)
    channels = top_channels(channel_stats(acts).by(rank_by), k)
    rgb = colorize(topk_levels(to_levels(acts, lo, hi), channels, sep=sep), colormap)
    return (rgb[0], channels[0]) if single else (rgb, channels)


def _batch(acts: np.ndarray) -> tuple[np.ndarray, bool]:
    acts = np.asarray(acts)
    if acts.dtype.kind not in "biuf":
        raise ValueError(
            "Expected activations of a real number dtype (float, int or bool). "
            f"Received dtype: {acts.dtype}"
        )
    single = acts.ndim == 3
    if single:
        acts = acts[None]
    if acts.ndim != 4:
        raise ValueError(
            f"Expected activations of shape (H, W, C) or (N, H, W, C). Received shape: {acts.shape}"
        )
    if 0 in acts.shape:
        raise ValueError(
            f"Expected activations with at least one probe, row, column and channel. "
            f"Received shape: {acts.shape}"
        )
    # float64 values beyond float32's range become +-Inf, drawn in the NaN/Inf colour.
    with np.errstate(over="ignore"):
        return acts.astype(np.float32, copy=False), single


@dataclass(frozen=True)
class LayerViews:
    """The rendered views of one layer for every probe (before encoding).

    Attributes:
        grid: Geometry of the mosaic, in its pixels.
        mosaic: uint8 palette indices ``(N, grid.height, grid.width)``, or ``None``.
        topk: uint8 palette indices ``(N, h, w)`` of the top-k strips, or ``None``.
        overlay: uint8 RGB ``(N, H, 2 * W + 1, 3)`` at the probes' size (shrunk to
            fit ``max_size``), or ``None`` (not asked, or maps one pixel tall:
            no position to overlay).
    """

    grid: Grid
    mosaic: np.ndarray | None
    topk: np.ndarray | None
    overlay: np.ndarray | None


def render_views(
    acts: np.ndarray,
    display: np.ndarray,
    top: np.ndarray,
    scale: tuple[Any, Any],
    *,
    views: tuple[str, ...] = ("mosaic", "topk", "overlay"),
    colormap: str = "magma",
    alpha: float = 0.5,
    max_size: int = DEFAULT_MAX_SIZE,
    mean_maps: np.ndarray | None = None,
    all_finite: bool = False,
    levels: np.ndarray | None = None,
) -> LayerViews:
    """Render the mosaic, top-k strip and overlay of one layer for every probe.

    The one rendering path shared by the logger (TensorBoard) and the PNG export.

    Args:
        acts: float32 ``(N, H, W, C)`` activations.
        display: uint8 ``(N, H0, W0, 3)`` probe images, for overlays.
        top: int ``(N, k)`` channels of the strip, strongest first.
        scale: ``(lo, hi)`` colour scale (scalars, or ``(C,)`` per channel).
        views: Which views to render.
        colormap: Colormap of the overlays (mosaic and strip are palette indices).
        alpha: Heatmap opacity of the overlays.
        max_size: Cap on the long side of mosaic, strip and overlay.
        mean_maps: ``(N, H, W)`` channel means when already reduced (on the device).
        all_finite: The caller has counted no NaN/Inf in ``acts``.
        levels: :func:`to_levels` of ``acts`` on ``scale`` when already computed
            (on the device); used unless the maps must be pooled first.
    """
    _n, h, w, c = acts.shape
    layout = mosaic_layout(h, w, c, sep=1, max_size=max_size)
    if not views:
        # No picture (a step off the logger's images schedule): the grid alone, from the
        # pooled size of one map, for the layer's metadata.
        ph, pw = pool(acts[:1, :, :, :1], layout.factor).shape[1:3]
        up_h, up_w = layout.up
        grid = Grid(cols=layout.cols, rows=layout.rows, cell_h=ph * up_h, cell_w=pw * up_w, sep=1)
        return LayerViews(grid=grid, mosaic=None, topk=None, overlay=None)
    if levels is None or layout.factor != 1:
        levels = to_levels(pool(acts, layout.factor), *scale, all_finite=all_finite)
    mosaic, grid = mosaic_levels(levels, sep=1, layout=layout)
    strip = None
    if "topk" in views:
        strip = topk_strip(
            acts,
            top,
            scale,
            sep=1,
            max_size=max_size,
            levels=levels,
            levels_factor=layout.factor,
            all_finite=all_finite,
        )
    overlays = None
    if "overlay" in views and h > 1:
        overlays = overlay_pairs(
            fit_overlay_display(display, max_size),
            *overlay_heats(acts, top, mean_maps),
            colormap=colormap,
            alpha=alpha,
        )
    return LayerViews(
        grid=grid,
        mosaic=mosaic if "mosaic" in views else None,
        topk=strip,
        overlay=overlays,
    )
