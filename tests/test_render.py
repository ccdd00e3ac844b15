import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tb_activations.colormaps import BACKGROUND_INDEX, LEVELS, NAN_INDEX, palette
from tb_activations.render import (
    STRIP_CELL,
    TOPK_MIN_CELL,
    fit_overlay_display,
    grid_shape,
    mosaic_layout,
    mosaic_levels,
    overlay,
    overlay_heats,
    overlay_pair,
    overlay_pairs,
    render_mosaic,
    render_topk,
    render_views,
    shrink_factor,
    to_levels,
    topk_strip,
    value_range,
)
from tb_activations.stats import RANK_BY

# Any value, NaN and overflow included, must render without a warning.
pytestmark = pytest.mark.filterwarnings("error")


@pytest.mark.parametrize("channels", [1, 3, 5, 64, 96])
@pytest.mark.parametrize("h, w", [(3, 2), (2, 9), (7, 7)])
def test_mosaic_holds_every_channel(channels, h, w):
    acts = np.broadcast_to(np.arange(1, channels + 1, dtype=np.float32), (1, h, w, channels))
    lo, hi = value_range(acts)
    levels, grid = mosaic_levels(to_levels(acts, lo, hi))
    cols, rows = grid_shape(channels, h, w)
    assert (grid.cols, grid.rows) == (cols, rows) and cols * rows >= channels
    # The grid (written to the layer's metadata, read by the dashboard) is the image's.
    assert (grid.cell_h, grid.cell_w, grid.sep) == (h, w, 1)
    assert levels.shape[1:] == (grid.height, grid.width)
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


