"""Pure functions behind the Activations plugin's HTTP routes.

Each function reads through a TensorBoard data provider
(``tensorboard.data.provider.DataProvider``) and returns plain data (dicts,
lists, bytes), so that it can be tested without HTTP and so that remote log
directories work as they do for the stock dashboards. Errors are raised as
``tensorboard.errors`` values: :class:`~tensorboard.errors.InvalidArgumentError`
(HTTP 400) for bad parameters, :class:`~tensorboard.errors.NotFoundError`
(HTTP 404) for an unknown run, layer, tag, step or index.

Like :mod:`tb_activations.metadata`, this module must not import TensorFlow
or Keras: TensorBoard imports the plugin at start-up.

Examples:
    >>> data = list_layers(provider, ctx, experiment_id="", run="activations")
    >>> [(lay["layer"], lay["shape"]) for lay in data["layers"]]
    [('conv_1', [16, 16, 8]), ('conv_2', [8, 8, 16])]
"""

from __future__ import annotations

import io
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from tensorboard import errors
from tensorboard.data import provider as tb_provider

from tb_activations import metadata

#: Plugin name of ``tf.summary.image`` data (the mosaic, top-k and overlay views).
IMAGES_PLUGIN = "images"

#: Plugin name of scalar data (per-layer measures and drift scores).
SCALARS_PLUGIN = "scalars"

#: Plugin name of the stock histograms (``<layer>/histogram``, ``[left, right, count]`` rows).
HISTOGRAMS_PLUGIN = "histograms"

#: ``downsample`` used for every read: "all that the loader kept". Zero
#: would return nothing, so "keep all" is spelled as a large number.
READ_ALL = 1_000_000

#: Image tag under which a logger may store the probe images themselves
#: (``[w, h, png_probe_0, ...]``, at one or more steps). When present, an
#: opened channel is drawn over the probe image; otherwise over the overlay view.
PROBE_IMAGES_TAG = metadata.PROBE_IMAGES_TAG

#: The flag a user passes to keep every logged step of images and stats.
SAMPLING_FLAG = metadata.SAMPLING_FLAG

#: Per-layer scalar names in display order: the core logger's, then the
#: drift feature's. Any other ``L/<name>`` scalar is shown after these.
KNOWN_LAYER_SCALARS = (
    "cka_first",
    "cka_previous",
    "cka_reference",
    "dead_fraction",
    "newly_dead_fraction",
    "saturated_fraction",
    "topk_overlap",
    "channel_rank_corr",
    "mean_activation",
    "nonfinite_count",
)

_STATIC_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}\.(js|css|svg|png)$")
_CONTENT_TYPES = {
    "js": "text/javascript",
    "css": "text/css",
    "svg": "image/svg+xml",
    "png": "image/png",
}
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


# --------------------------------------------------------------------------
# Parameter parsing (shared by the routes; raise InvalidArgumentError -> 400)


def require_str(args: Mapping[str, str], name: str) -> str:
    """The non-empty string parameter ``name`` of ``args``.

    Raises:
        InvalidArgumentError: if it is missing or empty.
    """
    value = args.get(name)
    if value is None or value == "":
        raise errors.InvalidArgumentError(f"Missing required parameter `{name}`.")
    if len(value) > 4096:
        raise errors.InvalidArgumentError(
            f"Invalid value for parameter `{name}`: longer than 4096 characters."
        )
    return value


class UnavailableError(errors.PublicError):
    """The data provider cannot answer yet (TensorBoard is starting): HTTP 503."""

    error_code = "Unavailable"
    http_code = 503


def require_int(args: Mapping[str, str], name: str, *, minimum: int = 0) -> int:
    """The integer parameter ``name`` of ``args``, at least ``minimum``.

    Raises:
        InvalidArgumentError: if it is missing, not a decimal integer, or too small.
    """
    raw = require_str(args, name)
    if not re.fullmatch(r"-?[0-9]{1,18}", raw):
        raise errors.InvalidArgumentError(
            f"Invalid value for parameter `{name}`. Expected an integer. Received: {raw!r}"
        )
    value = int(raw)
    if value < minimum:
        raise errors.InvalidArgumentError(
            f"Invalid value for parameter `{name}`. Expected an integer >= {minimum}. "
            f"Received: {value}"
        )
    return value


def optional_flag(args: Mapping[str, str], name: str) -> bool:
    """The optional flag ``name`` of ``args``: ``1`` or ``true`` is on; absent, ``0`` or ``false`` off.

    Raises:
        InvalidArgumentError: for any other value.
    """
    raw = args.get(name)
    if raw is None or raw in ("0", "false"):
        return False
    if raw in ("1", "true"):
        return True
    raise errors.InvalidArgumentError(
        f"Invalid value for parameter `{name}`. Expected 0, 1, false or true. "
        f"Received: {raw[:100]!r}"
    )


def require_steps(args: Mapping[str, str], name: str = "steps", *, limit: int = 200) -> list[int]:
    """The comma-separated steps ``name`` of ``args``: at most ``limit`` integers >= 0.

    Raises:
        InvalidArgumentError: if it is missing, malformed, or lists more than ``limit``.
    """
    raw = require_str(args, name)
    parts = raw.split(",")
    if len(parts) > limit:
        raise errors.InvalidArgumentError(
            f"Invalid value for parameter `{name}`. Expected at most {limit} steps. "
            f"Received: {len(parts)}"
        )
    if not all(re.fullmatch(r"[0-9]{1,18}", p) for p in parts):
        raise errors.InvalidArgumentError(
            f"Invalid value for parameter `{name}`. Expected comma-separated integers >= 0. "
            f"Received: {raw[:100]!r}"
        )
    return [int(p) for p in parts]


# --------------------------------------------------------------------------
# Caches: TensorBoard's data providers have no "one step" read, so a route
# that needs one step of a tag reads all of them. Each read is kept, keyed by
# the tag's listing entry (max step and wall time), which changes whenever
# the tag gets new data: a hover, a step change or Play reads a tag once per
# new logged step, not once per request.


