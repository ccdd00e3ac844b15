"""Extraction: one compiled forward pass returning the selected layers' outputs.

The sub-model is built once per extractor; every call afterwards runs one
function compiled by the Keras backend's own means (:mod:`tb_activations.backend`),
in inference mode, returning float32 channels-last arrays. The math (layout,
statistics, Gram matrices, palette levels) is written once, in ``keras.ops``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from keras import ops

from tb_activations import backend as _backend
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
        extra_layers: Layers whose outputs the same pass also returns, after
            ``layers`` (and before the output), without any reduction: not
            logged, only read (the logger's Grad-CAM layer, when it is not among
            the logged ones). Defaults to none.

    The sub-model (or, for a subclassed model, a forward pass that captures
    the layer outputs) is built once, here, and compiled by the backend's own
    means (:mod:`tb_activations.backend`): a ``tf.function`` on TensorFlow, a
    ``jax.jit`` of a stateless call taking the variables' current values on
    JAX, ``torch.no_grad`` eager calls on PyTorch. Calls run in inference
    mode (``training=False``): Dropout and BatchNorm neither disturb the
    pictures nor update the model.

    Raises:
        TypeError: ``model`` is not a Keras 3 model.
        ValueError: Keras runs on an unsupported backend, or ``model`` was
            built on another backend.

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
        histogram_bins: int = 0,
        extra_layers: Sequence[LayerInfo] = (),
    ) -> None:
        self.backend = _backend.check_model(model)
        if (
            isinstance(histogram_bins, bool)
            or not isinstance(histogram_bins, int)
            or not 0 <= histogram_bins <= MAX_HISTOGRAM_BINS
        ):
            raise ValueError(
                "Invalid value for argument `histogram_bins`. Expected an int in "
                f"0..{MAX_HISTOGRAM_BINS} (0: no histograms). Received: histogram_bins={histogram_bins!r}"
            )
        self.histogram_bins = histogram_bins
        if not layers:
            raise ValueError("Invalid value for argument `layers`: no layer to extract.")
        self.model = model
        self.layers = list(layers)
        self.extra_layers = [i for i in extra_layers if i.path not in {j.path for j in layers}]
        shape = input_shape or model_input_shape(model)
        if shape is None:
            raise ValueError(
                f"The input shape of model {model.name!r} is unknown. Build the model (call it "
                "once, or give it a keras.Input) or pass `input_shape`."
            )
        self.input_shape = tuple(shape)
        # The extra layers' maps follow the layers': every reduction reads maps[:n] only.
        every = self.layers + self.extra_layers
        paths = [i.path for i in every]
        channels_first = [i.channels_first for i in every]
        self.include_output = include_output
        self.levels = levels
        if is_functional(model):
            outputs = _symbolic_outputs(model, paths)
            if include_output:
                outputs = [*outputs, _first(model.outputs)]
            # The single input as itself, not a list: a list warns at every eager call (PyTorch).
            inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
            submodel = keras.Model(inputs, outputs, name=f"{model.name}_activations")

            def forward(x):
                return submodel(x, training=False)

            self._submodel = submodel
        else:
            forward = _capturing_forward(model, every, include_output)
            self._submodel = None

        def extract(x):
            outs = forward(x)
            if not isinstance(outs, (list, tuple)):
                outs = [outs]
            maps = [_standardize(o, cf) for o, cf in zip(outs, channels_first)]
            if include_output:
                maps.append(ops.cast(outs[-1], "float32"))
            return maps

        summary, histogram, device_levels = _reductions(self.backend)

        def reduce(maps):
            for info, m in zip(self.layers, maps):
                _check_not_empty(info.path, m)
            summaries = [summary(m) for m in maps[: len(self.layers)]]
            stats, grams, means = ([s[i] for s in summaries] for i in range(3))
            hists = (
                [histogram(m, st, histogram_bins) for m, st in zip(maps, stats)]
                if histogram_bins
                else []
            )
            return stats, grams, means, hists

        def extract_with_summaries(x):
            maps = extract(x)
            return (maps, *reduce(maps))

        # Every variable the pass reads: on JAX their values go into the compiled function.
        variables = list(model.variables)
        compile_ = _backend.compile_function
        self._fn = compile_(extract, variables=variables, input_shape=self.input_shape)
        self._fn_summaries = compile_(
            extract_with_summaries, variables=variables, input_shape=self.input_shape
        )
        # The reductions alone, for maps from tensors(): background logging runs the
        # forward pass on the training thread and these on its worker.
        self._fn_reduce = compile_(reduce)
        # Palette levels on the layer scale, where the maps are: 1 byte per value
        # leaves the device, quantized by its multi-threaded kernels (numpy on the
        # host: 0.55 s for the 120 M values of VGG16's 18 layers; here 0.19 s).
        # The scale is one float64 division per layer, done on the host exactly as
        # render.to_levels does it (JAX has no float64 on the device by default).
        self._fn_levels = compile_(device_levels) if levels else None

    def _check_backend(self) -> None:
        _backend.check_unchanged(self.backend)

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
        outs = self.tensors(inputs)
        to_numpy = _backend.module(self.backend).to_numpy
        acts = {info.path: to_numpy(out) for info, out in zip(self.layers, outs)}
        return acts, (to_numpy(outs[-1]) if self.include_output else None)

    def run_with_summaries(self, inputs: Any) -> ExtractionResult:
        """One forward pass: activations, output, and per-layer reductions done on the device.

        The per-channel statistics and the probes' Gram matrix of every layer
        are reduced where the activations are (multi-threaded kernels, no
        float64 copy on the host), in the same compiled function. The
        activations come back as read-only views of the device buffers where
        the device is the CPU (no copy).
        """
        self._check_backend()
        maps, stats, grams, mean_maps, hists = self._fn_summaries(
            np.asarray(inputs, dtype=np.float32)
        )
        return self._result(maps, stats, grams, mean_maps, hists)

    def summarize(self, maps: list[Any]) -> ExtractionResult:
        """What :meth:`run_with_summaries` returns, for maps already computed by :meth:`tensors`.

        The reductions run where the maps are, in one compiled function: the
        background worker of :class:`~tb_activations.ActivationLogger` calls
        this, so that the training thread only waits for the forward pass.
        """
        self._check_backend()
        stats, grams, mean_maps, hists = self._fn_reduce(list(maps))
        return self._result(maps, stats, grams, mean_maps, hists)

    def _result(self, maps, stats, grams, mean_maps, hists) -> ExtractionResult:
        to_numpy = _backend.module(self.backend).to_numpy
        n = len(self.layers)
        stats_np = [to_numpy(t) for t in stats]
        levels = {}
        if self._fn_levels is not None:
            scales = [_host_scale(s) for s in stats_np]
            todo = [i for i, sc in enumerate(scales) if sc is not None]
            if todo:
                # Arrays, not scalars: a tf.function would retrace for each new Python value.
                quantized = self._fn_levels(
                    [maps[i] for i in todo],
                    np.array([scales[i][0] for i in todo], np.float32),
                    np.array([scales[i][1] for i in todo], np.float32),
                )
                for i, q in zip(todo, quantized):
                    levels[self.layers[i].path] = to_numpy(q)
        return ExtractionResult(
            activations={info.path: to_numpy(m) for info, m in zip(self.layers, maps[:n])},
            extras=self.extras_of(maps),
            output=to_numpy(maps[-1]) if self.include_output else None,
            stats={info.path: s for info, s in zip(self.layers, stats_np)},
            grams={info.path: to_numpy(g) for info, g in zip(self.layers, grams)},
            mean_maps={info.path: to_numpy(m) for info, m in zip(self.layers, mean_maps)},
            levels=levels,
            histograms={
                info.path: _histogram_array(to_numpy(edges), to_numpy(counts))
                for info, (edges, counts) in zip(self.layers, hists)
            },
        )

    def extras_of(self, maps: list[Any]) -> dict[str, np.ndarray]:
        """``{path: float32 (N, H, W, C)}`` of the extra layers, from the maps of :meth:`tensors`."""
        to_numpy = _backend.module(self.backend).to_numpy
        n = len(self.layers)
        return {info.path: to_numpy(m) for info, m in zip(self.extra_layers, maps[n:])}

    def tensors(self, inputs: Any) -> list[Any]:
        """Like :meth:`__call__` but returns the backend's tensors, left on the device:
        the layers' maps, the extra layers' maps, then the output (``include_output``)."""
        self._check_backend()
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
        histograms: ``{path: float64 (k, 3)}`` when built with ``histogram_bins=k``:
            ``[left, right, count]`` of the layer's finite values over all
            probes, ``k`` equal bins over ``[min, max]`` (a constant layer:
            ``[v - 0.5, v + 0.5]``), TensorBoard's histogram layout.
        extras: ``{path: float32 (N, H, W, C)}`` of the ``extra_layers``, not reduced.
    """

    activations: dict[str, np.ndarray]
    output: np.ndarray | None
    stats: dict[str, np.ndarray]
    grams: dict[str, np.ndarray]
    mean_maps: dict[str, np.ndarray]
    levels: dict[str, np.ndarray] = field(default_factory=dict)
    histograms: dict[str, np.ndarray] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)


