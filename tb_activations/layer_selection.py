"""Which layers to watch: listing the selectable layers of a Keras model and
resolving a user's selection (names, globs, classes, predicates, keywords).

Layers of nested models (a ``keras.applications`` backbone used as a layer)
are listed under their path, ``outer/inner``. Input layers are never
selectable: feeding and fetching the same tensor is the article's crash.

The default selection (``layers=None``, see :func:`default_layers`) keeps a
few layers that show something new: every computing layer of a small model
(VGG16's 13 conv and 5 pooling layers), the *stage outputs* and pooling
layers of a large one (ResNet50: 6 layers out of 174). ``docs/guide/layers.md``
states the rule.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras

from tb_activations import backend as _backend

LayerSpec = str | type | Callable[[Any], bool] | keras.layers.Layer
"""One item of ``layers=``: an exact name or path, a glob, a class, a predicate, a layer,
or one of the :data:`KEYWORDS`."""

#: Words that ``layers=`` reads as sets of layers, alone or among other items:
#: ``"default"`` the default rule (what ``layers=None`` selects), ``"stages"``
#: the stage outputs and pooling layers whatever the model's size, ``"all"``
#: every layer with a spatial output (identity and preprocessing layers included).
KEYWORDS = ("default", "stages", "all")

#: A model with at most this many candidate layers (see :func:`default_layers`)
#: gets all of them by default; a larger one gets its stage outputs and pooling layers.
SMALL_MODEL_LAYERS = 24

#: Two layers are in different stages when their maps differ in height or width
#: by this factor or more (a stride-2 step is 2x; a "valid" 3x3 conv, 149 -> 147, is not).
STAGE_RATIO = 1.5

#: :func:`costly_selection` warns above this many layers ...
COSTLY_LAYERS = 48
#: ... or above this many bytes of images per logged step (uncompressed estimate).
COSTLY_STEP_BYTES = 256 * 2**20

# Class names of third-party layers that are the identity at inference
# (ConvNeXt's and KerasHub's stochastic depth).
_IDENTITY_CLASS_NAMES = frozenset({"StochasticDepth", "DropPath"})


@dataclass(frozen=True)
class LayerInfo:
    """One selectable layer.

    Attributes:
        path: Unique name, ``outer/inner`` for a layer of a nested model.
        layer: The Keras layer (or nested model) itself.
        shape: Output shape without the batch axis, as the layer produces it,
            or ``None`` when it is not known symbolically (subclassed models).
        index: Position in model order (0 = closest to the input).
        channels_first: Whether the output is channels-first (it is returned
            channels-last by the extractor).
        is_model: Whether the layer is a nested model.
    """

    path: str
    layer: Any = field(compare=False, repr=False)
    shape: tuple[int | None, ...] | None
    index: int
    channels_first: bool = False
    is_model: bool = False

    @property
    def class_name(self) -> str:
        return type(self.layer).__name__

    @property
    def is_feature_map(self) -> bool:
        """A spatial, conv-like output: rank 4 with the batch axis."""
        return self.shape is not None and len(self.shape) == 3

    @property
    def channels_last_shape(self) -> tuple[int | None, ...] | None:
        """``shape`` with channels moved last."""
        if self.shape is None or not self.channels_first or len(self.shape) < 2:
            return self.shape
        return (*self.shape[1:], self.shape[0])

    @property
    def spatial_size(self) -> tuple[int | None, int | None] | None:
        """``(H, W)`` of a feature map, ``None`` for other outputs."""
        shape = self.channels_last_shape
        return (shape[0], shape[1]) if self.is_feature_map and shape is not None else None


def is_functional(model: Any) -> bool:
    """Whether ``model`` has a symbolic graph (Functional, or a built Sequential)."""
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None) is not None
    return hasattr(model, "_nodes_by_depth") and bool(getattr(model, "inputs", None))


def _output_shape(layer: Any) -> tuple[int | None, ...] | None:
    try:
        out = layer.output
    except (AttributeError, ValueError, RuntimeError):
        # No symbolic output (subclassed model) or a layer shared by several nodes.
        return None
    if isinstance(out, (list, tuple)) or not hasattr(out, "shape"):
        return None
    return tuple(out.shape)[1:]


def _is_channels_first(layer: Any) -> bool:
    fmt = getattr(layer, "data_format", None)
    if fmt is None:
        return False
    return fmt == "channels_first"


def _is_input_layer(layer: Any) -> bool:
    return isinstance(layer, keras.layers.InputLayer)


def list_layers(model: Any) -> list[LayerInfo]:
    """Every selectable layer of ``model``, nested models expanded, in model order.

    Input layers are left out. A nested model is listed itself (its output)
    and followed by its own layers under ``name/``.

    Raises:
        TypeError: ``model`` is not a Keras 3 model (the message names the supported backends).

    Examples:
        >>> [l.path for l in list_layers(keras.applications.VGG16(weights=None))][:2]
        ['block1_conv1', 'block1_conv2']
    """
    # The backend-aware check: a torch.nn.Module, a tf.keras model or one from before a
    # keras.config.set_backend() is told what is supported.
    _backend.check_keras_model(model)
    out: list[LayerInfo] = []
    _walk(model, "", out)
    return out


def _walk(model: Any, prefix: str, out: list[LayerInfo]) -> None:
    for layer in getattr(model, "layers", []):
        if _is_input_layer(layer):
            continue
        path = prefix + layer.name
        is_model = isinstance(layer, keras.Model)
        out.append(
            LayerInfo(
                path=path,
                layer=layer,
                shape=_output_shape(layer),
                index=len(out),
                channels_first=_is_channels_first(layer),
                is_model=is_model,
            )
        )
        if is_model:
            _walk(layer, path + "/", out)


def is_identity_at_inference(layer: Any) -> bool:
    """Whether ``layer`` returns its input unchanged at inference.

    Dropout and its kin (``Dropout``, ``SpatialDropout1D/2D/3D``,
    ``GaussianDropout``, ``AlphaDropout``), ``GaussianNoise``,
    ``ActivityRegularization``, ``Identity``, and stochastic depth
    (``StochasticDepth``, ``DropPath``): their maps repeat the previous layer's.
    """
    if isinstance(layer, keras.layers.Identity) or type(layer).__name__ in _IDENTITY_CLASS_NAMES:
        return True
    # Every layer of keras' regularization package is the identity at inference.
    return type(layer).__module__.startswith("keras.src.layers.regularization")


def is_preprocessing(layer: Any) -> bool:
    """Whether ``layer`` prepares the input image rather than computing features.

    ``Rescaling``, ``Normalization`` and every image preprocessing or
    augmentation layer (``Resizing``, ``CenterCrop``, ``RandomFlip``, ...):
    their maps are the probe image, rescaled or (in training) distorted.
    """
    if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)):
        return True
    return type(layer).__module__.startswith("keras.src.layers.preprocessing.image_preprocessing")


# Layers that move, pad or repeat their input's values without computing new ones.
_COPYING_LAYERS = (
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Cropping3D,
    keras.layers.UpSampling1D,
    keras.layers.UpSampling2D,
    keras.layers.UpSampling3D,
    keras.layers.Reshape,
    keras.layers.Permute,
)

_POOLING_LAYERS = (
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
)


def is_candidate(info: LayerInfo) -> bool:
    """Whether the default rule considers ``info``: a spatial (rank-4) output of a layer
    that computes new values.

    Left out: nested models (their last layer is listed), layers that are the
    identity at inference (:func:`is_identity_at_inference`), input
    preprocessing and augmentation (:func:`is_preprocessing`), and layers that
    only pad, crop, repeat or reshape their input.
    """
    layer = info.layer
    return (
        info.is_feature_map
        and not info.is_model
        and not is_identity_at_inference(layer)
        and not is_preprocessing(layer)
        and not isinstance(layer, _COPYING_LAYERS)
    )


def stage_outputs(infos: Sequence[LayerInfo]) -> list[LayerInfo]:
    """The stage outputs and downsampling pooling layers among the candidates of ``infos``.

    A layer *resamples* when its map is :data:`STAGE_RATIO` times smaller (or
    larger) than an input's in height or width: a strided convolution, a
    pooling layer, an upsampling. Where the sizes are not known (a model
    built for any input size), a layer with ``strides`` above 1, ``UpSampling``
    or ``Resizing`` does. The *stage outputs* are the maps that resample
    layers read: the nearest candidate (:func:`is_candidate`) upstream of each,
    through padding and other non-candidates; plus the model's last map. The
    pooling layers that resample are kept too. Maps of 1 x 1
    (squeeze-and-excitation branches) take no part.

    A model without a symbolic graph (subclassed) is read in model order: the
    last candidate before the map size changes by :data:`STAGE_RATIO`.

    Returns:
        The selected layers, in model order. ResNet50: ``conv1_relu``,
        ``pool1_pool``, ``conv2_block3_out``, ``conv3_block4_out``,
        ``conv4_block6_out``, ``conv5_block3_out``.
    """
    candidates = [i for i in infos if is_candidate(i)]
    maps = [i for i in candidates if i.spatial_size not in (None, (1, 1))]
    if not maps:
        return []
    graph = _Graph(infos)
    if not graph.known(candidates):
        return _stage_outputs_in_order(candidates)
    keep: set[str] = {maps[-1].path}
    for info in infos:
        size = info.spatial_size
        if info.is_model or size is None or size == (1, 1):
            continue
        for tensor, producer in graph.inputs(info.layer):
            in_size = _map_size(tensor, info.channels_first)
            if in_size is None or in_size == (1, 1):
                continue
            known = None not in (*size, *in_size)
            if (known and _new_stage(in_size, size)) or (not known and _resamples(info.layer)):
                keep.update(graph.nearest(producer, candidates))
                if isinstance(info.layer, _POOLING_LAYERS):
                    keep.add(info.path)
    return [i for i in candidates if i.path in keep]


def _stage_outputs_in_order(candidates: Sequence[LayerInfo]) -> list[LayerInfo]:
    keep: set[str] = set()
    maps = [i for i in candidates if i.spatial_size not in (None, (1, 1))]
    start: tuple[int | None, int | None] | None = None
    for info, nxt in zip(maps, [*maps[1:], None]):
        if start is None:
            start = info.spatial_size
        if nxt is None or _new_stage(start, nxt.spatial_size):
            keep.add(info.path)
            if nxt is not None and isinstance(nxt.layer, _POOLING_LAYERS):
                keep.add(nxt.path)
            start = None
    return [i for i in candidates if i.path in keep]


def _new_stage(a: tuple[int | None, int | None], b: tuple[int | None, int | None]) -> bool:
    """Whether map sizes ``a`` and ``b`` differ by :data:`STAGE_RATIO` (or one is unknown)."""
    for x, y in zip(a, b):
        if x is None or y is None:
            if x != y:
                return True
            continue
        if max(x, y) >= STAGE_RATIO * min(x, y):
            return True
    return False


def _resamples(layer: Any) -> bool:
    """Whether ``layer`` changes the map size, from its configuration alone."""
    if isinstance(layer, (keras.layers.UpSampling2D, keras.layers.Resizing)):
        return True
    strides = getattr(layer, "strides", None)
    if isinstance(strides, int):
        strides = (strides,)
    return bool(strides) and max(strides) > 1


def _map_size(tensor: Any, channels_first: bool) -> tuple[int | None, int | None] | None:
    shape = tuple(getattr(tensor, "shape", ()))
    if len(shape) != 4:
        return None
    return (shape[2], shape[3]) if channels_first else (shape[1], shape[2])


class _Graph:
    """Who feeds whom in a functional model, nested models seen through."""

    def __init__(self, infos: Sequence[LayerInfo]) -> None:
        self.by_id = {id(i.layer): i for i in infos}
        # A nested model's input layer stands for what feeds the nested model.
        self.owner: dict[int, Any] = {}
        for info in infos:
            if info.is_model:
                for layer in getattr(info.layer, "layers", []):
                    if _is_input_layer(layer):
                        self.owner[id(layer)] = info.layer

    @staticmethod
    def inputs(layer: Any) -> list[tuple[Any, Any]]:
        """``(tensor, producing layer)`` of every input of every call of ``layer``."""
        out = []
        for node in getattr(layer, "_inbound_nodes", []):
            for tensor in node.input_tensors:
                history = getattr(tensor, "_keras_history", None)
                if history is not None:
                    out.append((tensor, history[0]))
        return out

    def known(self, candidates: Sequence[LayerInfo]) -> bool:
        return any(self.inputs(i.layer) for i in candidates)

    def nearest(self, op: Any, candidates: Sequence[LayerInfo]) -> set[str]:
        """Paths of the candidates nearest upstream of ``op`` (``op`` itself if one)."""
        wanted = {id(i.layer): i.path for i in candidates}
        found: set[str] = set()
        seen: set[int] = set()
        todo = [op]
        while todo:
            op = todo.pop()
            if id(op) in seen:
                continue
            seen.add(id(op))
            if id(op) in wanted:
                found.add(wanted[id(op)])
            elif isinstance(op, keras.Model) and id(op) in self.by_id:
                # A nested model: its outputs' producers.
                todo.extend(t._keras_history[0] for t in op.outputs)
            elif _is_input_layer(op):
                if id(op) in self.owner:
                    todo.extend(p for _, p in self.inputs(self.owner[id(op)]))
            else:
                todo.extend(p for _, p in self.inputs(op))
        return found


def default_layers(infos: Sequence[LayerInfo]) -> list[LayerInfo]:
    """The default selection (``layers=None``) among ``infos``, in model order.

    The candidates are the spatial outputs of layers that compute new values
    (:func:`is_candidate`). A model with at most :data:`SMALL_MODEL_LAYERS`
    candidates gets all of them (VGG16: its 13 conv and 5 pooling layers);
    a larger one gets its :func:`stage_outputs` (ResNet50: 6 layers,
    MobileNetV2: 5, EfficientNetB0: 5; a large model that never changes its
    map size has one stage, and gets its last map).

    Args:
        infos: Every selectable layer, shapes known (:func:`list_layers`).

    Returns:
        The selected layers, in model order (empty when no layer qualifies).
    """
    candidates = [i for i in infos if is_candidate(i)]
    if len(candidates) <= SMALL_MODEL_LAYERS:
        return candidates
    return stage_outputs(infos)


def _all_spatial(infos: Sequence[LayerInfo]) -> list[LayerInfo]:
    return [i for i in infos if i.is_feature_map and not i.is_model]


def _keyword_layers(word: str, infos: Sequence[LayerInfo]) -> list[LayerInfo]:
    if word == "all":
        return _all_spatial(infos)
    if word == "stages":
        return stage_outputs(infos)
    return default_layers(infos)


def selects_by_shape(layers: Sequence[LayerSpec] | LayerSpec | None) -> bool:
    """Whether ``layers=`` needs the layers' output shapes: ``None`` or a keyword in it."""
    if layers is None:
        return True
    if isinstance(layers, str):
        return layers in KEYWORDS
    if isinstance(layers, Iterable):
        return any(isinstance(spec, str) and spec in KEYWORDS for spec in layers)
    return False


