"""Autodiff per Keras backend: one compiled function ``(inputs, classes) -> results``.

The math (the score, the methods' reductions) is written once in
``keras.ops``; what differs between backends is only how the gradient is
taken and how the function is compiled, kept here:

- TensorFlow: a ``tf.function`` (one trace for any batch size) around a
  ``tf.GradientTape``;
- JAX: ``jax.jit`` of ``jax.grad`` of the network's ``stateless_call``, the
  variables passed in at every call (a jit that closes over the model would
  bake the weights in, see ``shared/KERAS_BACKENDS.md``);
- PyTorch: ``torch.autograd.grad`` in eager mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np


def score_of(logits: Any, classes: Any) -> tuple[Any, Any]:
    """``(sum_i logits[i, c_i], c)`` where ``c_i = classes[i]``, or the argmax where it is -1."""
    ops = keras.ops
    logits = ops.cast(logits, "float32")
    predicted = ops.cast(ops.argmax(logits, axis=-1), "int32")
    chosen = ops.where(classes < 0, predicted, classes)
    # The one-hot picks a logit; no gradient flows through the choice itself.
    onehot = ops.stop_gradient(ops.one_hot(chosen, ops.shape(logits)[-1], dtype="float32"))
    return ops.sum(logits * onehot), chosen


class Compiled:
    """A compiled attribution function of one (model, method, layer).

    Args:
        net: The Keras network to run (a functional sub-model, or the model).
        call_args: Maps the list of input tensors to ``net``'s positional input.
        specs: ``(shape without batch, dtype)`` of each input array.
        wrt: Index of the input to differentiate the score by, or ``None``
            (forward pass only).
        post: ``post(inputs, outputs, grad, chosen) -> list of tensors``, in
            ``keras.ops``: what the method computes from the pass.

    Calling it with ``(list of arrays, int32 classes (B,))`` returns the
    ``post`` results as numpy arrays. :attr:`traces` counts the times the
    function body was traced (TensorFlow, JAX) or run (PyTorch).
    """

    def __init__(
        self,
        net: Any,
        call_args: Callable[[list], Any],
        specs: Sequence[tuple[tuple[int | None, ...], str]],
        wrt: int | None,
        post: Callable[..., list],
    ) -> None:
        self.traces = 0
        backend = keras.backend.backend()
        build = {"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}.get(backend)
        if build is None:
            raise ValueError(
                f"Attribution needs the TensorFlow, JAX or PyTorch backend of Keras. Received: "
                f"KERAS_BACKEND={backend!r}"
            )

        def body(ins: list, classes: Any, outs_fn: Callable[[list], list]) -> list:
            self.traces += 1  # Python side effect: runs once per trace, never per call
            return outs_fn(ins, classes)

        self._run = build(net, call_args, list(specs), wrt, post, body)

    def __call__(self, inputs: Sequence[np.ndarray], classes: np.ndarray) -> list[np.ndarray]:
        return self._run(list(inputs), np.asarray(classes, np.int32))


class _Callable:
    """A function without ``__code__``: TensorFlow then keys its retracing statistics
    by this object, not by the shared code of every compiled attribution function (which
    would warn of "frequent retracing" after five functions traced once each)."""

    def __init__(self, fn: Callable) -> None:
        self._fn = fn

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)


def _outputs(out: Any) -> list:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _tensorflow(net, call_args, specs, wrt, post, body):
    import tensorflow as tf

    def run(ins: list, classes: Any) -> list:
        if wrt is None:
            outs = _outputs(net(call_args(ins), training=False))
            _, chosen = score_of(outs[-1], classes)
            return post(ins, outs, None, chosen)
        with tf.GradientTape() as tape:
            tape.watch(ins[wrt])
            outs = _outputs(net(call_args(ins), training=False))
            score, chosen = score_of(outs[-1], classes)
        grad = tape.gradient(score, ins[wrt])
        return post(ins, outs, grad, chosen)

    signature = [tf.TensorSpec((None, *shape), dtype) for shape, dtype in specs]
    signature.append(tf.TensorSpec((None,), tf.int32))
    # One trace for any batch size: never re-traced per call or per epoch.
    fn = tf.function(
        _Callable(lambda *args: body(list(args[:-1]), args[-1], run)),
        input_signature=signature,
        autograph=False,
    )

    def call(inputs: list, classes: np.ndarray) -> list[np.ndarray]:
        arrays = [np.asarray(a, dtype) for a, (_, dtype) in zip(inputs, specs)]
        return [t.numpy() for t in fn(*arrays, classes)]

    return call


def _jax(net, call_args, specs, wrt, post, body):
    import jax

    def forward(trainable, non_trainable, ins, classes):
        out, _ = net.stateless_call(trainable, non_trainable, call_args(ins), training=False)
        outs = _outputs(out)
        score, chosen = score_of(outs[-1], classes)
        return score, (outs, chosen)

    if wrt is None:

        def run(trainable, non_trainable, ins, classes):
            _, (outs, chosen) = forward(trainable, non_trainable, ins, classes)
            return post(ins, outs, None, chosen)

    else:

        def run(trainable, non_trainable, ins, classes):
            def f(target):
                return forward(
                    trainable, non_trainable, [*ins[:wrt], target, *ins[wrt + 1 :]], classes
                )

            grad, (outs, chosen) = jax.grad(f, has_aux=True)(ins[wrt])
            return post(ins, outs, grad, chosen)

    # The variables are arguments: a jit closing over the model would keep its first weights.
    fn = jax.jit(
        lambda trainable, non_trainable, ins, classes: body(
            ins, classes, lambda i, c: run(trainable, non_trainable, i, c)
        )
    )

    def call(inputs: list, classes: np.ndarray) -> list[np.ndarray]:
        arrays = [np.asarray(a, dtype) for a, (_, dtype) in zip(inputs, specs)]
        trainable = [v.value for v in net.trainable_variables]
        non_trainable = [v.value for v in net.non_trainable_variables]
        return [np.asarray(t) for t in fn(trainable, non_trainable, arrays, classes)]

    return call


def _torch(net, call_args, specs, wrt, post, body):
    import torch

    def run(ins: list, classes: Any) -> list:
        with torch.enable_grad():
            if wrt is not None:
                ins[wrt] = ins[wrt].detach().requires_grad_(True)
            outs = _outputs(net(call_args(ins), training=False))
            score, chosen = score_of(outs[-1], classes)
            grad = None if wrt is None else torch.autograd.grad(score, ins[wrt])[0]
        return [t.detach() for t in post(ins, outs, grad, chosen)]

    def call(inputs: list, classes: np.ndarray) -> list[np.ndarray]:
        tensors = [
            keras.ops.convert_to_tensor(np.asarray(a, d)) for a, (_, d) in zip(inputs, specs)
        ]
        out = body(tensors, keras.ops.convert_to_tensor(classes), run)
        return [keras.ops.convert_to_numpy(t) for t in out]

    return call
