"""Attribution in the logger's step: maps for the predicted (and true) class, as overlays.

:class:`AttributionStep` is what :class:`~tb_activations.ActivationLogger`
calls once per ``log()`` (and the command line once per run): per method it
explains every probe's predicted class and, where a label is given and the
prediction differs, the label's class too, in one batched pass; draws the
maps over the probe images with the activations' colormap (NaN/Inf in
magenta, counted); and measures each map's faithfulness by the *average
drop* of Chattopadhay et al. (2018, Grad-CAM++, section 5.1): the class
probability lost when the model sees only the explained region
(``input * map``, the map scaled to [0, 1] by its maximum and upsampled).
Low is faithful: the region the map shows is what the model needs.

A failing method warns and is skipped for that step: the activations of
the step are written all the same.

A step runs in two parts: :meth:`AttributionStep.capture`, what needs this
step's weights (the maps, classes and logits, and the average drop's
masked forward pass), and :meth:`AttributionStep.summaries`, the host work
(overlays, encoding, stored maps, descriptions). With ``blocking=False`` the
logger runs the first on the training thread and the second on its
background worker.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from tb_activations import metadata
from tb_activations.attribution._target import Explanation, target_of
from tb_activations.attribution.grad_cam import explain_layer
from tb_activations.attribution.integrated_gradients import explain_integrated_gradients
from tb_activations.attribution.occlusion import explain_occlusion
from tb_activations.attribution.saliency import (
    explain_saliency,
    explain_smoothgrad,
    predicted_classes,
)
from tb_activations.colormaps import BACKGROUND_INDEX, NAN_COLOR, palette
from tb_activations.diagnostics import class_probabilities, classifier_head, label_index
from tb_activations.encode import DEFAULT_COMPRESS_LEVEL, encode_jpeg, encode_rgb_png
from tb_activations.layer_selection import is_functional
from tb_activations.probes import Probes
from tb_activations.render import _resize, overlay

#: Other spellings accepted in ``attribution=``.
ALIASES = {"gradcam++": "gradcam_plus_plus", "grad_cam": "gradcam", "ig": "integrated_gradients"}
#: Methods with many passes per probe: run every ``attribution_every`` logs only (so does
#: the average drop, one more forward pass).
COSTLY = ("smoothgrad", "integrated_gradients", "occlusion")
#: Methods explaining a layer (``attribution_layer=``).
LAYER_METHODS = ("gradcam", "gradcam_plus_plus")
#: Long side of the stored map tensors, px: input-size maps are mean-pooled to it.
MAX_TENSOR_SIDE = 64


def default_methods(model: Any) -> tuple[str, ...]:
    """``("gradcam",)`` for a functional classifier with a spatial layer, else ``()``: what
    ``attribution=None`` means. A classifier as the predictions table has it
    (:func:`~tb_activations.diagnostics.classifier_head`: an ``(N, K)`` output out of a
    final softmax or sigmoid), with ``K >= 2``."""
    if not is_functional(model) or classifier_head(model) is None:
        return ()
    try:
        target = target_of(model)
        if target.num_classes is None or target.num_classes < 2:
            return ()
        target.spatial_layer(None)
    except ValueError:
        return ()
    return ("gradcam",)


def resolve_methods(model: Any, attribution: Sequence[str] | str | None) -> tuple[str, ...]:
    """The canonical method names of ``attribution=`` (``None``: :func:`default_methods`).

    Raises:
        ValueError: for an unknown method.
    """
    if attribution is None:
        return default_methods(model)
    if isinstance(attribution, str):
        attribution = (attribution,)
    names = []
    for name in attribution:
        canonical = ALIASES.get(name, name) if isinstance(name, str) else name
        if canonical not in metadata.ATTRIBUTION_METHODS:
            raise ValueError(
                "Invalid value for argument `attribution`. Expected None or a sequence of "
                f"{metadata.ATTRIBUTION_METHODS} (or 'gradcam++'). Received: "
                f"attribution={attribution!r}"
            )
        if canonical not in names:
            names.append(canonical)
    return tuple(names)


def explain(
    model: Any,
    method: str,
    inputs: np.ndarray,
    classes: Any,
    layer: Any = None,
    activations: np.ndarray | None = None,
) -> Explanation:
    """One method by name (see :data:`~tb_activations.metadata.ATTRIBUTION_METHODS`);
    ``activations``: the layer's output on ``inputs``, if at hand (layer methods)."""
    method = ALIASES.get(method, method)
    if method in LAYER_METHODS:
        return explain_layer(
            model,
            inputs,
            classes,
            layer,
            plus=method == "gradcam_plus_plus",
            activations=activations,
        )
    fn = {
        "saliency": explain_saliency,
        "smoothgrad": explain_smoothgrad,
        "integrated_gradients": explain_integrated_gradients,
        "occlusion": explain_occlusion,
    }.get(method)
    if fn is None:
        raise ValueError(
            f"Invalid value for argument `method`. Expected one of "
            f"{metadata.ATTRIBUTION_METHODS}. Received: method={method!r}"
        )
    return fn(model, inputs, classes)


