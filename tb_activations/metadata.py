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
``L/color_scale``          this plugin  float32 ``[lo, hi]`` colour scale of this step's
                                        views, ``(2,)``, or ``(2, C)`` per channel
                                        (``normalize="channel"``); content from
                                        :func:`create_scale_content`.
``_tb_activations/stall_seconds`` scalars  seconds training waited for one ``log()``
``_tb_activations/worker_seconds`` scalars seconds of rendering and writing one step
``_tb_activations/queue_waits`` scalars  times ``log()`` waited for the worker
``_tb_activations/images_written`` scalars 1 where the step wrote the views, else 0
=========================  ===========  ==========================================

Drift and diagnostics (issue 4, written by :mod:`tb_activations.diagnostics`
when ``drift=True``, the default), per step:

======================================  ===========  =================================
tag                                     plugin       content
======================================  ===========  =================================
``L/cka_first``                         ``scalars``  linear CKA vs the first logged step
``L/cka_previous``                      ``scalars``  vs the previous logged step (from step 2)
``L/cka_reference``                     ``scalars``  vs the pinned reference (once pinned)
``L/newly_dead_fraction``               ``scalars``  channels dead now, alive at the previous step
``L/saturated_fraction``                ``scalars``  sigmoid/tanh layers only: saturated channels
``L/topk_overlap``                      ``scalars``  mean over probes of shared top-k / k
``L/channel_rank_corr``                 ``scalars``  Spearman of channel means, vs previous step
``_tb_activations/cka_first_heatmap``   ``images``   one RGB PNG: layers x last 200 steps
``_tb_activations/top_channel_probes``  ``text``     markdown: per layer, top channels and
                                                     the probe exciting each most
``_tb_activations/predictions``         ``text``     markdown table (classifier output only)
``_tb_activations/predictions_tensor``  this plugin  float32 ``(N, 4)``, columns
                                                     :data:`PREDICTION_FIELDS`; content from
                                                     :func:`create_predictions_content`
======================================  ===========  =================================

Channel examples (issue 14, written by :mod:`tb_activations.examples_log` at
each example-step: ``log_examples()``, the callback's ``examples_freq``):

=================================  ===========  ======================================
tag                                plugin       content
=================================  ===========  ======================================
``L/examples``                     ``images``   pages: one row per channel, its top-k
                                                crops (receptive field), values under
``L/examples_data``                this plugin  float32 ``(C, k, 5)``, columns
                                                :data:`EXAMPLES_FIELDS`; content from
                                                :func:`create_examples_content`
``L/examples_index``               this plugin  float32 UTF-8 bytes of a JSON object:
                                                ``pool_size``, ``names`` and ``labels``
                                                of this step's winning images (by
                                                index); see :func:`encode_json_bytes`
``L/examples_new_fraction``        ``scalars``  fraction of the winners new since the
                                                previous example-step (from the second)
``L/feature_vis``                  ``images``   one optimised image per chosen channel
``L/feature_vis_channels``         this plugin  float32 ``(n, 2)``: channel, objective
=================================  ===========  ======================================

Attribution (issue 13, written by :mod:`tb_activations.attribution.step`; Grad-CAM by
default for classifiers), per step and method ``M`` (``gradcam``, ``gradcam_plus_plus``,
``saliency``, ``smoothgrad``, ``integrated_gradients``, ``occlusion``):

======================================  ===========  =================================
tag                                     plugin       content
======================================  ===========  =================================
``attribution/M/overlay``               ``images``   per probe ``[predicted | label]``:
                                                     the map of the predicted class over
                                                     the probe, and beside it the map of
                                                     the label's class where a label is
                                                     given and differs (else the probe)
``attribution/M/maps``                  this plugin  float32 ``(N, 2, h, w)``: the maps
                                                     (row 1 NaN where no label differs);
                                                     content from
                                                     :func:`create_attribution_content`
``attribution/M/classes``               this plugin  float32 ``(N, 3)``: predicted class,
                                                     explained label class (-1: none),
                                                     average drop, per probe and step
``attribution/M/average_drop``          ``scalars``  mean over probes of
                                                     ``max(0, p - p_masked) / p``
                                                     (Chattopadhay et al. 2018)
