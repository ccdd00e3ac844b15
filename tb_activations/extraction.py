"""Extraction: one compiled forward pass returning the selected layers' outputs.

The sub-model is built once per extractor; every call afterwards runs one
``tf.function`` traced once for the probe batch shape, in inference mode,
returning float32 channels-last arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from tb_activations.layer_selection import LayerInfo, is_functional


def model_input_shape(model: Any) -> tuple[int | None, ...] | None:
    """Shape of the model's single input without the batch axis, or ``None`` if unknown."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs:
        return None
    if len(inputs) != 1:
        raise ValueError(
            f"Model {model.name!r} has {len(inputs)} inputs; tb_activations feeds one batch of "
            "probe images, so it supports single-input models only."
        )
    return tuple(inputs[0].shape)[1:]


def check_probe_shape(model: Any, probe_shape: tuple[int, ...]) -> None:
    """Raise a clear ``ValueError`` if probes of ``probe_shape`` cannot feed ``model``."""
    expected = model_input_shape(model)
    if expected is None:
        return
    ok = len(expected) == len(probe_shape) and all(
        e is None or e == p for e, p in zip(expected, probe_shape)
    )
    if not ok:
        shown = tuple("None" if e is None else e for e in expected)
        hint = ""
        if len(expected) != 3:
            hint = (
                " tb_activations feeds batches of images (N, H, W, C): the model's input must be "
                "an image (H, W, C); 1-D convolutions and dense layers are shown when they "
                "follow an image input."
            )
        elif len(probe_shape) == 3 and expected[2] is not None and probe_shape[2] != expected[2]:
            hint = (
                f" The probes have {probe_shape[2]} channels and the model wants {expected[2]}: "
                + (
                    "load them with color_mode='grayscale'."
                    if expected[2] == 1
                    else "load them with color_mode='rgb', or give the images that many channels."
                )
            )
        elif expected[0] is not None and expected[1] is not None:
            hint = (
                f" Resize them: Probes.from_files(..., target_size=({expected[0]}, {expected[1]})), "
                f"probes.resized(({expected[0]}, {expected[1]})), or resize_probes=True."
            )
        raise ValueError(
            f"Probe images have shape {tuple(probe_shape)} but model {model.name!r} expects "
            f"inputs of shape {shown} (batch axis left out).{hint}"
        )


