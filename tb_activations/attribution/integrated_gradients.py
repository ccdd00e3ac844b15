"""Integrated gradients (Sundararajan et al. 2017).

``IG(x) = (x - x0) * integral_0^1 dS/dx(x0 + a (x - x0)) da``, the integral by
Gauss-Legendre quadrature (as captum's default): at ``steps`` nodes it is
exact for polynomials of degree ``2 steps - 1`` along the path, so the
completeness axiom ``sum IG = S(x) - S(x0)`` holds closely at 64 steps.
The ``N * steps`` path points run through one compiled gradient function in
batches.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tb_activations.attribution._target import Classes, Explanation, target_of
from tb_activations.attribution.saliency import (
    DEFAULT_BATCH_SIZE,
    _check_positive,
    predicted_classes,
)


def integrated_gradients(
    model: Any,
    inputs: Any,
    classes: Classes = "predicted",
    *,
    steps: int = 64,
    baseline: Any = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> np.ndarray:
    """Integrated gradients of the class score, per input value.

    Args:
        model: A Keras classifier (functional, Sequential or subclassed).
        inputs: float ``(N, H, W, C)``.
        classes: ``"predicted"`` (default; the class of the unaltered input),
            a class index, or one index per input.
        steps: Quadrature nodes along the path. Defaults to 64.
        baseline: ``None`` (default): zeros, a black image for inputs in
            [0, 1] or [0, 255]; else an array broadcastable to one input or
            to ``inputs``.
        batch_size: Path points per pass. Defaults to 32.

    Returns:
        float32 ``(N, H, W, C)`` attributions; their sum over an input is
        close to ``S(x) - S(baseline)``.

    Raises:
        ValueError: for a class out of range, a baseline of the wrong shape,
            a model whose output is not a score per class, inputs that do not fit.
    """
    return explain_integrated_gradients(
        model, inputs, classes, steps=steps, baseline=baseline, batch_size=batch_size
    ).maps


def explain_integrated_gradients(
    model: Any,
    inputs: Any,
    classes: Classes = "predicted",
    *,
    steps: int = 64,
    baseline: Any = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Explanation:
    """:func:`integrated_gradients` with the classes and logits of the unaltered inputs."""
    _check_positive("steps", steps)
    _check_positive("batch_size", batch_size)
    target = target_of(model)
    x = target.check_inputs(inputs)
    fn = target.compiled("integrated_gradients", None, "input", _post)
    chosen, logits = predicted_classes(target, x, target.resolve_classes(classes, len(x)))
    x0 = np.zeros_like(x) if baseline is None else np.asarray(baseline, np.float32)
    try:
        x0 = np.broadcast_to(x0, x.shape)
    except ValueError:
        raise ValueError(
            f"Invalid value for argument `baseline`. Expected an array broadcastable to the "
            f"inputs' shape {x.shape}. Received an array of shape {np.shape(baseline)}."
        ) from None
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas = ((nodes + 1.0) / 2.0).astype(np.float32)
    weights = (weights / 2.0).astype(np.float64)
    diff = x - x0
    rows = np.arange(len(x) * steps)
    which, k = rows // steps, rows % steps
    total = np.zeros(x.shape, np.float64)
    shape = (-1, *([1] * (x.ndim - 1)))
    for s in range(0, len(rows), batch_size):
        i, a = which[s : s + batch_size], k[s : s + batch_size]
        points = x0[i] + alphas[a].reshape(shape) * diff[i]
        grads = fn([points], chosen[i])[0]
        for j in np.unique(i):
            sel = i == j
            total[j] += np.tensordot(weights[a[sel]], grads[sel], axes=1)
    return Explanation(maps=(total * diff).astype(np.float32), classes=chosen, logits=logits)


def _post(ins: list, outs: list, grad: Any, chosen: Any) -> list:
    return [keras.ops.cast(grad, "float32")]
