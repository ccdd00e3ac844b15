"""JAX: ``jax.jit`` of a stateless call, the variables' values passed in at every call."""

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
    """``jax.jit`` of ``fn`` run in a ``keras.StatelessScope`` over ``variables``.

    A plain ``jax.jit`` of a Keras call reads the variables while tracing and
    bakes their values into the compiled function: later weight updates would
    not show. Here their current values are arguments of the compiled function,
    mapped onto the variables while ``fn`` traces. (JAX retraces per new input
    shape, i.e. per new batch size.)
    """
    import jax
    import keras

    variables = list(variables)

    def stateless(values: list[Any], *args: Any) -> Any:
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*args)

    jitted = jax.jit(stateless)

    def call(*args: Any) -> Any:
        return jitted([v.value for v in variables], *args)

    call.jitted = jitted  # type: ignore[attr-defined]
    return call


def to_numpy(tensor: Any) -> np.ndarray:
    # On the CPU a read-only view of the device buffer; elsewhere one copy.
    return np.asarray(tensor)


def bincount(index: Any, length: int) -> Any:
    """int32 counts ``(length,)`` of int32 ``index`` values in ``0..length-1``, a fixed shape
    (``keras.ops.bincount``'s depends on the values, which ``jax.jit`` cannot compile)."""
    import jax.numpy as jnp

    return jnp.bincount(index, length=length)


def is_chief(model: Any = None) -> bool:
    import jax

    return jax.process_index() == 0