def resolve_classes_option(
    classes: Sequence[int | str] | int | str | None,
    num_classes: int | None,
    class_names: Sequence[str] | None,
) -> tuple[int, ...]:
    """The class indices of ``attribution_classes=`` (indices, or names of ``class_names``).

    Duplicates are dropped, the order kept.

    Raises:
        ValueError: naming the first bad value and the valid indices and names.
    """
    if classes is None:
        return ()
    if isinstance(classes, (str, int, np.integer)) and not isinstance(classes, bool):
        classes = [classes]
    names = None if class_names is None else [str(c) for c in class_names]
    valid = (
        "class indices >= 0" if num_classes is None else f"class indices in [0, {num_classes - 1}]"
    )
    if names:
        shown = names if len(names) <= 20 else [*names[:20], "..."]
        valid += f" or names from `class_names` {shown}"
    else:
        valid += " (names need `class_names=`)"
    try:
        items = list(classes)
    except TypeError:
        items = None
    out: list[int] = []
    for item in items if items is not None else [classes]:
        if isinstance(item, str) and names and item in names:
            idx = names.index(item)
        elif isinstance(item, (int, np.integer)) and not isinstance(item, (bool, np.bool_)):
            idx = int(item)
        else:
            idx = -1
        bad = items is None or idx < 0 or (num_classes is not None and idx >= num_classes)
        if bad:
            raise ValueError(
                f"Invalid value for argument `attribution_classes`. Expected a list of {valid}. "
                f"Received: attribution_classes={classes!r} (bad value: {item!r})"
            )
        if idx not in out:
            out.append(idx)
    return tuple(out)


class Computed(NamedTuple):
    """What :meth:`AttributionStep.compute` returns (plain numpy)."""

    #: float32 ``(N, h, w)``: the maps of the predicted classes (or of ``classes=``).
    maps: np.ndarray
    #: int ``(N,)``: the class of each map.
    classes: np.ndarray
    #: ``{probe: (label class, map)}`` where the label's class differs from the prediction.
    label_maps: dict[int, tuple[int, np.ndarray]]
    #: float64 ``(N,)``: the average drop of each map (NaN: not measured).
    drop: np.ndarray
    #: float32 ``(N, E, h, w)``: the maps of the ``E`` classes of ``attribution_classes=``.
    class_maps: np.ndarray | None = None
    #: float64 ``(N, E)``: the probability of each of those classes per probe.
    class_probs: np.ndarray | None = None
    #: int ``(N, E)``: the class of each of those maps (the ranked ones differ per probe).
    class_ids: np.ndarray | None = None


def display_map(maps: np.ndarray) -> np.ndarray:
    """``(N, h, w)`` maps to show: integrated gradients ``(N, H, W, C)`` as ``sum_c |IG|``."""
    return np.abs(maps).sum(axis=-1) if maps.ndim == 4 else maps


