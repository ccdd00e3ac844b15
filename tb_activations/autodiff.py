"""Gradients with the active Keras backend's own autodiff.

The math around it (objectives, image parameterisations) is written once in
``keras.ops``; only taking the gradient differs between backends, and it is
chosen here, in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np


def value_and_gradient(fn: Callable[[Any], Any], x: Any) -> tuple[Any, Any]:
    """``(fn(x), d fn / d x)`` for a scalar-valued ``fn`` of one tensor.

    Args:
        fn: Maps a backend tensor like ``x`` to a scalar tensor, in ``keras.ops``.
        x: float32 array or backend tensor.

    Returns:
        The value and the gradient, as backend tensors.

    Raises:
        NotImplementedError: for a backend without a gradient here.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x, tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x)
        return value, tape.gradient(value, x)
    if backend == "jax":
        import jax

        return jax.value_and_grad(fn)(keras.ops.convert_to_tensor(np.asarray(x, np.float32)))
    if backend == "torch":
        import torch

        t = torch.as_tensor(np.asarray(x, np.float32)).requires_grad_(True)
        value = fn(t)
        (grad,) = torch.autograd.grad(value, t)
        return value.detach(), grad
    raise NotImplementedError(
        f"Gradients are not implemented for the Keras backend {backend!r}; "
        "use tensorflow, jax or torch."
    )


def layer_model(model: Any, paths: list[str]) -> Any:
    """A Keras model from ``model``'s input to the outputs of the layers at ``paths``.

    Differentiable (a plain Keras functional model), unlike the extractor's
    compiled pass which takes numpy. Layers of nested models (``outer/inner``)
    are reached by running the outer graph again, calling the nested models'
    layers one by one, so that every wanted tensor connects to the outer input.

    Raises:
        ValueError: for a subclassed model (no graph) or a path not reached.
    """
    from tb_activations.layer_selection import is_functional

    if not is_functional(model):
        raise ValueError(
            f"Model {model.name!r} is subclassed (no graph of layers): gradients with respect "
            "to the input need a Functional or Sequential model. Wrap it: "
            "keras.Model(inputs, outputs) with a keras.Input."
        )
    from tb_activations.extraction import _symbolic_outputs

    # The extractor's own walk through nested models: one implementation of the path rule.
    outputs = _symbolic_outputs(model, list(paths))
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, outputs, name=f"{model.name}_layers")
