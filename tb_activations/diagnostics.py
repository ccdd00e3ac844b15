"""Per-step diagnostics written next to the activation images: drift, predictions, channel probes.

:class:`Diagnostics` is what :class:`~tb_activations.ActivationLogger` calls
once per ``log()``, after rendering: it feeds a
:class:`~tb_activations.drift.DriftTracker`, turns the model's output on the
probes into a predictions table, names the probe that excites each of a
layer's top channels most, re-renders the layer x step CKA heatmap, and
returns TensorBoard summary values (tags in :mod:`tb_activations.metadata`).
No Keras here: the layer's activation is read by name.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from tb_activations import metadata
from tb_activations.drift import (
    ESTIMATORS,
    MIN_CKA_SAMPLES,
    SATURATING,
    DriftTracker,
    auto_positions,
)
from tb_activations.layer_selection import LayerInfo
from tb_activations.probes import Probes
from tb_activations.stats import top_channels

#: ``normalize=`` values that fix the colour scale across steps (besides render.NORMALIZE).
FIXED_SCALES = ("first", "running_max")

#: Logged steps kept for the CKA heatmap (the image shows the most recent ones).
HEATMAP_STEPS = 200


def saturation_kind(layer: Any) -> str | None:
    """``"sigmoid"``, ``"tanh"``, ... when ``layer`` ends in a saturating activation, else ``None``.

    Reads the layer's ``activation`` attribute (``Dense(..., activation="tanh")``,
    ``Activation("sigmoid")``) by function name; a separate activation layer
    after a linear one is detected on that activation layer only.
    """
    fn = getattr(layer, "activation", None)
    name = getattr(fn, "__name__", None) if fn is not None else None
    return name if name in SATURATING else None


#: Final activations whose outputs are already probabilities: a classifier's head.
CLASSIFIER_HEADS = ("softmax", "sigmoid")


def class_probabilities(output: np.ndarray, head: str | None = None) -> np.ndarray:
    """float64 ``(N, K)`` class probabilities from a classifier output ``(N, K)``.

    Args:
        output: The model's output on the probes.
        head: The classifier's final activation, from :func:`classifier_head`.
            ``"softmax"``: the rows are taken as they are. ``"sigmoid"``: one
            column ``p`` becomes ``[1 - p, p]`` (binary); several columns are
            independent probabilities (multi-label) and are taken as they are,
            never softmaxed. ``None`` (the user said the output is a
            classifier's, of unknown head): rows already in [0, 1] that sum
            to 1 are kept, others go through a softmax; a single column is a
            binary classifier, ``[1 - p, p]`` with ``p`` the output, or its
            sigmoid if not in [0, 1].
    """
    out = np.asarray(output, np.float64)
    if out.ndim != 2 or out.shape[1] == 0:
        raise ValueError(f"A classifier output must have shape (N, K). Received {out.shape}.")
    if head == "softmax" or (head == "sigmoid" and out.shape[1] > 1):
        return out
    if head == "sigmoid":
        return np.concatenate([1.0 - out, out], axis=1)
    finite = np.isfinite(out).all()
    in_unit = finite and bool(((out >= 0) & (out <= 1)).all())
    if out.shape[1] == 1:
        p = out[:, 0] if in_unit else 1.0 / (1.0 + np.exp(-np.clip(out[:, 0], -60, 60)))
        return np.stack([1.0 - p, p], axis=1)
    if in_unit and np.allclose(out.sum(axis=1), 1.0, atol=1e-3):
        return out
    # Shift by the finite max (a NaN/Inf row, e.g. a float16 overflow, stays NaN, silently).
    top = np.where(np.isfinite(out), out, -np.inf).max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(out - np.where(np.isfinite(top), top, 0.0))
        return e / e.sum(axis=1, keepdims=True)


def label_index(label: Any, class_names: Sequence[str] | None) -> int:
    """Class index of a probe label (an int, or a name in ``class_names``); -1 if unknown."""
    if label is None or isinstance(label, bool):
        return -1
    if isinstance(label, (int, np.integer)):
        return int(label)
    if class_names is not None and str(label) in class_names:
        return list(class_names).index(str(label))
    return -1


def prediction_table(
    probs: np.ndarray, probes: Probes, class_names: Sequence[str] | None
) -> np.ndarray:
    """float32 ``(N, 4)``: predicted class, confidence, label class (-1: none), p(label) (NaN: none)."""
    n, k = probs.shape
    pred = probs.argmax(axis=1)
    table = np.full((n, len(metadata.PREDICTION_FIELDS)), np.nan, np.float32)
    table[:, 0] = pred
    table[:, 1] = probs[np.arange(n), pred]
    labels = probes.labels or [None] * n
    for i, label in enumerate(labels):
        idx = label_index(label, class_names)
        table[i, 2] = idx
        if 0 <= idx < k:
            table[i, 3] = probs[i, idx]
    return table


def _class_text(idx: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= idx < len(class_names):
        return f"{class_names[idx]} ({idx})"
    return str(idx)


def predictions_markdown(
    table: np.ndarray,
    probes: Probes,
    class_names: Sequence[str] | None,
    step: int,
    *,
    multi_label: bool = False,
) -> str:
    """A markdown table of :func:`prediction_table` for the Text dashboard.

    ``multi_label``: the output is independent sigmoids; the table says so
    (the predicted class is the most probable one, the others may be on too).
    """
    labels = probes.labels or [None] * len(probes.names)
    labelled = [i for i, v in enumerate(labels) if v is not None]
    known = [i for i in labelled if table[i, 2] >= 0]
    correct = sum(int(table[i, 0] == table[i, 2]) for i in known)
    head = f"Step {step}: predictions on the {len(probes.names)} probes"
    if known:
        head += f"; {correct} of {len(known)} labelled probes correct"
    if len(known) < len(labelled):
        head += f"; {len(labelled) - len(known)} labels are not class indices nor in `class_names`"
    if multi_label:
        head += "; multi-label (sigmoid) output: each class's probability on its own"
    lines = [
        head + ".",
        "",
        "| probe | label | predicted | confidence | p(label) | |",
        "|---|---|---|---:|---:|---|",
    ]
    for i, name in enumerate(probes.names):
        pred, conf, lab, plab = table[i]
        label = "" if labels[i] is None else str(labels[i])
        if lab >= 0:
            label = _class_text(int(lab), class_names)
        mark = "" if lab < 0 else ("ok" if pred == lab else "**wrong**")
        p_label = "" if np.isnan(plab) else f"{plab:.3f}"
        lines.append(
            f"| {name} | {label} | {_class_text(int(pred), class_names)} | {conf:.3f} | {p_label} | {mark} |"
        )
    return "\n".join(lines)


def channel_probes_markdown(
    records: dict[str, Any], probes: Probes, rank_by: str, top_k: int, step: int
) -> str:
    """Per layer, the top channels (by ``rank_by`` averaged over probes) and the probe exciting each most."""
    lines = [
        f"Step {step}: per layer, the top channels by {rank_by} and the probe exciting each most.",
        "",
    ]
    for path, record in records.items():
        stat = np.asarray(record.stats.by(rank_by), np.float64)  # (N, C)
        top = top_channels(np.nanmean(stat, axis=0)[None, :], top_k)[0]
        lines += [
            f"**`{path}`**",
            "",
            f"| channel | {rank_by} over probes | strongest probe | its {rank_by} |",
            "|---:|---:|---|---:|",
        ]
        for ch in top:
            col = stat[:, ch]
            best = int(np.nanargmax(col)) if np.isfinite(col).any() else 0
            lines.append(
                f"| #{int(ch)} | {np.nanmean(col):.3g} | {probes.names[best]} | {col[best]:.3g} |"
            )
        lines.append("")
    return "\n".join(lines)


def heatmap_rgb(values: np.ndarray, names: Sequence[str], pal: np.ndarray) -> np.ndarray:
    """uint8 RGB image of ``values`` ``(layers, steps)`` in [0, 1], layer names on the left.

    Rows are layers in model order (top = closest to the input), columns the
    logged steps, oldest left. NaN (undefined CKA, e.g. a dead layer) gets the
    palette's NaN colour; values are clipped to [0, 1].
    """
    from PIL import Image, ImageDraw, ImageFont

    from tb_activations.colormaps import LEVELS, NAN_INDEX

    n_steps = values.shape[1]
    cell_h = 14
    cell_w = int(max(2, min(24, 480 // max(n_steps, 1))))
    levels = np.full(values.shape, NAN_INDEX, np.uint8)
    finite = np.isfinite(values)
    levels[finite] = np.rint(np.clip(values[finite], 0.0, 1.0) * (LEVELS - 1)).astype(np.uint8)
    cells = pal[np.repeat(np.repeat(levels, cell_h, axis=0), cell_w, axis=1)]
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    margin = int(max((probe.textlength(n, font=font) for n in names), default=0)) + 8
    img = Image.new("RGB", (margin + cells.shape[1], cells.shape[0]), (255, 255, 255))
    img.paste(Image.fromarray(cells), (margin, 0))
    draw = ImageDraw.Draw(img)
    for r, name in enumerate(names):
        draw.text((2, r * cell_h + 1), name, fill=(0, 0, 0), font=font)
    return np.asarray(img)


class Diagnostics:
    """Drift, channel and prediction summaries for one :class:`~tb_activations.ActivationLogger`.

    Args:
        layers: The logger's layers.
        probes: The logger's probes.
        drift: Track CKA and channel signals. Defaults to ``True``.
        cka: ``"debiased"``, ``"biased"``, or ``None`` (default: debiased;
            the estimator and its samples are named in every CKA scalar's
            description).
        cka_positions: ``None`` (default: the few-probe rule of
            :func:`~tb_activations.drift.auto_positions`: the probes are the
            CKA samples from 8 probes on, else spatial positions are) or ``k``
            sampled positions per probe, see :class:`~tb_activations.drift.DriftTracker`.
        predictions: Write the predictions table (needs the model output).
        class_names: Names of the classifier's classes, or ``None``.
        head: How to read the output, from :func:`prediction_head`:
            ``"softmax"``/``"sigmoid"`` (already probabilities) or ``None``/``"logits"``.
        rank_by, top_k: As the logger's.
        colormap: Colormap of the CKA heatmap.

    Raises:
        ValueError: for a bad option.
    """

    def __init__(
        self,
        layers: Sequence[LayerInfo],
        probes: Probes,
        *,
        drift: bool = True,
        cka: str | None = None,
        cka_positions: int | None = None,
        predictions: bool = False,
        class_names: Sequence[str] | None = None,
        rank_by: str = "mean",
        top_k: int = 5,
        colormap: str = "magma",
        head: str | None = None,
    ) -> None:
        if cka is not None and cka not in ESTIMATORS:
            raise ValueError(
                f"Invalid value for argument `cka`. Expected None or one of {ESTIMATORS}. Received: cka={cka!r}"
            )
        # The few-probe rule (drift.auto_positions): spatial positions are the samples when
        # the probes are too few; a layer still short of samples gets no CKA (see the logger).
        cka_positions = auto_positions(len(probes.names), cka_positions)
        cka = "debiased" if cka is None else cka
        if class_names is not None:
            class_names = [str(c) for c in class_names]
        self.layers = list(layers)
        self.probes = probes
        self.drift = bool(drift)
        self.predictions = bool(predictions)
        self.class_names = class_names
        self.head = head if head in CLASSIFIER_HEADS else None
        self.rank_by = rank_by
        self.top_k = top_k
        self.colormap = colormap
        self.tracker = (
            DriftTracker(cka=cka, positions=cka_positions, min_samples=MIN_CKA_SAMPLES)
            if drift
            else None
        )
        self.saturation = {i.path: saturation_kind(i.layer) for i in self.layers}
        # (step, cka_first per layer): bounded, the heatmap's only memory.
        self.history: deque[tuple[int, np.ndarray]] = deque(maxlen=HEATMAP_STEPS)
        self._warned_output = False

    def checkpoint(self) -> tuple:
        """A cheap snapshot of the state :meth:`values` changes, for :meth:`rollback`."""
        tracker = self.tracker.checkpoint() if self.tracker is not None else None
        return tracker, list(self.history), self._warned_output

    def rollback(self, checkpoint: tuple) -> None:
        """Undo :meth:`values` calls since ``checkpoint``: their step was not written."""
        tracker, history, warned = checkpoint
        if self.tracker is not None:
            self.tracker.rollback(tracker)
        self.history.clear()
        self.history.extend(history)
        self._warned_output = warned

    def pin(self, acts: dict[str, np.ndarray], grams: dict[str, np.ndarray] | None = None) -> None:
        """Pin ``acts`` (one array per layer) as the drift reference; ``grams`` as in :meth:`values`."""
        if self.tracker is not None:
            for info in self.layers:
                gram = None if grams is None else grams.get(info.path)
                self.tracker.pin(info.path, acts[info.path], gram=gram)

    def values(
        self,
        acts: dict[str, np.ndarray],
        output: np.ndarray | None,
        records: dict[str, Any],
        step: int,
        grams: dict[str, np.ndarray] | None = None,
    ) -> list:
        """Summary values of this step: drift scalars, CKA heatmap, predictions, channel probes.

        ``grams`` are the layers' ``X @ X.T`` when the extractor already reduced them.
        """
        from tb_activations.summary import float_tensor_value, scalar_value, text_value

        values: list = []
        if self.tracker is not None:
            column = np.full(len(self.layers), np.nan, np.float32)
            for row, info in enumerate(self.layers):
                record = records[info.path]
                result = self.tracker.update(
                    info.path,
                    acts[info.path],
                    dead=record.stats.dead,
                    channel_means=record.stats.mean.mean(axis=0, dtype=np.float64),
                    top=record.top,
                    saturation=self.saturation[info.path],
                    gram=None if grams is None else grams.get(info.path),
                )
                column[row] = result.get("cka_first", np.nan)
                for name in metadata.DRIFT_SCALAR_SUFFIXES:
                    if name in result:
                        values.append(
                            scalar_value(
                                metadata.scalar_tag(info.path, name),
                                result[name],
                                description=metadata.DRIFT_DESCRIPTIONS[name].format(
                                    layer=info.path, cka=self.tracker.describe()
                                ),
                            )
                        )
            self.history.append((step, column))
            values.append(self._heatmap_value())
        if self.predictions and output is not None:
            values += self._prediction_values(output, step, float_tensor_value, text_value)
        values.append(
            text_value(
                metadata.CHANNEL_PROBES_TAG,
                channel_probes_markdown(records, self.probes, self.rank_by, self.top_k, step),
                description="Per layer, the top channels and the probe that excites each most.",
            )
        )
        return values

    def _heatmap_value(self):
        from tb_activations.colormaps import palette
        from tb_activations.encode import encode_rgb_png
        from tb_activations.summary import image_value

        grid = np.stack([c for _, c in self.history], axis=1)  # (layers, steps)
        rgb = heatmap_rgb(grid, [i.path for i in self.layers], palette(self.colormap))
        first, last = self.history[0][0], self.history[-1][0]
        return image_value(
            metadata.CKA_HEATMAP_TAG,
            [encode_rgb_png(rgb)],
            width=rgb.shape[1],
            height=rgb.shape[0],
            description=(
                f"Linear CKA ({self.tracker.cka}) of each layer (rows, input at the top) against its "
                f"first logged step, over the last {HEATMAP_STEPS} logged steps at most (columns, "
                f"oldest left; this one: steps {first}..{last}). Colormap {self.colormap}: "
                "bright = 1 = unchanged; the NaN colour: undefined (a constant or dead layer)."
            ),
        )

    def _multi_label(self, out: np.ndarray) -> bool:
        return self.head == "sigmoid" and out.shape[1] > 1

    def _prediction_values(self, output, step, float_tensor_value, text_value) -> list:
        import warnings

        out = np.asarray(output)
        if out.ndim != 2:
            if not self._warned_output:
                self._warned_output = True
                warnings.warn(
                    f"tb_activations: the model output has shape {out.shape[1:]} per probe, not a "
                    "classifier's (K,); the predictions table is skipped.",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return []
        probs = class_probabilities(out, self.head)
        table = prediction_table(probs, self.probes, self.class_names)
        content = metadata.create_predictions_content(
            probes=self.probes.names,
            labels=self.probes.labels,
            class_names=self.class_names,
            num_classes=probs.shape[1],
        )
        return [
            text_value(
                metadata.PREDICTIONS_TEXT_TAG,
                predictions_markdown(
                    table, self.probes, self.class_names, step, multi_label=self._multi_label(out)
                ),
                description="Predicted class and confidence of each probe, with its label.",
            ),
            float_tensor_value(
                metadata.PREDICTIONS_TAG,
                table,
                content=content,
                description="float32 (N, 4): predicted class, confidence, label class (-1: none), p(label).",
            ),
        ]


def output_rank(model: Any) -> int | None:
    """Rank (batch axis included) of the model's first output, or ``None`` when not known symbolically."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    if not outputs:
        return None
    first = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    shape = getattr(first, "shape", None)
    return None if shape is None else len(shape)


def _head_of(operation: Any) -> str | None:
    """``"softmax"``/``"sigmoid"`` when ``operation`` ends in one, looking inside nested models."""
    if isinstance(getattr(operation, "layers", None), list) and hasattr(operation, "outputs"):
        return classifier_head(operation)  # a nested Sequential/Functional model
    name = type(operation).__name__.lower()  # keras.layers.Softmax, keras.ops' Sigmoid
    if name in CLASSIFIER_HEADS:
        return name
    fn = getattr(operation, "activation", None)  # Dense(..., activation=...), Activation(...)
    name = getattr(fn, "__name__", None) if fn is not None else None
    return name if name in CLASSIFIER_HEADS else None


def classifier_head(model: Any) -> str | None:
    """``"softmax"`` or ``"sigmoid"`` when the model's first output comes out of that
    activation (a ``Dense(K, activation=...)``, an ``Activation``/``Softmax`` layer, the
    op itself, also as the last layer of a nested model); ``None`` otherwise: logits,
    a regression head, an embedding, or a model whose graph is not known (subclassed).
    """
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    if not outputs:
        return None
    first = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    history = getattr(first, "_keras_history", None)
    operation = getattr(history, "operation", None)
    return None if operation is None else _head_of(operation)


def prediction_head(model: Any, predictions: bool | None) -> str | None:
    """What the predictions table reads the model output as, or ``None`` for no table.

    ``None`` (auto): a classifier only, i.e. a rank-2 output ``(N, K)`` out of
    a final softmax or sigmoid (:func:`classifier_head`); its values are
    already probabilities and are shown as they are. A regression head, an
    embedding or logits get no table (pass ``predictions=True`` for logits).
    ``True``: the user says the output is a classifier's; returns the head
    if known, else ``"logits"`` (read by :func:`class_probabilities` with
    ``head=None``). ``False``: ``None``.

    Raises:
        ValueError: for a non-bool ``predictions``, or ``predictions=True`` on a
            model whose output is known not to be ``(N, K)``.
    """
    if predictions is not None and not isinstance(predictions, bool):
        raise ValueError(
            f"Invalid value for argument `predictions`. Expected None, True or False. Received: predictions={predictions!r}"
        )
    if predictions is False:
        return None
    rank = output_rank(model)
    if predictions and rank is not None and rank != 2:
        raise ValueError(
            f"Invalid value for argument `predictions`: the output of model {model.name!r} has "
            f"rank {rank}, not a classifier's (N, K). Received: predictions=True"
        )
    head = classifier_head(model) if rank == 2 else None
    if predictions:
        return head or "logits"
    return head


def resolve_predictions(model: Any, predictions: bool | None) -> bool:
    """Whether to fetch the model output for the predictions table (see :func:`prediction_head`).

    Raises:
        ValueError: as :func:`prediction_head`.
    """
    return prediction_head(model, predictions) is not None
