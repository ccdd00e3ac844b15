"""Receptive fields: which input pixels one output position of a layer sees.

(The module is ``receptive_fields``, plural, so that ``from tb_activations import
receptive_field`` always gives the function, not this module.)

For a layer's output position ``i`` along a spatial axis, the field spans the
input pixels ``offset + i * stride`` to ``offset + i * stride + size - 1``
(inclusive; ``offset`` may be negative where padding reaches past the image).
The three numbers are computed from the graph, layer by layer, with the
recurrences of Araujo et al., "Computing Receptive Fields of Convolutional
Neural Networks" (Distill, 2019)::

    size_out   = size_in + (dilation * (kernel - 1)) * jump_in
    jump_out   = jump_in * stride
    offset_out = offset_in - pad_left * jump_in

Convolutions (plain, depthwise, separable; any dilation), pooling, zero
padding and cropping change the field; element-wise layers (activations,
normalisation, dropout, a ``Dense`` applied per position) leave it as it is;
merge layers (``Add``, ``Concatenate`` along channels, ...) take the union of
their inputs' fields, which must share one stride. Nested models are followed
into. A layer the analysis cannot follow (a custom layer, a transposed
convolution, upsampling) makes :func:`receptive_field` fall back to the
*empirical* field: where the input gradient of one output position is
non-zero, measured once per (model, layer) and cached.
"""

from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from tb_activations.layer_selection import LayerInfo, is_functional, list_layers, select_layers


@dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of one output position of a layer, per spatial axis.

    Attributes:
        size: Field size in input pixels, per spatial axis (``(H, W)`` order for images).
        stride: Input pixels between the fields of neighbouring output
            positions (the "jump"), per spatial axis.
        offset: Input coordinate of the first pixel of output position 0's
            field, per spatial axis; negative where padding reaches past the image.
        method: ``"graph"`` (computed from the layers) or ``"empirical"``
            (measured with the input gradient).

    Example:

    >>> rf = receptive_field(keras.applications.VGG16(weights=None), "block1_pool")
    >>> rf.size, rf.stride, rf.offset
    ((6, 6), (2, 2), (-2, -2))
    >>> rf.box((10, 3))                 # ((y0, y1), (x0, x1)), stop exclusive
    ((18, 24), (4, 10))
    """

    size: tuple[int, ...]
    stride: tuple[int, ...]
    offset: tuple[int, ...]
    method: str = "graph"

    def box(self, position: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
        """``((start, stop), ...)`` per axis of the field of ``position`` (stop exclusive).

        The box can extend past the image (negative start, stop beyond the size).
        """
        if len(position) != len(self.size):
            raise ValueError(
                f"Invalid value for argument `position`. Expected {len(self.size)} coordinates. "
                f"Received: position={tuple(position)!r}"
            )
        return tuple(
            (o + int(p) * j, o + int(p) * j + s)
            for p, s, j, o in zip(position, self.size, self.stride, self.offset)
        )

    def center(self, position: tuple[int, ...]) -> tuple[float, ...]:
        """Centre of the field of ``position`` in input pixel coordinates (may be a half pixel)."""
        return tuple((a + b - 1) / 2 for a, b in self.box(position))


class UnfollowableLayer(Exception):
    """Raised inside the graph analysis for a layer whose effect on the field is unknown."""

    def __init__(self, layer: Any, why: str) -> None:
        super().__init__(f"{type(layer).__name__} {getattr(layer, 'name', '')!r}: {why}")
        self.layer = layer


# Per model: {layer path: ReceptiveField}, so the empirical pass runs once per layer.
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def receptive_field(
    model: Any,
    layer: str | LayerInfo,
    *,
    empirical: bool | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> ReceptiveField:
    """The receptive field of one output position of ``layer``, in input pixels.

    Args:
        model: A Keras model whose single input is an image ``(H, W, C)``
            (channels-first inputs are handled from the layers' ``data_format``).
        layer: Layer name or path (``"backbone/conv1"``), or a
            :class:`~tb_activations.LayerInfo`.
        empirical: ``None`` (default): from the graph, or measured where the
            graph has a layer the analysis cannot follow; ``False``: from the
            graph or raise; ``True``: always measured (slow: one gradient).
        input_shape: ``(H, W, C)`` used by the empirical method when the
            model's input size is not fixed. Defaults to the model's input shape.

    Returns:
        A :class:`ReceptiveField`; its ``size``, ``stride`` and ``offset`` have
        one entry per spatial axis of the layer's output.

    Raises:
        ValueError: for an unknown layer, a layer without spatial output, or
            (``empirical=False``) a layer the analysis cannot follow.
    """
    if empirical not in (None, True, False):
        raise ValueError(
            "Invalid value for argument `empirical`. Expected None, True or False. "
            f"Received: empirical={empirical!r}"
        )
    info = layer if isinstance(layer, LayerInfo) else _resolve(model, layer)
    check_spatial(info)
    key = (info.path, empirical, None if input_shape is None else tuple(input_shape))
    cache = _CACHE.setdefault(model, {})
    if key in cache:
        return cache[key]
    field = None
    why = None
    if not empirical:
        try:
            f = _graph_field(model, info.path)
            field = ReceptiveField(f.size, f.jump, f.offset, method="graph")
        except UnfollowableLayer as err:
            why = str(err)
            if empirical is False:
                raise ValueError(
                    f"Cannot compute the receptive field of layer {info.path!r} from the graph: "
                    f"{why}. Pass empirical=None to measure it with the input gradient."
                ) from None
    if field is None:
        field = _empirical_field(model, info, input_shape, why)
    cache[key] = field
    return field


def check_spatial(info: LayerInfo) -> None:
    """Raise a ``ValueError`` if ``info``'s output has no spatial axis (a vector per image)."""
    shape = info.shape
    if shape is not None and len(shape) < 2:
        raise ValueError(
            f"Invalid value for argument `layer`: {info.path!r} ({info.class_name}) has output "
            f"shape {tuple(shape)}, with no spatial axis, so its channels have no position and no "
            "receptive field. Expected a layer with an output (H, W, C), such as a convolution "
            "or pooling layer."
        )


def _resolve(model: Any, layer: str) -> LayerInfo:
    if not isinstance(layer, str):
        raise ValueError(
            "Invalid value for argument `layer`. Expected a layer name or path, or a LayerInfo. "
            f"Received: layer={layer!r}"
        )
    matches = select_layers(model, [layer], available=list_layers(model))
    exact = [i for i in matches if i.path == layer]
    return (exact or matches)[0]


# -- from the graph -------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    size: tuple[int, ...]
    jump: tuple[int, ...]
    offset: tuple[int, ...]


def _graph_of(model: Any) -> Any:
    if isinstance(model, keras.Sequential):
        graph = getattr(model, "_functional", None)
        if graph is None:
            raise UnfollowableLayer(model, "an unbuilt Sequential model has no graph")
        return graph
    if not is_functional(model):
        raise UnfollowableLayer(model, "a subclassed model has no graph to follow")
    return model


def _graph_field(model: Any, path: str) -> _Field:
    graph = _graph_of(model)
    if len(graph.inputs) != 1:
        raise ValueError(
            f"Model {model.name!r} has {len(graph.inputs)} inputs; receptive fields are "
            "computed for single-input image models."
        )
    x = graph.inputs[0]
    n_spatial = len(x.shape) - 2
    if n_spatial < 1:
        raise ValueError(
            f"The input of model {model.name!r} has shape {tuple(x.shape)}: no spatial axis."
        )
    start = _Field((1,) * n_spatial, (1,) * n_spatial, (0,) * n_spatial)
    found: dict[str, _Field] = {}
    _walk_graph(graph, [start], "", path, found)
    if found.get(path) is None:
        raise UnfollowableLayer(model, f"layer {path!r} is not reached from the model input")
    return found[path]


def _walk_graph(graph: Any, inputs: list[_Field], prefix: str, target: str, found: dict) -> list:
    """Propagate fields from ``graph``'s inputs to its outputs; record ``target`` when seen."""
    fields: dict[int, Any] = {id(t): f for t, f in zip(graph.inputs, inputs)}
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            op = node.operation
            if not op or node.is_input:
                continue
            if any(id(t) not in fields for t in node.input_tensors):
                continue
            ins = [fields[id(t)] for t in node.input_tensors]
            path = prefix + op.name
            if isinstance(op, keras.Model):
                inner = _graph_of(op)
                if target.startswith(path + "/") or path == target:
                    outs = _walk_graph(inner, ins, path + "/", target, found)
                else:
                    outs = _walk_graph(inner, ins, path + "/", "", found)
            else:
                outs = [_layer_field(op, ins, node)] * len(node.outputs)
            for t, f in zip(node.outputs, outs):
                fields[id(t)] = f
            if path == target:
                if isinstance(outs[0], UnfollowableLayer):
                    raise outs[0]
                found.setdefault(path, outs[0])
            if target and target in found:
                return outs
    return [fields.get(id(t)) for t in graph.outputs]


_IDENTITY = tuple(
    c
    for c in (
        keras.layers.Activation,
        keras.layers.ReLU,
        keras.layers.LeakyReLU,
        keras.layers.PReLU,
        keras.layers.ELU,
        keras.layers.Softmax,
        keras.layers.BatchNormalization,
        keras.layers.Dropout,
        keras.layers.SpatialDropout1D,
        keras.layers.SpatialDropout2D,
        keras.layers.SpatialDropout3D,
        keras.layers.GaussianNoise,
        keras.layers.GaussianDropout,
        keras.layers.AlphaDropout,
        keras.layers.ActivityRegularization,
        keras.layers.Identity,
        keras.layers.Rescaling,
        keras.layers.Normalization,
        keras.layers.Masking,
    )
)


def _layer_field(layer: Any, ins: list, node: Any) -> Any:
    """The output field of ``layer`` given its inputs' fields (an exception object if unknown).

    An unfollowable layer does not fail at once: only a target downstream of it does.
    """
    bad = next((f for f in ins if isinstance(f, UnfollowableLayer)), None)
    if bad is not None:
        return bad
    if any(f is None for f in ins):
        return UnfollowableLayer(layer, "an input with no spatial axes")
    try:
        return _rule(layer, ins, node)
    except UnfollowableLayer as err:
        return err


def _spatial_shape(tensor: Any, data_format: str | None) -> tuple[int | None, ...]:
    shape = tuple(tensor.shape)
    return shape[2:] if data_format == "channels_first" else shape[1:-1]


def _rule(layer: Any, ins: list[_Field], node: Any) -> _Field | None:
    conv_bases = (
        keras.src.layers.convolutional.base_conv.BaseConv,
        keras.src.layers.convolutional.base_depthwise_conv.BaseDepthwiseConv,
        keras.src.layers.convolutional.base_separable_conv.BaseSeparableConv,
    )
    pool_base = keras.src.layers.pooling.base_pooling.BasePooling
    global_pool_base = keras.src.layers.pooling.base_global_pooling.BaseGlobalPooling
    field = ins[0]
    n = len(field.size)
    if isinstance(layer, keras.src.layers.convolutional.base_conv_transpose.BaseConvTranspose):
        raise UnfollowableLayer(layer, "a transposed convolution (fractional stride)")
    if isinstance(layer, (*conv_bases, pool_base)):
        is_pool = isinstance(layer, pool_base)
        kernel = _per_axis(layer.pool_size if is_pool else layer.kernel_size, n)
        strides = _per_axis(layer.strides if layer.strides is not None else kernel, n)
        dilation = (1,) * n if is_pool else _per_axis(layer.dilation_rate, n)
        sizes = _spatial_shape(node.input_tensors[0], layer.data_format)
        return _slide(field, kernel, strides, dilation, layer.padding, sizes)
    if isinstance(layer, global_pool_base):
        return None  # no spatial axes left
    if isinstance(
        layer, (keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D)
    ):
        pads = _pairs(layer.padding, n)
        offset = tuple(o - p[0] * j for o, p, j in zip(field.offset, pads, field.jump))
        return _Field(field.size, field.jump, offset)
    if isinstance(
        layer, (keras.layers.Cropping1D, keras.layers.Cropping2D, keras.layers.Cropping3D)
    ):
        crops = _pairs(layer.cropping, n)
        offset = tuple(o + c[0] * j for o, c, j in zip(field.offset, crops, field.jump))
        return _Field(field.size, field.jump, offset)
    if isinstance(layer, keras.src.layers.merging.base_merge.Merge):
        if isinstance(layer, keras.layers.Concatenate):
            rank = len(node.input_tensors[0].shape)
            axis = layer.axis % rank
            channel_axis = 1 if _data_format_of(node) == "channels_first" else rank - 1
            if axis != channel_axis:
                raise UnfollowableLayer(
                    layer, f"concatenation along axis {layer.axis}, not channels"
                )
        if isinstance(layer, keras.layers.Dot):
            raise UnfollowableLayer(layer, "a dot product mixes positions")
        return _union(layer, ins)
    if isinstance(layer, keras.layers.Dense) and len(node.input_tensors[0].shape) > 2:
        return field  # applied per position
    if isinstance(layer, keras.layers.LayerNormalization):
        rank = len(node.input_tensors[0].shape)
        axes = [
            a % rank
            for a in (layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis])
        ]
        if axes == [rank - 1]:
            return field
        raise UnfollowableLayer(layer, "normalisation over spatial axes")
    if isinstance(layer, _IDENTITY):
        return field
    raise UnfollowableLayer(layer, "a layer the receptive-field analysis does not know")


