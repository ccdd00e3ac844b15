"""PNG files of the three views, the article's one-shot output, on disk.

The logger writes mosaics, top-k strips and overlays into TensorBoard event
files; :func:`save_pngs` writes the same pictures as plain PNG files, one
folder per probe::

    out_dir/<probe>/<layer>_mosaic.png    every channel, near-square grid
    out_dir/<probe>/<layer>_topk.png      the k strongest channels, strongest first
    out_dir/<probe>/<layer>_overlay.png   strongest channel | channel mean, over the probe

``/`` in nested layer paths becomes ``__`` (``backbone/block_1_relu`` ->
``backbone__block_1_relu_mosaic.png``). Files are written atomically (a
temporary file in the same folder, then ``os.replace``), so an interrupted
export never leaves a truncated PNG behind.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tb_activations.colormaps import palette
from tb_activations.encode import encode_palette_png, encode_rgb_png
from tb_activations.render import (
    DEFAULT_MAX_SIZE,
    fit_overlay_display,
    render_views,
    value_range,
)
from tb_activations.stats import channel_stats, top_channels

EXPORT_VIEWS = ("mosaic", "topk", "overlay")

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def safe_name(name: str) -> str:
    """A file-name-safe version of a layer path or probe name.

    Examples:
        >>> safe_name("mobilenetv2_1.00_96/block_1_expand_relu")
        'mobilenetv2_1.00_96__block_1_expand_relu'
    """
    out = _UNSAFE.sub("_", name.replace("/", "__")).strip(".")
    return out or "_"


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp makes the file private (0600); give it the mode open() would have.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_pngs(
    acts: Mapping[str, np.ndarray],
    display: np.ndarray,
    names: list[str],
    out_dir: str | os.PathLike,
    *,
    top_k: int = 5,
    rank_by: str = "mean",
    colormap: str = "magma",
    normalize: str = "layer",
    alpha: float = 0.5,
    max_image_size: int = DEFAULT_MAX_SIZE,
    views: tuple[str, ...] = EXPORT_VIEWS,
    records: Mapping[str, Any] | None = None,
    on_layer: Callable[[str, list[str]], None] | None = None,
) -> list[str]:
    """Render and write the PNG views of every layer for every probe.

    Args:
        acts: ``{layer_path: float32 (N, H, W, C)}``, e.g. ``logger.activations()``.
        display: uint8 ``(N, H0, W0, 3)`` probe images (``probes.display``), for overlays.
        names: One name per probe (``probes.names``): the sub-folder names.
        out_dir: Output folder, created if needed.
        top_k: Channels in the top-k strip. Defaults to 5.
        rank_by: ``"mean"`` (default), ``"max"`` or ``"std"``.
        colormap: Colormap name. Defaults to ``"magma"``.
        normalize: ``"layer"`` (default) or ``"channel"``.
        alpha: Heatmap opacity of the overlay. Defaults to 0.5.
        max_image_size: Cap on the long side of mosaics, strips and overlays. Defaults to 2048.
        views: Which of ``"mosaic"``, ``"topk"``, ``"overlay"`` to write. Defaults to all.
        records: ``ActivationLogger.log()``'s result for the same activations;
            when given, its colour scales and top channels are used, so that the
            files show exactly what TensorBoard shows. Defaults to ``None``.
        on_layer: Called as ``on_layer(layer_path, written_paths)`` after each layer.

    Returns:
        The paths written, in order (probe-major within each layer).

    Raises:
        ValueError: for a bad view name or ``names`` of the wrong length.
    """
    bad = [v for v in views if v not in EXPORT_VIEWS]
    if bad or not views:
        raise ValueError(
            f"Invalid value for argument `views`. Expected a non-empty subset of {EXPORT_VIEWS}. Received: views={views!r}"
        )
    display = np.asarray(display)
    if len(names) != display.shape[0]:
        raise ValueError(
            f"Invalid value for argument `names`: expected {display.shape[0]} names (one per probe). Received {len(names)}."
        )
    pal = palette(colormap)
    display = fit_overlay_display(display, max_image_size)  # once, not per layer
    folders = [os.path.join(os.fspath(out_dir), safe_name(n)) for n in names]
    written: list[str] = []
    for path, a in acts.items():
        a = np.asarray(a, np.float32)
        n = a.shape[0]
        record = records.get(path) if records is not None else None
        if record is not None:
            top, (lo, hi) = np.asarray(record.top), record.scale
        else:
            top = top_channels(channel_stats(a).by(rank_by), top_k)
            lo, hi = value_range(a, normalize)
        rendered = render_views(
            a,
            display,
            top,
            (lo, hi),
            views=tuple(views),
            colormap=colormap,
            alpha=alpha,
            max_size=max_image_size,
        )
        layer_files: list[str] = []
        stem = safe_name(path)
        for view, images in (("mosaic", rendered.mosaic), ("topk", rendered.topk)):
            if images is not None:
                for i in range(n):
                    data = encode_palette_png(images[i], pal)
                    layer_files.append(_write(folders[i], f"{stem}_{view}.png", data))
        if rendered.overlay is not None:
            for i in range(n):
                data = encode_rgb_png(rendered.overlay[i])
                layer_files.append(_write(folders[i], f"{stem}_overlay.png", data))
        written.extend(layer_files)
        if on_layer is not None:
            on_layer(path, layer_files)
    return written


def _write(folder: str, name: str, data: bytes) -> str:
    path = os.path.join(folder, name)
    write_atomic(path, data)
    return path