def test_grid_is_near_square_in_pixels_not_in_cells():
    # The case: 12 maps of 60 x 124 px were 4 x 3 cells, a 182 x 499 px image.
    assert grid_shape(12, 60, 124) == (2, 6)
    img = render_mosaic(np.random.default_rng(0).random((60, 124, 12), dtype=np.float32))
    assert img.shape == (6 * 61 - 1, 2 * 125 - 1, 3) == (365, 249, 3)
    # Wide and tall maps mirror each other.
    assert grid_shape(16, 8, 32) == (2, 8) and grid_shape(16, 32, 8) == (8, 2)
    # Square maps: the article's cols = ceil(sqrt(C)), whatever the cell size.
    for c in range(1, 700):
        cols = int(np.ceil(np.sqrt(c)))
        assert grid_shape(c, 5, 5) == grid_shape(c) == (cols, -(-c // cols)), c


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 600), st.integers(1, 200), st.integers(1, 200), st.integers(0, 2))
def test_grid_is_the_most_square_in_pixels(c, h, w, sep):
    def aspect(cols):
        rows = -(-c // cols)
        width, height = cols * (w + sep) - sep, rows * (h + sep) - sep
        return max(width, height) / min(width, height)

    cols, rows = grid_shape(c, h, w, sep=sep)
    assert rows == -(-c // cols) and cols * (rows - 1) < c
    # No grid is nearer a square (grids that only add empty cells aside), and the
    # article's grid is never better.
    best = min(aspect(k) for k in range(1, c + 1) if k == 1 or -(-c // (k - 1)) != -(-c // k))
    assert aspect(cols) == best <= aspect(int(np.ceil(np.sqrt(c))))


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


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 0.77, 1.0])
def test_overlay_is_the_fixed_point_blend_of_each_channel(alpha):
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    levels = rng.integers(0, LEVELS, (6, 9))
    levels[0, :2] = 0, LEVELS - 1  # the heat's own range is 0..LEVELS-1: its levels are itself
    colour = palette("viridis")[levels].astype(np.uint16)
    a = round(alpha * 256)
    expected = ((image.astype(np.uint16) * (256 - a) + colour * a + 128) >> 8).astype(np.uint8)
    out = overlay(image, levels.astype(np.float32), colormap="viridis", alpha=alpha)
    np.testing.assert_array_equal(out, expected)


def test_overlay_pairs_of_many_probes_are_their_pairs():
    rng = np.random.default_rng(5)
    display = rng.integers(0, 256, (3, 10, 7, 3), dtype=np.uint8)
    acts = rng.standard_normal((3, 4, 3, 6)).astype(np.float32)
    acts[1, 0, 0, :] = np.nan
    top = np.array([[2], [0], [5]])
    pairs = overlay_pairs(display, *overlay_heats(acts, top), colormap="gray", alpha=0.4)
    for i in range(3):
        one = overlay_pair(display[i], acts[i], int(top[i, 0]), colormap="gray", alpha=0.4)
        np.testing.assert_array_equal(pairs[i], one)


def test_overlay_terms_of_a_read_only_batch_are_kept_only_while_it_lives():
    import gc
    import weakref

    from tb_activations import render

    rng = np.random.default_rng(6)
    display = rng.integers(0, 256, (2, 5, 4, 3), dtype=np.uint8)
    display.setflags(write=False)  # as the logger's fitted display
    heats = rng.random((2, 3, 3)).astype(np.float32), rng.random((2, 3, 3)).astype(np.float32)
    first = overlay_pairs(display, *heats, alpha=0.3)
    assert render._last_terms is not None and render._last_terms[0]() is display
    np.testing.assert_array_equal(overlay_pairs(display, *heats, alpha=0.3), first)  # kept
    np.testing.assert_array_equal(overlay_pairs(display.copy(), *heats, alpha=0.3), first)
    np.testing.assert_array_equal(
        overlay_pairs(display, *heats, alpha=0.6),  # another alpha: computed again
        overlay_pairs(display.copy(), *heats, alpha=0.6),
    )
    gone = weakref.ref(display)
    del display
    gc.collect()
    assert gone() is None and render._last_terms is None


def test_fit_overlay_display_shrinks_large_probes_only():
    display = np.zeros((2, 300, 200, 3), np.uint8)
    display[:, :, 100:] = 255  # right half white
    assert fit_overlay_display(display, 401) is display  # 2 * 200 + 1 fits
    small = fit_overlay_display(display, 201)
    # (201 - 1) / 400 = 0.5: 150 x 100, aspect kept, the box filter keeps the halves.
    assert small.shape == (2, 150, 100, 3) and small.dtype == np.uint8
    assert (small[:, :, :50] == 0).all() and (small[:, :, 50:] == 255).all()
    tall = fit_overlay_display(np.zeros((1, 1000, 10, 3), np.uint8), 100)
    assert tall.shape == (1, 100, 1, 3)


def test_colormaps_come_from_matplotlib():
    import matplotlib

    pal = palette("viridis")
    expected = np.rint(np.asarray(matplotlib.colormaps["viridis"](0.0)[:3]) * 255)
    np.testing.assert_array_equal(pal[0], expected)
    assert tuple(palette("gray")[0]) == (0, 0, 0) and palette("magma")[0][0] < 5
    with pytest.raises(ValueError, match="not a known colormap"):
        palette("no_such_map")


# ---------------------------------------------------------------------------
# Property-based: any shape, any values -> a uint8 picture of the documented size.
# ``PROPERTY_CASES`` counts the examples hypothesis generates (figure in docs/guide/reliability.md).

PROPERTY_CASES: dict[str, int] = {}

ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True, width=32)
FLOAT_DTYPES = st.sampled_from([np.float32, np.float64, np.float16])


def _count(name: str) -> None:
    PROPERTY_CASES[name] = PROPERTY_CASES.get(name, 0) + 1


def _activations(max_side: int = 9, max_channels: int = 40, batch: bool = False):
    lead = (st.integers(1, 3),) if batch else ()
    return arrays(
        dtype=FLOAT_DTYPES,
        shape=st.tuples(
            *lead, st.integers(1, max_side), st.integers(1, max_side), st.integers(1, max_channels)
        ),
        elements=st.floats(allow_nan=True, allow_infinity=True, width=16),
    )


def _expected_mosaic_size(h, w, c, sep=1, max_size=2048):
    layout = mosaic_layout(h, w, c, sep=sep, max_size=max_size)
    cell_h = -(-h // layout.factor) * layout.up[0] if h > 1 else layout.up[0]
    cell_w = -(-w // layout.factor) * layout.up[1]
    return layout.rows * (cell_h + sep) - sep, layout.cols * (cell_w + sep) - sep


@settings(max_examples=200, deadline=None)
@given(_activations(), st.sampled_from(["layer", "channel"]))
def test_any_values_make_a_uint8_mosaic_of_the_documented_size(acts, normalize):
    _count("mosaic")
    h, w, c = acts.shape
    img = render_mosaic(acts, normalize=normalize)
    assert img.dtype == np.uint8
    assert img.shape == (*_expected_mosaic_size(h, w, c), 3)
    if h > 1:
        cols, rows = grid_shape(c, h, w, max_size=2048)
        assert img.shape == (rows * (h + 1) - 1, cols * (w + 1) - 1, 3)


@settings(max_examples=400, deadline=None)
@given(
    st.integers(1, 300),
    st.integers(1, 300),
    st.integers(1, 3000),
    st.integers(16, 600),
    st.integers(0, 2),
)
def test_mosaic_layout_fits_max_size_whenever_one_pixel_per_channel_fits(h, w, c, max_size, sep):
    _count("mosaic_layout")
    layout = mosaic_layout(h, w, c, sep=sep, max_size=max_size)
    assert layout.cols * layout.rows >= c and layout.cols * (layout.rows - 1) < c
    height, width = _expected_mosaic_size(h, w, c, sep, max_size)
    # One pixel per channel plus separators is the floor; below it, the cap gives way.
    floor_h = (1 + sep) * layout.rows - sep
    floor_w = (1 + sep) * layout.cols - sep
    if max(floor_h, floor_w) <= max_size:
        assert max(height, width) <= max_size, (layout, height, width)
    if h > 1:
        assert (layout.cols, layout.rows) == grid_shape(c, h, w, sep=sep, max_size=max_size)
    elif w > 1:
        assert layout.up[1] == 1 and layout.up[0] >= 1  # strips: only taller, never wider


@settings(max_examples=100, deadline=None)
@given(
    arrays(
        dtype=np.float32,
        shape=st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(1, 70)),
        elements=st.floats(-1e6, 1e6),
    ),
    st.sampled_from([16, 33, 64, 100]),
)
def test_render_mosaic_respects_max_size_and_pools_cells(acts, max_size):
    _count("mosaic_max_size")
    h, w, c = acts.shape
    img = render_mosaic(acts, max_size=max_size)
    assert img.dtype == np.uint8
    assert img.shape[:2] == _expected_mosaic_size(h, w, c, max_size=max_size)
    layout = mosaic_layout(h, w, c, max_size=max_size)
    floor = max(layout.rows * 2 - 1, layout.cols * 2 - 1)
    if floor <= max_size:
        assert max(img.shape[:2]) <= max_size


@settings(max_examples=200, deadline=None)
@given(
    _activations(batch=True),
    st.integers(1, 50),
    st.sampled_from(RANK_BY),
    st.sampled_from(["layer", "channel"]),
)
def test_any_values_make_a_topk_strip_of_the_documented_size(acts, k, rank_by, normalize):
    _count("topk")
    n, h, w, c = acts.shape
    img, channels = render_topk(acts, k, rank_by=rank_by, normalize=normalize)
    kk = min(k, c)
    up = max(1, -(-TOPK_MIN_CELL // max(h, w)))
    up_h = max(up, STRIP_CELL) if h == 1 else up
    assert img.dtype == np.uint8
    assert img.shape == (n, h * up_h, kk * (w * up + 1) - 1, 3)
    assert channels.shape == (n, kk)
    for row in channels:
        assert len(set(row.tolist())) == kk and all(0 <= ch < c for ch in row)


@settings(max_examples=200, deadline=None)
@given(
    arrays(
        dtype=np.float32,
        shape=st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 5)),
        elements=ANY_FLOAT,
    ),
    st.one_of(
        st.tuples(
            st.floats(width=32, allow_nan=False, allow_infinity=False),
            st.floats(width=32, allow_nan=False, allow_infinity=False),
        ),
        st.just(None),
    ),
)
def test_to_levels_maps_any_value_to_a_level_or_the_nan_index(acts, scale):
    _count("to_levels")
    if scale is None:  # per-channel scales from the data
        lo, hi = value_range(acts[None], "channel")
        levels = to_levels(acts, lo, hi)
    else:
        lo, hi = min(scale), max(scale)
        levels = to_levels(acts, lo, hi)
    assert levels.dtype == np.uint8 and levels.shape == acts.shape
    bad = ~np.isfinite(acts)
    assert (levels[bad] == NAN_INDEX).all()
    assert (levels[~bad] < LEVELS).all()
    # Monotone within a channel: a larger value never gets a lower level.
    for ch in range(acts.shape[-1]):
        values, lev = acts[..., ch][~bad[..., ch]], levels[..., ch][~bad[..., ch]]
        order = np.argsort(values, kind="stable")
        assert (np.diff(lev[order].astype(int)) >= 0).all()


@settings(max_examples=200, deadline=None)
@given(
    arrays(
        dtype=np.float32,
        shape=st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5), st.integers(1, 6)),
        elements=ANY_FLOAT,
    ),
    st.sampled_from(["layer", "channel"]),
)
def test_value_range_is_finite_and_ordered(acts, normalize):
    _count("value_range")
    lo, hi = value_range(acts, normalize)
    assert np.isfinite(lo).all() and np.isfinite(hi).all() and (lo <= hi).all()
    if normalize == "layer":
        assert np.ndim(lo) == 0 and lo <= 0
    else:
        assert lo.shape == hi.shape == (acts.shape[-1],)
    finite = acts[np.isfinite(acts)]
    if normalize == "layer" and finite.size:
        assert lo <= finite.min() and hi == finite.max()