def select_layers(
    model: Any,
    layers: Sequence[LayerSpec] | LayerSpec | None = None,
    *,
    available: list[LayerInfo] | None = None,
) -> list[LayerInfo]:
    """Resolve ``layers=`` to the selected layers, in model order.

    Args:
        model: A Keras model.
        layers: ``None`` for the default rule (:func:`default_layers`: every
            computing layer with a spatial output on a small model, the stage
            outputs and pooling layers on a large one; layers that are the
            identity at inference, preprocessing and padding left out); or a
            list whose items are exact names or paths, glob patterns matched
            against paths (``"block*_pool"``), layer classes
            (``keras.layers.MaxPooling2D``), predicates ``callable(layer) -> bool``,
            layer objects, or the keywords of :data:`KEYWORDS`: ``"default"``,
            ``"stages"``, ``"all"`` (every layer with a spatial output), so
            that ``["default", "block_3_expand_relu"]`` widens the default by one
            layer. A keyword wins over a layer of the same name (select that
            one with a glob, ``"[a]ll"``).
        available: Listing to select from. Defaults to ``list_layers(model)``.

    Returns:
        The selected :class:`LayerInfo` list, in model order, without duplicates.

    Raises:
        ValueError: if an item matches no layer (the message lists the
            selectable paths), or the selection is empty.
    """
    infos = list_layers(model) if available is None else available
    given = layers
    if layers is None:
        layers = ["default"]
    if isinstance(layers, (str, type, keras.layers.Layer)) or (
        callable(layers) and not isinstance(layers, Iterable)
    ):
        layers = [layers]
    chosen: set[str] = set()
    for spec in layers:
        if isinstance(spec, str) and spec in KEYWORDS:
            matched = [i.path for i in _keyword_layers(spec, infos)]
            if not matched:
                shown = "None" if given is None else repr(spec)
                raise ValueError(
                    f"No layer of the model computes a spatial (rank-4) output, so "
                    f"`layers={shown}` selects nothing. Select layers explicitly among: "
                    f"{_names(infos)}"
                )
        else:
            matched = [i.path for i in infos if _matches(spec, i)]
        if not matched:
            raise ValueError(
                f"Invalid value for argument `layers`: {_describe(spec)} matches no layer. "
                f"Selectable layers: {_names(infos)}"
            )
        chosen.update(matched)
    return [i for i in infos if i.path in chosen]