class ReadCache:
    """A thread-safe LRU of values keyed by ``(key, version)``, bounded in bytes.

    Args:
        max_bytes: Total size of the kept values (as ``size`` says) before the
            least recently used are dropped.
    """

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[Hashable, Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(
        self,
        key: Hashable,
        version: Hashable,
        compute: Callable[[], Any],
        size: Callable[[Any], int] = lambda v: 1024,
    ) -> Any:
        """The value of ``key`` at ``version``, computed (outside the lock) when not kept."""
        with self._lock:
            item = self._items.get(key)
            if item is not None and item[0] == version:
                self._items.move_to_end(key)
                return item[1]
        value = compute()
        nbytes = int(size(value))
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[2]
            if nbytes <= self.max_bytes:
                self._items[key] = (version, value, nbytes)
                self._bytes += nbytes
            while self._bytes > self.max_bytes and self._items:
                _, (_, _, n) = self._items.popitem(last=False)
                self._bytes -= n
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def _version(series: Any) -> tuple:
    """What changes when a listed time series gets data: its max step and wall time."""
    return (
        getattr(series, "max_step", None),
        getattr(series, "max_wall_time", None),
    )


# --------------------------------------------------------------------------
# Helpers


def _read_own_tensors(
    data_provider: Any,
    ctx: Any,
    experiment_id: str,
    run: str,
    tag: str,
    plugin_name: str = metadata.PLUGIN_NAME,
):
    """Every kept step of one tensor tag of ``plugin_name`` (default: this plugin), or ``None``."""
    series = data_provider.read_tensors(
        ctx,
        experiment_id=experiment_id,
        plugin_name=plugin_name,
        downsample=READ_ALL,
        run_tag_filter=_filter(run, [tag]),
    )
    return series.get(run, {}).get(tag)


def _own_tensors_by_step(
    data_provider,
    ctx,
    experiment_id: str,
    run: str,
    tag: str,
    cache: ReadCache | None,
    series: Any = None,
    plugin_name: str = metadata.PLUGIN_NAME,
) -> dict[int, Any] | None:
    """``{step: datum}`` of one tensor tag of ``plugin_name`` (cached), or ``None`` if absent.

    ``series`` is the tag's listing entry when the caller has it already.
    """
    if series is None:
        listing = data_provider.list_tensors(
            ctx,
            experiment_id=experiment_id,
            plugin_name=plugin_name,
            run_tag_filter=_filter(run, [tag]),
        )
        series = listing.get(run, {}).get(tag)
    if series is None:
        return None

    def read() -> dict[int, Any]:
        data = _read_own_tensors(data_provider, ctx, experiment_id, run, tag, plugin_name) or []
        return {d.step: d for d in data}

    def size(value: dict[int, Any]) -> int:
        return sum(getattr(d.numpy, "nbytes", 64) + 64 for d in value.values())

    if cache is None:
        return read()
    key = ("tensors", plugin_name, experiment_id, run, tag)
    return cache.get(key, _version(series), read, size)


def _blob_index(
    data_provider, ctx, experiment_id: str, run: str, tag: str, cache: ReadCache | None
) -> dict[int, Any] | None:
    """``{step: blob keys}`` of one image tag (cached), or ``None`` if absent.

    The keys of a step are those of its ``values``: ``[width, height, image_0, ...]``.
    """

    def read() -> dict[int, tuple[str, ...]] | None:
        series = data_provider.read_blob_sequences(
            ctx,
            experiment_id=experiment_id,
            plugin_name=IMAGES_PLUGIN,
            downsample=READ_ALL,
            run_tag_filter=_filter(run, [tag]),
        )
        data = series.get(run, {}).get(tag)
        # Tuples of str, not the provider's datum objects: a cache of 50 layers x 500
        # steps held ~500k GC-tracked objects, and each full collection over them
        # stalled a request by 0.1-4 s (benchmarks/dashboard_scale.py). These are untracked.
        return None if data is None else {d.step: tuple(v.blob_key for v in d.values) for d in data}

    if cache is None:
        return read()
    listing = data_provider.list_blob_sequences(
        ctx,
        experiment_id=experiment_id,
        plugin_name=IMAGES_PLUGIN,
        run_tag_filter=_filter(run, [tag]),
    )
    series = listing.get(run, {}).get(tag)
    if series is None:
        return None
    return cache.get(
        ("blobs", experiment_id, run, tag),
        (*_version(series), getattr(series, "max_length", None)),
        read,
        lambda v: 256 * (len(v) if v else 1),
    )


def _filter(run: str | None = None, tags: list[str] | None = None) -> tb_provider.RunTagFilter:
    return tb_provider.RunTagFilter(runs=None if run is None else [run], tags=tags)


def _layer_contents(
    data_provider, ctx, experiment_id: str, run: str | None
) -> tuple[dict[str, dict[str, dict[str, Any]]], list[dict[str, str]]]:
    """``{run: {layer: content}}`` of every valid ``L/channel_stats`` tag, and what was skipped."""
    listing = data_provider.list_tensors(
        ctx,
        experiment_id=experiment_id,
        plugin_name=metadata.PLUGIN_NAME,
        run_tag_filter=_filter(run),
    )
    result: dict[str, dict[str, dict[str, Any]]] = {}
    skipped: list[dict[str, str]] = []
    for run_name, tags in listing.items():
        layers = result.setdefault(run_name, {})
        for tag, series in tags.items():
            layer = metadata.layer_of_stats_tag(tag)
            if layer is None:
                continue
            try:
                content = metadata.parse_plugin_metadata(series.plugin_content)
                _check_layer_content(content)
            except (TypeError, ValueError) as err:
                skipped.append({"run": run_name, "tag": tag, "reason": str(err)})
                continue
            content = dict(content)
            content["layer"] = layer  # the tag is authoritative
            content["max_step"] = series.max_step
            layers[layer] = content
    return {r: v for r, v in result.items() if v}, skipped


def _is_int(value: Any, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_layer_content(content: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first field the dashboard cannot use."""
    shape = content.get("shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(v) for v in shape)):
        raise ValueError(f"Invalid layer content: `shape` must be [H, W, C]; got {shape!r:.100}")
    grid = content.get("grid")
    if not isinstance(grid, dict) or not all(
        _is_int(grid.get(k), 0 if k == "sep" else 1)
        for k in ("cols", "rows", "cell_w", "cell_h", "sep")
    ):
        raise ValueError(f"Invalid layer content: `grid` is not a mosaic grid; got {grid!r:.100}")
    probes = content.get("probes")
    if not (isinstance(probes, list) and all(isinstance(p, str) for p in probes)):
        raise ValueError("Invalid layer content: `probes` must be a list of names.")
    views = content.get("views", {})
    if not (isinstance(views, dict) and all(isinstance(v, str) for v in views.values())):
        raise ValueError("Invalid layer content: `views` must map view names to tags.")


def _layer_order_key(content: dict[str, Any]) -> tuple[int, str]:
    index = content.get("index")
    return (index if isinstance(index, int) else 1 << 30, content["layer"])


def _steps_tag(content: dict[str, Any]) -> str | None:
    """The image tag whose steps stand for the layer's: the mosaic, else the first view."""
    views = content.get("views")
    if not isinstance(views, dict):
        return None
    for view in (*metadata.VIEWS, *sorted(views)):
        if isinstance(views.get(view), str):
            return views[view]
    return None


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


# --------------------------------------------------------------------------
# Route bodies


def list_runs(data_provider, ctx, *, experiment_id: str) -> dict[str, Any]:
    """Runs holding activation data, sorted by name.

    Returns:
        ``{"runs": [{"run": str, "layers": int, "max_step": int}], "skipped": [...]}``;
        ``runs`` is empty when the log directory has no activation data yet.
    """
    contents, skipped = _layer_contents(data_provider, ctx, experiment_id, None)
    runs = [
        {
            "run": run,
            "layers": len(layers),
            "max_step": max((c["max_step"] for c in layers.values()), default=None),
        }
        for run, layers in sorted(contents.items())
    ]
    return {"runs": runs, "skipped": skipped}


def _sampling(kept: int, logged: int) -> dict[str, Any] | None:
    if kept >= logged:
        return None
    return {
        "kept": kept,
        "logged": logged,
        "flag": SAMPLING_FLAG,
        "message": (
            f"TensorBoard kept images for {kept} of {logged} logged steps. "
            f"Restart it with {SAMPLING_FLAG} to keep every step."
        ),
    }


def _logged_steps(data_provider, ctx, experiment_id: str, run: str, tags: list[str]) -> set[int]:
    """Steps at which any of the scalar ``tags`` was written (scalars keep 1000 by default)."""
    series = data_provider.read_scalars(
        ctx,
        experiment_id=experiment_id,
        plugin_name=SCALARS_PLUGIN,
        downsample=READ_ALL,
        run_tag_filter=_filter(run, tags),
    ).get(run, {})
    return {d.step for data in series.values() for d in data}


def _skipped_image_steps(data_provider, ctx, experiment_id: str, run: str) -> set[int]:
    """Steps the logger wrote without pictures (its ``images_every`` schedule).

    From the ``_tb_activations/images_written`` scalar (0 there); empty for a run
    written before the schedule existed, where every logged step has pictures.
    """
    series = data_provider.read_scalars(
        ctx,
        experiment_id=experiment_id,
        plugin_name=SCALARS_PLUGIN,
        downsample=READ_ALL,
        run_tag_filter=_filter(run, [metadata.IMAGES_WRITTEN_TAG]),
    ).get(run, {})
    return {d.step for data in series.values() for d in data if d.value == 0}


def list_layers(
    data_provider, ctx, *, experiment_id: str, run: str, cache: ReadCache | None = None
) -> dict[str, Any]:
    """The layers of one run, in model order, and the steps the run kept.

    Reads the listing, the run's ``log_seconds`` scalar and one image tag
    only: its cost does not grow with the number of layers times steps, so
    the dashboard can poll it. A layer's own steps come from
    :func:`layer_steps`.

    ``steps`` are the steps whose images TensorBoard kept (those of the first
    layer's mosaic); ``logged_steps`` the steps the logger says it logged
    (its ``stall_seconds`` scalar, kept 1000 by default), pictures or not:
    the logger's ``images_every`` writes statistics at every logged step and
    pictures at some. When ``steps`` lacks logged steps that wrote pictures,
    TensorBoard sampled steps away and ``sampling`` says which flag keeps
    them all.

    Returns:
        ``{"run", "layers": [...], "steps": [...], "logged_steps": [...],
        "sampling": None | {"kept", "logged", "flag", "message"},
        "probe_images": None | {"tag", "steps"}, "skipped": [...]}``;
        each layer carries its plugin content (``index``, ``class_name``,
        ``shape``, ``probes``, ``labels``, ``views``, ``grid``, ``top_k``, ...)
        and ``max_step``, its last logged step.

    Raises:
        NotFoundError: if the run has no activation data.
    """
    contents, skipped = _layer_contents(data_provider, ctx, experiment_id, run)
    layers = contents.get(run)
    if not layers:
        raise errors.NotFoundError(f"No activation data for run {run!r}.")
    ordered = sorted(layers.values(), key=_layer_order_key)
    first_tag = next((t for t in map(_steps_tag, ordered) if t is not None), None)
    kept: list[int] = []
    if first_tag is not None:
        kept = sorted(_blob_index(data_provider, ctx, experiment_id, run, first_tag, cache) or {})
    logged = _logged_steps(
        data_provider,
        ctx,
        experiment_id,
        run,
        [metadata.STALL_SECONDS_TAG, metadata.LOG_SECONDS_TAG],
    )
    # Steps off the images schedule are logged (statistics, drift) but hold no pictures:
    # they are not missing from `steps`, TensorBoard did not sample them away.
    with_images = (logged - _skipped_image_steps(data_provider, ctx, experiment_id, run)) | set(
        kept
    )
    logged |= set(kept)
    probes = _blob_index(data_provider, ctx, experiment_id, run, PROBE_IMAGES_TAG, cache) or {}
    return {
        "run": run,
        "layers": ordered,
        "probe_images": {"tag": PROBE_IMAGES_TAG, "steps": sorted(probes)} if probes else None,
        "steps": kept,
        "logged_steps": sorted(logged),
        "sampling": _sampling(len(kept), len(with_images)),
        "skipped": [s for s in skipped if s["run"] == run],
    }


def layer_steps(
    data_provider, ctx, *, experiment_id: str, run: str, layer: str, cache: ReadCache | None = None
) -> dict[str, Any]:
    """The steps of one layer: those whose images TensorBoard kept, and those logged.

    ``steps`` come from the layer's mosaic tag (or its first view if the
    mosaic was not logged; the views are written at the same steps), blob
    keys only, no image is read; ``logged_steps`` from its ``mean_activation``
    scalar and ``steps``.

    Returns:
        ``{"run", "layer", "steps": [...], "logged_steps": [...], "sampling": None | {...}}``.

    Raises:
        NotFoundError: if the run has no such layer.
    """
    content = _layer_content(data_provider, ctx, experiment_id, run, layer)
    tag = _steps_tag(content)
    kept = (
        sorted(_blob_index(data_provider, ctx, experiment_id, run, tag, cache) or {}) if tag else []
    )
    logged = _logged_steps(
        data_provider, ctx, experiment_id, run, [metadata.scalar_tag(layer, "mean_activation")]
    )
    with_images = (logged - _skipped_image_steps(data_provider, ctx, experiment_id, run)) | set(
        kept
    )
    logged |= set(kept)
    return {
        "run": run,
        "layer": layer,
        "steps": kept,
        "logged_steps": sorted(logged),
        "sampling": _sampling(len(kept), len(with_images)),
    }


def layer_stats(
    data_provider,
    ctx,
    *,
    experiment_id: str,
    run: str,
    layer: str,
    step: int,
    cache: ReadCache | None = None,
) -> dict[str, Any]:
    """Per-probe, per-channel statistics of one layer at one step.

    With a ``cache``, the tag is read once per new logged step, not once per
    call (hover, step change and Play ask for one step at a time).

    Returns:
        ``{"run", "layer", "step", "fields": ["mean", "max", "min", "std"],
        "probes": [...], "channels": C, "stats": [[[mean, max, min, std] per
        channel] per probe], "dead": [bool per channel], "stats_steps": [...]}``.
        A channel is dead when its max and min are 0 on every probe.
        Non-finite values are ``None``.

    Raises:
        NotFoundError: if the run, layer or step is unknown, or the stored
            statistics are not a float ``(probes, channels, 4)`` tensor.
    """
    tag = metadata.stats_tag(layer)
    data = _own_tensors_by_step(data_provider, ctx, experiment_id, run, tag, cache)
    if data is None:
        raise errors.NotFoundError(f"No channel statistics for run {run!r}, layer {layer!r}.")
    steps = sorted(data)
    datum = data.get(step)
    if datum is None:
        raise errors.NotFoundError(
            f"No channel statistics for layer {layer!r} at step {step}; kept steps: "
            f"{steps[:20]}{' ...' if len(steps) > 20 else ''}. If steps are missing, "
            f"restart TensorBoard with {SAMPLING_FLAG}."
        )
    raw = np.asarray(datum.numpy)
    if raw.dtype.kind not in "fiub" or raw.ndim != 3 or raw.shape[-1] != len(metadata.STATS_FIELDS):
        raise errors.NotFoundError(
            f"Channel statistics of layer {layer!r} at step {step} are a {raw.dtype} tensor of "
            f"shape {list(raw.shape)}; expected float (probes, channels, {len(metadata.STATS_FIELDS)})."
        )
    array = raw.astype(np.float32)
    dead = np.all((array[..., 1] == 0) & (array[..., 2] == 0), axis=0)
    finite = np.isfinite(array)
    rounded = np.where(finite, array, 0.0).astype(np.float64)
    stats = rounded.tolist()
    if not finite.all():
        for p, c, f in zip(*np.nonzero(~finite), strict=True):
            stats[p][c][f] = None
    return {
        "run": run,
        "layer": layer,
        "step": step,
        "fields": list(metadata.STATS_FIELDS),
        "channels": int(array.shape[1]),
        "stats": stats,
        "dead": [bool(v) for v in dead],
        "stats_steps": steps,
        "scale": _color_scale(data_provider, ctx, experiment_id, run, layer, step, cache),
    }


def _color_scale(data_provider, ctx, experiment_id, run, layer, step, cache) -> dict | None:
    """``{"lo", "hi"}`` (floats, or lists per channel) of the layer's views at ``step``, or ``None``.

    ``None`` when the logger wrote no ``L/color_scale`` (an older version) or
    what is there is not a float ``(2,)`` / ``(2, C)`` tensor.
    """
    data = _own_tensors_by_step(
        data_provider, ctx, experiment_id, run, metadata.scale_tag(layer), cache
    )
    datum = (data or {}).get(step)
    if datum is None:
        return None
    raw = np.asarray(datum.numpy)
    if raw.dtype.kind not in "fiu" or raw.ndim not in (1, 2) or raw.shape[0] != 2:
        return None
    lo, hi = raw.astype(np.float64)
    if raw.ndim == 1:
        return {"lo": _finite_or_none(lo), "hi": _finite_or_none(hi)}
    return {"lo": [_finite_or_none(v) for v in lo], "hi": [_finite_or_none(v) for v in hi]}


def layer_palette(
    data_provider, ctx, *, experiment_id: str, run: str, layer: str, cache: ReadCache | None = None
) -> dict[str, Any]:
    """The palette of a layer's mosaic, read from its last stored PNG (a palette PNG).

    The dashboard draws the colour bar from it and maps a mosaic's colours
    back to levels (to stretch it to one probe's range). Index ``i <
    levels`` is level ``i`` of the colour scale, then NaN, then background
    (see :mod:`tb_activations.colormaps`).

    Returns:
        ``{"run", "layer", "colormap", "colors": [[r, g, b] x 256], "levels", "nan_index",
        "background_index"}``.

    Raises:
        NotFoundError: if the layer has no mosaic, or its mosaic is not a palette PNG.
    """
    from PIL import Image  # lazily: not needed to start TensorBoard

    from tb_activations import colormaps  # numpy only at import; matplotlib is never needed here

    content = _layer_content(data_provider, ctx, experiment_id, run, layer)
    tag = content.get("views", {}).get("mosaic")
    data = _blob_index(data_provider, ctx, experiment_id, run, tag, cache) if tag else None
    if not data:
        raise errors.NotFoundError(f"Layer {layer!r} of run {run!r} has no stored mosaic.")
    keys = data[max(data)]
    if len(keys) < 3:
        raise errors.NotFoundError(f"The mosaic of layer {layer!r} holds no image.")
    blob_key = keys[2]

    def read() -> list[list[int]]:
        blob = data_provider.read_blob(ctx, blob_key=blob_key)
        try:
            with Image.open(io.BytesIO(blob)) as image:
                if image.mode != "P":
                    raise errors.NotFoundError(
                        f"The mosaic of layer {layer!r} is a {image.mode} image, not a palette PNG."
                    )
                flat = list(image.getpalette() or [])
        except OSError as err:
            raise errors.NotFoundError(
                f"The mosaic of layer {layer!r} is unreadable: {err}"
            ) from err
        flat += [0] * (768 - len(flat))
        return [flat[i : i + 3] for i in range(0, 768, 3)]

    colors = read() if cache is None else cache.get(("palette", blob_key), None, read)
    return {
        "run": run,
        "layer": layer,
        "colormap": content.get("colormap") if isinstance(content.get("colormap"), str) else None,
        "colors": colors,
        "levels": colormaps.LEVELS,
        "nan_index": colormaps.NAN_INDEX,
        "background_index": colormaps.BACKGROUND_INDEX,
    }


def _image_datum(data_provider, ctx, experiment_id, run, tag, step, cache):
    data = _blob_index(data_provider, ctx, experiment_id, run, tag, cache)
    if data is None:
        raise errors.NotFoundError(f"No images for run {run!r}, tag {tag!r}.")
    datum = data.get(step)
    if datum is None:
        raise errors.NotFoundError(
            f"No image for tag {tag!r} at step {step}. If steps are missing, "
            f"restart TensorBoard with {SAMPLING_FLAG}."
        )
    return datum


def image_bytes(
    data_provider,
    ctx,
    *,
    experiment_id: str,
    run: str,
    tag: str,
    step: int,
    index: int,
    cache: ReadCache | None = None,
) -> bytes:
    """The stored PNG of probe ``index`` of image tag ``tag`` at ``step``, as written.

    Raises:
        NotFoundError: if the run, tag, step or index is unknown.
    """
    datum = _image_datum(data_provider, ctx, experiment_id, run, tag, step, cache)
    # values = [width, height, png_0, png_1, ...]
    if index + 2 >= len(datum):
        raise errors.NotFoundError(
            f"No image {index} for tag {tag!r} at step {step}: it holds {len(datum) - 2}."
        )
    return data_provider.read_blob(ctx, blob_key=datum[index + 2])


def _layer_content(data_provider, ctx, experiment_id: str, run: str, layer: str) -> dict:
    listing = data_provider.list_tensors(
        ctx,
        experiment_id=experiment_id,
        plugin_name=metadata.PLUGIN_NAME,
        run_tag_filter=_filter(run, [metadata.stats_tag(layer)]),
    )
    series = listing.get(run, {}).get(metadata.stats_tag(layer))
    if series is None:
        raise errors.NotFoundError(f"No layer {layer!r} in run {run!r}.")
    try:
        content = metadata.parse_plugin_metadata(series.plugin_content)
        _check_layer_content(content)
    except (TypeError, ValueError) as err:
        raise errors.NotFoundError(f"Layer {layer!r} of run {run!r} is unreadable: {err}") from err
    content["layer"] = layer
    return content


def _crop_box(grid: dict[str, int], channel: int, width: int, height: int) -> tuple[int, ...]:
    """The pixel box of ``channel``'s cell in a mosaic ``width`` x ``height`` (the dashboard's cellRect)."""
    grid_w = grid["cols"] * (grid["cell_w"] + grid["sep"]) - grid["sep"]
    grid_h = grid["rows"] * (grid["cell_h"] + grid["sep"]) - grid["sep"]
    fx, fy = width / max(grid_w, 1), height / max(grid_h, 1)
    col, row = channel % grid["cols"], channel // grid["cols"]
    x0, y0 = col * (grid["cell_w"] + grid["sep"]) * fx, row * (grid["cell_h"] + grid["sep"]) * fy
    x1, y1 = x0 + grid["cell_w"] * fx, y0 + grid["cell_h"] * fy
    return (round(x0), round(y0), max(round(x1), round(x0) + 1), max(round(y1), round(y0) + 1))


def channel_history(
    data_provider,
    ctx,
    *,
    experiment_id: str,
    run: str,
    layer: str,
    probe: int,
    channel: int,
    steps: list[int],
    cache: ReadCache | None = None,
) -> tuple[bytes, list[int]]:
    """One channel's cell of the mosaic at each of ``steps``, side by side in one PNG.

    What the dashboard's history filmstrip shows, without sending it every
    step's full mosaic: frame ``i`` (step ``steps[i]``) is the ``i``-th
    ``width / len(steps)`` pixels of the strip, at the cell's stored size.
    A step whose mosaic TensorBoard did not keep is a transparent frame.

    Returns:
        ``(png_bytes, missing_steps)``.

    Raises:
        NotFoundError: if the run, layer, mosaic, probe or channel is unknown.
    """
    from PIL import Image  # lazily: not needed to start TensorBoard

    content = _layer_content(data_provider, ctx, experiment_id, run, layer)
    tag = content.get("views", {}).get("mosaic")
    if tag is None:
        raise errors.NotFoundError(f"Layer {layer!r} of run {run!r} has no mosaic view.")
    channels = content["shape"][2]
    if channel >= channels:
        raise errors.NotFoundError(f"No channel {channel} in layer {layer!r}: it has {channels}.")
    if probe >= len(content["probes"]):
        raise errors.NotFoundError(
            f"No probe {probe} in layer {layer!r}: it has {len(content['probes'])}."
        )
    data = _blob_index(data_provider, ctx, experiment_id, run, tag, cache)
    if data is None:
        raise errors.NotFoundError(f"No images for run {run!r}, tag {tag!r}.")
    grid = content["grid"]

    def crop(step: int) -> Any:
        datum = data.get(step)
        if datum is None or probe + 2 >= len(datum):
            return None
        try:
            blob = data_provider.read_blob(ctx, blob_key=datum[probe + 2])
            with Image.open(io.BytesIO(blob)) as image:
                box = _crop_box(grid, channel, *image.size)
                return image.crop(box).convert("RGBA")
        except (errors.NotFoundError, OSError, ValueError):
            return None

    def build() -> tuple[bytes, list[int]]:
        # The reads wait on the data server (one gRPC call each with the Rust
        # loader, ~45 ms here): in parallel; decoding releases the GIL too.
        with ThreadPoolExecutor(max_workers=min(16, max(1, len(steps)))) as pool:
            frames = list(pool.map(crop, steps))
        missing = [step for step, frame in zip(steps, frames, strict=True) if frame is None]
        sizes = [f.size for f in frames if f is not None]
        cell = sizes[0] if sizes else (grid["cell_w"], grid["cell_h"])
        strip = Image.new("RGBA", (cell[0] * len(steps), cell[1]), (0, 0, 0, 0))
        for i, frame in enumerate(frames):
            if frame is not None:
                if frame.size != cell:
                    frame = frame.resize(cell, Image.NEAREST)
                strip.paste(frame, (i * cell[0], 0))
        buf = io.BytesIO()
        strip.save(buf, format="PNG")
        return buf.getvalue(), missing

    if cache is None:
        return build()
    keys = tuple(
        (
            s,
            data[s][probe + 2] if s in data and probe + 2 < len(data[s]) else None,
        )
        for s in steps
    )
    return cache.get(
        ("history", experiment_id, run, tag, probe, channel, keys),
        None,
        build,
        lambda v: len(v[0]) + 64,
    )


def layer_scalars(
    data_provider, ctx, *, experiment_id: str, run: str, layer: str, cache: ReadCache | None = None
) -> dict[str, Any]:
    """Every float scalar series ``L/<name>`` of one layer (dead fraction, drift, ...).

    Only direct children of ``L`` count: ``a/b/dead_fraction`` belongs to layer
    ``a/b``, not to layer ``a``. Series come in :data:`KNOWN_LAYER_SCALARS`
    order, then by name; drift series appear as soon as they are written.

    Returns:
        ``{"run", "layer", "series": [{"name", "tag", "points": [[step, value|None], ...]}]}``.

    Raises:
        NotFoundError: if the run has no scalars.
    """
    listing = data_provider.list_scalars(
        ctx,
        experiment_id=experiment_id,
        plugin_name=SCALARS_PLUGIN,
        run_tag_filter=_filter(run),
    )
    if run not in listing:
        raise errors.NotFoundError(f"No scalars for run {run!r}.")
    prefix = layer + "/"
    tags = [t for t in listing[run] if t.startswith(prefix) and "/" not in t[len(prefix) :]]
    known = {name: i for i, name in enumerate(KNOWN_LAYER_SCALARS)}

    def order(tag: str) -> tuple[int, str]:
        name = tag[len(prefix) :]
        return (known.get(name, len(known)), name)

    tags.sort(key=order)

    def read() -> dict[str, Any]:
        if not tags:
            return {}
        return data_provider.read_scalars(
            ctx,
            experiment_id=experiment_id,
            plugin_name=SCALARS_PLUGIN,
            downsample=READ_ALL,
            run_tag_filter=_filter(run, tags),
        ).get(run, {})

    if cache is None:
        data = read()
    else:
        version = tuple((t, *_version(listing[run][t])) for t in tags)
        data = cache.get(
            ("scalars", experiment_id, run, layer),
            version,
            read,
            lambda v: 64 * sum(len(d) for d in v.values()),
        )
    series = [
        {
            "name": tag[len(prefix) :],
            "tag": tag,
            "points": [[d.step, _finite_or_none(d.value)] for d in data.get(tag, [])],
        }
        for tag in tags
    ]
    return {"run": run, "layer": layer, "series": series}


#: Most buckets a histogram may have to be served (the logger writes at most
#: 1000; a foreign writer's millions would make an answer of megabytes).
MAX_HISTOGRAM_BUCKETS = 10_000

#: The flag that keeps every step of the histograms (the Rust loader keeps 100 tensors per tag).
HISTOGRAMS_SAMPLING_FLAG = SAMPLING_FLAG  # one flag keeps every step the dashboard shows


def layer_histogram(
    data_provider,
    ctx,
    *,
    experiment_id: str,
    run: str,
    layer: str,
    step: int,
    nearest: bool = False,
    cache: ReadCache | None = None,
) -> dict[str, Any]:
    """The distribution of one layer's activations over the probes at one step.

    Read from the ``<layer>/histogram`` tag the logger writes in the stock
    ``histograms`` plugin's format (``[left, right, count]`` per bucket),
    through the data provider like every other route. With a ``cache``, the
    tag is read once per new logged step, not once per call.

    Args:
        nearest: When ``step`` was not kept (TensorBoard's Rust loader keeps
            100 steps of a tensor tag by default), answer the last kept step
            before it (or the first kept step) instead of raising.

    Returns:
        ``{"run", "layer", "tag", "step", "requested_step", "steps": [kept
        steps], "buckets": [[left, right, count], ...], "count": total}``;
        ``step`` is the step answered, ``requested_step`` the one asked for;
        non-finite edges are ``None``. A layer of the run without a
        histogram (logged with ``histogram_bins=0``) answers ``"buckets":
        None``, ``"step": None`` and no steps.

    Raises:
        NotFoundError: if the run has neither a histogram nor activation data
            for the layer, the step was not kept, or what is stored is
            not a numeric ``(k, 3)`` tensor of at most
            :data:`MAX_HISTOGRAM_BUCKETS` rows (a foreign or broken writer).
    """
    tag = metadata.histogram_tag(layer)
    data = _own_tensors_by_step(
        data_provider, ctx, experiment_id, run, tag, cache, plugin_name=HISTOGRAMS_PLUGIN
    )
    if data is None:
        # A layer logged with histogram_bins=0 (or by an older version) is no error.
        listing = data_provider.list_tensors(
            ctx,
            experiment_id=experiment_id,
            plugin_name=metadata.PLUGIN_NAME,
            run_tag_filter=_filter(run, [metadata.stats_tag(layer)]),
        )
        if metadata.stats_tag(layer) not in listing.get(run, {}):
            raise errors.NotFoundError(
                f"No histogram for layer {layer!r} in run {run!r}, and no such layer."
            )
        return {
            "run": run,
            "layer": layer,
            "tag": tag,
            "step": None,
            "requested_step": step,
            "steps": [],
            "buckets": None,
            "count": 0,
        }
    steps = sorted(data)
    requested = step
    if nearest and step not in data and steps:
        before = [s for s in steps if s < step]
        step = before[-1] if before else steps[0]
    datum = data.get(step)
    if datum is None:
        raise errors.NotFoundError(
            f"No histogram for layer {layer!r} at step {step}; kept steps: "
            f"{steps[:20]}{' ...' if len(steps) > 20 else ''}. If steps are missing, "
            f"restart TensorBoard with {HISTOGRAMS_SAMPLING_FLAG}."
        )
    raw = np.asarray(datum.numpy)
    if (
        raw.dtype.kind not in "fiu"
        or raw.ndim != 2
        or raw.shape[1] != 3
        or raw.shape[0] > MAX_HISTOGRAM_BUCKETS
    ):
        raise errors.NotFoundError(
            f"The histogram of layer {layer!r} at step {step} is a {raw.dtype} tensor of shape "
            f"{list(raw.shape)}; expected numeric (k, 3) [left, right, count] rows, "
            f"k <= {MAX_HISTOGRAM_BUCKETS}."
        )
    array = raw.astype(np.float64)
    counts = array[:, 2]
    buckets = [
        [_finite_or_none(left), _finite_or_none(right), _count(count)]
        for left, right, count in array.tolist()
    ]
    return {
        "run": run,
        "layer": layer,
        "tag": tag,
        "step": step,
        "requested_step": requested,
        "steps": steps,
        "buckets": buckets,
        "count": _count(float(counts[np.isfinite(counts)].sum())),
    }


def _count(value: float) -> int | float | None:
    """A bucket count: an int when whole (always, from the logger), else the float, or ``None``."""
    if not math.isfinite(value):
        return None
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def predictions(
    data_provider, ctx, *, experiment_id: str, run: str, cache: ReadCache | None = None
) -> dict[str, Any]:
    """The probes' predicted class at each step (the logger's predictions tensor).

    Returns:
        ``{"run", "probes", "labels", "class_names", "num_classes", "fields",
        "steps": [{"step", "rows": [[predicted_class, confidence, label_class,
        label_probability] per probe]}]}``; non-finite values are ``None``.
        ``steps`` is empty when the run has no predictions (a model whose
        output is not a classifier's, or ``predictions=False``).

    Raises:
        NotFoundError: if the run has no activation data at all.
    """
    tag = metadata.PREDICTIONS_TAG
    listing = data_provider.list_tensors(
        ctx,
        experiment_id=experiment_id,
        plugin_name=metadata.PLUGIN_NAME,
        run_tag_filter=_filter(run, [tag]),
    )
    series = listing.get(run, {}).get(tag)
    if series is None:
        # No predictions: a run without activation data at all is unknown.
        everything = data_provider.list_tensors(
            ctx,
            experiment_id=experiment_id,
            plugin_name=metadata.PLUGIN_NAME,
            run_tag_filter=_filter(run),
        )
        if run not in everything:
            raise errors.NotFoundError(f"No activation data for run {run!r}.")
    empty = {"run": run, "probes": [], "labels": None, "class_names": None, "num_classes": 0}
    if series is None:
        return {**empty, "fields": list(metadata.PREDICTION_FIELDS), "steps": []}
    try:
        content = metadata.parse_plugin_metadata(series.plugin_content)
    except (TypeError, ValueError):
        return {**empty, "fields": list(metadata.PREDICTION_FIELDS), "steps": []}
    by_step = _own_tensors_by_step(data_provider, ctx, experiment_id, run, tag, cache, series) or {}
    steps = []
    for datum in (by_step[k] for k in sorted(by_step)):
        raw = np.asarray(datum.numpy)
        # Foreign or broken data under this plugin's name: skip, never fail.
        if raw.dtype.kind not in "fiub" or raw.ndim != 2 or raw.shape[1] < 2:
            continue
        array = raw.astype(np.float64)
        rows = [[_finite_or_none(v) for v in row] for row in array.tolist()]
        steps.append({"step": datum.step, "rows": rows})
    num_classes = content.get("num_classes")
    return {
        "run": run,
        "probes": _str_list(content.get("probes")) or [],
        "labels": _str_list(content.get("labels")),
        "class_names": _str_list(content.get("class_names")),
        "num_classes": num_classes if _is_int(num_classes) else 0,
        "fields": _str_list(content.get("fields")) or list(metadata.PREDICTION_FIELDS),
        "steps": steps,
    }


def _str_list(value: Any) -> list[str | None] | None:
    """``value`` as a list of names (``None`` entries kept), or ``None`` if it is not a list."""
    if not isinstance(value, list):
        return None
    return [None if v is None else str(v) for v in value]


def attribution(
    data_provider, ctx, *, experiment_id: str, run: str, cache: ReadCache | None = None
) -> dict[str, Any]:
    """The attribution maps the logger wrote: per method, the classes explained at each step.

    Returns:
        ``{"run", "methods": [{"method", "layer", "probes", "labels",
        "class_names", "overlay" (image tag: per probe ``[predicted | label]``),
        "fields", "chosen", "steps": [{"step", "rows": [[predicted_class,
        label_class, average_drop] per probe], "chosen"}]}]}``, methods in
        :data:`~tb_activations.metadata.ATTRIBUTION_METHODS` order; non-finite
        values are ``None``. ``methods`` is empty when no attribution was written.
        A method's ``chosen`` is ``None``, or where the logger was given
        ``attribution_classes`` or ``attribution_top_k``: ``{"classes",
        "ranks", "colormap", "alpha", "maps" (tag)}``; a step's ``chosen`` is
        then ``{"classes": [[c per column] per probe], "probabilities": [[p
        per column] per probe]}`` (else ``None``), the columns the classes then
        the ranks.
        Their maps: :func:`attribution_map`.

    Raises:
        NotFoundError: if the run has no activation data at all.
    """
    listing = data_provider.list_tensors(
        ctx,
        experiment_id=experiment_id,
        plugin_name=metadata.PLUGIN_NAME,
        run_tag_filter=_filter(run),
    )
    if run not in listing:
        raise errors.NotFoundError(f"No activation data for run {run!r}.")
    methods = []
    for method in metadata.ATTRIBUTION_METHODS:
        tag = metadata.attribution_tag(method, "classes")
        series = listing[run].get(tag)
        if series is None:
            continue
        try:
            content = metadata.parse_plugin_metadata(series.plugin_content)
        except (TypeError, ValueError):
            continue  # foreign or broken data under this plugin's name: skip, never fail
        by_step = (
            _own_tensors_by_step(data_provider, ctx, experiment_id, run, tag, cache, series) or {}
        )
        steps = []
        for datum in (by_step[k] for k in sorted(by_step)):
            raw = np.asarray(datum.numpy)
            if raw.dtype.kind not in "fiub" or raw.ndim != 2 or raw.shape[1] < 3:
                continue
            rows = [[_finite_or_none(v) for v in row[:3]] for row in raw.astype(np.float64)]
            steps.append({"step": datum.step, "rows": rows, "chosen": None})
        chosen = _chosen_classes(
            data_provider, ctx, experiment_id, run, method, listing[run], steps, cache
        )
        layer = content.get("layer")
        methods.append(
            {
                "method": method,
                "layer": layer if isinstance(layer, str) else None,
                "probes": _str_list(content.get("probes")) or [],
                "labels": _str_list(content.get("labels")),
                "class_names": _str_list(content.get("class_names")),
                "overlay": metadata.attribution_tag(method, "overlay"),
                "fields": list(metadata.ATTRIBUTION_FIELDS),
                "chosen": chosen,
                "steps": steps,
            }
        )
    return {"run": run, "methods": methods}


def _chosen_classes(
    data_provider, ctx, experiment_id: str, run: str, method: str, tags: Any, steps: list, cache
) -> dict[str, Any] | None:
    """The ``attribution_classes`` of one method (``None`` if none were logged); fills the
    ``chosen`` of ``steps`` from the ``class_scores`` tensors."""
    series = tags.get(metadata.attribution_tag(method, "class_maps"))
    if series is None:
        return None
    try:
        content = metadata.parse_plugin_metadata(series.plugin_content)
    except (TypeError, ValueError):
        return None
    classes = content.get("classes")
    if not isinstance(classes, list) or not all(_is_int(c) for c in classes):
        return None
    tag = metadata.attribution_tag(method, "class_scores")
    by_step = {}
    if tag in tags:
        by_step = (
            _own_tensors_by_step(data_provider, ctx, experiment_id, run, tag, cache, tags[tag])
            or {}
        )
    for entry in steps:
        datum = by_step.get(entry["step"])
        raw = None if datum is None else np.asarray(datum.numpy)
        if raw is None or raw.dtype.kind not in "fiub" or raw.ndim != 3 or raw.shape[2] < 2:
            continue
        raw = raw.astype(np.float64)
        entry["chosen"] = {
            "classes": [[int(c) if math.isfinite(c) else -1 for c in row] for row in raw[:, :, 0]],
            "probabilities": [[_finite_or_none(v) for v in row] for row in raw[:, :, 1]],
        }
    colormap, alpha = _draw_style(content)
    ranks = content.get("ranks")
    return {
        "classes": classes,
        "ranks": ranks if isinstance(ranks, list) and all(_is_int(r) for r in ranks) else [],
        "colormap": colormap,
        "alpha": alpha,
        "maps": metadata.attribution_tag(method, "class_maps"),
    }


def _draw_style(content: dict[str, Any]) -> tuple[str, float]:
    """The colormap and alpha of the logger's overlays (magma, 0.5 where not written)."""
    colormap = content.get("colormap")
    alpha = content.get("alpha")
    ok = isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0 <= alpha <= 1
    return (colormap if isinstance(colormap, str) else "magma", float(alpha) if ok else 0.5)


def attribution_map(
    data_provider,
    ctx,
    *,
    experiment_id: str,
    run: str,
    method: str,
    probe: int,
    cls: str,
    steps: list[int],
    cache: ReadCache | None = None,
) -> dict[str, Any]:
    """One probe's attribution map of one class at ``steps``, as stored, for the dashboard
    to draw over the probe image (with the logger's colormap, :func:`attribution` says
    which classes were logged).

    ``cls`` is ``"predicted"``, ``"label"``, ``"rankR"`` (the ``R``-th highest
    scoring class at each step, logged with ``attribution_top_k``), a class
    index or a class name. A class is found at a step among the classes of
    ``attribution_classes`` and ``attribution_top_k``, else as that step's
    predicted class or explained label class; otherwise its ``map`` is
    ``None`` (it was not logged).

    Returns:
        ``{"run", "method", "probe", "class" (index, or None for "predicted"
        and the ranks), "rank" (R of "rankR", 1 for "predicted", else None),
        "logged" (among ``attribution_classes``), "colormap", "alpha", "colors"
        ([[r, g, b] x 256], the colormap's levels then NaN and background),
        "levels", "nan_index", "steps": [{"step", "class", "source"
        ("chosen", "predicted", "label" or None), "map": [[v|None] x w] x h | None}]}``.

    Raises:
        InvalidArgumentError: for an unknown method, a class that is neither an
            index nor a name of the run's class names, or ``"label"`` for a probe
            without a usable label.
        NotFoundError: if the run has no attribution of ``method``, or no probe ``probe``.
    """
    from tb_activations import colormaps  # numpy only at import

    if method not in metadata.ATTRIBUTION_METHODS:
        raise errors.InvalidArgumentError(
            f"Invalid value for parameter `method`. Expected one of "
            f"{list(metadata.ATTRIBUTION_METHODS)}. Received: {method[:100]!r}"
        )
    listing = data_provider.list_tensors(
        ctx,
        experiment_id=experiment_id,
        plugin_name=metadata.PLUGIN_NAME,
        run_tag_filter=_filter(run),
    )
    tags = listing.get(run, {})
    maps_tag = metadata.attribution_tag(method, "maps")
    if maps_tag not in tags:
        raise errors.NotFoundError(f"No {method} attribution in run {run!r}.")
    try:
        content = metadata.parse_plugin_metadata(tags[maps_tag].plugin_content)
    except (TypeError, ValueError) as err:
        raise errors.NotFoundError(
            f"The {method} attribution of run {run!r} is unreadable."
        ) from err
    probes = _str_list(content.get("probes")) or []
    if probe >= len(probes):
        raise errors.NotFoundError(f"No probe {probe} in run {run!r}: it has {len(probes)}.")
    names = _str_list(content.get("class_names")) or []
    wanted = _class_param(cls, names, _str_list(content.get("labels")), probe)
    chosen_content: dict[str, Any] = {}
    chosen_tag = metadata.attribution_tag(method, "class_maps")
    if chosen_tag in tags:
        try:
            chosen_content = metadata.parse_plugin_metadata(tags[chosen_tag].plugin_content)
        except (TypeError, ValueError):
            chosen_content = {}
    rank = None
    column = None  # the class_maps column of a rank
    if isinstance(wanted, str):  # "rankR"
        rank, wanted = int(wanted[4:]), None
        fixed, ranks = chosen_content.get("classes"), chosen_content.get("ranks")
        if rank > 1 and isinstance(fixed, list) and isinstance(ranks, list) and rank in ranks:
            column = len(fixed) + ranks.index(rank)

    def by_step(tag: str) -> dict[int, Any]:
        if tag not in tags:
            return {}
        return (
            _own_tensors_by_step(data_provider, ctx, experiment_id, run, tag, cache, tags[tag])
            or {}
        )

    maps, rows = by_step(maps_tag), by_step(metadata.attribution_tag(method, "classes"))
    chosen_maps = by_step(chosen_tag)
    chosen_scores = by_step(metadata.attribution_tag(method, "class_scores"))
    out_steps = []
    for step in steps:
        if rank is not None and rank > 1:
            c, source, array = _rank_at(
                probe, column, chosen_maps.get(step), chosen_scores.get(step)
            )
        else:
            c, source, array = _map_at(
                probe,
                wanted,
                maps.get(step),
                rows.get(step),
                chosen_maps.get(step),
                chosen_scores.get(step),
            )
        out_steps.append(
            {
                "step": step,
                "class": c,
                "source": source,
                "map": None
                if array is None
                else [[_finite_or_none(v) for v in row] for row in array.tolist()],
            }
        )
    logged = chosen_content.get("classes")
    colormap, alpha = _draw_style(chosen_content or content)
    try:
        colors = colormaps.palette(colormap)
    except Exception:  # an unknown or matplotlib-only colormap here: the default one
        colormap, colors = "magma", colormaps.palette("magma")
    return {
        "run": run,
        "method": method,
        "probe": probe,
        "class": wanted,
        "rank": 1 if cls in ("predicted", "rank1") else rank,
        "logged": (column is not None)
        if rank is not None and rank > 1
        else isinstance(logged, list) and wanted in logged,
        "colormap": colormap,
        "alpha": alpha,
        "colors": np.asarray(colors).astype(int).tolist(),
        "levels": colormaps.LEVELS,
        "nan_index": colormaps.NAN_INDEX,
        "steps": out_steps,
    }


def _class_param(cls: str, names: list, labels: list | None, probe: int) -> int | str | None:
    """The class index that ``cls`` asks for (``None``: the predicted class; ``"rankR"``
    kept as it is)."""
    if cls == "predicted" or cls == "rank1":
        return None
    if re.fullmatch(r"rank[0-9]{1,6}", cls):
        return cls
    if cls == "label":
        label = None if labels is None or probe >= len(labels) else labels[probe]
        if label is None:
            raise errors.InvalidArgumentError(f"Probe {probe} has no label.")
        if re.fullmatch(r"[0-9]{1,9}", label):
            return int(label)
        if label in names:
            return names.index(label)
        raise errors.InvalidArgumentError(
            f"The label {label[:100]!r} of probe {probe} is not a class index nor among "
            "the run's class names."
        )
    if re.fullmatch(r"[0-9]{1,9}", cls):
        return int(cls)
    if cls in names:
        return names.index(cls)
    shown = names[:20] + (["..."] if len(names) > 20 else [])
    raise errors.InvalidArgumentError(
        "Invalid value for parameter `class`. Expected 'predicted', 'label', 'rankR', a "
        "class index "
        f"or a class name{f' among {shown}' if names else ' (the run has no class names)'}. "
        f"Received: {cls[:100]!r}"
    )


def _rank_at(probe: int, column: int | None, chosen_maps, chosen_scores):
    """``(class, "rank", (h, w) map)`` of one ranked column at one step, or no map."""
    if column is None or chosen_maps is None or chosen_scores is None:
        return None, None, None
    cm, cs = np.asarray(chosen_maps.numpy), np.asarray(chosen_scores.numpy)
    ok = cm.ndim == 4 and cs.ndim == 3 and probe < min(len(cm), len(cs)) and cs.shape[2] >= 1
    ok = ok and cs.dtype.kind in "fiub"
    if not ok or column >= min(cm.shape[1], cs.shape[1]) or cm.dtype.kind not in "fiub":
        return None, None, None
    c = cs[probe, column, 0]
    return (int(c) if math.isfinite(c) else None), "rank", cm[probe, column].astype(np.float64)


def _map_at(probe: int, wanted: int | None, maps, rows, chosen_maps, chosen_scores):
    """``(class, source, (h, w) map)`` of ``wanted`` (``None``: predicted) at one step."""

    def tensor(datum, ndim):
        raw = None if datum is None else np.asarray(datum.numpy)
        if raw is None or raw.dtype.kind not in "fiub" or raw.ndim != ndim or probe >= len(raw):
            return None
        return raw

    m, r = tensor(maps, 4), tensor(rows, 2)
    if wanted is not None:
        cm, cs = tensor(chosen_maps, 4), tensor(chosen_scores, 3)
        if cm is not None and cs is not None and cs.shape[2] >= 1:
            for j, c in enumerate(cs[probe, :, 0]):
                if c == wanted and j < cm.shape[1]:
                    return wanted, "chosen", cm[probe, j].astype(np.float64)
    if r is None or r.shape[1] < 2:
        return wanted, None, None
    predicted, label = float(r[probe, 0]), float(r[probe, 1])
    if not math.isfinite(predicted):  # foreign or broken data: no class, never a failure
        return wanted, None, None
    if m is not None and m.shape[1] >= 2:
        if wanted is None or predicted == wanted:
            return int(predicted), "predicted", m[probe, 0].astype(np.float64)
        if label == wanted:
            return wanted, "label", m[probe, 1].astype(np.float64)
    return (int(predicted) if wanted is None else wanted), None, None


def layer_examples(
    data_provider, ctx, *, experiment_id: str, run: str, layer: str
) -> dict[str, Any]:
    """Top examples of every channel of one layer, at every example-step.

    Returns:
        ``{"run", "layer", "k", "shape", "field", "grid", "fields", "views",
        "steps": [{"step", "pool_size", "names", "labels", "channels":
        [[[value|None, image, y, x, new] per rank] per channel]}],
        "feature_vis": [{"step", "channels", "objective"}]}``. Crops are the
        pages of ``views.examples`` (``/image``, ``index`` = page), placed by
        ``grid``; image ``-1`` marks an empty slot, ``new`` is -1 at the first
        example-step. ``steps`` is empty when the layer has no examples.

    Raises:
        NotFoundError: if the run has no activation data.
    """
    listing = data_provider.list_tensors(
        ctx,
        experiment_id=experiment_id,
        plugin_name=metadata.PLUGIN_NAME,
        run_tag_filter=_filter(run),
    )
    if run not in listing:
        raise errors.NotFoundError(f"No activation data for run {run!r}.")
    tags = listing[run]
    data_tag = metadata.examples_data_tag(layer)
    answer: dict[str, Any] = {
        "run": run,
        "layer": layer,
        "k": 0,
        "shape": None,
        "field": None,
        "grid": None,
        "fields": list(metadata.EXAMPLES_FIELDS),
        "views": {
            "examples": metadata.examples_tag(layer),
            "feature_vis": metadata.feature_vis_tag(layer),
        },
        "steps": [],
        "feature_vis": [],
    }
    series = tags.get(data_tag)
    if series is not None:
        try:
            content = metadata.parse_plugin_metadata(series.plugin_content)
        except (TypeError, ValueError):
            content = None
        if content is not None and content.get("kind") == "examples":
            answer.update(
                k=int(content.get("k") or 0),
                shape=content.get("shape"),
                field=content.get("field"),
                grid=content.get("grid"),
            )
            indexes = {}
            if metadata.examples_index_tag(layer) in tags:
                for datum in (
                    _read_own_tensors(
                        data_provider, ctx, experiment_id, run, metadata.examples_index_tag(layer)
                    )
                    or []
                ):
                    try:
                        decoded = metadata.decode_json_bytes(np.asarray(datum.numpy).ravel())
                    except ValueError:
                        continue
                    if isinstance(decoded, dict):
                        indexes[datum.step] = decoded
            for datum in _read_own_tensors(data_provider, ctx, experiment_id, run, data_tag) or []:
                raw = np.asarray(datum.numpy)
                # Foreign or broken data under this plugin's name: skip, never fail.
                if (
                    raw.dtype.kind not in "fiub"
                    or raw.ndim != 3
                    or raw.shape[-1] != len(metadata.EXAMPLES_FIELDS)
                ):
                    continue
                array = raw.astype(np.float64)
                index = indexes.get(datum.step, {})
                answer["steps"].append(
                    {
                        "step": datum.step,
                        "pool_size": index.get("pool_size"),
                        "names": index.get("names", {}),
                        "labels": index.get("labels", {}),
                        "channels": [
                            [[_finite_or_none(v) for v in slot] for slot in channel]
                            for channel in array.tolist()
                        ],
                    }
                )
    fv_tag = metadata.feature_vis_channels_tag(layer)
    if fv_tag in tags:
        for datum in _read_own_tensors(data_provider, ctx, experiment_id, run, fv_tag) or []:
            raw = np.asarray(datum.numpy)
            if raw.dtype.kind not in "fiub" or raw.ndim != 2 or raw.shape[-1] != 2:
                continue
            array = raw.astype(np.float64)
            answer["feature_vis"].append(
                {
                    "step": datum.step,
                    "channels": [int(c) for c in array[:, 0]],
                    "objective": [_finite_or_none(v) for v in array[:, 1]],
                }
            )
    return answer


def static_file(name: str, *, static_dir: str = STATIC_DIR) -> tuple[bytes, str]:
    """Bytes and content type of one file of ``static/``.

    Only plain file names (letters, digits, ``_ . -``; ``.js``, ``.css``,
    ``.svg``, ``.png``) directly inside ``static_dir`` are served.

    Raises:
        NotFoundError: for any other name, including any path with ``/``, ``\\``
            or ``..``.
    """
    if not _STATIC_NAME.fullmatch(name) or ".." in name:
        raise errors.NotFoundError(f"No static file {name!r}.")
    root = os.path.realpath(static_dir)
    path = os.path.realpath(os.path.join(root, name))
    if os.path.dirname(path) != root or not os.path.isfile(path):
        raise errors.NotFoundError(f"No static file {name!r}.")
    with open(path, "rb") as f:
        body = f.read()
    return body, _CONTENT_TYPES[name.rsplit(".", 1)[1]]
