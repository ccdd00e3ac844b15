"""Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay et al. 2018).

Both weight the feature maps ``A`` of a layer by the gradient of the class
score ``S`` by ``A``, in one forward and one backward pass for the whole
batch:

- Grad-CAM: ``relu(sum_c mean_ij(dS/dA_ijc) * A_ijc)``;
- Grad-CAM++: the weights are ``sum_ij alpha_ijc * relu(dS/dA_ijc)`` with
  ``alpha = g^2 / (2 g^2 + sum_ij(A) g^3)``, the closed form of the paper for
  an exponential of the score (the higher derivatives become powers of the
  first), as the reference implementations compute it.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tb_activations.attribution._target import Classes, Explanation, target_of


def grad_cam(
    model: Any,
    inputs: Any,
    classes: Classes = "predicted",
    layer: Any = None,
    *,
    batch_size: int | None = None,
) -> np.ndarray:
    """Grad-CAM maps of ``inputs`` at ``layer`` for ``classes``.

    Args:
        model: A functional or Sequential Keras classifier (nested backbones included).
        inputs: float ``(N, H, W, C)``, fed to the model as they are.
        classes: ``"predicted"`` (default), a class index, or one index per input.
        layer: Name, path (``"backbone/conv"``) or layer. Defaults to the last
            layer with a spatial output.
        batch_size: Inputs per pass. Defaults to all at once.

    Returns:
        float32 ``(N, h, w)`` at the layer's resolution, ReLU applied, not
        normalised. Non-finite gradients stay NaN/Inf in the map.

    Raises:
        ValueError: for a layer without a spatial output, a class out of range,
            a model whose output is not a score per class, inputs that do not fit.

    Example:

    >>> maps = grad_cam(vgg16, images, "predicted", layer="block5_conv3")  # (N, 14, 14)
    """
    return explain_layer(model, inputs, classes, layer, plus=False, batch_size=batch_size).maps


def grad_cam_plus_plus(
    model: Any,
    inputs: Any,
    classes: Classes = "predicted",
    layer: Any = None,
    *,
    batch_size: int | None = None,
) -> np.ndarray:
    """Grad-CAM++ maps; arguments, result and errors as :func:`grad_cam`."""
    return explain_layer(model, inputs, classes, layer, plus=True, batch_size=batch_size).maps


def explain_layer(
    model: Any,
    inputs: Any,
    classes: Classes = "predicted",
    layer: Any = None,
    *,
    plus: bool = False,
    batch_size: int | None = None,
    activations: np.ndarray | None = None,
) -> Explanation:
    """Grad-CAM (``plus=False``) or Grad-CAM++ with the classes and logits of the pass.

    ``activations``: the layer's output on ``inputs`` from the same weights,
    channels-last (what the extractor returns), when at hand: then only the
    layers after it run (the logger passes the activations it extracted).
    """
    target = target_of(model)
    info = target.spatial_layer(layer)
    method = "gradcam++" if plus else "gradcam"
    x = target.check_inputs(inputs)
    delta_shape = tuple(info.layer.output.shape[1:])
    delta_dtype = keras.backend.standardize_dtype(info.layer.output.dtype)
    given = activations is not None
    if given:
        activations = np.asarray(activations)
        if info.channels_first:
            activations = np.moveaxis(activations, -1, 1)
        if activations.shape != (len(x), *delta_shape):
            raise ValueError(
                f"Invalid value for argument `activations`: expected the output of "
                f"{info.path!r}, shape {(len(x), *delta_shape)}. Received shape "
                f"{activations.shape}."
            )
    # Built (and traced) once per (model, method, layer), reused by every later call.
    fn = target.compiled(
        method + ("_given" if given else ""),
        info,
        "given_layer" if given else "layer",
        _post(plus, info.channels_first, given),
    )
    wanted = target.resolve_classes(classes, len(x))
    step = batch_size or len(x)
    parts = []
    for s in range(0, len(x), step):
        chunk = x[s : s + step]
        if given:
            second = activations[s : s + step].astype(delta_dtype, copy=False)
        else:
            second = np.zeros((len(chunk), *delta_shape), delta_dtype)
        parts.append(fn([chunk, second], wanted[s : s + step]))
    maps, chosen, logits = (np.concatenate(p) for p in zip(*parts))
    return Explanation(maps=maps, classes=chosen, logits=logits, layer=info.path)


def _post(plus: bool, channels_first: bool, given: bool = False):
    def post(ins: list, outs: list, grad: Any, chosen: Any) -> list:
        ops = keras.ops
        a, g = ops.cast(ins[1] if given else outs[0], "float32"), ops.cast(grad, "float32")
        if channels_first:
            a, g = ops.transpose(a, (0, 2, 3, 1)), ops.transpose(g, (0, 2, 3, 1))
        if plus:
            g2 = g * g
            denom = 2.0 * g2 + ops.sum(a, axis=(1, 2), keepdims=True) * g2 * g
            # alpha = 0 where the gradient is 0 (0/0 in the closed form).
            alpha = ops.where(g != 0.0, g2 / ops.where(denom != 0.0, denom, 1.0), 0.0)
            weights = ops.sum(alpha * ops.relu(g), axis=(1, 2))
        else:
            weights = ops.mean(g, axis=(1, 2))
        cam = ops.relu(ops.sum(a * weights[:, None, None, :], axis=-1))
        return [cam, chosen, ops.cast(outs[-1], "float32")]

    return post
