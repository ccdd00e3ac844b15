"""What attribution differentiates: a model's class score, its input and its layers.

One :class:`Target` per model (cached weakly): it checks the model once
(single image input, an ``(N, K)`` score output), finds the layer producing
the output and whether it ends in a saturating activation, and builds the
networks the methods differentiate. Each ``(method, layer)`` compiles once
(:meth:`Target.compiled`) and is reused by every later call.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from tb_activations.attribution._backend import Compiled
from tb_activations.extraction import check_probe_shape, model_input_shape
from tb_activations.layer_selection import LayerInfo, is_functional, list_layers, select_layers

#: Output activations replaced by the identity: the score is the pre-activation
#: logit, since the gradient of a saturated softmax (or sigmoid) vanishes.
SATURATING_OUTPUTS = ("softmax", "sigmoid")

Classes = str | int | Sequence[int] | np.ndarray
"""``classes=``: ``"predicted"``, one class index for all inputs, or one per input."""


@dataclass(frozen=True)
class Explanation:
    """What an attribution method returns beside its maps (plain numpy).

    Attributes:
        maps: float32 attributions; ``(N, h, w)`` for the map methods,
            ``(N, H, W, C)`` for integrated gradients.
        classes: int ``(N,)``, the class each map explains.
        logits: float32 ``(N, K)``, the scores (pre-softmax logits where the
            model ends in a softmax) on the unaltered inputs.
        layer: The layer path of a layer method, else ``None``.
    """

    maps: np.ndarray
    classes: np.ndarray
    logits: np.ndarray
    layer: str | None = None


_TARGETS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def target_of(model: Any) -> Target:
    """The cached :class:`Target` of ``model`` (built on first use)."""
    target = _TARGETS.get(model)
    if target is None:
        target = _TARGETS[model] = Target(model)
    return target


def trace_count(model: Any) -> int:
    """How many times the attribution functions of ``model`` were traced (compiled) so far."""
    target = _TARGETS.get(model)
    return 0 if target is None else sum(c.traces for c in target._compiled.values())


class Target:
    """A model as attribution sees it. Holds no strong reference to the model.

    Raises:
        ValueError: for a model with several inputs, or whose output is not
            a score per class ``(N, K)``.
    """

    def __init__(self, model: Any) -> None:
        self._model = weakref.ref(model)
        self.name = model.name
        self.functional = is_functional(model)
        self.input_shape = model_input_shape(model)
        self.num_classes: int | None = None
        self.output_activation: str | None = None
        self._output_path: str | None = None
        self._compiled: dict[tuple, Compiled] = {}
        self.layers = list_layers(model) if self.functional else []
        if self.functional:
            out = _first(model.outputs)
            if len(out.shape) != 2:
                raise ValueError(
                    f"The output of model {model.name!r} has shape {tuple(out.shape)}, not a score "
                    "per class (N, K): attribution explains a classifier's class scores."
                )
            self.num_classes = None if out.shape[1] is None else int(out.shape[1])
            self._output_path, op = _output_op(model)
            self.output_activation = _activation_name(op)

    @property
    def model(self) -> Any:
        model = self._model()
        if model is None:
            raise RuntimeError("The model of this attribution target no longer exists.")
        return model

    # -- checks -----------------------------------------------------------------

    def spatial_layer(self, layer: Any = None) -> LayerInfo:
        """The layer of a layer method (Grad-CAM): ``layer``, or the last spatial one.

        Raises:
            ValueError: for a subclassed model, an unknown layer, a layer whose
                output is not spatial ``(N, h, w, C)``.
        """
        if not self.functional:
            raise ValueError(
                f"Grad-CAM needs a layer's output inside the graph, and model {self.name!r} is "
                "subclassed (no symbolic graph). Use saliency, integrated_gradients or occlusion, "
                "or build the model with the functional API."
            )
        spatial = [i for i in self.layers if i.is_feature_map and not i.is_model]
        if layer is None:
            if not spatial:
                raise ValueError(
                    f"Model {self.name!r} has no layer with a spatial output (N, h, w, C) for "
                    "Grad-CAM."
                )
            return spatial[-1]
        matched = select_layers(self.model, [layer], available=self.layers)
        if len(matched) != 1:
            raise ValueError(
                f"Invalid value for argument `layer`: {layer!r} matches {len(matched)} layers "
                f"({[i.path for i in matched][:10]}); name exactly one."
            )
        info = matched[0]
        if not info.is_feature_map or info.is_model:
            shown = [i.path for i in spatial]
            raise ValueError(
                f"Invalid value for argument `layer`: {info.path!r} has output shape "
                f"{info.shape}, not a spatial feature map (h, w, C). Layers with a spatial "
                f"output: {shown[-20:]}"
            )
        if None in info.shape:
            raise ValueError(
                f"Invalid value for argument `layer`: the output shape {info.shape} of "
                f"{info.path!r} is not fixed. Give the model a fixed input size "
                "(keras.Input((H, W, C)))."
            )
        return info

    def check_inputs(self, inputs: Any) -> np.ndarray:
        """``inputs`` as float32 ``(N, *input_shape)``.

        Raises:
            ValueError: for inputs that cannot feed the model.
        """
        x = np.asarray(inputs, dtype=np.float32)
        if x.ndim < 2 or x.shape[0] == 0:
            raise ValueError(
                f"Invalid value for argument `inputs`. Expected a non-empty batch (N, H, W, C). "
                f"Received an array of shape {x.shape}."
            )
        check_probe_shape(self.model, x.shape[1:])
        if self.input_shape is None:
            # A subclassed model: its first inputs fix the shape the functions are built for.
            self.input_shape = tuple(x.shape[1:])
        elif not self.functional and tuple(x.shape[1:]) != tuple(self.input_shape):
            raise ValueError(
                f"Inputs of shape {x.shape[1:]} do not match the shape {self.input_shape} "
                f"this subclassed model {self.name!r} was first explained with."
            )
        return x

    def resolve_classes(self, classes: Classes, n: int, k: int | None = None) -> np.ndarray:
        """int32 ``(n,)`` class per input; -1 for ``"predicted"`` (-1 may be given per input too).

        Raises:
            ValueError: for a class out of range, or a count that is not ``n``.
        """
        k = self.num_classes if k is None else k
        if isinstance(classes, str):
            if classes != "predicted":
                raise ValueError(
                    "Invalid value for argument `classes`. Expected 'predicted', a class index "
                    f"or one index per input. Received: classes={classes!r}"
                )
            return np.full(n, -1, np.int32)
        arr = np.asarray(classes)
        if arr.ndim == 0:
            arr = np.full(n, arr)
        if arr.ndim != 1 or arr.shape[0] != n or (arr.size and arr.dtype.kind not in "iu"):
            raise ValueError(
                f"Invalid value for argument `classes`. Expected 'predicted', a class index or "
                f"{n} integer class indices (one per input). Received: classes={classes!r}"
            )
        bad = [int(c) for c in arr if c < -1 or (k is not None and c >= k)]
        if bad:
            valid = "a class index >= 0" if k is None else f"a class index in [0, {k - 1}]"
            valid += " (-1: the predicted class)"
            raise ValueError(
                f"Invalid value for argument `classes`: class {bad[0]} is out of range; the "
                f"output of model {self.name!r} scores {k} classes, so expected {valid} "
                f"or 'predicted'. Received: classes={classes!r}"
            )
        return arr.astype(np.int32)

    # -- compiled functions -------------------------------------------------------

    def compiled(
        self, method: str, layer: LayerInfo | None, wrt: str | None, post: Callable[..., list]
    ) -> Compiled:
        """The compiled function of ``(method, layer)``, built on the first call only.

        Args:
            wrt: ``"input"``, ``"layer"`` (the output of ``layer``), ``"given_layer"``
                (the output of ``layer`` given as the second input: only the layers
                after it run) or ``None``.
            post: ``post(inputs, outputs, grad, chosen)`` in ``keras.ops``;
                ``outputs`` is ``[layer output, logits]`` or ``[logits]``.
        """
        key = (method, None if layer is None else layer.path)
        fn = self._compiled.get(key)
        if fn is None:
            fn = self._compiled[key] = self._build(layer, wrt, post)
        return fn

    def _build(self, layer: LayerInfo | None, wrt: str | None, post: Callable) -> Compiled:
        model = self.model
        if self.input_shape is None and self.functional:
            raise ValueError(f"The input shape of model {self.name!r} is unknown.")
        if not self.functional:
            shape = self.input_shape
            if shape is None or None in shape:
                raise ValueError(
                    f"The input shape of the subclassed model {self.name!r} is unknown or not "
                    "fixed; build it on a keras.Input first."
                )
            ref = self._model

            def call_args(ins: list) -> Any:
                return ins[0]

            # A weak reference: the cache must not keep the model alive.
            net = _Forward(ref)
            return Compiled(net, call_args, [(shape, "float32")], 0 if wrt else None, post)
        x = model.inputs[0]
        specs: list[tuple[tuple[int | None, ...], str]] = [(tuple(x.shape[1:]), "float32")]
        inputs: list[Any] = [x]
        delta = None
        if wrt in ("layer", "given_layer"):
            out = layer.layer.output
            # "layer": a zero added to the output; "given_layer": the output itself, given
            # (from the logger's extraction pass), so only the layers after it run.
            name = "attribution_delta" if wrt == "layer" else "attribution_layer_output"
            delta = keras.Input(tuple(out.shape[1:]), dtype=out.dtype, name=name)
            inputs.append(delta)
            specs.append((tuple(out.shape[1:]), keras.backend.standardize_dtype(out.dtype)))
        found: dict[str, Any] = {}
        hooks: dict[str, Callable] = {}
        if layer is not None:
            hooks[layer.path] = _layer_hook(layer.path, delta, found, replace=wrt == "given_layer")
        if self.output_activation is not None:
            hooks[self._output_path] = _without_activation
        result = _rebuild(model, x, "", hooks) if hooks else model.outputs
        logits = _first(result)
        given = wrt == "given_layer"
        outputs = [found[layer.path], logits] if layer is not None and not given else [logits]
        net = keras.Model(inputs, outputs, name=f"{self.name}_attribution")
        index = {"input": 0, "layer": 1, "given_layer": 1, None: None}[wrt]
        return Compiled(net, lambda ins: list(ins), specs, index, post)


class _Forward(keras.layers.Layer):
    """A subclassed model called through a weak reference, its first output only."""

    def __init__(self, ref: Any) -> None:
        super().__init__(name=f"{ref().name}_attribution")
        self._ref = ref

    @property
    def trainable_variables(self) -> list:
        return self._ref().trainable_variables

    @property
    def non_trainable_variables(self) -> list:
        return self._ref().non_trainable_variables

    def call(self, x: Any, training: bool = False) -> Any:
        return _first(self._ref()(x, training=training))

    def stateless_call(self, trainable, non_trainable, x, **kwargs):
        out, state = self._ref().stateless_call(trainable, non_trainable, x, **kwargs)
        return _first(out), state


class _WithoutActivation(keras.layers.Layer):
    """Calls a layer with its ``activation`` replaced by the identity (at every call)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(name=f"{inner.name}_logits", dtype=inner.dtype_policy)
        self.inner = inner

    def call(self, *args: Any, **kwargs: Any) -> Any:
        saved = self.inner.activation
        self.inner.activation = keras.activations.linear
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.inner.activation = saved


