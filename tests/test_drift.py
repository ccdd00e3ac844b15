"""Linear CKA (both forms, both estimators), channel signals and the DriftTracker (plain numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from tb_activations.drift import (
    DriftTracker,
    center_gram,
    cka_features,
    cka_gram,
    gram_linear,
    saturated_channels,
    spearman,
    topk_overlap,
)

ESTIMATORS = [False, True]  # debiased


def orthogonal(rng, d: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return q


@pytest.mark.parametrize("debiased", ESTIMATORS)
def test_cka_is_one_for_same_rotated_and_scaled(rng, debiased):
    x = rng.normal(size=(40, 12))
    q = orthogonal(rng, 12)
    for y in (x, x @ q, 7.5 * x, 0.01 * x @ q):
        assert cka_features(x, y, debiased=debiased) == pytest.approx(1.0, abs=1e-12)
        assert cka_gram(gram_linear(x), gram_linear(y), debiased=debiased) == pytest.approx(
            1.0, abs=1e-12
        )


@pytest.mark.parametrize("debiased", ESTIMATORS)
def test_cka_of_independent_matrices_with_many_rows_is_near_zero(rng, debiased):
    x, y = rng.normal(size=(4000, 10)), rng.normal(size=(4000, 10))
    assert abs(cka_features(x, y, debiased=debiased)) < 0.02


@pytest.mark.parametrize("debiased", ESTIMATORS)
def test_gram_form_equals_feature_form(rng, debiased):
    for n, d1, d2 in [(10, 3, 50), (30, 20, 5), (6, 100, 100)]:
        x = rng.normal(size=(n, d1)) + 2.0  # uncentred on purpose
        y = x[:, :1] ** 2 + rng.normal(size=(n, d2))
        assert cka_gram(gram_linear(x), gram_linear(y), debiased=debiased) == pytest.approx(
            cka_features(x, y, debiased=debiased), rel=1e-9, abs=1e-12
        )


def test_centred_gram_is_h_k_h(rng):
    x = rng.normal(size=(7, 4))
    k = gram_linear(x)
    h = np.eye(7) - np.ones((7, 7)) / 7
    np.testing.assert_allclose(center_gram(k), h @ k @ h, atol=1e-12)


def test_debiased_removes_the_few_samples_many_features_bias(rng):
    """With n << d, biased CKA of unrelated representations is near 1; debiased is centred on 0."""
    biased, debiased = [], []
    for _ in range(20):
        x, y = rng.normal(size=(16, 3000)), rng.normal(size=(16, 3000))
        kx, ky = gram_linear(x), gram_linear(y)
        biased.append(cka_gram(kx, ky, debiased=False))
        debiased.append(cka_gram(kx, ky, debiased=True))
    assert min(biased) > 0.95
    assert abs(np.mean(debiased)) < 0.1
    assert max(abs(v) for v in debiased) < 0.5  # its spread: about 0.09 at n = 16


def test_debiased_needs_four_samples(rng):
    x = rng.normal(size=(3, 5))
    with pytest.raises(ValueError, match="at least 4 samples"):
        cka_gram(gram_linear(x), gram_linear(x), debiased=True)
    with pytest.raises(ValueError, match="at least 4 samples"):
        cka_features(x, x, debiased=True)
    assert cka_gram(gram_linear(x), gram_linear(x), debiased=False) == pytest.approx(1.0)


@pytest.mark.parametrize("debiased", ESTIMATORS)
def test_cka_of_a_constant_representation_is_nan(rng, debiased):
    x = rng.normal(size=(6, 4))
    zero = np.zeros((6, 4))
    assert np.isnan(cka_features(x, zero, debiased=debiased))
    assert np.isnan(cka_gram(gram_linear(zero), gram_linear(zero), debiased=debiased))


def test_spearman_matches_scipy_with_ties(rng):
    from scipy.stats import spearmanr

    a = rng.integers(0, 5, size=30).astype(float)
    b = a + rng.normal(size=30)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_topk_overlap_known_answers():
    prev = np.array([[0, 1, 2], [3, 4, 5]])
    assert topk_overlap(prev, prev[:, ::-1]) == 1.0
    assert topk_overlap(prev, np.array([[0, 1, 9], [6, 7, 8]])) == pytest.approx((2 / 3 + 0) / 2)


def test_saturated_channels_known_answer():
    a = np.zeros((2, 3, 3, 4), np.float32)
    a[..., 0] = 0.999  # sigmoid: saturated high
    a[..., 1] = 0.005  # saturated low
    a[..., 2] = 0.5
    a[..., 3] = 0.999
    a[1, 0, 0, 3] = 0.5  # one value off: not saturated everywhere
    assert saturated_channels(a, "sigmoid").tolist() == [True, True, False, False]
    assert saturated_channels(2 * a - 1, "tanh").tolist() == [True, True, False, False]


def _acts(rng, n=5, h=4, w=4, c=6):
    return np.maximum(rng.normal(size=(n, h, w, c)), 0).astype(np.float32)


def test_tracker_steps_known_answers(rng):
    t = DriftTracker()
    a0 = _acts(rng)
    r0 = t.update("L", a0, top=np.array([[0, 1]] * 5))
    assert r0 == {"cka_first": pytest.approx(1.0)}
    r1 = t.update("L", 3.0 * a0, top=np.array([[0, 1]] * 5))
    assert r1["cka_first"] == pytest.approx(1.0) and r1["cka_previous"] == pytest.approx(1.0)
    assert r1["newly_dead_fraction"] == 0.0
    assert r1["topk_overlap"] == 1.0
    assert r1["channel_rank_corr"] == pytest.approx(1.0)
    a2 = _acts(rng)
    a2[..., 2] = 0.0  # channel 2 dies
    r2 = t.update("L", a2, top=np.array([[0, 3]] * 5))
    assert r2["cka_first"] < 0.9 and r2["cka_previous"] == pytest.approx(r2["cka_first"])
    assert r2["newly_dead_fraction"] == pytest.approx(1 / 6)
    assert r2["topk_overlap"] == 0.5
    r3 = t.update("L", a2, top=np.array([[0, 3]] * 5))
    assert r3["cka_previous"] == pytest.approx(1.0)
    assert r3["cka_first"] == pytest.approx(r2["cka_first"])
    assert r3["newly_dead_fraction"] == 0.0  # already dead: not newly dead
    assert "cka_reference" not in r3


def test_tracker_pinned_reference(rng):
    t = DriftTracker(cka="biased")
    a0, a1 = _acts(rng), _acts(rng)
    t.pin("L", a1)  # before the first step: that step is still the first
    r0 = t.update("L", a0)
    assert r0["cka_first"] == pytest.approx(1.0)
    assert r0["cka_reference"] == pytest.approx(cka_features(a0, a1, debiased=False))
    r1 = t.update("L", a1)
    assert r1["cka_reference"] == pytest.approx(1.0)


def test_tracker_memory_does_not_grow_with_steps(rng):
    t = DriftTracker()
    n, c = 5, 6
    t.update("L", _acts(rng, n=n, c=c), top=np.zeros((n, 2), int))
    t.update("L", _acts(rng, n=n, c=c), top=np.zeros((n, 2), int))
    size = t.nbytes()
    for _ in range(50):
        t.update("L", _acts(rng, n=n, c=c), top=np.zeros((n, 2), int))
    assert t.nbytes() == size
    # The documented bound: two n x n float64 Grams (first, previous) plus O(C + N*k).
    assert size == 2 * 8 * n * n + 8 * c + c + 8 * n * 2
    t.pin("L", _acts(rng, n=n, c=c))
    assert t.nbytes() == size + 8 * n * n
    assert not any(
        getattr(s, name) is not None and getattr(s, name).shape[-1] == 16 * c
        for s in t._layers.values()
        for name in ("first", "previous", "reference")
    )  # no raw activations


def test_tracker_sampled_positions(rng):
    t = DriftTracker(positions=3, cka="debiased")
    a = _acts(rng, n=2, h=5, w=5, c=4)
    r0 = t.update("L", a)
    assert r0["cka_first"] == pytest.approx(1.0)
    state = t._layers["L"]
    assert state.first.shape == (6, 6)  # N * k samples
    assert t.update("L", a)["cka_first"] == pytest.approx(1.0)  # same positions every step
    idx = state.positions.copy()
    t.update("L", a)
    np.testing.assert_array_equal(state.positions, idx)


def test_tracker_rejects_a_shape_change_and_bad_options(rng):
    t = DriftTracker()
    t.update("L", _acts(rng, c=6))
    with pytest.raises(ValueError, match="changed shape"):
        t.update("L", _acts(rng, c=7))
    with pytest.raises(ValueError, match="`cka`"):
        DriftTracker(cka="unbiased")
    with pytest.raises(ValueError, match="`positions`"):
        DriftTracker(positions=0)


def test_few_probes_use_spatial_positions_as_samples():
    from tb_activations.drift import MIN_CKA_SAMPLES, auto_positions

    assert [auto_positions(n) for n in (1, 2, 3, 7)] == [64, 32, 22, 10]
    assert auto_positions(MIN_CKA_SAMPLES) is None and auto_positions(3, 5) == 5


def test_a_layer_short_of_samples_gets_channel_signals_but_no_cka(rng):
    t = DriftTracker(positions=32, min_samples=8)
    point = _acts(rng, n=2, h=1, w=1, c=6)  # 2 probes x 1 position
    assert t.update("L", point) == {}
    r1 = t.update("L", point)
    assert not {k for k in r1 if k.startswith("cka")} and r1["newly_dead_fraction"] == 0.0
    t.pin("L", point)
    assert "cka_reference" not in t.update("L", point)
