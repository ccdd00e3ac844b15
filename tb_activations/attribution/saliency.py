"""Input-gradient maps: saliency (Simonyan et al. 2014) and SmoothGrad (Smilkov et al. 2017)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tb_activations.attribution._target import Classes, Explanation, Target, target_of

#: Rows (noisy copies) per pass for SmoothGrad, and input rows for the other multi-pass methods.
DEFAULT_BATCH_SIZE = 32


def saliency(
    model: Any, inputs: Any, classes: Classes = "predicted", *, batch_size: int | None = None
) -> np.ndarray:
    """Saliency: the absolute gradient of the class score by the input, max over colour channels.

    Args:
        model: A Keras classifier (functional, Sequential or subclassed).
        inputs: float ``(N, H, W, C)``.
        classes: ``"predicted"`` (default), a class index, or one index per input.
        batch_size: Inputs per pass. Defaults to all at once.

    Returns:
        float32 ``(N, H, W)``, >= 0 (NaN where the gradient is not finite).

    Raises:
        ValueError: for a class out of range, a model whose output is not a
            score per class, inputs that do not fit.
    """
    return explain_saliency(model, inputs, classes, batch_size=batch_size).maps


def explain_saliency(
    model: Any, inputs: Any, classes: Classes = "predicted", *, batch_size: int | None = None
) -> Explanation:
    """:func:`saliency` with the classes and logits of the pass."""
    target = target_of(model)
    x = target.check_inputs(inputs)
    fn = target.compiled("saliency", None, "input", _post)
    wanted = target.resolve_classes(classes, len(x))
    step = batch_size or len(x)
    parts = [fn([x[s : s + step]], wanted[s : s + step]) for s in range(0, len(x), step)]
    maps, chosen, logits = (np.concatenate(p) for p in zip(*parts))
    return Explanation(maps=maps, classes=chosen, logits=logits)


def smoothgrad(
    model: Any,
    inputs: Any,
    classes: Classes = "predicted",
    *,
    samples: int = 25,
    noise: float = 0.15,
    seed: int | None = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> np.ndarray:
    """SmoothGrad: the saliency averaged over ``samples`` noisy copies of each input.

    Args:
        samples: Noisy copies per input. Defaults to 25.
        noise: Standard deviation of the Gaussian noise, as a fraction of each
            input's value range (``max - min``). Defaults to 0.15, the paper's
            10-20 %.
        seed: Seed of the noise. Defaults to 0 (the same noise every call).
        batch_size: Noisy copies per pass. Defaults to 32.

    Returns:
        float32 ``(N, H, W)``: the mean over the copies of ``max_c |dS/dx|``.
        ``"predicted"`` is the class predicted on the unaltered input.
    """
    return explain_smoothgrad(
        model, inputs, classes, samples=samples, noise=noise, seed=seed, batch_size=batch_size
    ).maps


def explain_smoothgrad(
    model: Any,
    inputs: Any,
    classes: Classes = "predicted",
    *,
    samples: int = 25,
    noise: float = 0.15,
    seed: int | None = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Explanation:
    """:func:`smoothgrad` with the classes and logits (of the unaltered inputs)."""
    _check_positive("samples", samples)
    _check_positive("batch_size", batch_size)
    if not float(noise) >= 0.0:
        raise ValueError(
            f"Invalid value for argument `noise`. Expected a float >= 0. Received: noise={noise!r}"
        )
    target = target_of(model)
    x = target.check_inputs(inputs)
    fn = target.compiled("saliency", None, "input", _post)
    chosen, logits = predicted_classes(target, x, target.resolve_classes(classes, len(x)))
    rng = np.random.default_rng(seed)
    span = (x.max(axis=tuple(range(1, x.ndim))) - x.min(axis=tuple(range(1, x.ndim)))).astype(
        np.float32
    )
    rows = np.repeat(np.arange(len(x)), samples)
    total = np.zeros((len(x), *x.shape[1:-1]), np.float64)
    for s in range(0, len(rows), batch_size):
        r = rows[s : s + batch_size]
        sigma = (float(noise) * span[r]).reshape(-1, *([1] * (x.ndim - 1)))
        noisy = x[r] + rng.standard_normal((len(r), *x.shape[1:]), np.float32) * sigma
        maps = fn([noisy], chosen[r])[0]
        np.add.at(total, r, maps)
    return Explanation(maps=(total / samples).astype(np.float32), classes=chosen, logits=logits)


def predicted_classes(
    target: Target, x: np.ndarray, wanted: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, logits)`` on the unaltered inputs, ``"predicted"`` (-1) resolved.

    The methods that run altered copies (noise, paths, patches) fix the class
    first: the prediction of a copy is not the input's.
    """
    fn = target.compiled("forward", None, None, _forward_post)
    chosen, logits = fn([x], wanted)
    return chosen.astype(np.int32), logits


def _post(ins: list, outs: list, grad: Any, chosen: Any) -> list:
    ops = keras.ops
    maps = ops.max(ops.abs(ops.cast(grad, "float32")), axis=-1)
    return [maps, chosen, ops.cast(outs[-1], "float32")]


def _forward_post(ins: list, outs: list, grad: Any, chosen: Any) -> list:
    return [chosen, keras.ops.cast(outs[-1], "float32")]


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a positive int. Received: {name}={value!r}"
        )