@settings(max_examples=150, deadline=None)
@given(
    st.tuples(st.integers(1, 40), st.integers(1, 40)),
    arrays(
        dtype=FLOAT_DTYPES,
        shape=st.tuples(st.integers(1, 12), st.integers(1, 12)),
        elements=st.floats(allow_nan=True, allow_infinity=True, width=16),
    ),
    st.floats(0.0, 1.0),
)
def test_any_heatmap_makes_an_overlay_of_the_image_size(size, heat, alpha):
    _count("overlay")
    image = np.full((*size, 3), 77, np.uint8)
    out = overlay(image, heat, alpha=alpha)
    assert out.dtype == np.uint8 and out.shape == (*size, 3)
    if alpha == 0.0:
        assert (out == 77).all()


@settings(max_examples=100, deadline=None)
@given(
    st.tuples(st.integers(1, 30), st.integers(1, 30)),
    arrays(
        dtype=np.float32,
        shape=st.tuples(st.integers(1, 8), st.integers(1, 8), st.integers(1, 9)),
        elements=ANY_FLOAT,
    ),
    st.data(),
)
def test_any_maps_make_an_overlay_pair_of_the_documented_size(size, maps, data):
    _count("overlay_pair")
    channel = data.draw(st.integers(0, maps.shape[-1] - 1))
    image = np.zeros((*size, 3), np.uint8)
    pair = overlay_pair(image, maps, channel)
    assert pair.dtype == np.uint8 and pair.shape == (size[0], 2 * size[1] + 1, 3)


