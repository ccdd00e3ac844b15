"""Which layers to watch: listing the selectable layers of a Keras model and
resolving a user's selection (names, globs, classes, predicates).

Layers of nested models (a ``keras.applications`` backbone used as a layer)
are listed under their path, ``outer/inner``. Input layers are never
selectable: feeding and fetching the same tensor is the article's crash.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras

LayerSpec = str | type | Callable[[Any], bool] | keras.layers.Layer
"""One item of ``layers=``: an exact name or path, a glob, a class, a predicate or a layer."""


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

    Examples:
        >>> [l.path for l in list_layers(keras.applications.VGG16(weights=None))][:2]
        ['block1_conv1', 'block1_conv2']
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"Expected a Keras model. Received: {type(model).__name__}")
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


def select_layers(
    model: Any,
    layers: Sequence[LayerSpec] | LayerSpec | None = None,
    *,
    available: list[LayerInfo] | None = None,
) -> list[LayerInfo]:
    """Resolve ``layers=`` to the selected layers, in model order.

    Args:
        model: A Keras model.
        layers: ``None`` for every layer whose output is a spatial feature map
            (rank 4, nested models' own outputs excepted since their last layer
            is listed already); or a list whose items are exact names or paths,
            glob patterns matched against paths (``"block*_pool"``), layer
            classes (``keras.layers.MaxPooling2D``), predicates
            ``callable(layer) -> bool``, or layer objects.
        available: Listing to select from. Defaults to ``list_layers(model)``.

    Returns:
        The selected :class:`LayerInfo` list, in model order, without duplicates.

    Raises:
        ValueError: if an item matches no layer (the message lists the
            selectable paths), or the selection is empty.
    """
    infos = list_layers(model) if available is None else available
    if layers is None:
        selected = [i for i in infos if i.is_feature_map and not i.is_model]
        if not selected:
            raise ValueError(
                "No layer of the model has a spatial (rank-4) output, so `layers=None` selects "
                f"nothing. Select layers explicitly among: {_names(infos)}"
            )
        return selected
    if isinstance(layers, (str, type, keras.layers.Layer)) or (
        callable(layers) and not isinstance(layers, Iterable)
    ):
        layers = [layers]
    chosen: set[str] = set()
    for spec in layers:
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