def _matches(spec: Any, info: LayerInfo) -> bool:
    if isinstance(spec, str):
        if spec == info.path:
            return True
        if any(ch in spec for ch in "*?["):
            return fnmatch.fnmatchcase(info.path, spec)
        # A bare name reaches a layer of a nested model too.
        return "/" not in spec and info.path.rsplit("/", 1)[-1] == spec
    if isinstance(spec, type):
        return isinstance(info.layer, spec)
    if isinstance(spec, keras.layers.Layer):
        return info.layer is spec
    if callable(spec):
        return bool(spec(info.layer))
    raise TypeError(
        "Invalid item in argument `layers`. Expected a name, a glob, a layer class, a layer or "
        f"a callable. Received: {spec!r}"
    )


def _describe(spec: Any) -> str:
    if isinstance(spec, str):
        return repr(spec)
    if isinstance(spec, type):
        return f"class {spec.__name__}"
    return repr(spec)


def _names(infos: list[LayerInfo], limit: int = 60) -> str:
    names = [i.path for i in infos]
    text = ", ".join(names[:limit])
    return text + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


@dataclass(frozen=True)
class SelectionCost:
    """What logging a selection costs per step, estimated from the shapes alone.

    Attributes:
        layers: Number of layers.
        image_bytes: Bytes of the step's images before compression (mosaics and
            top-k strips one byte per pixel, overlays three). PNG and JPEG write
            less: about half of it for random pixels, less for photographs.
        activation_bytes: Bytes of the float32 activations fetched per step.
    """

    layers: int
    image_bytes: int
    activation_bytes: int


