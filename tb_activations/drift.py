"""Representation drift between logged steps: linear CKA and channel-level signals.

Plain numpy, no TensorFlow, no TensorBoard. Linear CKA (Kornblith et al.,
2019, "Similarity of Neural Network Representations Revisited") compares two
representations ``X`` ``(n, d1)`` and ``Y`` ``(n, d2)`` of the same ``n``
samples; it is 1 for representations equal up to an orthogonal transform and
an isotropic scaling, and near 0 for unrelated ones.

Two forms, same number:

- feature form, :func:`cka_features`: ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``
  with column-centred ``Xc``, ``Yc``; costs ``d1 x d2``, good when features are few;
- Gram form, :func:`cka_gram`: ``<HKH, HLH> / (||HKH|| ||HLH||)`` with
  ``K = X X^T``, ``L = Y Y^T`` and the centring matrix ``H``; costs ``n x n``,
  which is what :class:`DriftTracker` caches between steps.

Two estimators:

- ``"biased"``: the plug-in HSIC estimator of the paper;
- ``"debiased"``: the unbiased HSIC estimator of Song et al. (2012), used by
  Kornblith et al. for small ``n`` (U-centred Grams, needs ``n >= 4``).

``"debiased"`` is the default of the logger. Its samples are the probes, a
handful, while a layer has thousands of features (``H*W*C``); with ``d >> n``
the centred Gram of *any* representation tends to a multiple of the centring
matrix and biased CKA between unrelated representations tends to 1, so a
biased curve would look converged when it is not. The debiased estimator
removes that bias (for independent representations it is centred on 0). It
is noisier and may be slightly negative; 1 is still exactly 1.

Examples:
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(50, 8))
    >>> q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    >>> round(cka_features(x, 3.0 * x @ q), 6), round(cka_gram(gram_linear(x), gram_linear(x @ q)), 6)
    (1.0, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

#: CKA estimators, default first.
ESTIMATORS = ("debiased", "biased")

#: Smallest number of samples the debiased estimator is defined for.
MIN_DEBIASED_SAMPLES = 4

#: Fewest samples the logger computes CKA on. Probes alone are too few below
#: it: with 1 sample CKA is undefined (NaN), with 2 it is 1.0 whatever the
#: layer does, with a handful it is noise. See :func:`auto_positions`.
MIN_CKA_SAMPLES = 8

#: Samples aimed at when spatial positions become the samples automatically.
AUTO_CKA_SAMPLES = 64


def auto_positions(n_probes: int, positions: int | None = None) -> int | None:
    """Spatial positions per probe to use as CKA samples: the few-probe rule.

    With at least :data:`MIN_CKA_SAMPLES` probes, the probes are the samples
    (``None``, a layer's features are all its ``H*W*C`` values). With fewer,
    ``ceil(AUTO_CKA_SAMPLES / n_probes)`` fixed positions per probe are (the
    features are then the channels), so that ``n_probes * k`` samples make
    CKA meaningful. An explicit ``positions`` is kept.

    Example:

    >>> auto_positions(16), auto_positions(2), auto_positions(2, 5)
    (None, 32, 5)
    """
    if positions is not None:
        return positions
    if n_probes >= MIN_CKA_SAMPLES:
        return None
    return -(-AUTO_CKA_SAMPLES // max(1, n_probes))


#: Activations whose output saturates, and their asymptotes.
SATURATING = {
    "sigmoid": (0.0, 1.0),
    "hard_sigmoid": (0.0, 1.0),
    "tanh": (-1.0, 1.0),
    "hard_tanh": (-1.0, 1.0),
}

#: A value within this distance of an asymptote counts as saturated (the
#: slope of sigmoid there is below 0.01, of tanh below 0.02).
SATURATION_EPS = 0.01


def _check_estimator(estimator: str) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(
            f"Invalid value for argument `cka`. Expected one of {ESTIMATORS}. Received: cka={estimator!r}"
        )


def gram_linear(x: np.ndarray) -> np.ndarray:
    """Linear Gram matrix ``x @ x.T``, float64 ``(n, n)``, of ``x`` ``(n, d)``."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return x @ x.T


def center_gram(gram: np.ndarray, *, debiased: bool = False) -> np.ndarray:
    """The centred (``H K H``) or, with ``debiased``, U-centred Gram matrix; float64 ``(n, n)``.

    The Frobenius inner product of two U-centred Grams, divided by
    ``n (n - 3)``, is the unbiased HSIC estimator (Song et al., 2012); CKA
    only needs it up to that factor.

    Raises:
        ValueError: if ``debiased`` and ``n < 4``.
    """
    gram = np.array(gram, dtype=np.float64, copy=True)
    n = gram.shape[0]
    if gram.ndim != 2 or gram.shape[1] != n:
        raise ValueError(f"A Gram matrix must be square (n, n). Received shape {gram.shape}.")
    if not debiased:
        means = gram.mean(axis=0)
        means -= means.mean() / 2
        gram -= means[:, None]
        gram -= means[None, :]
        return gram
    if n < MIN_DEBIASED_SAMPLES:
        raise ValueError(
            f"The debiased CKA estimator needs at least {MIN_DEBIASED_SAMPLES} samples; got {n}. "
            "Use more probes, sampled positions, or cka='biased'."
        )
    np.fill_diagonal(gram, 0.0)
    means = gram.sum(axis=0) / (n - 2)
    means -= means.sum() / (2 * (n - 1))
    gram -= means[:, None]
    gram -= means[None, :]
    np.fill_diagonal(gram, 0.0)
    return gram


def cka_centered(kc: np.ndarray, lc: np.ndarray) -> float:
    """CKA of two Grams already centred by :func:`center_gram` (the same way).

    Returns ``nan`` where a side has no variance (a dead or constant layer:
    CKA is undefined there) or, with the debiased estimator on very few
    samples, a non-positive self-similarity.
    """
    num = float(np.vdot(kc, lc))
    den2 = float(np.vdot(kc, kc)) * float(np.vdot(lc, lc))
    if not np.isfinite(den2) or den2 <= 0.0:
        return float("nan")
    return num / float(np.sqrt(den2))


def cka_gram(gram_x: np.ndarray, gram_y: np.ndarray, *, debiased: bool = True) -> float:
    """Linear CKA from two ``(n, n)`` Gram matrices of the same samples.

    Args:
        gram_x: ``X X^T`` (see :func:`gram_linear`).
        gram_y: ``Y Y^T`` of the same samples.
        debiased: Use the unbiased HSIC estimator. Defaults to ``True``.

    Returns:
        CKA as a Python float; ``nan`` where undefined (see :func:`cka_centered`).
    """
    return cka_centered(
        center_gram(gram_x, debiased=debiased), center_gram(gram_y, debiased=debiased)
    )


def cka_features(x: np.ndarray, y: np.ndarray, *, debiased: bool = True) -> float:
    """Linear CKA in feature form, from ``x`` ``(n, d1)`` and ``y`` ``(n, d2)``.

    Equal to :func:`cka_gram` of their Grams; cheaper when ``d1 * d2 < n * n``.
    Inputs of higher rank are flattened to ``(n, -1)``.

    Args:
        x: A representation of ``n`` samples (rows).
        y: Another representation of the same ``n`` samples.
        debiased: Use the unbiased HSIC estimator. Defaults to ``True``.
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same rows (samples); got {len(x)} and {len(y)}.")
    x = x - x.mean(axis=0, keepdims=True)
    y = y - y.mean(axis=0, keepdims=True)
    xy = np.linalg.norm(y.T @ x) ** 2
    xx = np.linalg.norm(x.T @ x) ** 2
    yy = np.linalg.norm(y.T @ y) ** 2
    if debiased:
        n = x.shape[0]
        if n < MIN_DEBIASED_SAMPLES:
            raise ValueError(
                f"The debiased CKA estimator needs at least {MIN_DEBIASED_SAMPLES} samples; got {n}."
            )
        rx = np.einsum("ij,ij->i", x, x)
        ry = np.einsum("ij,ij->i", y, y)
        sx, sy = rx.sum(), ry.sum()

        def unbiased(dot: float, ra: np.ndarray, rb: np.ndarray, sa: float, sb: float) -> float:
            return dot - n / (n - 2.0) * float(ra @ rb) + sa * sb / ((n - 1.0) * (n - 2.0))

        xy = unbiased(xy, rx, ry, sx, sy)
        xx = unbiased(xx, rx, rx, sx, sx)
        yy = unbiased(yy, ry, ry, sy, sy)
    den2 = xx * yy
    if not np.isfinite(den2) or den2 <= 0.0:
        return float("nan")
    return float(xy / np.sqrt(den2))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two 1-D arrays (average ranks for ties); ``nan`` if one is constant."""
    ra, rb = _rank(np.asarray(a, np.float64)), _rank(np.asarray(b, np.float64))
    ra -= ra.mean()
    rb -= rb.mean()
    den = float(np.sqrt((ra @ ra) * (rb @ rb)))
    return float(ra @ rb) / den if den > 0 else float("nan")


def _rank(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    # Average rank of each run of equal values.
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], len(v)]
    avg = (starts + ends - 1) / 2.0
    ranks = np.empty(len(v), np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def topk_overlap(previous: np.ndarray, current: np.ndarray) -> float:
    """Mean over probes of ``|top_prev & top_now| / k``, for int ``(N, k)`` top-channel sets."""
    previous, current = np.asarray(previous), np.asarray(current)
    if previous.shape != current.shape or current.size == 0:
        return float("nan")
    k = current.shape[1]
    shared = [len(np.intersect1d(p, c)) for p, c in zip(previous, current)]
    return float(np.mean(shared)) / k


def saturated_channels(acts: np.ndarray, kind: str, eps: float = SATURATION_EPS) -> np.ndarray:
    """bool ``(C,)``: channels within ``eps`` of an asymptote of ``kind`` everywhere, on every probe.

    The saturating counterpart of a dead ReLU channel: it passes (almost) no
    gradient. ``kind`` is a key of :data:`SATURATING`. Non-finite values do
    not count as saturated.
    """
    lo, hi = SATURATING[kind]
    a = np.asarray(acts, np.float32)
    sat = (a <= lo + eps) | (a >= hi - eps)
    return sat.reshape(-1, a.shape[-1]).all(axis=0)


_STATE_FIELDS = ("first", "previous", "reference", "positions", "dead", "means", "top")


@dataclass
class _LayerState:
    first: np.ndarray | None = None
    previous: np.ndarray | None = None
    reference: np.ndarray | None = None
    positions: np.ndarray | None = None
    dead: np.ndarray | None = None
    means: np.ndarray | None = None
    top: np.ndarray | None = None

    def nbytes(self) -> int:
        items = (
            self.first,
            self.previous,
            self.reference,
            self.positions,
            self.dead,
            self.means,
            self.top,
        )
        # The first step's Gram is also the previous one at step 1: count it once.
        seen, total = set(), 0
        for a in items:
            if a is not None and id(a) not in seen:
                seen.add(id(a))
                total += a.nbytes
        return total


class DriftTracker:
    """Per-layer drift between logged steps, from cached centred Gram matrices only.

    Args:
        cka: ``"debiased"`` (default) or ``"biased"``, see the module docstring.
        positions: ``None`` (default): the samples of CKA are the probes and a
            layer's features are all its ``H*W*C`` values, as in Kornblith et
            al.; an int ``k``: the samples are ``k`` spatial positions per
            probe (drawn once per layer, with ``seed``, and reused at every
            step) and the features are the ``C`` channels, giving ``n = N*k``
            samples for small probe sets.
        seed: Seed of the position draw. Defaults to 0.
        min_samples: Fewest samples a layer needs for CKA; a layer with
            fewer (e.g. 1x1 maps of a few probes) gets no ``cka_*`` values,
            only the channel signals. Defaults to ``None``: no minimum
            beyond the estimator's own.

    Memory: per layer at most three float64 ``n x n`` centred Grams (first
    step, previous step, pinned reference) plus ``O(C + N*k)`` channel data,
    i.e. ``24 n^2`` bytes, independent of the number of steps; no raw
    activations are kept. ``n`` is the number of probes, or ``N*k``.

    Examples:
        >>> t = DriftTracker()
        >>> r0 = t.update("conv1", acts0)   # {"cka_first": 1.0}
        >>> r1 = t.update("conv1", acts1)   # cka_first, cka_previous, newly_dead_fraction, ...
    """

    def __init__(
        self,
        *,
        cka: str = "debiased",
        positions: int | None = None,
        seed: int = 0,
        min_samples: int | None = None,
    ):
        _check_estimator(cka)
        if positions is not None and (
            isinstance(positions, bool) or not isinstance(positions, int) or positions < 1
        ):
            raise ValueError(
                f"Invalid value for argument `positions`. Expected None or a positive int. Received: positions={positions!r}"
            )
        self.cka = cka
        self.positions = positions
        self.seed = seed
        self.min_samples = min_samples
        self._layers: dict[str, _LayerState] = {}

    @property
    def debiased(self) -> bool:
        return self.cka == "debiased"

    def samples(self, shape: tuple[int, ...]) -> int:
        """Number of CKA samples of activations of ``shape`` ``(N, H, W, C)``."""
        n, h, w = int(shape[0]), int(shape[1]), int(shape[2])
        return n if self.positions is None else n * min(self.positions, h * w)

    def has_cka(self, shape: tuple[int, ...]) -> bool:
        """Whether activations of ``shape`` get CKA values (enough samples, see ``min_samples``)."""
        return self.min_samples is None or self.samples(shape) >= self.min_samples

    def describe(self) -> str:
        """The estimator and its samples, for the descriptions of the CKA scalars."""
        if self.positions is None:
            return f"{self.cka}; samples: the probes"
        return f"{self.cka}; samples: {self.positions} fixed spatial positions per probe"

    def _samples(
        self, layer: str, acts: np.ndarray, state: _LayerState | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The ``(n, d)`` sample matrix of ``acts`` ``(N, H, W, C)``, and the positions drawn."""
        a = np.asarray(acts, np.float32)
        if self.positions is None:
            return a.reshape(a.shape[0], -1), None
        n, h, w, c = a.shape
        idx = state.positions if state is not None else None
        if idx is None:
            rng = np.random.default_rng([self.seed, *layer.encode("utf-8")])
            k = min(self.positions, h * w)
            idx = np.sort(rng.choice(h * w, size=k, replace=False))
        return a.reshape(n, h * w, c)[:, idx, :].reshape(-1, c), idx

    def _centred(self, layer: str, acts: np.ndarray, state: _LayerState | None):
        x, idx = self._samples(layer, acts, state)
        x = np.where(np.isfinite(x), x, 0.0)  # NaN/Inf are counted by the logger, not compared
        return center_gram(gram_linear(x), debiased=self.debiased), idx

    def update(
        self,
        layer: str,
        acts: np.ndarray,
        *,
        dead: np.ndarray | None = None,
        channel_means: np.ndarray | None = None,
        top: np.ndarray | None = None,
        saturation: str | None = None,
        gram: np.ndarray | None = None,
    ) -> dict[str, float]:
        """Compare ``acts`` of ``layer`` now with the cached steps, then cache this step.

        Args:
            layer: Layer path (any stable key).
            acts: float32 ``(N, H, W, C)`` activations on the probes.
            dead: bool ``(C,)`` dead channels now; computed if ``None``.
            channel_means: ``(C,)`` mean of each channel over probes; computed if ``None``.
            top: int ``(N, k)`` top channels per probe now, or ``None`` to skip top-k overlap.
            saturation: A key of :data:`SATURATING` for saturating layers, else ``None``.
            gram: The uncentred Gram ``X @ X.T`` ``(N, N)`` of the flattened maps
                (non-finite values as 0), when already computed (the extractor
                reduces it on the device); used only when the probes are the
                samples (``positions=None``).

        Returns:
            ``{name: float}``: ``cka_first`` always (with enough samples, see
            ``min_samples``, as for every ``cka_*``); ``cka_previous``,
            ``newly_dead_fraction``, ``channel_rank_corr`` and (with ``top``)
            ``topk_overlap`` from the second step on; ``cka_reference`` once
            a reference is pinned; ``saturated_fraction`` when ``saturation``.
        """
        a = np.asarray(acts, np.float32)
        c = a.shape[-1]
        if dead is None:
            dead = (a == 0).reshape(-1, c).all(axis=0)
        if channel_means is None:
            channel_means = a.reshape(-1, c).mean(axis=0, dtype=np.float64)
        dead = np.asarray(dead, bool)
        channel_means = np.asarray(channel_means, np.float64)
        state = self._layers.get(layer)
        if state is None:
            state = self._layers[layer] = _LayerState()
        first_step = state.dead is None  # a reference pinned before: still the first step
        if not first_step and state.dead.shape != dead.shape:
            raise ValueError(
                f"Layer {layer!r} changed shape between steps: {state.dead.shape[0]} channels "
                f"before, {c} now."
            )
        out: dict[str, float] = {}
        if self.has_cka(a.shape):
            # A Gram that overflowed float32 on the device (values beyond ~1e19) is redone in float64.
            if gram is not None and self.positions is None and np.isfinite(gram).all():
                gram, idx = center_gram(gram, debiased=self.debiased), None
            else:
                gram, idx = self._centred(layer, a, state)
            if state.first is None:
                state.first = state.previous = gram
                state.positions = idx
                out["cka_first"] = cka_centered(gram, gram)
            else:
                if state.first.shape != gram.shape:
                    raise ValueError(
                        f"Layer {layer!r} changed shape between steps: {state.first.shape[0]} "
                        f"samples before, {gram.shape[0]} now."
                    )
                out["cka_first"] = cka_centered(state.first, gram)
                out["cka_previous"] = cka_centered(state.previous, gram)
                state.previous = gram
            if state.reference is not None:
                out["cka_reference"] = cka_centered(state.reference, gram)
        if not first_step:
            out["newly_dead_fraction"] = float((dead & ~state.dead).sum()) / c if c else 0.0
            if top is not None and state.top is not None:
                out["topk_overlap"] = topk_overlap(state.top, top)
            out["channel_rank_corr"] = spearman(state.means, channel_means)
        if saturation is not None:
            out["saturated_fraction"] = (
                float(saturated_channels(a, saturation).mean()) if c else 0.0
            )
        state.dead = dead.copy()
        state.means = channel_means.copy()
        state.top = None if top is None else np.array(top, copy=True)
        return out

    def pin(self, layer: str, acts: np.ndarray, *, gram: np.ndarray | None = None) -> None:
        """Cache the centred Gram of ``acts`` as the reference of ``layer`` (replacing any earlier one).

        ``gram`` is the uncentred ``X @ X.T`` when already reduced, as in :meth:`update`.
        A layer with too few samples for CKA (see ``min_samples``) is not pinned.
        """
        if not self.has_cka(np.shape(acts)):
            return
        state = self._layers.get(layer)
        if gram is not None and self.positions is None:
            gram, idx = center_gram(gram, debiased=self.debiased), None
        else:
            gram, idx = self._centred(layer, acts, state)
        if state is None:
            # Pinned before the first log: that log still becomes the first step.
            state = self._layers[layer] = _LayerState(positions=idx)
        state.reference = gram

    def state_dict(self) -> dict[str, dict[str, np.ndarray]]:
        """The cached steps as plain arrays, ``{layer: {field: array}}``, for :meth:`load_state_dict`.

        What a later process needs to go on comparing with this one's steps
        (the command line logs one step per call).
        """
        return {
            layer: {f: getattr(s, f) for f in _STATE_FIELDS if getattr(s, f) is not None}
            for layer, s in self._layers.items()
        }

    def load_state_dict(self, state: dict[str, dict[str, np.ndarray]]) -> None:
        """Replace the cached steps by those of :meth:`state_dict` (same options assumed)."""
        self._layers = {
            layer: _LayerState(**{f: np.asarray(fields[f]) for f in _STATE_FIELDS if f in fields})
            for layer, fields in state.items()
        }

    def nbytes(self) -> int:
        """Bytes held in cached arrays, over all layers (the documented memory bound)."""
        return sum(s.nbytes() for s in self._layers.values())

    def checkpoint(self) -> dict[str, Any]:
        """A cheap snapshot of the cached steps, for :meth:`rollback` (arrays are shared, never mutated)."""
        return {layer: replace(state) for layer, state in self._layers.items()}

    def rollback(self, checkpoint: dict[str, Any]) -> None:
        """Forget every :meth:`update` and :meth:`pin` since ``checkpoint`` (a step that was not written)."""
        self._layers = dict(checkpoint)