def _reductions(name: str) -> tuple[Any, Any, Any]:
    """``(summary, histogram, levels)``: the ``keras.ops`` reductions, or the backend's own.

    TensorFlow and JAX compile the ``keras.ops`` versions below into a few fused
    kernels. PyTorch runs them eagerly, one kernel or more per op, so its backend
    module offers ``reductions``: the same values in fewer passes, these
    versions still the reference (and what it falls back on for NaN/Inf).
    """
    reference = (_device_summary, _device_histogram, _device_levels)
    own = getattr(_backend.module(name), "reductions", None)
    return reference if own is None else own(*reference)


def _device_summary(t: Any) -> tuple[Any, Any, Any]:
    """Per-channel statistics ``(N, C, 5)``, Gram ``(N, N)`` and channel-mean map ``(N, H, W)``."""
    # Most steps have no NaN/Inf: then the plain reductions (half the passes) do.
    return ops.cond(
        ops.all(ops.isfinite(t)),
        lambda: _finite_summary(t),
        lambda: _masked_summary(t),
    )


#: The most bins :class:`ActivationExtractor` accepts for ``histogram_bins``.
MAX_HISTOGRAM_BINS = 1000


def histogram_range(stats: Any, bins: int) -> tuple[Any, Any, Any, Any]:
    """``(lo, hi, width, usable)`` of a layer's histogram from its statistics ``(N, C, 5)``.

    ``[min, max]`` of the finite values (a constant layer: ``[v - 0.5, v + 0.5]``), the
    bin width, and whether that width is finite and positive (``hi - lo`` can overflow).
    Shared by every backend's histogram, so that a value lands in the same bin on each.
    """
    lo = ops.min(stats[..., 2])
    hi = ops.max(stats[..., 1])
    flat = hi <= lo
    lo = ops.where(flat, lo - 0.5, lo)
    hi = ops.where(flat, hi + 0.5, hi)
    width = (hi - lo) / bins
    return lo, hi, width, ops.logical_and(ops.isfinite(width), width > 0)


