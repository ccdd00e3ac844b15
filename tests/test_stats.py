import numpy as np

from tb_activations.stats import channel_stats, top_channels


def test_stats_of_known_maps():
    a = np.zeros((2, 2, 2, 3), np.float32)
    a[..., 1] = 2.0
    a[0, 0, 0, 2] = 4.0
    s = channel_stats(a)
    np.testing.assert_array_equal(s.mean, [[0, 2, 1], [0, 2, 0]])
    np.testing.assert_array_equal(s.max, [[0, 2, 4], [0, 2, 0]])
    np.testing.assert_array_equal(s.dead, [True, False, False])
    assert s.dead_fraction == 1 / 3
    assert s.stacked().shape == (2, 3, 4) and s.stacked().dtype == np.float32


def test_nan_and_inf_are_counted_and_ignored():
    a = np.ones((1, 2, 2, 2), np.float32)
    a[0, 0, 0, 0] = np.nan
    a[0, 1, 1, 0] = np.inf
    s = channel_stats(a)
    assert s.nonfinite_count == 2
    np.testing.assert_array_equal(s.mean, [[1, 1]])
    assert np.isfinite(s.stacked()).all()


def test_all_nan_channel_is_zero_not_nan_and_not_dead():
    a = np.full((1, 2, 2, 1), np.nan, np.float32)
    s = channel_stats(a)
    assert np.isfinite(s.stacked()).all()
    assert not s.dead[0]


def test_top_channels_order_ties_and_nan():
    v = np.array([[1.0, 3.0, 3.0, np.nan, 2.0]])
    assert top_channels(v, 4).tolist() == [[1, 2, 4, 0]]
    assert top_channels(v, 10).shape == (1, 5)
