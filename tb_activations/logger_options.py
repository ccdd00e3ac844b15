"""The argument checks of :class:`~tb_activations.ActivationLogger`: a clear ``ValueError``
for a bad option before the logger builds anything or touches the disk."""

from __future__ import annotations

import os
from collections.abc import Sequence

from tb_activations import metadata
from tb_activations.colormaps import palette
from tb_activations.diagnostics import FIXED_SCALES
from tb_activations.probes import Probes
from tb_activations.render import NORMALIZE
from tb_activations.stats import RANK_BY

#: Most probes one logger takes: they all go through one forward pass, and every
#: step writes each layer's images once per probe (thousands of probes, e.g. a
#: training set passed by mistake, would run out of memory).
MAX_PROBES = 256


def check_options(
    *,
    log_dir: str | os.PathLike,
    run_name: str,
    histogram_bins: int,
    top_k: int,
    rank_by: str,
    normalize: str,
    views: Sequence[str],
    alpha: float,
    max_image_size: int,
    overlay_format: str,
    overlay_quality: int,
    compress_level: int,
    colormap: str,
) -> tuple[str, ...]:
    """Check the options of an :class:`~tb_activations.ActivationLogger` (see its arguments).

    Returns:
        ``views`` as a tuple.

    Raises:
        ValueError: naming the first bad option, what it was, and what would be valid.
    """
    from tb_activations.extraction import MAX_HISTOGRAM_BINS

    if (
        isinstance(histogram_bins, bool)
        or not isinstance(histogram_bins, int)
        or not 0 <= histogram_bins <= MAX_HISTOGRAM_BINS
    ):
        raise ValueError(
            "Invalid value for argument `histogram_bins`. Expected an int in "
            f"0..{MAX_HISTOGRAM_BINS} (0: no histograms). Received: histogram_bins={histogram_bins!r}"
        )
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(
            f"Invalid value for argument `top_k`. Expected a positive int. Received: top_k={top_k!r}"
        )
    if rank_by not in RANK_BY:
        raise ValueError(
            f"Invalid value for argument `rank_by`. Expected one of {RANK_BY}. Received: rank_by={rank_by!r}"
        )
    if normalize not in NORMALIZE + FIXED_SCALES:
        raise ValueError(
            f"Invalid value for argument `normalize`. Expected one of {NORMALIZE + FIXED_SCALES}. Received: normalize={normalize!r}"
        )
    views = tuple(views)
    bad = [v for v in views if v not in metadata.VIEWS]
    if bad or not views:
        raise ValueError(
            f"Invalid value for argument `views`. Expected a non-empty subset of {metadata.VIEWS}. Received: views={views!r}"
        )
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(
            f"Invalid value for argument `alpha`. Expected a float in [0, 1]. Received: alpha={alpha!r}"
        )
    if not isinstance(max_image_size, int) or max_image_size < 16:
        raise ValueError(
            f"Invalid value for argument `max_image_size`. Expected an int >= 16. Received: max_image_size={max_image_size!r}"
        )
    if overlay_format not in ("jpeg", "png"):
        raise ValueError(
            f"Invalid value for argument `overlay_format`. Expected 'jpeg' or 'png'. Received: overlay_format={overlay_format!r}"
        )
    if (
        isinstance(overlay_quality, bool)
        or not isinstance(overlay_quality, int)
        or not 1 <= overlay_quality <= 95
    ):
        # Pillow: "values above 95 should be avoided"; 100 disables parts of JPEG's compression.
        raise ValueError(
            f"Invalid value for argument `overlay_quality`. Expected an int in 1..95. Received: overlay_quality={overlay_quality!r}"
        )
    if not isinstance(compress_level, int) or not 0 <= compress_level <= 9:
        raise ValueError(
            f"Invalid value for argument `compress_level`. Expected an int in 0..9. Received: compress_level={compress_level!r}"
        )
    if (
        not isinstance(run_name, str)
        or not run_name
        or os.path.isabs(run_name)
        or ".." in run_name.split("/")
    ):
        raise ValueError(
            f"Invalid value for argument `run_name`. Expected a relative folder name. Received: run_name={run_name!r}"
        )
    palette(colormap)  # fail now on an unknown colormap, not at the first log()
    check_log_dir(os.path.join(os.fspath(log_dir), run_name))
    return views


def check_images_every(images_every: int | str) -> None:
    """Raise a ``ValueError`` unless ``images_every`` is ``"auto"`` or an int >= 1."""
    if images_every != "auto" and (
        isinstance(images_every, bool) or not isinstance(images_every, int) or images_every < 1
    ):
        raise ValueError(
            "Invalid value for argument `images_every`. Expected 'auto' or an int >= 1. "
            f"Received: images_every={images_every!r}"
        )


def check_probe_count(probes: Probes) -> None:
    """Raise a clear ``ValueError`` for more than :data:`MAX_PROBES` probes."""
    n = len(probes.names)
    if n > MAX_PROBES:
        raise ValueError(
            f"Invalid value for argument `probes`: {n} probes, more than the {MAX_PROBES} one "
            "logger takes. Every log() runs all probes through the model in one pass and writes "
            "each layer's images once per probe; probes are a few chosen images, not a "
            "dataset: pass a few, e.g. Probes(x[:16])."
        )


def check_log_dir(run_dir: str) -> None:
    """Raise a clear ``ValueError`` now if ``run_dir`` can never be created or written.

    Local paths only (``gs://``, ``s3://``... are left to the writer); touches nothing on disk.
    """
    if "://" in run_dir:
        return
    path = os.path.abspath(run_dir)
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent
    if not os.path.isdir(path):
        what = "the run directory" if path == os.path.abspath(run_dir) else "a parent"
        raise ValueError(
            f"Invalid value for argument `log_dir`: cannot write events to {run_dir!r}, "
            f"because {what} {path!r} is a file, not a directory. Pass a directory path "
            "(it is created if missing)."
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(
            f"Invalid value for argument `log_dir`: cannot write events to {run_dir!r}: "
            f"directory {path!r} is not writable by this process."
        )