def _device_histogram(t: Any, stats: Any, bins: int) -> tuple[Any, Any]:
    """``(edges (bins + 1,) float32, counts (bins,) int32)`` of the finite values of ``t``.

    Equal bins over ``[min, max]`` of the finite values (from the statistics
    reduced in the same pass); a constant layer gets ``[v - 0.5, v + 0.5]``.
    Counts are int32 (float32 would round above 2**24 values a bin), by
    ``bincount``: TensorFlow's ``segment_sum`` took 5x longer on CPU (0.5 s of
    ResNet50's 6 default layers at 8 probes, more than its forward pass).
    """
    lo, hi, width, usable = histogram_range(stats, bins)
    # Every value finite (each map's count of finite values is its size) and a usable
    # width, as nearly always: 4 element-wise passes instead of 9. The index is the
    # same: lo <= t, so truncating toward zero after the clip is the floor.
    shape = ops.shape(t)
    size = ops.cast(shape[1] * shape[2], "float32")
    common = ops.logical_and(usable, ops.all(stats[..., 4] == size))

    def plain():
        index = ops.cast(ops.clip((t - lo) / width, 0, bins - 1), "int32")
        return _bincount(ops.reshape(index, (-1,)), bins)

    def masked():
        safe_width = ops.where(usable, width, 1.0)
        finite = ops.isfinite(t)
        position = ops.floor((ops.where(finite, t, lo) - lo) / safe_width)
        position = ops.where(usable, position, 0.0)
        index = ops.cast(ops.clip(position, 0, bins - 1), "int32")
        # Non-finite values go to one more bin, left out of the counts.
        index = ops.where(finite, index, bins)
        return _bincount(ops.reshape(index, (-1,)), bins + 1)[:bins]

    counts = ops.cast(ops.cond(common, plain, masked), "int32")
    edges = lo + ops.arange(bins + 1, dtype="float32") * width
    edges = ops.where(usable, edges, ops.linspace(lo, hi, bins + 1))
    return edges, counts


def _bincount(index: Any, length: int) -> Any:
    """int32 counts ``(length,)`` of int32 ``index`` values in ``0..length-1``, compiled:
    the backend's own (``keras.ops.bincount``'s shape depends on the values)."""
    return _backend.module().bincount(index, length)


