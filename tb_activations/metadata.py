"""The on-disk contract between the writer and the Activations plugin.

Everything the logger writes, and every name the plugin relies on, is
defined here, in the manner of TensorBoard's own ``plugins/*/metadata.py``.
This module must stay importable without TensorFlow or Keras: TensorBoard
imports the plugin (and so this module) at start-up.

Layout of one run (``<log_dir>/<run_name>``, ``run_name`` defaults to
``"activations"``), for each logged step and each selected layer ``L``
(``L`` is the layer path, ``outer/inner`` for nested models):

=========================  ===========  ==========================================
tag                        plugin       content
=========================  ===========  ==========================================
``L/mosaic``               ``images``   ``[w, h, png_probe_0, png_probe_1, ...]``
``L/topk``                 ``images``   same layout, the top-k strip per probe
``L/overlay``              ``images``   same layout, overlays per probe
``L/mean_activation``      ``scalars``  float32 mean over probes, positions, channels
``L/dead_fraction``        ``scalars``  float32 fraction of all-zero channels
``L/nonfinite_count``      ``scalars``  float32 number of NaN/Inf values
``L/channel_stats``        this plugin  float32 ``(N, C, 4)``: mean, max, min, std
                                        per probe and channel; its plugin content
                                        (JSON, see :func:`create_layer_content`)
                                        describes the layer and the mosaic grid.
``_tb_activations/log_seconds`` scalars  wall time of one ``log()``
=========================  ===========  ==========================================
"""

from __future__ import annotations

import json
from typing import Any

from tensorboard.compat.proto import summary_pb2

#: The plugin name under which layer descriptions and channel stats are stored.
PLUGIN_NAME = "activations"

#: Version of the JSON plugin content; bump on incompatible change.
PROTO_VERSION = 1

#: Default run (sub-folder of ``log_dir``) the logger writes to, so that a
#: ``log_dir`` shared with ``keras.callbacks.TensorBoard`` keeps its runs apart.
DEFAULT_RUN_NAME = "activations"

#: Image views written per layer, in display order.
VIEWS = ("mosaic", "topk", "overlay")

#: Suffix of the per-layer channel statistics tag.
STATS_SUFFIX = "channel_stats"

#: Order of the last axis of the channel statistics tensor.
STATS_FIELDS = ("mean", "max", "min", "std")

#: Per-layer scalar suffixes written by the core logger.
SCALAR_SUFFIXES = ("mean_activation", "dead_fraction", "nonfinite_count")

#: Tag prefix for the logger's own measurements (not a layer).
INTERNAL_PREFIX = "_tb_activations"
LOG_SECONDS_TAG = INTERNAL_PREFIX + "/log_seconds"

# Values of ``SummaryMetadata.data_class`` (see TensorBoard's summary.proto):
# third-party data left at DATA_CLASS_UNKNOWN is invisible to both loaders.
DATA_CLASS_TENSOR = summary_pb2.DATA_CLASS_TENSOR


def view_tag(layer: str, view: str) -> str:
    """Tag of one image view (``"mosaic"``, ``"topk"``, ``"overlay"``) of a layer."""
    return f"{layer}/{view}"


def stats_tag(layer: str) -> str:
    """Tag of the per-channel statistics tensor of a layer."""
    return f"{layer}/{STATS_SUFFIX}"


def scalar_tag(layer: str, name: str) -> str:
    """Tag of a per-layer scalar such as ``"dead_fraction"``."""
    return f"{layer}/{name}"


def layer_of_stats_tag(tag: str) -> str | None:
    """Layer path of a channel statistics tag, or ``None`` for other tags."""
    suffix = "/" + STATS_SUFFIX
    return tag[: -len(suffix)] if tag.endswith(suffix) else None


def create_layer_content(
    *,
    layer: str,
    index: int,
    class_name: str,
    shape: tuple[int, int, int],
    probes: list[str],
    labels: list[str | None] | None,
    grid: dict[str, int],
    top_k: int,
    rank_by: str,
    colormap: str,
    normalize: str,
) -> dict[str, Any]:
    """Plugin content describing one layer; stored with its ``channel_stats`` tag.

    Args:
        layer: Layer path (``outer/inner`` for nested models).
        index: Position of the layer in model order (0 = closest to the input).
        class_name: The layer's class, e.g. ``"Conv2D"``.
        shape: ``(H, W, C)`` of the layer output for one probe, channels-last.
        probes: Probe names, in the order of the images in each view tag.
        labels: Probe labels, or ``None``.
        grid: Mosaic geometry in PNG pixels: ``cols``, ``rows``, ``cell_w``,
            ``cell_h`` (one channel's cell) and ``sep`` (separator width), so
            that a pixel ``(x, y)`` maps to channel
            ``(y // (cell_h + sep)) * cols + x // (cell_w + sep)``.
        top_k: Number of channels in the top-k strip.
        rank_by: Statistic ranking the top-k channels (``mean``, ``max``, ``std``).
        colormap: Colormap name of the rendered views.
        normalize: Normalisation scope of the rendered views.
    """
    return {
        "version": PROTO_VERSION,
        "layer": layer,
        "index": int(index),
        "class_name": class_name,
        "shape": [int(s) for s in shape],
        "probes": list(probes),
        "labels": None if labels is None else [None if v is None else str(v) for v in labels],
        "views": {v: view_tag(layer, v) for v in VIEWS},
        "stats_fields": list(STATS_FIELDS),
        "grid": {k: int(v) for k, v in grid.items()},
        "top_k": int(top_k),
        "rank_by": rank_by,
        "colormap": colormap,
        "normalize": normalize,
    }


def create_summary_metadata(
    *, display_name: str, description: str, content: dict[str, Any]
) -> summary_pb2.SummaryMetadata:
    """``SummaryMetadata`` for data of this plugin, with ``data_class`` set."""
    return summary_pb2.SummaryMetadata(
        display_name=display_name,
        summary_description=description,
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=PLUGIN_NAME,
            content=json.dumps(content, sort_keys=True).encode("utf-8"),
        ),
        data_class=DATA_CLASS_TENSOR,
    )


def parse_plugin_metadata(content: bytes) -> dict[str, Any]:
    """Parse the plugin content written by :func:`create_summary_metadata`.

    Raises:
        ValueError: if the content is not this plugin's JSON, or of a newer
            version than this reader knows.
    """
    if not isinstance(content, bytes):
        raise TypeError(f"Content type must be bytes. Received: {type(content).__name__}")
    try:
        parsed = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"Invalid activations plugin content: {err}") from err
    if not isinstance(parsed, dict):
        raise ValueError("Invalid activations plugin content: expected a JSON object.")
    version = parsed.get("version")
    if not isinstance(version, int) or version > PROTO_VERSION:
        raise ValueError(
            f"Unknown activations plugin content version: {version!r} "
            f"(this reader knows up to {PROTO_VERSION})."
        )
    return parsed