def test_huge_spans_keep_their_levels():
    # -3e38..3e38 overflows a float32 span; 0 must still land mid-scale.
    a = np.array([-3e38, 0.0, 3e38], np.float32).reshape(1, 1, 3, 1)
    assert to_levels(a, *value_range(a)).ravel().tolist() == [0, 126, LEVELS - 1]
    tiny = np.array([0.0, 1e-45], np.float32).reshape(1, 1, 2, 1)  # a subnormal span
    assert to_levels(tiny, *value_range(tiny)).ravel().tolist() == [0, LEVELS - 1]
    image = np.zeros((2, 2, 3), np.uint8)
    out = overlay(
        image, np.array([[-3e38, 3e38], [0.0, 0.0]], np.float32), colormap="gray", alpha=1.0
    )
    assert out[0, 0, 0] == 0 and out[0, 1, 0] == 255 and 120 < out[1, 0, 0] < 135
    pair = overlay_pair(image, np.full((2, 2, 4), 3e38, np.float32), 0, colormap="gray", alpha=1.0)
    assert pair.dtype == np.uint8  # the mean of huge values is taken in float64


def test_strips_and_points_are_drawn_tall_enough_to_see():
    # Conv1D output (N, L, C) arrives as (N, 1, L, C): one column of 8 px strips.
    strips = np.broadcast_to(np.arange(6, dtype=np.float32), (1, 254, 6))
    img = render_mosaic(strips, colormap="gray")
    assert img.shape == (6 * (STRIP_CELL + 1) - 1, 254, 3)
    for c in range(6):
        cell = img[c * (STRIP_CELL + 1) : c * (STRIP_CELL + 1) + STRIP_CELL, :, 0]
        assert (cell == cell[0, 0]).all() and cell.shape == (STRIP_CELL, 254)
    assert (img[STRIP_CELL, :] == 255).all()  # separator
    # Dense output (N, C) arrives as (N, 1, 1, C): 8 x 8 px points in a near-square grid.
    points = render_mosaic(np.arange(5, dtype=np.float32).reshape(1, 1, 5))
    assert points.shape == (2 * 9 - 1, 3 * 9 - 1, 3)
    strip, _ = render_topk(strips, 3)
    assert strip.shape == (STRIP_CELL, 3 * 255 - 1, 3)