def _histogram_array(edges: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """TensorBoard's ``(k, 3)`` ``[left, right, count]`` histogram, float64."""
    edges = np.asarray(edges, np.float64)
    return np.stack([edges[:-1], edges[1:], np.asarray(counts, np.float64)], axis=-1)


def _host_scale(stats: np.ndarray) -> tuple[np.float32, np.float32] | None:
    """``(lo, scale)`` of the layer scale, as :func:`~tb_activations.render.to_levels` computes it.

    ``lo = min(0, min)`` and ``hi = max(max, lo)`` over all probes and
    channels (:func:`~tb_activations.render.value_range_from_stats`), the span
    and its reciprocal in float64, the scale then float32. ``None`` where the
    host would need float64 values (``scale`` beyond float32) or the
    statistics are not finite: the host quantizes those layers.
    """
    from tb_activations.colormaps import LEVELS

    if stats.size == 0 or not np.isfinite(stats).all():
        return None
    lo = np.float32(min(float(stats[..., 2].min()), 0.0))
    hi = np.float32(max(float(stats[..., 1].max()), float(lo)))
    span = np.float64(hi) - np.float64(lo)
    scale = (LEVELS - 1) / span if span > 0 else 0.0
    if scale > np.finfo(np.float32).max:
        return None
    return lo, np.float32(scale)


def _device_levels(maps: list[Any], los: list[Any], scales: list[Any]) -> list[Any]:
    """uint8 levels of each map on its ``(lo, scale)``: ``render.to_levels``' float32 arithmetic.

    ``(t - lo) * scale`` in float32, clipped, rounded half to even (as
    ``np.rint``); NaN/Inf as ``NAN_INDEX``.
    """
    from tb_activations.colormaps import LEVELS, NAN_INDEX

    out = []
    for i, t in enumerate(maps):
        lo, scale = los[i], scales[i]
        scaled = ops.multiply(ops.subtract(t, lo), scale)
        q = ops.cast(ops.round(ops.clip(scaled, 0.0, LEVELS - 1.0)), "uint8")
        out.append(ops.where(ops.isfinite(t), q, ops.cast(NAN_INDEX, "uint8")))
    return out


def _finite_summary(t: Any) -> tuple[Any, Any, Any]:
    shape = ops.shape(t)
    count = ops.cast(shape[1] * shape[2], "float32") * ops.ones_like(t[:, 0, 0, :])
    mean = ops.mean(t, axis=(1, 2))
    dev = t - mean[:, None, None, :]
    std = ops.sqrt(ops.mean(dev * dev, axis=(1, 2)))
    mx, mn = ops.max(t, axis=(1, 2)), ops.min(t, axis=(1, 2))
    flat = ops.reshape(t, (shape[0], -1))
    gram = ops.matmul(flat, ops.transpose(flat))
    return ops.stack([mean, mx, mn, std, count], axis=-1), gram, ops.mean(t, axis=-1)


def _masked_summary(t: Any) -> tuple[Any, Any, Any]:
    finite = ops.isfinite(t)
    zero = ops.zeros_like(t)
    z = ops.where(finite, t, zero)
    count = ops.sum(ops.cast(finite, "float32"), axis=(1, 2))
    safe = ops.maximum(count, 1.0)
    mean = ops.sum(z, axis=(1, 2)) / safe
    # Two passes (mean, then deviations): E[x^2] - E[x]^2 cancels badly in float32.
    dev = ops.where(finite, t - mean[:, None, None, :], zero)
    std = ops.sqrt(ops.sum(dev * dev, axis=(1, 2)) / safe)
    has = count > 0
    mx = ops.where(has, ops.max(ops.where(finite, t, -np.inf), axis=(1, 2)), 0.0)
    mn = ops.where(has, ops.min(ops.where(finite, t, np.inf), axis=(1, 2)), 0.0)
    flat = ops.reshape(z, (ops.shape(z)[0], -1))
    gram = ops.matmul(flat, ops.transpose(flat))
    return ops.stack([mean, mx, mn, std, count], axis=-1), gram, ops.mean(z, axis=-1)


def _check_not_empty(path: str, t: Any) -> None:
    """Raise a clear ``ValueError`` for a map ``(N, H, W, C)`` with no channel or no position.

    The shape is static here (traced or eager): checked before the reductions, whose
    empty-input behaviour differs by backend (TensorFlow's identity, an error on JAX and
    PyTorch), so that every backend refuses the layer with the same message.
    """
    shape = tuple(t.shape)[1:]
    if shape[-1] == 0:
        raise ValueError(
            f"Layer {path!r} has an output with zero channels (shape {shape}); nothing to render."
        )
    if 0 in shape:
        raise ValueError(
            f"Layer {path!r} has an empty output (shape {shape}, channels-last): no position "
            "to show; nothing to render. Select a layer whose output has a height and width."
        )


def _standardize(t: Any, channels_first: bool) -> Any:
    if keras.backend.standardize_dtype(t.dtype) != "float32":
        t = ops.cast(t, "float32")
    rank = len(t.shape)
    if rank == 4:
        return ops.transpose(t, (0, 2, 3, 1)) if channels_first else t
    if rank == 3:
        t = ops.transpose(t, (0, 2, 1)) if channels_first else t
        return ops.expand_dims(t, 1)
    if rank == 2:
        return ops.expand_dims(ops.expand_dims(t, 1), 1)
    raise ValueError(
        f"A layer output of rank {rank} (shape {tuple(t.shape)}) cannot be shown as feature maps; "
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
    ``call`` is wrapped while the pass runs (while it traces, where the backend
    compiles: ``tf.function``, ``jax.jit``), recording what the layer returns;
    the hooks are removed right after.
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
