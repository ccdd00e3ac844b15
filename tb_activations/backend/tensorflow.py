"""TensorFlow: ``tf.function`` compilation, ``tf.distribute`` chief."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def compile_function(
    fn: Callable[..., Any],
    *,
    variables: Sequence[Any] = (),
    input_shape: tuple[int | None, ...] | None = None,
) -> Callable[..., Any]:
    """``tf.function`` of ``fn``; variables are captured by reference (updates are seen)."""
    import tensorflow as tf

    del variables  # a tf.function reads tf.Variables at every call
    if input_shape is None:
        return tf.function(fn, autograph=False, reduce_retracing=True)
    spec = tf.TensorSpec((None, *[None if s is None else int(s) for s in input_shape]), tf.float32)
    # One trace for any batch size: no retracing per call or per epoch.
    return tf.function(fn, input_signature=[spec], autograph=False)


def to_numpy(tensor: Any) -> np.ndarray:
    return np.asarray(tensor)


def bincount(index: Any, length: int) -> Any:
    """int32 counts ``(length,)`` of int32 ``index`` values in ``0..length-1``, a fixed shape."""
    import tensorflow as tf

    return tf.math.bincount(index, minlength=length, maxlength=length, dtype=tf.int32)


def is_chief(model: Any = None) -> bool:
    strategy = getattr(model, "distribute_strategy", None)
    extended = getattr(strategy, "extended", None)
    if extended is None:
        return True
    try:
        return bool(extended.should_save_summary)
    except (AttributeError, NotImplementedError):
        return True
