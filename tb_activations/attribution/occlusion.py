"""Occlusion sensitivity (Zeiler and Fergus 2014): the score lost where a patch is covered.

Each window position of each input is one row of a batched forward pass (no
gradient); a pixel's value is the mean score drop over the windows covering
it, as captum computes it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tb_activations.attribution._target import Classes, Explanation, target_of
from tb_activations.attribution.saliency import (
    DEFAULT_BATCH_SIZE,
    _check_positive,
    _forward_post,
    predicted_classes,
)


def occlusion(
    model: Any,
    inputs: Any,
    classes: Classes = "predicted",
    *,
    patch: int | None = None,
    stride: int | None = None,
    fill: float = 0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> np.ndarray:
    """Occlusion sensitivity of the class score.

    Args:
        model: A Keras classifier (functional, Sequential or subclassed).
        inputs: float ``(N, H, W, C)``.
        classes: ``"predicted"`` (default; the class of the unaltered input),
            a class index, or one index per input.
        patch: Side of the square patch, px. Defaults to ``min(H, W) // 8`` (at least 1).
        stride: Step between patches, px. Defaults to ``patch // 2`` (at least 1).
        fill: Value of the covered pixels (in model input units). Defaults to 0.
        batch_size: Occluded copies per pass. Defaults to 32.

    Returns:
        float32 ``(N, H, W)``: mean of ``S(x) - S(x occluded)`` over the
        windows covering each pixel (positive: the region supports the class).

    Raises:
        ValueError: for a bad patch or stride, a class out of range, a model
            whose output is not a score per class, inputs that do not fit.
    """
    return explain_occlusion(
        model,
        inputs,
        classes,
        patch=patch,
        stride=stride,
        fill=fill,
        batch_size=batch_size,
    ).maps


def explain_occlusion(
    model: Any,
    inputs: Any,
    classes: Classes = "predicted",
    *,
    patch: int | None = None,
    stride: int | None = None,
    fill: float = 0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Explanation:
    """:func:`occlusion` with the classes and logits of the unaltered inputs."""
    target = target_of(model)
    x = target.check_inputs(inputs)
    if x.ndim != 4:
        raise ValueError(
            f"Occlusion covers patches of images (N, H, W, C). Received inputs of shape {x.shape}."
        )
    _, h, w, _ = x.shape
    patch = max(1, min(h, w) // 8) if patch is None else patch
    _check_positive("patch", patch)
    stride = max(1, patch // 2) if stride is None else stride
    _check_positive("stride", stride)
    _check_positive("batch_size", batch_size)
    if patch > min(h, w):
        raise ValueError(
            f"Invalid value for argument `patch`. Expected at most the image side {min(h, w)}. "
            f"Received: patch={patch}"
        )
    fn = target.compiled("forward", None, None, _forward_post)
    chosen, logits = predicted_classes(target, x, target.resolve_classes(classes, len(x)))
    base = logits[np.arange(len(x)), chosen]
    tops = _starts(h, patch, stride)
    lefts = _starts(w, patch, stride)
    windows = [(t, lft) for t in tops for lft in lefts]
    rows = [(i, t, lft) for i in range(len(x)) for t, lft in windows]
    drop = np.zeros(x.shape[:3], np.float64)
    count = np.zeros(x.shape[:3], np.float64)
    for s in range(0, len(rows), batch_size):
        part = rows[s : s + batch_size]
        idx = np.array([r[0] for r in part])
        batch = x[idx].copy()
        for j, (_, t, lft) in enumerate(part):
            batch[j, t : t + patch, lft : lft + patch] = fill
        scores = fn([batch], chosen[idx])[1][np.arange(len(part)), chosen[idx]]
        for j, (i, t, lft) in enumerate(part):
            drop[i, t : t + patch, lft : lft + patch] += base[i] - scores[j]
            count[i, t : t + patch, lft : lft + patch] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        maps = np.where(count > 0, drop / np.maximum(count, 1), 0.0)
    return Explanation(maps=maps.astype(np.float32), classes=chosen, logits=logits)


def _starts(size: int, patch: int, stride: int) -> list[int]:
    """Window starts covering ``[0, size)``: every ``stride``, the last one flush with the edge."""
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts
