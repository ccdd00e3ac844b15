"""PyTorch: eager calls without an autograd graph (``torch.no_grad``), and fused reductions.

PyTorch runs ``keras.ops`` eagerly, one kernel (or several) per op, where
``tf.function`` and XLA fuse the reductions of :mod:`tb_activations.extraction`
into a few passes. Profiled on VGG16's five pooling layers (8 probes, 224 px),
those reductions cost a quarter to a half of the forward pass on two cores:
``isfinite`` alone is four kernels (``eq``, ``abs``, ``ne``, ``mul``), Keras'
``segment_sum`` a ``repeat_interleave``, a ``scatter_reduce`` and two
``where``. :func:`reductions` gives the same values in a few fused kernels
(``mean``, ``amax``, ``amin``, one ``mm``, ``bincount``, in-place elementwise
ops on views, no layout copies), and hands the rare cases (NaN/Inf in a map,
overflowing ranges) to the ``keras.ops`` versions.
"""

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


def bincount(index: Any, length: int) -> Any:
    """Counts ``(length,)`` of int ``index`` values in ``0..length-1`` (eager: any shape)."""
    import torch

    return torch.bincount(index, minlength=length)


def reductions(
    summary: Callable[..., Any], histogram: Callable[..., Any], levels: Callable[..., Any]
) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """PyTorch's own versions of :mod:`tb_activations.extraction`'s ``keras.ops`` reductions.

    Args:
        summary: The ``keras.ops`` per-layer statistics, Gram and mean map
            (``_device_summary``), used where a map is not all finite.
        histogram: The ``keras.ops`` histogram (``_device_histogram``), used
            where a map is not all finite or its range overflows.
        levels: The ``keras.ops`` palette levels (``_device_levels``), used for
            a map that is not all finite or whose scaled values overflow.

    Returns:
        ``(summary, histogram, levels)`` with the same signatures and results:
        the statistics and Gram matrices to float32 rounding (other summation
        orders), the mean maps, histogram counts and levels bit for bit.
    """
    import torch

    from tb_activations.colormaps import LEVELS
    from tb_activations.extraction import histogram_range  # loaded: it calls this function

    def fast_summary(t: Any) -> tuple[Any, Any, Any]:
        n, h, w, c = t.shape
        # (N, C, H*W) is a view both where the map is channels-last in memory (Keras'
        # torch conv outputs) and where it is channels-first (its pooling outputs).
        per_channel = t.permute(0, 3, 1, 2).reshape(n, c, h * w)
        if per_channel.numel() == 0:
            return summary(t)
        # A float32 mean, as the reference's: not finite where a value is NaN/Inf or the
        # sum overflows float32, and then the reference decides (the same values as on
        # TensorFlow and JAX).
        mean = torch.mean(per_channel, dim=-1)
        if not bool(torch.isfinite(mean).all()):
            return summary(t)
        # Two passes, as the reference (E[x^2] - E[x]^2 cancels badly in float32); on
        # the CPU these vectorised kernels beat torch.var's scalar Welford loop (10x here),
        # as amax and amin beat torch.aminmax.
        dev = per_channel - mean[..., None]
        std = torch.sqrt(torch.mean(dev.square_(), dim=-1))
        mx, mn = torch.amax(per_channel, dim=-1), torch.amin(per_channel, dim=-1)
        rows = _rows(t)
        gram = torch.mm(rows, rows.T)
        count = torch.full_like(mean, float(h * w))
        stats = torch.stack([mean, mx, mn, std, count], dim=-1)
        return stats, gram, torch.mean(t, dim=-1)

    def fast_histogram(t: Any, stats: Any, bins: int) -> tuple[Any, Any]:
        h, w = t.shape[1], t.shape[2]
        # The statistics' counts say whether every value is finite (exact below 2**24).
        if t.numel() == 0 or h * w >= 2**24 or not bool((stats[..., 4] == h * w).all()):
            return histogram(t, stats, bins)
        # The keras.ops version's range and width: the same bin for every value.
        lo, _hi, width, usable = histogram_range(stats, bins)
        if not bool(usable):
            return histogram(t, stats, bins)
        # In place on one temporary; lo <= t, so truncating after the clip is the floor.
        # int16 indices (bins <= 1000) keep bincount's passes short.
        index = torch.sub(t, lo).div_(width).clamp_(0, bins - 1).to(torch.int16)
        counts = torch.bincount(index.reshape(-1), minlength=bins).to(torch.int32)
        edges = lo + torch.arange(bins + 1, dtype=torch.float32, device=t.device) * width
        return edges, counts

    def fast_levels(maps: list[Any], los: Any, scales: Any) -> list[Any]:
        out = []
        for i, t in enumerate(maps):
            lo, scale = los[i], scales[i]
            scaled = torch.sub(t, lo).mul_(scale)
            # Finite values scale into [0, LEVELS - 1] (their sum cannot overflow): a
            # non-finite sum means NaN/Inf in the map (or t - lo overflowed).
            if not bool(torch.isfinite(torch.sum(scaled))):
                out.append(levels([t], los[i : i + 1], scales[i : i + 1])[0])
                continue
            out.append(scaled.clamp_(0.0, LEVELS - 1.0).round_().to(torch.uint8))
        return out

    return fast_summary, fast_histogram, fast_levels


def _rows(t: Any) -> Any:
    """``t`` as ``(N, -1)`` rows without a copy where its memory allows (any order of values)."""
    n = t.shape[0]
    if t.is_contiguous():
        return t.reshape(n, -1)
    channels_first = t.permute(0, 3, 1, 2)
    return channels_first.reshape(n, -1)  # a view where the map is channels-first in memory


def is_chief(model: Any = None) -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
