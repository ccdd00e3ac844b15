import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tb_activations.colormaps import BACKGROUND_INDEX, LEVELS, NAN_INDEX, palette
from tb_activations.render import (
    grid_shape,
    mosaic_levels,
    overlay,
    overlay_pair,
    render_mosaic,
    render_topk,
    shrink_factor,
    to_levels,
    value_range,
)


@pytest.mark.parametrize("channels", [1, 3, 5, 64, 96])
def test_mosaic_holds_every_channel(channels):
    h, w = 3, 2
    acts = np.broadcast_to(np.arange(1, channels + 1, dtype=np.float32), (1, h, w, channels))
    lo, hi = value_range(acts)
    levels, grid = mosaic_levels(to_levels(acts, lo, hi))
    cols, rows = grid_shape(channels)
    assert (grid.cols, grid.rows) == (cols, rows) and cols * rows >= channels
    assert levels.shape == (1, rows * (h + 1) - 1, cols * (w + 1) - 1)
    for c in range(channels):
        r, q = divmod(c, cols)
        cell = levels[0, r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w]
        assert (cell == round((c + 1) * (LEVELS - 1) / channels)).all(), c
    # Cells past C are blank; separators are background.
    for c in range(channels, cols * rows):
        r, q = divmod(c, cols)
        assert (
            levels[0, r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w]
            == BACKGROUND_INDEX
        ).all()
    if rows > 1:
        assert (levels[0, h, :] == BACKGROUND_INDEX).all()


def test_grid_is_near_square_and_never_drops():
    assert [grid_shape(c) for c in (1, 2, 3, 5, 64, 96, 512)] == [
        (1, 1),
        (2, 1),
        (2, 2),
        (3, 2),
        (8, 8),
        (10, 10),
        (23, 23),
    ]
    with pytest.raises(ValueError, match="at least one channel"):
        grid_shape(0)


def test_constant_and_zero_maps_render_at_the_low_end_without_nan():
    zeros = np.zeros((1, 4, 4, 2), np.float32)
    assert (to_levels(zeros, *value_range(zeros)) == 0).all()
    const = np.full((1, 4, 4, 2), 3.0, np.float32)
    lo, hi = value_range(const, "channel")
    assert (to_levels(const, lo, hi) == 0).all()
    img = render_mosaic(zeros[0], colormap="gray")
    assert (img[:4, :4] == 0).all()  # black


def test_nan_and_inf_get_their_own_colour():
    a = np.ones((4, 4, 1), np.float32)
    a[0, 0, 0], a[1, 1, 0], a[2, 2, 0] = np.nan, np.inf, -np.inf
    levels = to_levels(a, *value_range(a[None]))
    assert levels[0, 0, 0] == levels[1, 1, 0] == levels[2, 2, 0] == NAN_INDEX
    rgb = render_mosaic(a)
    assert tuple(rgb[0, 0]) == (255, 0, 255)


def test_per_channel_normalisation_stretches_each_channel():
    a = np.zeros((1, 1, 2, 2), np.float32)
    a[0, 0, 1] = [1.0, 100.0]
    layer = to_levels(a, *value_range(a, "layer"))
    channel = to_levels(a, *value_range(a, "channel"))
    assert layer[0, 0, 1, 0] == 3 and channel[0, 0, 1, 0] == LEVELS - 1


def test_size_cap_pools_huge_mosaics():
    assert shrink_factor(224, 224, 8, 8, 1, 2048) == 1
    assert shrink_factor(1024, 1024, 2, 2, 1, 2048) == 2
    img = render_mosaic(
        np.random.default_rng(0).random((512, 512, 64), dtype=np.float32), max_size=1024
    )
    assert max(img.shape[:2]) <= 1024


def test_topk_strip_and_indices():
    acts = np.broadcast_to(np.arange(1, 7, dtype=np.float32), (5, 5, 6)).copy()
    img, chans = render_topk(acts, 3)
    assert chans.tolist() == [5, 4, 3]
    up = -(-64 // 5)
    assert img.shape == (5 * up, 3 * 5 * up + 2, 3)


def test_overlay_shape_and_blend():
    image = np.full((8, 10, 3), 200, np.uint8)
    heat = np.zeros((2, 2), np.float32)
    out = overlay(image, heat, colormap="gray", alpha=0.5)
    assert out.shape == (8, 10, 3) and out.dtype == np.uint8
    assert (out == 100).all()  # grey 200 blended with black
    pair = overlay_pair(image, np.random.default_rng(0).random((2, 2, 3), dtype=np.float32), 1)
    assert pair.shape == (8, 21, 3)


def test_colormaps_come_from_matplotlib():
    import matplotlib

    pal = palette("viridis")
    expected = np.rint(np.asarray(matplotlib.colormaps["viridis"](0.0)[:3]) * 255)
    np.testing.assert_array_equal(pal[0], expected)
    assert tuple(palette("gray")[0]) == (0, 0, 0) and palette("magma")[0][0] < 5
    with pytest.raises(ValueError, match="not a known colormap"):
        palette("no_such_map")


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        dtype=st.sampled_from([np.float32, np.float64, np.float16]),
        shape=st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 40)),
        elements=st.floats(allow_nan=True, allow_infinity=True, width=16),
    ),
    st.sampled_from(["layer", "channel"]),
)
def test_any_values_make_a_uint8_mosaic_of_the_documented_size(acts, normalize):
    h, w, c = acts.shape
    cols, rows = grid_shape(c)
    img = render_mosaic(acts, normalize=normalize)
    assert img.dtype == np.uint8
    assert img.shape == (rows * (h + 1) - 1, cols * (w + 1) - 1, 3)