class AttributionStep:
    """Attribution summaries of one logger, built once.

    Args:
        model: The logger's model.
        probes: The logger's probes (their labels give the true classes).
        methods: Canonical method names (see :func:`resolve_methods`).
        layer: Layer of the layer methods. Defaults to the last spatial layer.
        every: Run the costly methods (:data:`COSTLY`) and measure the average drop
            every ``every`` calls (the first included).
        class_names: Class names, for labels given as names and the descriptions.
        classes: Classes explained for every probe at every step beside the
            predicted one, in the same pass (``attribution_classes=``): indices
            or names of ``class_names``. Defaults to none.
        top_k: Also explain each probe's 2nd to ``top_k``-th highest scoring
            classes, in the same pass (``attribution_top_k=``). Defaults to 1:
            the predicted class only.
        colormap, alpha: As the overlays of the activations.
        overlay_format, overlay_quality, compress_level: Encoding, as theirs.

    Raises:
        ValueError: for a model whose output is not a score per class, a layer
            without a spatial output, a class of ``classes`` out of range or
            not among ``class_names``, a ``top_k`` that is not in [1, classes]
            (checked here, before any step).
    """

    def __init__(
        self,
        model: Any,
        probes: Probes,
        methods: Sequence[str],
        *,
        layer: Any = None,
        every: int = 1,
        class_names: Sequence[str] | None = None,
        classes: Sequence[int | str] | None = None,
        top_k: int = 1,
        colormap: str = "magma",
        alpha: float = 0.5,
        overlay_format: str = "jpeg",
        overlay_quality: int = 90,
        compress_level: int = DEFAULT_COMPRESS_LEVEL,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(
                "Invalid value for argument `attribution_every`. Expected a positive int. "
                f"Received: attribution_every={every!r}"
            )
        self.methods = tuple(methods)
        self.target = target_of(model)
        self.layer = None
        #: The :class:`~tb_activations.layer_selection.LayerInfo` of ``layer``: the logger's
        #: extraction pass also returns its output, so Grad-CAM runs only the layers after it.
        self.layer_info = None
        if any(m in LAYER_METHODS for m in self.methods):
            self.layer_info = self.target.spatial_layer(layer)
            self.layer = self.layer_info.path
        elif layer is not None:
            raise ValueError(
                "Invalid value for argument `attribution_layer`: it applies to the layer methods "
                f"{LAYER_METHODS}, and attribution={self.methods!r} has none. Received: "
                f"attribution_layer={layer!r}"
            )
        self.model = model
        self.probes = probes
        self.every = every
        self.class_names = None if class_names is None else list(class_names)
        self.extra_classes = resolve_classes_option(
            classes, self.target.num_classes, self.class_names
        )
        k = self.target.num_classes
        valid = not isinstance(top_k, bool) and isinstance(top_k, (int, np.integer))
        if not valid or top_k < 1 or (k is not None and top_k > k):
            raise ValueError(
                "Invalid value for argument `attribution_top_k`. Expected an int in "
                f"[1, {k if k is not None else 'the number of classes'}] (1: the predicted "
                f"class only). Received: attribution_top_k={top_k!r}"
            )
        #: Ranks explained beside the first (the predicted class): 2 .. top_k.
        self.ranks = tuple(range(2, int(top_k) + 1))
        self.colormap = colormap
        self.alpha = float(alpha)
        self.overlay_format = overlay_format
        self.overlay_quality = overlay_quality
        self.compress_level = compress_level
        self.failures = 0
        self._lock = threading.Lock()
        self._calls = 0
        n = len(probes.names)
        k = self.target.num_classes
        labels = probes.labels or [None] * n
        idx = [label_index(v, self.class_names) for v in labels]
        self.labels = np.array([i if i >= 0 and (k is None or i < k) else -1 for i in idx])

    def values(
        self,
        step: int,
        display: np.ndarray,
        output: np.ndarray | None = None,
        activations: dict[str, np.ndarray] | None = None,
    ) -> list:
        """Summary values of this step (those of a failing method left out, with a warning):
        :meth:`capture` then :meth:`summaries`, on the calling thread.

        Args:
            step: The step, for messages.
            display: uint8 ``(N, H, W, 3)`` probe images to draw the maps on.
            output: The model output on the probes from the same weights, if at
                hand: its argmax is the predicted class (saves explaining labels
                that turn out predicted).
            activations: ``{layer path: (N, h, w, C)}`` from the same pass, if at
                hand: Grad-CAM of a layer among them runs only the layers after it.
        """
        return self.summaries(step, display, self.capture(step, output, activations))

    def capture(
        self,
        step: int,
        output: np.ndarray | None = None,
        activations: dict[str, np.ndarray] | None = None,
    ) -> list[tuple[str, Any]]:
        """The part of a step that needs this step's weights: the device passes.

        Per method due at this call: the maps, their classes and logits, and
        the average drop's masked forward pass when it is due, as host arrays
        (small: one map per probe and class). The logger runs this on the
        training thread and :meth:`summaries` on its background worker. A
        failing method warns and is left out.

        Args:
            step, output, activations: As :meth:`values`.

        Returns:
            ``[(method, result of compute)]``, for :meth:`summaries`.
        """
        costly_due = self._calls % self.every == 0
        due = [m for m in self.methods if m not in COSTLY or costly_due]
        self._calls += 1
        results: list[tuple[str, Any]] = []
        for method in due:
            try:
                results.append(
                    (
                        method,
                        self.compute(method, output, activations=activations, measure=costly_due),
                    )
                )
            except Exception as err:  # an add-on of the step: warn, write the rest
                self._failed(method, step, err)
        return results

    def summaries(self, step: int, display: np.ndarray, captured: list[tuple[str, Any]]) -> list:
        """The host part of a step: overlays, encoding, stored maps, descriptions, protos.

        Needs no model and no device: the logger's background worker runs it.
        A method failing here warns (from the thread running it) and is left
        out; the rest of the step, the activations included, is written.

        Args:
            step: The step, for messages.
            display: uint8 ``(N, H, W, 3)`` probe images to draw the maps on.
            captured: What :meth:`capture` returned for this step.
        """
        values: list = []
        for method, result in captured:
            try:
                values.extend(self.method_values(method, display, None, result))
            except Exception as err:
                self._failed(method, step, err)
        return values

    def _failed(self, method: str, step: int, err: Exception) -> None:
        with self._lock:  # the training thread and the worker both count
            self.failures += 1
        warnings.warn(
            f"tb_activations: attribution {method!r} failed at step {step} and was "
            f"skipped; the activations are written. {type(err).__name__}: {err}",
            RuntimeWarning,
            stacklevel=4,
        )

    def compute(
        self,
        method: str,
        output: np.ndarray | None = None,
        classes: Any = None,
        activations: dict[str, np.ndarray] | None = None,
        measure: bool = True,
    ) -> Computed:
        """The maps of one method, all in one batched pass (see :class:`Computed`).

        The maps are those of the predicted classes, or of ``classes`` (one per
        probe, -1: predicted) when given; then no label and none of
        ``attribution_classes`` is explained. The average drop (one more forward
        pass) is NaN unless ``measure``.
        """
        x = self.probes.inputs
        n = len(x)
        labelled = np.flatnonzero(self.labels >= 0) if classes is None else np.zeros(0, int)
        given = output is not None and np.ndim(output) == 2 and len(output) == n
        # int (E, N): the class of each extra map, per probe: the chosen classes, then
        # the ranked ones (2nd, 3rd... highest score; the order of the output's values).
        columns = [np.full(n, c, np.int32) for c in (self.extra_classes if classes is None else ())]
        if self.ranks and classes is None:
            if not given:  # the order is needed before the pass: one forward pass
                _, output = predicted_classes(self.target, x, np.full(n, -1, np.int32))
                given = True
            order = np.argsort(-np.asarray(output, np.float64), axis=1, kind="stable")
            columns += [order[:, r - 1].astype(np.int32) for r in self.ranks]
        extra = np.stack(columns) if columns else np.zeros((0, n), np.int32)
        if classes is not None:
            pred = self.target.resolve_classes(classes, n)
        elif given:
            pred = np.asarray(output).argmax(axis=1).astype(np.int32)
            labelled = labelled[self.labels[labelled] != pred[labelled]]
        else:
            pred = np.full(n, -1, np.int32)
        # One batch: every probe for its prediction, the misclassified for their label,
        # and every probe again for each extra class (one row each).
        rows = np.concatenate([np.arange(n), labelled, np.tile(np.arange(n), len(extra))])
        classes = np.concatenate([pred, self.labels[labelled], extra.ravel()])
        classes = classes.astype(np.int32)
        acts = None
        if method in LAYER_METHODS and activations is not None and self.layer in activations:
            acts = np.asarray(activations[self.layer])[rows]
        ex = explain(self.model, method, x[rows], classes, self.layer, acts)
        maps = display_map(ex.maps)
        pred = ex.classes[:n]
        label_maps = {
            int(i): (int(self.labels[i]), maps[n + j])
            for j, i in enumerate(labelled)
            if self.labels[i] != pred[i]
        }
        drop = (
            self._average_drop(x, maps[:n], pred, ex.logits[:n]) if measure else np.full(n, np.nan)
        )
        class_maps = class_probs = class_ids = None
        if len(extra):
            first = n + len(labelled)
            class_maps = maps[first:].reshape(len(extra), n, *maps.shape[1:]).swapaxes(0, 1)
            with np.errstate(all="ignore"):
                probs = self._probabilities(ex.logits[first:])
            class_probs = probs[np.arange(len(probs)), extra.ravel()].reshape(-1, n).T
            class_ids = extra.T
        return Computed(maps[:n], pred, label_maps, drop, class_maps, class_probs, class_ids)

    def method_values(
        self, method: str, display: np.ndarray, output: np.ndarray | None, result: Any = None
    ) -> list:
        """The summary values of one method; ``result`` of :meth:`compute` if done already."""
        from tb_activations.summary import float_tensor_value, image_value, scalar_value

        result = result or self.compute(method, output)
        maps, pred, label_maps, drop = result[:4]
        n = len(maps)
        pairs = np.stack(
            [
                overlay_pair(
                    display[i],
                    maps[i],
                    label_maps[i][1] if i in label_maps else None,
                    colormap=self.colormap,
                    alpha=self.alpha,
                )
                for i in range(n)
            ]
        )
        if self.overlay_format == "jpeg":
            images = [encode_jpeg(p, self.overlay_quality) for p in pairs]
        else:
            images = [encode_rgb_png(p, self.compress_level) for p in pairs]
        stored = np.full((n, 2, *maps.shape[1:]), np.nan, np.float32)
        stored[:, 0] = maps
        for i, (_, m) in label_maps.items():
            stored[i, 1] = m
        stored = _shrink(stored)
        nonfinite = int((~np.isfinite(maps)).sum()) + sum(
            int((~np.isfinite(m)).sum()) for _, m in label_maps.values()
        )
        class_maps = getattr(result, "class_maps", None)
        if class_maps is not None:
            nonfinite += int((~np.isfinite(class_maps)).sum())
        finite_drop = drop[np.isfinite(drop)]
        classes = [[int(pred[i]), label_maps[i][0] if i in label_maps else -1] for i in range(n)]
        content = metadata.create_attribution_content(
            method=method,
            layer=self.layer if method in LAYER_METHODS else None,
            probes=self.probes.names,
            labels=self.probes.labels,
            class_names=self.class_names,
            classes=classes,
            average_drop=[float(d) if np.isfinite(d) else None for d in drop],
            colormap=self.colormap,
            alpha=self.alpha,
        )
        desc = self._description(method, maps, pred, label_maps, drop, nonfinite)
        tag = metadata.attribution_tag
        values = [
            image_value(
                tag(method, "overlay"),
                images,
                width=pairs.shape[2],
                height=pairs.shape[1],
                description=desc,
            ),
            float_tensor_value(tag(method, "maps"), stored, content=content, description=desc),
            # Per step (TensorBoard keeps the plugin content of a tag's first event only).
            float_tensor_value(
                tag(method, "classes"),
                np.array(
                    [[row[0], row[1], drop[i]] for i, row in enumerate(classes)], np.float32
                ).reshape(n, 3),
                content=content,
                description=f"float32 (N, 3): predicted class, explained label class (-1: "
                f"none), average drop of the {method} map.",
            ),
            scalar_value(
                tag(method, "nonfinite_count"),
                float(nonfinite),
                description=f"NaN/Inf values in the {method} maps (drawn in magenta).",
            ),
        ]
        if class_maps is not None:
            values.extend(
                self._class_values(method, class_maps, result.class_probs, result.class_ids)
            )
        if finite_drop.size:  # measured at this step (every `attribution_every` logs)
            values.append(
                scalar_value(
                    tag(method, "average_drop"),
                    float(finite_drop.mean()),
                    description=f"Mean over probes of max(0, p - p_masked) / p for {method}: "
                    "the predicted class's probability lost when the model sees only the "
                    "explained region (Chattopadhay et al. 2018). Low: faithful.",
                )
            )
        return values

    def _class_values(
        self, method: str, class_maps: np.ndarray, class_probs: np.ndarray, class_ids: np.ndarray
    ) -> list:
        """The maps and probabilities of the ``attribution_classes`` and the ranked classes
        of ``attribution_top_k`` (no overlay images: the dashboard draws them from the
        maps, with the same colormap and alpha)."""
        from tb_activations.summary import float_tensor_value

        n, e = class_maps.shape[:2]
        content = metadata.create_attribution_classes_content(
            method=method,
            layer=self.layer if method in LAYER_METHODS else None,
            probes=self.probes.names,
            class_names=self.class_names,
            classes=list(self.extra_classes),
            ranks=list(self.ranks),
            colormap=self.colormap,
            alpha=self.alpha,
        )
        chosen = ", ".join(
            [self._class_text(c) for c in self.extra_classes] + [f"rank {r}" for r in self.ranks]
        )
        scores = np.empty((n, e, 2), np.float32)
        scores[:, :, 0] = class_ids
        scores[:, :, 1] = class_probs
        tag = metadata.attribution_tag
        return [
            float_tensor_value(
                tag(method, "class_maps"),
                _shrink(np.asarray(class_maps, np.float32)),
                content=content,
                description=f"float32 (N, E, h, w): the {method} maps of the classes "
                f"{chosen} (attribution_classes, attribution_top_k), per probe.",
            ),
            float_tensor_value(
                tag(method, "class_scores"),
                scores,
                content=content,
                description=f"float32 (N, E, 2): class and its probability, per probe, for "
                f"the classes {chosen} (attribution_classes, attribution_top_k).",
            ),
        ]

    def _average_drop(
        self, x: np.ndarray, maps: np.ndarray, classes: np.ndarray, logits: np.ndarray
    ) -> np.ndarray:
        """float64 ``(N,)``: ``max(0, p - p_masked) / p`` of ``classes``; NaN where undefined."""
        # NaN/Inf maps or logits (a float16 overflow) give NaN here, quietly: they are counted.
        with np.errstate(all="ignore"):
            return self._average_drop_of(x, maps, classes, logits)

    def _average_drop_of(
        self, x: np.ndarray, maps: np.ndarray, classes: np.ndarray, logits: np.ndarray
    ) -> np.ndarray:
        n = len(x)
        unit = np.zeros((n, *x.shape[1:3]), np.float32)
        ok = np.zeros(n, bool)
        for i in range(n):
            m = np.where(np.isfinite(maps[i]), np.maximum(maps[i], 0.0), np.nan)
            top = np.nanmax(m) if np.isfinite(m).any() else np.nan
            if np.isfinite(maps[i]).all() and top > 0:
                unit[i] = np.clip(_resize(m / top, x.shape[1:3]), 0.0, 1.0)
                ok[i] = True
        if not ok.any():
            return np.full(n, np.nan)
        masked = x * unit.reshape(*unit.shape, *([1] * (x.ndim - 3)))
        _, masked_logits = predicted_classes(self.target, masked, classes)
        p = self._probabilities(logits)[np.arange(n), classes]
        q = self._probabilities(masked_logits)[np.arange(n), classes]
        drop = np.maximum(0.0, p - q) / p
        return np.where(ok & np.isfinite(drop), drop, np.nan)

    def _probabilities(self, logits: np.ndarray) -> np.ndarray:
        act = self.target.output_activation
        z = np.asarray(logits, np.float64)
        if act == "softmax":
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        if act == "sigmoid":
            return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))
        return class_probabilities(z)

    def _class_text(self, idx: int) -> str:
        names = self.class_names
        return f"{names[idx]} ({idx})" if names and 0 <= idx < len(names) else str(idx)

    def _description(self, method, maps, pred, label_maps, drop, nonfinite) -> str:
        where = f" at `{self.layer}`" if method in LAYER_METHODS else ""
        lines = [
            f"**{method}**{where}: per probe, the map of the predicted class over the probe; "
            "beside it the map of the label's class where it differs, else the probe itself.",
            "",
        ]
        for i, name in enumerate(self.probes.names):
            line = f"- {name}: predicted {self._class_text(int(pred[i]))}"
            if np.isfinite(drop[i]):
                line += f", average drop {drop[i]:.3f}"
            if np.isfinite(maps[i]).all() and not (maps[i] > 0).any():
                # Grad-CAM's ReLU of a map negative everywhere (common with Flatten heads).
                line += ", map zero everywhere"
            if i in label_maps:
                line += f"; label {self._class_text(label_maps[i][0])} (right)"
            lines.append(line)
        if nonfinite:
            lines += ["", f"{nonfinite} NaN/Inf values, shown in magenta."]
        return "\n".join(lines)