def _without_activation(op: Any) -> Callable:
    if isinstance(op, keras.layers.Softmax) or not isinstance(op, keras.layers.Layer):
        # A Softmax layer, or keras.ops.softmax/sigmoid in a functional graph.
        return lambda *args, **kwargs: args[0]
    return _WithoutActivation(op)


def _layer_hook(path: str, delta: Any, found: dict[str, Any], replace: bool = False) -> Callable:
    """The target layer's output, plus ``delta`` when differentiating by it (or ``delta``
    itself, in place of the layer, with ``replace``).

    The gradient of the score by a zero ``delta`` added to the output is the
    gradient by the output itself, on every backend (a tape could watch the
    tensor on TensorFlow only).
    """

    def hook(op: Any) -> Callable:
        def call(*args: Any, **kwargs: Any) -> Any:
            if replace:
                found.setdefault(path, delta)
                return delta
            out = op(*args, **kwargs)
            if delta is not None:
                out = keras.ops.add(out, delta)
            found.setdefault(path, out)
            return out

        return call

    return hook


def _rebuild(model: Any, inputs: Any, prefix: str, hooks: dict[str, Callable]) -> Any:
    """Re-run ``model``'s graph on ``inputs`` symbolically, with ``hooks[path](op)`` called
    in place of the hooked operations (nested functional models entered as needed)."""
    graph = model._functional if isinstance(model, keras.Sequential) else model

    def operation_fn(op: Any) -> Any:
        path = prefix + op.name
        if path in hooks:
            return hooks[path](op)
        if (
            isinstance(op, keras.Model)
            and is_functional(op)
            and any(h.startswith(path + "/") for h in hooks)
        ):

            def call_nested(*args: Any, **kwargs: Any) -> Any:
                inner = args[0] if len(args) == 1 else list(args)
                return _first(_rebuild(op, inner, path + "/", hooks))

            return call_nested
        return op

    return graph._run_through_graph(inputs, operation_fn=operation_fn)


def _output_op(model: Any, prefix: str = "") -> tuple[str, Any]:
    """Path and operation producing ``model``'s first output (inside nested models)."""
    op = _first(model.outputs)._keras_history[0]
    if isinstance(op, keras.Model) and is_functional(op):
        return _output_op(op, prefix + op.name + "/")
    return prefix + op.name, op


def _activation_name(op: Any) -> str | None:
    """``"softmax"`` or ``"sigmoid"`` where ``op`` ends in one, else ``None``."""
    if isinstance(op, keras.layers.Softmax):
        return "softmax"
    if not isinstance(op, keras.layers.Layer):
        name = type(op).__name__.lower()  # keras.ops.softmax/sigmoid as a graph operation
        return name if name in SATURATING_OUTPUTS else None
    fn = getattr(op, "activation", None)
    name = getattr(fn, "__name__", None)
    return name if name in SATURATING_OUTPUTS else None


def _first(outputs: Any) -> Any:
    return keras.tree.flatten(outputs)[0]