class ActivationExtractor:
    """Computes the outputs of selected layers for a batch of inputs.

    Args:
        model: A Keras model (Functional, Sequential, or subclassed).
        layers: The layers to extract, from :func:`~tb_activations.select_layers`.
        input_shape: Shape of one input without the batch axis. Defaults to
            the model's input shape; required for subclassed models.
        include_output: Also return the model's own (first) output from the
            same pass, for the probes' predictions. Defaults to ``False``.

    The sub-model (or, for a subclassed model, a traced forward pass that
    captures the layer outputs) is built once, here. Calls run in inference
    mode (``training=False``): Dropout and BatchNorm neither disturb the
    pictures nor update the model.

    Examples:
        >>> ex = ActivationExtractor(model, select_layers(model, ["block*_pool"]))
        >>> acts = ex(probes.inputs)           # {"block1_pool": (N, 112, 112, 64) float32, ...}
    """

    def __init__(
        self,
        model: Any,
        layers: Sequence[LayerInfo],
        *,
        input_shape: tuple[int, ...] | None = None,
        include_output: bool = False,
        levels: bool = False,
    ) -> None:
        import tensorflow as tf

        if not layers:
            raise ValueError("Invalid value for argument `layers`: no layer to extract.")
        self.model = model
        self.layers = list(layers)
        shape = input_shape or model_input_shape(model)
        if shape is None:
            raise ValueError(
                f"The input shape of model {model.name!r} is unknown. Build the model (call it "
                "once, or give it a keras.Input) or pass `input_shape`."
            )
        self.input_shape = tuple(shape)
        paths = [i.path for i in self.layers]
        channels_first = [i.channels_first for i in self.layers]
        self.include_output = include_output
        if is_functional(model):
            outputs = _symbolic_outputs(model, paths)
            if include_output:
                outputs = [*outputs, _first(model.outputs)]
            submodel = keras.Model(model.inputs, outputs, name=f"{model.name}_activations")

            def forward(x):
                return submodel(x, training=False)

            self._submodel = submodel
        else:
            forward = _capturing_forward(model, self.layers, include_output)
            self._submodel = None

        def extract(x):
            outs = forward(x)
            if not isinstance(outs, (list, tuple)):
                outs = [outs]
            maps = [_standardize(o, cf) for o, cf in zip(outs, channels_first)]
            if include_output:
                maps.append(tf.cast(outs[-1], tf.float32))
            return maps

        def extract_with_summaries(x):
            maps = extract(x)
            n = len(self.layers)
            summaries = [_device_summary(m) for m in maps[:n]]
            stats, grams, means = ([s[i] for s in summaries] for i in range(3))
            # Palette levels on the layer scale, where the maps are: 1 byte per value
            # leaves the pass, quantized by multi-threaded kernels (numpy on the host:
            # 0.55 s for the 120 M values of VGG16's 18 layers; here 0.19 s).
            quantized = [_device_levels(m, st) for m, st in zip(maps[:n], stats)] if levels else []
            return maps, stats, grams, means, quantized

        spec = tf.TensorSpec(
            (None, *[None if s is None else int(s) for s in self.input_shape]), tf.float32
        )
        # One trace for any batch size: no retracing per call or per epoch.
        self._fn = tf.function(extract, input_signature=[spec], autograph=False)
        self._fn_summaries = tf.function(
            extract_with_summaries, input_signature=[spec], autograph=False
        )

    def __call__(self, inputs: Any) -> dict[str, np.ndarray]:
        """Outputs of the selected layers for ``inputs`` ``(N, *input_shape)``.

        Returns:
            ``{path: array}`` in model order; each array float32, channels-last,
            rank 4: ``(N, H, W, C)``. Rank-3 outputs ``(N, L, C)`` come back as
            ``(N, 1, L, C)`` and rank-2 ones ``(N, C)`` as ``(N, 1, 1, C)``.
        """
        return self.run(inputs)[0]

    def run(self, inputs: Any) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Activations as :meth:`__call__`, and the model output when ``include_output``.

        Returns:
            ``(activations, output)``; ``output`` is float32 ``(N, ...)`` or ``None``.
        """
        outs = self._fn(np.asarray(inputs, dtype=np.float32))
        acts = {info.path: out.numpy() for info, out in zip(self.layers, outs)}
        return acts, (outs[-1].numpy() if self.include_output else None)

    def run_with_summaries(self, inputs: Any) -> ExtractionResult:
        """One forward pass: activations, output, and per-layer reductions done on the device.

        The per-channel statistics and the probes' Gram matrix of every layer
        are reduced where the activations are (multi-threaded TensorFlow
        kernels, no float64 copy on the host), in the same traced function.
        The activations come back as read-only views of the device buffers
        (no copy).
        """
        maps, stats, grams, mean_maps, quantized = self._fn_summaries(
            np.asarray(inputs, dtype=np.float32)
        )
        n = len(self.layers)
        levels = {}
        for info, (q, ok) in zip(self.layers, quantized):
            if bool(ok):
                levels[info.path] = np.asarray(q)
        return ExtractionResult(
            activations={info.path: np.asarray(m) for info, m in zip(self.layers, maps[:n])},
            output=np.asarray(maps[-1]) if self.include_output else None,
            stats={info.path: np.asarray(t) for info, t in zip(self.layers, stats)},
            grams={info.path: np.asarray(g) for info, g in zip(self.layers, grams)},
            mean_maps={info.path: np.asarray(m) for info, m in zip(self.layers, mean_maps)},
            levels=levels,
        )

    def tensors(self, inputs: Any) -> list[Any]:
        """Like :meth:`__call__` but returns the ``tf.Tensor`` list, left on the device."""
        return self._fn(np.asarray(inputs, dtype=np.float32))


@dataclass(frozen=True)
class ExtractionResult:
    """What :meth:`ActivationExtractor.run_with_summaries` returns (plain numpy).

    Attributes:
        activations: ``{path: float32 (N, H, W, C)}``, channels-last, read-only.
        output: The model output ``(N, ...)`` float32, or ``None``.
        stats: ``{path: float32 (N, C, 5)}``: mean, max, min, std over the finite
            values of each map, and the number of finite values.
        grams: ``{path: float32 (N, N)}``: ``X @ X.T`` of the flattened maps
            (non-finite values as 0), what linear CKA needs.
        mean_maps: ``{path: float32 (N, H, W)}``: the mean over channels (non-finite
            values as 0), the overlay's second map.
        levels: ``{path: uint8 (N, H, W, C)}`` when built with ``levels=True``:
            :func:`~tb_activations.render.to_levels` of the activations on the
            layer scale of ``stats`` (``[min(0, min), max]`` over all probes),
            bit for bit. A layer is missing where that scale needs float64
            (a span too small for float32) or its statistics overflowed: the
            host quantizes those.
    """

    activations: dict[str, np.ndarray]
    output: np.ndarray | None
    stats: dict[str, np.ndarray]
    grams: dict[str, np.ndarray]
    mean_maps: dict[str, np.ndarray]
    levels: dict[str, np.ndarray] = field(default_factory=dict)


def _device_summary(t: Any) -> tuple[Any, Any, Any]:
    """Per-channel statistics ``(N, C, 5)``, Gram ``(N, N)`` and channel-mean map ``(N, H, W)``."""
    import tensorflow as tf

    # Most steps have no NaN/Inf: then the plain reductions (half the passes) do.
    return tf.cond(
        tf.reduce_all(tf.math.is_finite(t)),
        lambda: _finite_summary(t),
        lambda: _masked_summary(t),
    )


def _device_levels(t: Any, stats: Any) -> tuple[Any, Any]:
    """``(uint8 levels of t on the layer scale, whether they are valid)``.

    The same arithmetic as :func:`~tb_activations.render.to_levels` with
    :func:`~tb_activations.render.value_range_from_stats` (``"layer"``): the
    span and its reciprocal in float64, then ``(t - lo) * scale`` in float32,
    clipped, rounded half to even. Invalid where the host would need float64
    values (``scale`` beyond float32) or the statistics are not finite.
    """
    import tensorflow as tf

    from tb_activations.colormaps import LEVELS, NAN_INDEX

    lo = tf.minimum(tf.reduce_min(stats[..., 2]), 0.0)
    hi = tf.maximum(tf.reduce_max(stats[..., 1]), lo)
    span = tf.cast(hi, tf.float64) - tf.cast(lo, tf.float64)
    scale64 = tf.where(span > 0, (LEVELS - 1) / tf.where(span > 0, span, 1.0), 0.0)
    ok = tf.logical_and(
        tf.reduce_all(tf.math.is_finite(stats)), scale64 <= np.finfo(np.float32).max
    )
    scale = tf.cast(tf.where(ok, scale64, 0.0), tf.float32)
    q = tf.cast(tf.round(tf.clip_by_value((t - lo) * scale, 0.0, LEVELS - 1.0)), tf.uint8)
    return tf.where(tf.math.is_finite(t), q, tf.constant(NAN_INDEX, tf.uint8)), ok


def _finite_summary(t: Any) -> tuple[Any, Any, Any]:
    import tensorflow as tf

    shape = tf.shape(t)
    count = tf.cast(shape[1] * shape[2], tf.float32) * tf.ones_like(t[:, 0, 0, :])
    mean = tf.reduce_mean(t, axis=[1, 2])
    dev = t - mean[:, None, None, :]
    std = tf.sqrt(tf.reduce_mean(dev * dev, axis=[1, 2]))
    mx, mn = tf.reduce_max(t, axis=[1, 2]), tf.reduce_min(t, axis=[1, 2])
    flat = tf.reshape(t, [shape[0], -1])
    gram = tf.matmul(flat, flat, transpose_b=True)
    return tf.stack([mean, mx, mn, std, count], axis=-1), gram, tf.reduce_mean(t, axis=-1)


def _masked_summary(t: Any) -> tuple[Any, Any, Any]:
    import tensorflow as tf

    finite = tf.math.is_finite(t)
    zero = tf.zeros_like(t)
    z = tf.where(finite, t, zero)
    count = tf.reduce_sum(tf.cast(finite, tf.float32), axis=[1, 2])
    safe = tf.maximum(count, 1.0)
    mean = tf.reduce_sum(z, axis=[1, 2]) / safe
    # Two passes (mean, then deviations): E[x^2] - E[x]^2 cancels badly in float32.
    dev = tf.where(finite, t - mean[:, None, None, :], zero)
    std = tf.sqrt(tf.reduce_sum(dev * dev, axis=[1, 2]) / safe)
    inf = tf.constant(np.inf, tf.float32)
    has = count > 0
    mx = tf.where(has, tf.reduce_max(tf.where(finite, t, -inf), axis=[1, 2]), 0.0)
    mn = tf.where(has, tf.reduce_min(tf.where(finite, t, inf), axis=[1, 2]), 0.0)
    flat = tf.reshape(z, [tf.shape(z)[0], -1])
    gram = tf.matmul(flat, flat, transpose_b=True)
    return tf.stack([mean, mx, mn, std, count], axis=-1), gram, tf.reduce_mean(z, axis=-1)


def _standardize(t: Any, channels_first: bool) -> Any:
    import tensorflow as tf

    if t.dtype != tf.float32:
        t = tf.cast(t, tf.float32)
    rank = t.shape.rank
    if rank == 4:
        return tf.transpose(t, (0, 2, 3, 1)) if channels_first else t
    if rank == 3:
        t = tf.transpose(t, (0, 2, 1)) if channels_first else t
        return t[:, None, :, :]
    if rank == 2:
        return t[:, None, None, :]
    raise ValueError(
        f"A layer output of rank {rank} (shape {t.shape}) cannot be shown as feature maps; "
        "tb_activations renders rank 4 (N, H, W, C), 3 (N, L, C) and 2 (N, C) outputs."
    )


def _symbolic_outputs(model: Any, paths: list[str]) -> list[Any]:
    """Symbolic outputs for ``paths``, re-tracing through nested models if needed.

    A nested model's layer output belongs to the inner graph; using it with the
    outer input fails with "Graph disconnected". For those, the outer graph is
    run again on its own inputs, calling the layers of the nested models one
    by one, which connects every wanted tensor to the outer input.
    """
    nested = [p for p in paths if "/" in p]
    if not nested:
        infos = {layer.name: layer for layer in model.layers}
        return [infos[p].output for p in paths]
    wanted = set(paths)
    found: dict[str, Any] = {}
    _trace(model, model.inputs, "", wanted, found)
    missing = [p for p in paths if p not in found]
    if missing:
        raise ValueError(
            f"Could not reach layers {missing} from the input of model {model.name!r}."
        )
    return [found[p] for p in paths]


def _trace(model: Any, inputs: Any, prefix: str, wanted: set[str], found: dict[str, Any]) -> Any:
    graph = model._functional if isinstance(model, keras.Sequential) else model

    def operation_fn(op: Any) -> Any:
        path = prefix + op.name
        if (
            isinstance(op, keras.Model)
            and is_functional(op)
            and any(w.startswith(path + "/") for w in wanted)
        ):

            def call_nested(*args: Any, **kwargs: Any) -> Any:
                out = _trace(
                    op, args[0] if len(args) == 1 else list(args), path + "/", wanted, found
                )
                found.setdefault(path, out)
                return out

            return call_nested
        if path in wanted:

            def call_layer(*args: Any, **kwargs: Any) -> Any:
                out = op(*args, **kwargs)
                found.setdefault(path, out)
                return out

            return call_layer
        return op

    return graph._run_through_graph(inputs, operation_fn=operation_fn)


def _first(outputs: Any) -> Any:
    import keras.tree

    return keras.tree.flatten(outputs)[0]


def _capturing_forward(
    model: Any, layers: Sequence[LayerInfo], include_output: bool = False
) -> Any:
    """A forward pass of a subclassed model that also returns the layers' outputs.

    Subclassed layers have no symbolic outputs, so each selected layer's
    ``call`` is wrapped while the ``tf.function`` traces, recording what the
    layer returns; the hooks are removed right after tracing.
    """

    def forward(x):
        captured: dict[int, Any] = {}
        originals = []
        try:
            for i, info in enumerate(layers):
                layer = info.layer
                original = layer.call

                def hooked(*args, _i=i, _orig=original, **kwargs):
                    out = _orig(*args, **kwargs)
                    captured.setdefault(_i, out)
                    return out

                layer.call = hooked
                originals.append(layer)
            output = model(x, training=False)
        finally:
            for layer in originals:
                # Remove the instance attribute: the class's call shows again.
                del layer.call
        missing = [layers[i].path for i in range(len(layers)) if i not in captured]
        if missing:
            raise ValueError(
                f"Layers {missing} were not called in the forward pass of model {model.name!r}, "
                "so their activations cannot be captured."
            )
        outs = [captured[i] for i in range(len(layers))]
        return [*outs, _first(output)] if include_output else outs

    return forward