def overlay_map(
    image: np.ndarray, heat: np.ndarray, *, colormap: str = "magma", alpha: float = 0.5
) -> np.ndarray:
    """:func:`~tb_activations.render.overlay` of a map, its NaN/Inf cells in magenta."""
    out = overlay(image, heat, colormap=colormap, alpha=alpha)
    bad = ~np.isfinite(heat)
    if bad.any():
        h, w = image.shape[:2]
        rows = np.arange(h) * heat.shape[0] // h
        cols = np.arange(w) * heat.shape[1] // w
        out[bad[rows][:, cols]] = NAN_COLOR
    return out


def overlay_pair(
    image: np.ndarray,
    left: np.ndarray,
    right: np.ndarray | None,
    *,
    colormap: str = "magma",
    alpha: float = 0.5,
    sep: int = 1,
) -> np.ndarray:
    """uint8 ``(H, 2 W + sep, 3)``: ``left`` over the image, and ``right`` (or the image)."""
    h, w, _ = image.shape
    out = np.empty((h, 2 * w + sep, 3), np.uint8)
    out[:, :w] = overlay_map(image, left, colormap=colormap, alpha=alpha)
    out[:, w : w + sep] = palette(colormap)[BACKGROUND_INDEX]
    out[:, w + sep :] = (
        image if right is None else overlay_map(image, right, colormap=colormap, alpha=alpha)
    )
    return out