``attribution/M/nonfinite_count``       ``scalars``  NaN/Inf values in the maps
``attribution/M/class_maps``            this plugin  float32 ``(N, E, h, w)``: the maps of
                                                     the ``E`` classes of
                                                     ``attribution_classes=``, then of
                                                     ranks 2..k (``attribution_top_k``);
                                                     content from
                                                     :func:`create_attribution_classes_content`
``attribution/M/class_scores``          this plugin  float32 ``(N, E, 2)``: the class and
                                                     its probability, per probe and step
======================================  ===========  =================================

All scalars are float32. CKA is ``nan`` where undefined (a layer constant
over the samples, e.g. dead). A tag holds one plugin's data only, so the
predictions text and tensor have two tags.
"""

from __future__ import annotations

import json
import os
import shlex
from typing import Any

from tensorboard.compat.proto import summary_pb2

#: The plugin name under which layer descriptions and channel stats are stored.
PLUGIN_NAME = "activations"

#: Version of the JSON plugin content; bump on incompatible change.
PROTO_VERSION = 1

#: Default run (sub-folder of ``log_dir``) the logger writes to, so that a
#: ``log_dir`` shared with ``keras.callbacks.TensorBoard`` keeps its runs apart.
DEFAULT_RUN_NAME = "activations"

#: The flag that makes TensorBoard keep every logged step (images and this
#: plugin's tensors keep 10 steps by default). A large number, not 0: both
#: loaders read 0 as "keep all", but TensorBoard's own Images tab then asks
#: for ``downsample=0`` samples and shows none (TensorBoard 2.21). Every
#: printed command (CLI, demo, examples, dashboard notice) uses this one.
SAMPLING_FLAG = "--samples_per_plugin=images=100000,activations=100000,histograms=100000"


def tensorboard_command(log_dir: str | os.PathLike) -> str:
    """The shell command that shows ``log_dir`` with every logged step kept.

    Example:

    >>> tensorboard_command("logs/demo")
    'tensorboard --logdir logs/demo --samples_per_plugin=images=100000,activations=100000,histograms=100000'
    """
    return f"tensorboard --logdir {shlex.quote(os.fspath(log_dir))} {SAMPLING_FLAG}"


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
LOG_SECONDS_TAG = INTERNAL_PREFIX + "/log_seconds"  # runs written before the stall/worker split
#: Seconds the training thread spent in one ``log()`` (the stall training waited for).
STALL_SECONDS_TAG = INTERNAL_PREFIX + "/stall_seconds"
#: Seconds of rendering, encoding and measuring one step (the background worker's time).
WORKER_SECONDS_TAG = INTERNAL_PREFIX + "/worker_seconds"
#: Times ``log()`` waited for the background worker so far (it fell behind training).
QUEUE_WAITS_TAG = INTERNAL_PREFIX + "/queue_waits"
#: 1 at the steps whose layer pictures were written, 0 where ``images_every`` skipped them.
IMAGES_WRITTEN_TAG = INTERNAL_PREFIX + "/images_written"
#: The probes' display images (plugin ``images``), written at the first ``log()``.
PROBE_IMAGES_TAG = INTERNAL_PREFIX + "/probes"

#: Per-layer drift scalar suffixes (``L/<suffix>``), in display order; each is
#: written only at the steps where it is defined (see the table above).
DRIFT_SCALAR_SUFFIXES = (
    "cka_first",
    "cka_previous",
    "cka_reference",
    "newly_dead_fraction",
    "saturated_fraction",
    "topk_overlap",
    "channel_rank_corr",
)

#: Descriptions of the drift scalars (``str.format`` fields: ``layer``, ``cka``).
DRIFT_DESCRIPTIONS = {
    "cka_first": "Linear CKA ({cka}) of `{layer}` on the probes vs its first logged step; 1 = unchanged.",
    "cka_previous": "Linear CKA ({cka}) of `{layer}` vs the previous logged step; 1 = unchanged.",
    "cka_reference": "Linear CKA ({cka}) of `{layer}` vs the pinned reference (`pin_reference()`).",
    "newly_dead_fraction": "Fraction of channels of `{layer}` dead now and alive at the previous step.",
    "saturated_fraction": "Fraction of channels of `{layer}` within 0.01 of an asymptote on every probe.",
    "topk_overlap": "Mean over probes of |top-k now & top-k at the previous step| / k for `{layer}`.",
    "channel_rank_corr": "Spearman rank correlation of `{layer}`'s channel means, now vs previous step.",
}

#: Layer x step image of ``cka_first`` (plugin ``images``, one PNG).
CKA_HEATMAP_TAG = INTERNAL_PREFIX + "/cka_first_heatmap"
#: Markdown: per layer, the top channels and the probe exciting each most (plugin ``text``).
CHANNEL_PROBES_TAG = INTERNAL_PREFIX + "/top_channel_probes"
#: Markdown table of the probes' predictions (plugin ``text``).
PREDICTIONS_TEXT_TAG = INTERNAL_PREFIX + "/predictions"
#: float32 ``(N, 4)`` predictions tensor (this plugin, ``data_class`` TENSOR).
PREDICTIONS_TAG = INTERNAL_PREFIX + "/predictions_tensor"
#: Columns of the predictions tensor: predicted class index, its probability,
#: label class index (-1 when unknown) and the probability of the label (NaN when unknown).
PREDICTION_FIELDS = ("predicted_class", "confidence", "label_class", "label_probability")

#: Columns of ``L/examples_data``: the winner's activation (its channel's maximum over
#: positions), its pool image index, its position ``y``, ``x`` in the layer's output, and
#: whether it is new since the previous example-step (1, 0; -1 at the first). Image
#: index -1 and value NaN mark an empty slot.
EXAMPLES_FIELDS = ("value", "image", "y", "x", "new")


def examples_tag(layer: str) -> str:
    """Tag of the top-examples pages of a layer (plugin ``images``)."""
    return f"{layer}/examples"


def examples_data_tag(layer: str) -> str:
    """Tag of the top-examples tensor of a layer (this plugin)."""
    return f"{layer}/examples_data"


def examples_index_tag(layer: str) -> str:
    """Tag of the names and labels of each example-step's winning images (this plugin)."""
    return f"{layer}/examples_index"