def selection_cost(
    infos: Sequence[LayerInfo],
    probes: int,
    image_size: tuple[int, int] | None = None,
    *,
    views: Sequence[str] = ("mosaic", "topk", "overlay"),
    max_image_size: int | None = 2048,
    top_k: int = 5,
) -> SelectionCost:
    """Estimate the per-step cost of logging ``infos`` on ``probes`` probes.

    Args:
        infos: The selected layers (shapes known).
        probes: Number of probes.
        image_size: ``(H, W)`` of the probes, for the overlays; ``None`` counts none.
        views: The views written.
        max_image_size: Cap on the long side of each image (``None`` or 0: none).
        top_k: Channels in the top-k strip.

    Returns:
        A :class:`SelectionCost`.
    """
    cap = max_image_size if max_image_size else None

    def capped(h: int, w: int) -> int:
        if cap is not None and max(h, w) > cap:
            s = cap / max(h, w)
            return max(1, int(h * s)) * max(1, int(w * s))
        return h * w

    image = acts = 0
    for info in infos:
        shape = info.channels_last_shape
        if not shape:
            continue
        dims = [d or 1 for d in shape]
        c = dims[-1]
        h, w = (dims[0], dims[1]) if len(dims) >= 3 else (1, dims[0] if len(dims) == 2 else 1)
        acts += 4 * h * w * c
        cell_h = h if h > 1 else 8  # strips and points are drawn 8 px tall
        cell_w = w if (w > 1 or h > 1) else 8
        if "mosaic" in views:
            side = max(1, round((c * (cell_h + 1) * (cell_w + 1)) ** 0.5))
            image += capped(side, side)
        if "topk" in views:
            up = max(1, -(-64 // max(h, w)))
            image += capped(cell_h * up, min(top_k, c) * (cell_w * up + 1))
        if "overlay" in views and h > 1 and image_size is not None:
            image += 3 * capped(image_size[0], 2 * image_size[1] + 1)
    return SelectionCost(len(infos), image * probes, acts * probes)


_warned: set[tuple[str, ...]] = set()


def warn_if_costly(
    infos: Sequence[LayerInfo],
    probes: int,
    image_size: tuple[int, int] | None = None,
    *,
    views: Sequence[str] = ("mosaic", "topk", "overlay"),
    max_image_size: int | None = 2048,
    top_k: int = 5,
    stacklevel: int = 3,
) -> SelectionCost:
    """Warn (once per selection and process) when logging ``infos`` costs much.

    "Much" is more than :data:`COSTLY_LAYERS` layers or more than
    :data:`COSTLY_STEP_BYTES` of images per step (:func:`selection_cost`).

    Returns:
        The :class:`SelectionCost`.
    """
    cost = selection_cost(
        infos, probes, image_size, views=views, max_image_size=max_image_size, top_k=top_k
    )
    if cost.layers <= COSTLY_LAYERS and cost.image_bytes <= COSTLY_STEP_BYTES:
        return cost
    key = tuple(i.path for i in infos)
    if key in _warned:
        return cost
    _warned.add(key)
    warnings.warn(
        f"Logging {cost.layers} layers on {probes} probes costs much at every logged step: "
        f"about {cost.image_bytes / 1e6:.0f} MB of images before compression and "
        f"{cost.activation_bytes / 1e6:.0f} MB of activations. The default "
        "(`layers=None`) keeps each stage's output and the pooling layers of a large model; "
        "pass `layers=` names or globs to log fewer, or fewer probes, "
        "`views=`, `max_image_size=`.",
        UserWarning,
        stacklevel=stacklevel,
    )
    return cost