def _shrink(stored: np.ndarray) -> np.ndarray:
    """Mean-pool ``(N, M, H, W)`` maps to at most :data:`MAX_TENSOR_SIDE` px (NaN kept)."""
    n, two, h, w = stored.shape
    f = math.ceil(max(h, w) / MAX_TENSOR_SIDE)
    if f <= 1:
        return stored
    hp, wp = h // f * f, w // f * f
    cropped = stored[:, :, :hp, :wp].reshape(n, two, hp // f, f, wp // f, f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return cropped.mean(axis=(3, 5)).astype(np.float32)


def attribution_step(
    logger: Any,
    attribution: Sequence[str] | str | None,
    layer: Any,
    every: int,
    class_names: Sequence[str] | None,
    classes: Sequence[int | str] | None = None,
    top_k: int = 1,
) -> AttributionStep | None:
    """The :class:`AttributionStep` of an :class:`~tb_activations.ActivationLogger`, or
    ``None`` when no method applies (``attribution=None`` on a model that is not a
    classifier, or ``attribution=()``)."""
    methods = resolve_methods(logger.model, attribution)
    if not methods:
        if layer is not None and attribution is not None:
            raise ValueError(
                "Invalid value for argument `attribution_layer`: no attribution method is on. "
                f"Received: attribution={attribution!r}, attribution_layer={layer!r}"
            )
        if resolve_classes_option(classes, None, class_names) or top_k != 1:
            raise ValueError(
                "Invalid value for argument `attribution_classes` or `attribution_top_k`: no "
                "attribution method is on "
                "(attribution=None turns Grad-CAM on for classifiers only: a model whose output "
                "comes out of a softmax or sigmoid; else name a method, e.g. "
                f"attribution=('gradcam',)). Received: attribution={attribution!r}, "
                f"attribution_classes={classes!r}, attribution_top_k={top_k!r}"
            )
        return None
    return AttributionStep(
        logger.model,
        logger.probes,
        methods,
        layer=layer,
        every=every,
        class_names=class_names,
        classes=classes,
        top_k=top_k,
        colormap=logger.colormap,
        alpha=logger.alpha,
        overlay_format=logger.overlay_format,
        overlay_quality=logger.overlay_quality,
        compress_level=logger.compress_level,
    )