@pytest.mark.parametrize(
    ("acts", "match"),
    [
        (np.zeros((4, 4, 0), np.float32), "at least one"),
        (np.zeros((0, 4, 4, 2), np.float32), "at least one"),
        (np.zeros((4, 0, 2), np.float32), "at least one"),
        (np.zeros((4, 4), np.float32), "shape"),
        (np.zeros((2, 2, 2), np.complex64), "real number dtype"),
        (np.array([[["a"]]]), "real number dtype"),
    ],
)
def test_render_refuses_empty_or_non_numeric_activations_clearly(acts, match):
    with pytest.raises(ValueError, match=match):
        render_mosaic(acts)
    with pytest.raises(ValueError, match=match):
        render_topk(acts)


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.bool_, np.int64, np.float16, np.float64])
def test_integer_and_boolean_maps_render_like_their_float32_values(dtype):
    acts = (
        (np.arange(2 * 3 * 4).reshape(2, 3, 4) % 3 == 0)
        if dtype is np.bool_
        else np.arange(2 * 3 * 4).reshape(2, 3, 4) % 7
    )
    acts = acts.astype(dtype)
    np.testing.assert_array_equal(render_mosaic(acts), render_mosaic(acts.astype(np.float32)))


def test_property_cases_are_counted():
    # Runs after the property tests of this module (file order): the figure in docs/guide/reliability.md.
    print(f"property-based cases: {PROPERTY_CASES}, total {sum(PROPERTY_CASES.values())}")


# -- issue 16 defect 8: the top-k strip is mean-pooled to fit, not subsampled ---------


@pytest.mark.parametrize("normalize", ["layer", "channel"])
def test_topk_strip_is_mean_pooled_to_fit(normalize):
    # 4 maps 8x8; channel 0 alternates 0/1 column by column, the others are 1.
    acts = np.ones((1, 8, 8, 4), np.float32)
    acts[0, :, ::2, 0] = 0.0
    top = np.array([[0, 1, 2, 3]])
    scale = (0.0, 1.0)
    if normalize == "channel":  # per-channel scales follow their channel into the strip
        scale = (np.zeros(4, np.float32), np.ones(4, np.float32))
    # The mosaic (2 x 2 cells, 17 px) fits 20 px; the strip of 4 cells does not.
    views = render_views(acts, None, top, scale, views=("mosaic", "topk"), max_size=20)
    assert views.grid.cell_w == 8  # the mosaic is not pooled
    strip = views.topk[0]
    # Pooled by 2: four 4x4 cells, 1 px apart, within 20 px; no enlargement past the cap.
    assert strip.shape == (4, 4 * 5 - 1)
    half = round(0.5 * (LEVELS - 1))
    assert (strip[:, 0:4] == half).all()  # the stripes averaged, not aliased to 0 or 1
    assert (strip[:, 5:9] == LEVELS - 1).all()
    assert (strip[:, 4] == BACKGROUND_INDEX).all()


def test_topk_strip_enlarges_within_the_cap_and_reuses_pooled_mosaic_levels():
    acts = np.random.default_rng(0).random((2, 6, 6, 3)).astype(np.float32)
    top = np.array([[2, 0, 1], [1, 2, 0]])
    levels = to_levels(acts, 0.0, 1.0)
    strip = topk_strip(acts, top, (0.0, 1.0), max_size=100, levels=levels)
    assert strip.shape == (2, 6 * 5, 3 * (6 * 5 + 1) - 1)  # up = 5: 93 px <= 100 (not 11)
    for p in range(2):  # the first cell is channel top[p, 0], enlarged 5 times (nearest)
        np.testing.assert_array_equal(strip[p, ::5, 0:30:5], levels[p, :, :, top[p, 0]])
    no_cap = topk_strip(acts, top, (0.0, 1.0), max_size=None, levels=levels)
    assert no_cap.shape == (2, 66, 3 * 67 - 1)  # TOPK_MIN_CELL: 64 px cells, up = 11


def test_magma_black_is_the_low_end_of_the_scale_not_zero_of_signed_layers():
    # What the docs say: zero is black in a ReLU layer; a signed layer starts at its minimum.
    pal = palette("magma")
    relu = np.array([0.0, 2.0], np.float32).reshape(1, 1, 2, 1)
    signed = np.array([-1.0, 0.0, 1.0], np.float32).reshape(1, 1, 3, 1)
    assert to_levels(relu, *value_range(relu))[0, 0, 0, 0] == 0
    levels = to_levels(signed, *value_range(signed))[0, 0, :, 0]
    assert levels[0] == 0 and levels[1] == round(0.5 * (LEVELS - 1))
    assert pal[0].max() < 10  # black
    assert pal[levels[1]].max() > 100  # zero of a signed layer: not black
