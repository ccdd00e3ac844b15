"""Per-channel statistics of activations and channel ranking.

All functions take channels-last float32 arrays ``(N, H, W, C)`` and ignore
non-finite values (NaN, +-Inf), which are counted instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RANK_BY = ("mean", "max", "std")


@dataclass(frozen=True)
class ChannelStats:
    """Statistics of one layer's activations for a probe batch.

    Attributes:
        mean, max, min, std: float32 ``(N, C)`` per probe and channel, over the
            finite values of the map (0 where a map has no finite value).
        nonfinite: int ``(N,)`` number of NaN/Inf values per probe.
        dead: bool ``(C,)``, channels that are exactly zero everywhere on every probe.
    """

    mean: np.ndarray
    max: np.ndarray
    min: np.ndarray
    std: np.ndarray
    nonfinite: np.ndarray
    dead: np.ndarray

    @property
    def dead_fraction(self) -> float:
        """Fraction of dead channels (0.0 for a layer without channels)."""
        return float(self.dead.mean()) if self.dead.size else 0.0

    @property
    def nonfinite_count(self) -> int:
        return int(self.nonfinite.sum())

    def stacked(self) -> np.ndarray:
        """float32 ``(N, C, 4)``: mean, max, min, std (the ``channel_stats`` tensor)."""
        return np.stack([self.mean, self.max, self.min, self.std], axis=-1).astype(np.float32)

    @classmethod
    def from_reduced(cls, reduced: np.ndarray, positions: int) -> ChannelStats:
        """Statistics from reductions done on the device.

        Args:
            reduced: float32 ``(N, C, 5)``: mean, max, min, std over the finite
                values of each map and their count (see
                :meth:`ActivationExtractor.run_with_summaries`).
            positions: ``H * W``, the number of values of one map.
        """
        count = reduced[..., 4]
        complete = count == positions
        mx, mn = reduced[..., 1], reduced[..., 2]
        return cls(
            mean=np.ascontiguousarray(reduced[..., 0], np.float32),
            max=np.ascontiguousarray(mx, np.float32),
            min=np.ascontiguousarray(mn, np.float32),
            std=np.ascontiguousarray(reduced[..., 3], np.float32),
            nonfinite=np.rint(positions - count).sum(axis=1).astype(np.int64),
            dead=((mx == 0) & (mn == 0) & complete).all(axis=0),
        )

    def by(self, name: str) -> np.ndarray:
        """The ``(N, C)`` statistic named ``name`` (one of ``RANK_BY``)."""
        if name not in RANK_BY:
            raise ValueError(
                f"Invalid value for argument `rank_by`. Expected one of {RANK_BY}. Received: {name!r}"
            )
        return getattr(self, name)


def channel_stats(acts: np.ndarray) -> ChannelStats:
    """Per-probe, per-channel mean, max, min and std of ``acts`` ``(N, H, W, C)``.

    Examples:
        >>> s = channel_stats(np.ones((2, 4, 4, 3), np.float32))
        >>> s.mean.shape, float(s.mean[0, 0]), s.dead.tolist()
        ((2, 3), 1.0, [False, False, False])
    """
    acts = np.asarray(acts, dtype=np.float32)
    n, c = acts.shape[0], acts.shape[-1]
    flat = acts.reshape(n, -1, c)
    finite = np.isfinite(flat)
    all_finite = bool(finite.all())
    if all_finite:
        if flat.shape[1] == 0:
            zeros = np.zeros((n, c), np.float32)
            return ChannelStats(zeros, zeros, zeros, zeros, np.zeros(n, np.int64), np.ones(c, bool))
        mean = flat.mean(axis=1, dtype=np.float64)
        mx = flat.max(axis=1)
        mn = flat.min(axis=1)
        std = flat.std(axis=1, dtype=np.float64)
        nonfinite = np.zeros(n, np.int64)
    else:
        count = finite.sum(axis=1)
        safe = np.where(finite, flat, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = safe.sum(axis=1, dtype=np.float64) / np.maximum(count, 1)
            var = (np.where(finite, flat - mean[:, None, :], 0.0) ** 2).sum(
                axis=1, dtype=np.float64
            ) / np.maximum(count, 1)
        std = np.sqrt(var)
        mx = np.where(count > 0, np.where(finite, flat, -np.inf).max(axis=1, initial=-np.inf), 0.0)
        mn = np.where(count > 0, np.where(finite, flat, np.inf).min(axis=1, initial=np.inf), 0.0)
        nonfinite = (~finite).sum(axis=(1, 2)).astype(np.int64)
    # Dead: exactly zero everywhere on every probe (the article's black maps).
    # A NaN is not zero, so a channel with NaNs is not reported dead.
    dead = (mx == 0).all(axis=0) & (mn == 0).all(axis=0)
    if not all_finite:
        dead &= (finite.all(axis=1)).all(axis=0)
    return ChannelStats(
        mean=np.asarray(mean, np.float32),
        max=np.asarray(mx, np.float32),
        min=np.asarray(mn, np.float32),
        std=np.asarray(std, np.float32),
        nonfinite=nonfinite,
        dead=np.asarray(dead, bool),
    )


def top_channels(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values per row, largest first; NaN ranks last.

    Args:
        values: ``(N, C)`` statistic per probe and channel.
        k: Number of channels; capped at ``C``.

    Returns:
        int64 ``(N, min(k, C))``. Ties keep the lower channel index first.

    Examples:
        >>> top_channels(np.array([[1.0, 3.0, 2.0]]), 2).tolist()
        [[1, 2]]
    """
    values = np.asarray(values, dtype=np.float64)
    k = min(int(k), values.shape[-1])
    keyed = np.where(np.isnan(values), -np.inf, values)
    # Stable sort of the negated values keeps ties in channel order.
    order = np.argsort(-keyed, axis=-1, kind="stable")
    return order[..., :k]
