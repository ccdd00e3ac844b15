"""PyTorch: eager calls without an autograd graph (``torch.no_grad``)."""

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
    """``fn`` under ``torch.no_grad``, numpy inputs moved to Keras' device once per call.

    The model runs eagerly (as Keras' own ``predict`` does on PyTorch): no
    autograd graph is recorded, and variables are read at every call.
    """
    import torch
    from keras.src.backend.torch.core import convert_to_tensor

    del variables, input_shape

    def call(*args: Any) -> Any:
        with torch.no_grad():
            return fn(*[_tensor(a, convert_to_tensor) for a in args])

    return call


def _tensor(x: Any, convert: Callable[[Any], Any]) -> Any:
    if isinstance(x, np.ndarray):
        return convert(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_tensor(v, convert) for v in x)
    return x


def to_numpy(tensor: Any) -> np.ndarray:
    import torch

    if isinstance(tensor, torch.Tensor):
        out = tensor.detach().cpu().numpy()
        out.flags.writeable = False  # a view of the tensor on the CPU, as on other backends
        return out
    return np.asarray(tensor)


def is_chief(model: Any = None) -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
