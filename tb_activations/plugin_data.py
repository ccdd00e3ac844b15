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

import math
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from tensorboard import errors
from tensorboard.data import provider as tb_provider

from tb_activations import metadata

#: Plugin name of ``tf.summary.image`` data (the mosaic, top-k and overlay views).
IMAGES_PLUGIN = "images"

#: Plugin name of scalar data (per-layer measures and drift scores).
SCALARS_PLUGIN = "scalars"

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


# --------------------------------------------------------------------------
# Helpers


def _read_own_tensors(data_provider: Any, ctx: Any, experiment_id: str, run: str, tag: str):
    """Every kept step of one tensor tag of this plugin, or ``None`` if the run has no such tag."""
    series = data_provider.read_tensors(
        ctx,
        experiment_id=experiment_id,
        plugin_name=metadata.PLUGIN_NAME,
        downsample=READ_ALL,
        run_tag_filter=_filter(run, [tag]),
    )
    return series.get(run, {}).get(tag)


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
            except (TypeError, ValueError) as err:
                skipped.append({"run": run_name, "tag": tag, "reason": str(err)})
                continue
            content = dict(content)
            content["layer"] = layer  # the tag is authoritative
            content["max_step"] = series.max_step
            layers[layer] = content
    return {r: v for r, v in result.items() if v}, skipped


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


def list_layers(data_provider, ctx, *, experiment_id: str, run: str) -> dict[str, Any]:
    """The layers of one run, in model order, with the steps each view has.

    ``steps`` of a layer are the steps whose mosaic TensorBoard kept;
    ``logged_steps`` are the steps its scalars (kept 1000 by default) say were
    logged. When the first is shorter, TensorBoard sampled steps away and
    ``sampling`` says which flag keeps them all.

    Returns:
        ``{"run", "layers": [...], "steps": [...], "logged_steps": [...],
        "sampling": None | {"kept", "logged", "flag", "message"},
        "probe_images": None | {"tag", "steps"}, "skipped": [...]}``;
        each layer carries its plugin content (``index``, ``class_name``,
        ``shape``, ``probes``, ``labels``, ``views``, ``grid``, ``top_k``, ...)
        plus ``steps`` (kept mosaic steps) and ``logged_steps``.

    Raises:
        NotFoundError: if the run has no activation data.
    """
    contents, skipped = _layer_contents(data_provider, ctx, experiment_id, run)
    layers = contents.get(run)
    if not layers:
        raise errors.NotFoundError(f"No activation data for run {run!r}.")
    ordered = sorted(layers.values(), key=_layer_order_key)

    # Steps kept per layer, from its mosaic tag (or its first view if the
    # mosaic was not logged): blob keys only, no image bytes are read; the
    # other views are written at the same steps.
    step_tags = {c["layer"]: _steps_tag(c) for c in ordered}
    mosaic_tags = [t for t in step_tags.values() if t is not None]
    blob_series = data_provider.read_blob_sequences(
        ctx,
        experiment_id=experiment_id,
        plugin_name=IMAGES_PLUGIN,
        downsample=READ_ALL,
        run_tag_filter=_filter(run, [*mosaic_tags, PROBE_IMAGES_TAG]),
    ).get(run, {})
    # Steps logged per layer, from the scalars (1000 kept by default).
    scalar_tags = [metadata.scalar_tag(c["layer"], "mean_activation") for c in ordered]
    scalar_series = data_provider.read_scalars(
        ctx,
        experiment_id=experiment_id,
        plugin_name=SCALARS_PLUGIN,
        downsample=READ_ALL,
        run_tag_filter=_filter(run, [*scalar_tags, metadata.LOG_SECONDS_TAG]),
    ).get(run, {})
    run_logged = {d.step for d in scalar_series.get(metadata.LOG_SECONDS_TAG, [])}

    all_steps: set[int] = set()
    all_logged: set[int] = set(run_logged)
    sampled = False
    out_layers = []
    for content in ordered:
        layer = content["layer"]
        tag = step_tags[layer]
        steps = [d.step for d in blob_series.get(tag, [])] if tag is not None else []
        logged = {
            d.step for d in scalar_series.get(metadata.scalar_tag(layer, "mean_activation"), [])
        }
        logged |= set(steps)
        if len(steps) < len(logged):
            sampled = True
        all_steps.update(steps)
        all_logged |= logged
        out_layers.append({**content, "steps": steps, "logged_steps": sorted(logged)})
    sampling = None
    if sampled or all_logged - all_steps:
        sampling = {
            "kept": len(all_steps),
            "logged": len(all_logged),
            "flag": SAMPLING_FLAG,
            "message": (
                f"TensorBoard kept images for {len(all_steps)} of {len(all_logged)} logged steps. "
                f"Restart it with {SAMPLING_FLAG} to keep every step."
            ),
        }
    probe_steps = [d.step for d in blob_series.get(PROBE_IMAGES_TAG, [])]
    return {
        "run": run,
        "layers": out_layers,
        "probe_images": {"tag": PROBE_IMAGES_TAG, "steps": probe_steps} if probe_steps else None,
        "steps": sorted(all_steps),
        "logged_steps": sorted(all_logged),
        "sampling": sampling,
        "skipped": [s for s in skipped if s["run"] == run],
    }