def encode_json_bytes(obj: Any) -> list[int]:
    """``obj`` as JSON, UTF-8, one byte per element: a float32 tensor's values.

    Per-step text rides in a float tensor because a tag's plugin content is
    kept from its first step only, and float tensors read the same under
    both TensorBoard loaders.
    """
    return list(json.dumps(obj, sort_keys=True).encode("utf-8"))


def decode_json_bytes(values: Any) -> Any:
    """The object :func:`encode_json_bytes` encoded, from the tensor's values.

    Raises:
        ValueError: if the values are not bytes of UTF-8 JSON.
    """
    try:
        data = bytes(int(v) for v in values)
        return json.loads(data.decode("utf-8"))
    except (ValueError, TypeError, UnicodeDecodeError) as err:
        raise ValueError(f"Invalid examples index: {err}") from err


def feature_vis_tag(layer: str) -> str:
    """Tag of the optimised images of a layer's channels (plugin ``images``)."""
    return f"{layer}/feature_vis"


def feature_vis_channels_tag(layer: str) -> str:
    """Tag of the channels and objectives of ``feature_vis_tag``'s images (this plugin)."""
    return f"{layer}/feature_vis_channels"


def create_examples_content(
    *,
    layer: str,
    shape: tuple[int, int, int],
    k: int,
    field: dict[str, Any],
    grid: dict[str, int],
) -> dict[str, Any]:
    """Plugin content of ``L/examples_data`` (what stays the same from step to step).

    Args:
        layer: Layer path.
        shape: ``(H, W, C)`` of the layer output, channels-last.
        k: Examples per channel.
        field: ``size``, ``stride``, ``offset`` (per axis, input pixels) and
            ``method`` of the receptive field: position ``(y, x)`` sees input
            rows ``offset[0] + y * stride[0]`` to that plus ``size[0]`` (stop exclusive).
        grid: Geometry of the ``L/examples`` pages: ``channels``, ``k``, ``rows``
            (channels per page), ``pages``, ``cell``, ``label_h``, ``gutter_w``,
            ``sep``, ``width``, ``height``; channel ``c`` is on page ``c // rows``,
            row ``c % rows``, its crop ``j`` at ``x = gutter_w + j * (cell + sep)``,
            ``y = row * (cell + label_h + sep)``.
    """
    return {
        "version": PROTO_VERSION,
        "kind": "examples",
        "layer": layer,
        "shape": [int(s) for s in shape],
        "k": int(k),
        "fields": list(EXAMPLES_FIELDS),
        "field": {
            "size": [int(v) for v in field["size"]],
            "stride": [int(v) for v in field["stride"]],
            "offset": [int(v) for v in field["offset"]],
            "method": str(field.get("method", "graph")),
        },
        "grid": {key: int(v) for key, v in grid.items()},
        "views": {
            "examples": examples_tag(layer),
            "index": examples_index_tag(layer),
            "feature_vis": feature_vis_tag(layer),
        },
    }