def _data_format_of(node: Any) -> str:
    # Merge layers have no data_format: the backend's image format tells where channels are.
    return keras.config.image_data_format()


def _per_axis(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    return value if len(value) == n else (value[0],) * n


def _pairs(value: Any, n: int) -> tuple[tuple[int, int], ...]:
    if isinstance(value, int):
        return ((value, value),) * n
    out = []
    for v in value:
        out.append((v, v) if isinstance(v, int) else (int(v[0]), int(v[1])))
    return tuple(out) if len(out) == n else (out[0],) * n


def _slide(
    field: _Field,
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    dilation: tuple[int, ...],
    padding: str,
    sizes: tuple[int | None, ...],
) -> _Field:
    size, jump, offset = [], [], []
    for r, j, o, k, s, d, n in zip(
        field.size, field.jump, field.offset, kernel, strides, dilation, sizes
    ):
        k_eff = d * (k - 1) + 1
        if padding == "valid":
            left = 0
        elif padding == "causal":
            left = k_eff - 1
        else:  # "same", as TensorFlow pads (Keras' other backends follow it)
            if n is None:
                # Unknown size: taken as a multiple of the stride (exact for stride 1).
                total = max(k_eff - s, 0)
            else:
                total = max((math.ceil(n / s) - 1) * s + k_eff - n, 0)
            left = total // 2
        size.append(r + (k_eff - 1) * j)
        jump.append(j * s)
        offset.append(o - left * j)
    return _Field(tuple(size), tuple(jump), tuple(offset))


def _union(layer: Any, ins: list[_Field]) -> _Field:
    jumps = {f.jump for f in ins}
    if len(jumps) > 1:
        raise UnfollowableLayer(
            layer, f"its inputs have different strides {sorted(jumps)}, so positions do not align"
        )
    first = tuple(min(f.offset[a] for f in ins) for a in range(len(ins[0].size)))
    last = tuple(max(f.offset[a] + f.size[a] for f in ins) for a in range(len(ins[0].size)))
    return _Field(tuple(b - a for a, b in zip(first, last)), ins[0].jump, first)


# -- measured -------------------------------------------------------------------


def _empirical_field(
    model: Any, info: LayerInfo, input_shape: tuple[int, ...] | None, why: str | None
) -> ReceptiveField:
    """Where the input gradient of one output position is non-zero (a few random inputs).

    Two neighbouring positions along each axis give the stride; positions away
    from the borders are chosen so that the field is not clipped by the image.
    """
    from tb_activations.autodiff import layer_model, value_and_gradient
    from tb_activations.extraction import model_input_shape

    shape = tuple(input_shape) if input_shape is not None else model_input_shape(model)
    if shape is None or any(s is None for s in shape):
        raise ValueError(
            f"Cannot measure the receptive field of layer {info.path!r}"
            + (f" ({why})" if why else "")
            + f": the input shape of model {model.name!r} is not fixed ({shape}). "
            "Pass `input_shape=(H, W, C)`."
        )
    forward = layer_model(model, [info.path])
    rng = np.random.default_rng(0)
    # Several random inputs: a ReLU closed at one position for one input may be open for another.
    x = rng.standard_normal((8, *shape)).astype(np.float32)
    channels_first = info.channels_first
    out_full = tuple(_first(forward(x[:1])).shape[1:])
    out_shape = out_full[1:] if channels_first else out_full[:-1]
    spatial_in = shape[1:] if channels_first else shape[:-1]
    n = len(out_shape)
    if n != len(spatial_in):
        raise ValueError(
            f"Layer {info.path!r} has output spatial shape {out_shape}, input {spatial_in}: "
            "cannot relate their positions."
        )
    base = tuple(max(0, (s - 1) // 2) for s in out_shape)

    def support(position: tuple[int, ...]) -> list[tuple[int, int]]:
        def objective(inp: Any) -> Any:
            out = _first(forward(inp))
            index = (
                (slice(None), slice(None), *position)
                if channels_first
                else (slice(None), *position, slice(None))
            )
            return keras.ops.sum(out[index])

        _, grad = value_and_gradient(objective, x)
        g = np.abs(np.asarray(grad)).sum(axis=0)
        # Input channels: the model input's own format (channels-last unless the layers say so).
        g = g.sum(axis=0 if channels_first else -1)
        spans = []
        for axis in range(n):
            other = tuple(a for a in range(n) if a != axis)
            nz = np.flatnonzero(g.sum(axis=other) > 0)
            if nz.size == 0:
                raise ValueError(
                    f"Cannot measure the receptive field of layer {info.path!r}: the input "
                    f"gradient of output position {position} is zero everywhere."
                )
            spans.append((int(nz[0]), int(nz[-1]) + 1))
        return spans

    here = support(base)
    size, stride, offset = [], [], []
    for axis in range(n):
        if out_shape[axis] > 1:
            nxt = list(base)
            nxt[axis] += 1
            there = support(tuple(nxt))
            j = max(1, there[axis][0] - here[axis][0], there[axis][1] - here[axis][1])
        else:
            j = spatial_in[axis]
        start, stop = here[axis]
        size.append(stop - start)
        stride.append(j)
        offset.append(start - base[axis] * j)
        if start == 0 and stop == spatial_in[axis]:
            warnings.warn(
                f"The measured receptive field of layer {info.path!r} covers the whole "
                f"{spatial_in[axis]}-pixel input along axis {axis}: it may be larger. Pass a "
                "larger `input_shape` if the model accepts one.",
                RuntimeWarning,
                stacklevel=3,
            )
    return ReceptiveField(tuple(size), tuple(stride), tuple(offset), method="empirical")


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, (list, tuple)) else out