def layer_stats(
    data_provider, ctx, *, experiment_id: str, run: str, layer: str, step: int
) -> dict[str, Any]:
    """Per-probe, per-channel statistics of one layer at one step.

    Returns:
        ``{"run", "layer", "step", "fields": ["mean", "max", "min", "std"],
        "probes": [...], "channels": C, "stats": [[[mean, max, min, std] per
        channel] per probe], "dead": [bool per channel], "stats_steps": [...]}``.
        A channel is dead when its max and min are 0 on every probe.
        Non-finite values are ``None``.

    Raises:
        NotFoundError: if the run, layer or step is unknown.
    """
    tag = metadata.stats_tag(layer)
    data = _read_own_tensors(data_provider, ctx, experiment_id, run, tag)
    if data is None:
        raise errors.NotFoundError(f"No channel statistics for run {run!r}, layer {layer!r}.")
    steps = [d.step for d in data]
    datum = next((d for d in data if d.step == step), None)
    if datum is None:
        raise errors.NotFoundError(
            f"No channel statistics for layer {layer!r} at step {step}; kept steps: "
            f"{steps[:20]}{' ...' if len(steps) > 20 else ''}. If steps are missing, "
            f"restart TensorBoard with {SAMPLING_FLAG}."
        )
    array = np.asarray(datum.numpy, dtype=np.float32)
    if array.ndim != 3 or array.shape[-1] != len(metadata.STATS_FIELDS):
        raise errors.NotFoundError(
            f"Channel statistics of layer {layer!r} have shape {list(array.shape)}; "
            f"expected (probes, channels, {len(metadata.STATS_FIELDS)})."
        )
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
    }


def image_bytes(
    data_provider, ctx, *, experiment_id: str, run: str, tag: str, step: int, index: int
) -> bytes:
    """The stored PNG of probe ``index`` of image tag ``tag`` at ``step``, as written.

    Raises:
        NotFoundError: if the run, tag, step or index is unknown.
    """
    series = data_provider.read_blob_sequences(
        ctx,
        experiment_id=experiment_id,
        plugin_name=IMAGES_PLUGIN,
        downsample=READ_ALL,
        run_tag_filter=_filter(run, [tag]),
    )
    data = series.get(run, {}).get(tag)
    if data is None:
        raise errors.NotFoundError(f"No images for run {run!r}, tag {tag!r}.")
    datum = next((d for d in data if d.step == step), None)
    if datum is None:
        raise errors.NotFoundError(
            f"No image for tag {tag!r} at step {step}. If steps are missing, "
            f"restart TensorBoard with {SAMPLING_FLAG}."
        )
    # values = [width, height, png_0, png_1, ...]
    if index + 2 >= len(datum.values):
        raise errors.NotFoundError(
            f"No image {index} for tag {tag!r} at step {step}: it holds {len(datum.values) - 2}."
        )
    return data_provider.read_blob(ctx, blob_key=datum.values[index + 2].blob_key)


def layer_scalars(
    data_provider, ctx, *, experiment_id: str, run: str, layer: str
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
    data = (
        data_provider.read_scalars(
            ctx,
            experiment_id=experiment_id,
            plugin_name=SCALARS_PLUGIN,
            downsample=READ_ALL,
            run_tag_filter=_filter(run, tags),
        ).get(run, {})
        if tags
        else {}
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


def predictions(data_provider, ctx, *, experiment_id: str, run: str) -> dict[str, Any]:
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
        run_tag_filter=_filter(run),
    )
    if run not in listing:
        raise errors.NotFoundError(f"No activation data for run {run!r}.")
    empty = {"run": run, "probes": [], "labels": None, "class_names": None, "num_classes": 0}
    series = listing[run].get(tag)
    if series is None:
        return {**empty, "fields": list(metadata.PREDICTION_FIELDS), "steps": []}
    try:
        content = metadata.parse_plugin_metadata(series.plugin_content)
    except (TypeError, ValueError):
        return {**empty, "fields": list(metadata.PREDICTION_FIELDS), "steps": []}
    data = _read_own_tensors(data_provider, ctx, experiment_id, run, tag) or []
    steps = []
    for datum in data:
        array = np.asarray(datum.numpy, dtype=np.float64)
        if array.ndim != 2:
            continue
        rows = [[_finite_or_none(v) for v in row] for row in array.tolist()]
        steps.append({"step": datum.step, "rows": rows})
    return {
        "run": run,
        "probes": list(content.get("probes") or []),
        "labels": content.get("labels"),
        "class_names": content.get("class_names"),
        "num_classes": int(content.get("num_classes") or 0),
        "fields": list(content.get("fields") or metadata.PREDICTION_FIELDS),
        "steps": steps,
    }


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