def create_examples_index_content(*, layer: str) -> dict[str, Any]:
    """Plugin content of ``L/examples_index``."""
    return {
        "version": PROTO_VERSION,
        "kind": "examples_index",
        "layer": layer,
        "encoding": "utf-8-json",
    }


def create_feature_vis_content(*, layer: str, steps: int) -> dict[str, Any]:
    """Plugin content of ``L/feature_vis_channels``."""
    return {
        "version": PROTO_VERSION,
        "kind": "feature_vis",
        "layer": layer,
        "steps": int(steps),
        "fields": ["channel", "objective"],
        "images": feature_vis_tag(layer),
    }


#: Attribution methods of the logger (tag names; ``"gradcam++"`` is accepted for the second).
ATTRIBUTION_METHODS = (
    "gradcam",
    "gradcam_plus_plus",
    "saliency",
    "smoothgrad",
    "integrated_gradients",
    "occlusion",
)
#: Tag prefix of the attribution summaries.
ATTRIBUTION_PREFIX = "attribution"
#: Per-method attribution tags' suffixes: ``attribution/<method>/<suffix>``.
ATTRIBUTION_SUFFIXES = ("overlay", "maps", "classes", "average_drop", "nonfinite_count")
#: Columns of ``attribution/<method>/classes``.
ATTRIBUTION_FIELDS = ("predicted_class", "label_class", "average_drop")
#: Suffixes of the tags of the classes chosen with ``attribution_classes=``:
#: ``attribution/<method>/class_maps`` and ``attribution/<method>/class_scores``.
ATTRIBUTION_CLASS_SUFFIXES = ("class_maps", "class_scores")
#: Last-axis columns of ``attribution/<method>/class_scores``.
ATTRIBUTION_CLASS_FIELDS = ("class", "probability")

# Values of ``SummaryMetadata.data_class`` (see TensorBoard's summary.proto):
# third-party data left at DATA_CLASS_UNKNOWN is invisible to both loaders.
DATA_CLASS_TENSOR = summary_pb2.DATA_CLASS_TENSOR


def view_tag(layer: str, view: str) -> str:
    """Tag of one image view (``"mosaic"``, ``"topk"``, ``"overlay"``) of a layer."""
    return f"{layer}/{view}"


#: Suffix of the per-layer colour scale tensor (see :func:`scale_tag`).
SCALE_SUFFIX = "color_scale"


def scale_tag(layer: str) -> str:
    """Tag of the per-step colour scale ``[lo, hi]`` of a layer's views."""
    return f"{layer}/{SCALE_SUFFIX}"


def create_scale_content(colormap: str) -> dict[str, Any]:
    """Plugin content of a ``color_scale`` tag: the colormap the scale maps onto."""
    return {"version": PROTO_VERSION, "kind": "color_scale", "colormap": colormap}


def stats_tag(layer: str) -> str:
    """Tag of the per-channel statistics tensor of a layer."""
    return f"{layer}/{STATS_SUFFIX}"


#: Suffix of the per-layer activation histogram (the stock ``histograms`` plugin's format).
HISTOGRAM_SUFFIX = "histogram"


def histogram_tag(layer: str) -> str:
    """Tag of a layer's activation histogram, ``<layer>/histogram``."""
    return f"{layer}/{HISTOGRAM_SUFFIX}"


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


def create_predictions_content(
    *,
    probes: list[str],
    labels: list[Any] | None,
    class_names: list[str] | None,
    num_classes: int,
) -> dict[str, Any]:
    """Plugin content of the ``predictions_tensor`` tag.

    Args:
        probes: Probe names, in row order.
        labels: Probe labels as given, or ``None``.
        class_names: Class names, or ``None``.
        num_classes: Number of classes of the classifier output.
    """
    return {
        "version": PROTO_VERSION,
        "kind": "predictions",
        "probes": list(probes),
        "labels": None if labels is None else [None if v is None else str(v) for v in labels],
        "class_names": None if class_names is None else [str(c) for c in class_names],
        "num_classes": int(num_classes),
        "fields": list(PREDICTION_FIELDS),
    }


def attribution_tag(method: str, suffix: str) -> str:
    """Tag of one attribution summary, e.g. ``attribution/gradcam/overlay``."""
    return f"{ATTRIBUTION_PREFIX}/{method}/{suffix}"


def create_attribution_content(
    *,
    method: str,
    layer: str | None,
    probes: list[str],
    labels: list[Any] | None,
    class_names: list[str] | None,
    classes: list[list[int]],
    average_drop: list[float | None],
    colormap: str | None = None,
    alpha: float | None = None,
) -> dict[str, Any]:
    """Plugin content of the ``attribution/<method>/maps`` tag.

    Args:
        method: One of :data:`ATTRIBUTION_METHODS`.
        layer: The layer of a layer method (Grad-CAM), else ``None``.
        probes: Probe names, in row order.
        labels: Probe labels as given, or ``None``.
        class_names: Class names, or ``None``.
        classes: Per probe ``[predicted class, explained label class or -1]``
            at the first step (later steps: the ``classes`` tensor).
        average_drop: Per probe ``max(0, p - p_masked) / p`` of the predicted
            class (``None`` where not finite), at the first step.
        colormap: The colormap of the overlays (the dashboard draws the stored maps
            with it); left out when ``None``.
        alpha: The blend weight of the overlays; left out when ``None``.
    """
    return {
        "version": PROTO_VERSION,
        "kind": "attribution",
        "method": method,
        "layer": layer,
        "probes": list(probes),
        "labels": None if labels is None else [None if v is None else str(v) for v in labels],
        "class_names": None if class_names is None else [str(c) for c in class_names],
        "classes": [[int(c) for c in row] for row in classes],
        "average_drop": list(average_drop),
        "fields": list(ATTRIBUTION_FIELDS),
        "overlay": attribution_tag(method, "overlay"),
        **({} if colormap is None else {"colormap": str(colormap)}),
        **({} if alpha is None else {"alpha": float(alpha)}),
    }


def create_attribution_classes_content(
    *,
    method: str,
    layer: str | None,
    probes: list[str],
    class_names: list[str] | None,
    classes: list[int],
    colormap: str,
    alpha: float,
    ranks: list[int] | None = None,
) -> dict[str, Any]:
    """Plugin content of the ``attribution/<method>/class_maps`` tag.

    Args:
        method: One of :data:`ATTRIBUTION_METHODS`.
        layer: The layer of a layer method (Grad-CAM), else ``None``.
        probes: Probe names, in row order.
        class_names: Class names, or ``None``.
        classes: The class index of the first map columns (``attribution_classes=``).
        colormap: The colormap of the logger's overlays: the dashboard draws these
            maps over the probes with it.
        alpha: The blend weight of the logger's overlays.
        ranks: The ranks of the next columns (``attribution_top_k=``): rank ``r`` is
            each probe's ``r``-th highest scoring class (its class per probe and step
            is in ``class_scores``).
    """
    return {
        "version": PROTO_VERSION,
        "kind": "attribution_classes",
        "method": method,
        "layer": layer,
        "probes": list(probes),
        "class_names": None if class_names is None else [str(c) for c in class_names],
        "classes": [int(c) for c in classes],
        "ranks": [int(r) for r in ranks or ()],
        "colormap": str(colormap),
        "alpha": float(alpha),
        "fields": list(ATTRIBUTION_CLASS_FIELDS),
        "scores": attribution_tag(method, "class_scores"),
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
