"""Hostile and odd input (issue 7, item 4): every case works or raises a clear error,
and none corrupts what was already written.

Activations: NaN/Inf, constant channels, 1 and 2048 channels, 1x1 and 1024x1024
maps, Conv1D and Dense layers selected explicitly, zero channels, rank 5.
Probes: none, wrong size, channels or dtype, ragged, truncated or non-image
files. Log directories that cannot be written, and log() calls that fail
half-way (in rendering, or in the middle of writing a record).
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

from tb_activations import ActivationLogger, Probes
from tb_activations.colormaps import LEVELS, NAN_INDEX
from tb_activations.render import STRIP_CELL, grid_shape
from tests.conftest import (
    constant_channel_model,
    images_at,
    read_run,
    scalar_values,
    small_cnn,
    steps_of,
)

RUN = "activations"

# Every test here also runs under KERAS_BACKEND=jax and =torch (tests/test_backends.py).
pytestmark = pytest.mark.backends


def lambda_model(fn, shape=(4, 4, 1), name="x"):
    inputs = keras.Input(shape)
    return keras.Model(inputs, keras.layers.Lambda(fn, name=name)(inputs))


def ramp_images(n: int = 2, size: int = 4, channels: int = 1) -> np.ndarray:
    """Float probes in [0, 1]: probe ``i`` is ``(i + 1) / (n + 1)`` times a ramp."""
    ramp = np.linspace(0.0, 1.0, size * size, dtype=np.float32).reshape(size, size, 1)
    return np.stack([ramp * (i + 1) / (n + 1) for i in range(n)]).repeat(channels, axis=-1)


def mosaic_indices(acc, tag: str, step: int | None = None) -> list[np.ndarray]:
    _, _, pngs = images_at(acc, tag, step)
    return [np.asarray(p) for p in pngs]


def cell(levels: np.ndarray, channel: int, cols: int, h: int, w: int) -> np.ndarray:
    r, q = divmod(channel, cols)
    return levels[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w]


# ---------------------------------------------------------------------------
# Activations


def test_nan_and_inf_activations_are_counted_and_drawn_in_their_colour(tmp_path):
    # Channel 0: log(x - 0.5): NaN below 0.5, -Inf at 0.5 (none here), finite above;
    # channel 1: x / 0 -> +Inf where x > 0 and NaN at 0; channel 2: finite.
    def fn(t):
        return keras.ops.concatenate([keras.ops.log(t - 0.5), t / 0.0, t], axis=-1)

    images = ramp_images(2)
    with ActivationLogger(lambda_model(fn), images, tmp_path, top_k=3) as logger:
        records = [logger.log(0), logger.log(1)]  # drift on non-finite layers too
    x = images
    expected_bad = np.concatenate([x - 0.5 < 0, np.ones_like(x, bool), np.zeros_like(x, bool)], -1)
    acc = read_run(tmp_path / RUN)
    assert scalar_values(acc, "x/nonfinite_count") == [float(expected_bad.sum())] * 2
    stats = records[0]["x"].stats
    assert np.isfinite(stats.stacked()).all()
    np.testing.assert_allclose(stats.max[:, 2], x.reshape(2, -1).max(axis=1))
    for probe, levels in enumerate(mosaic_indices(acc, "x/mosaic")):
        for channel in range(3):
            got = cell(levels, channel, 2, 4, 4) == NAN_INDEX
            np.testing.assert_array_equal(got, expected_bad[probe, ..., channel])
    assert (
        "NaN/Inf values, shown in magenta" in acc.summary_metadata["x/mosaic"].summary_description
    )


def test_an_all_nan_layer_logs_zero_statistics_and_nan_pictures(tmp_path):
    model = lambda_model(lambda t: t * np.nan)
    with ActivationLogger(model, ramp_images(2), tmp_path) as logger:
        record = logger.log(0)["x"]
        logger.log(1)
    assert (record.stats.stacked() == 0).all() and not record.stats.dead.any()
    acc = read_run(tmp_path / RUN)
    assert steps_of(acc, "x/mosaic") == [0, 1]
    assert all((levels == NAN_INDEX).all() for levels in mosaic_indices(acc, "x/mosaic"))
    assert scalar_values(acc, "x/mean_activation") == [0.0, 0.0]


def test_huge_finite_activations_keep_finite_statistics(tmp_path):
    model = lambda_model(lambda t: t * 3e38 - 1.5e38)
    with ActivationLogger(model, ramp_images(2), tmp_path, cka="biased") as logger:
        record = logger.log(0)["x"]
        logger.log(1)
    # float32 sums overflow here (on the device): statistics and Grams are redone in float64.
    assert np.isfinite(record.stats.stacked()).all() and record.stats.nonfinite.sum() == 0
    expected = (ramp_images(2) * np.float32(3e38) - np.float32(1.5e38)).astype(np.float64)
    np.testing.assert_allclose(record.stats.mean[:, 0], expected.mean(axis=(1, 2, 3)), rtol=1e-5)
    acc = read_run(tmp_path / RUN)
    assert np.isfinite(scalar_values(acc, "x/mean_activation")).all()
    assert scalar_values(acc, "x/cka_previous") == [pytest.approx(1.0)]
    levels = mosaic_indices(acc, "x/mosaic")[1]  # probe 1 spans -1.5e38 .. 0.5e38
    assert levels.min() == 0 and levels.max() > LEVELS // 2 and NAN_INDEX not in levels


@pytest.mark.parametrize("normalize", ["layer", "channel"])
def test_constant_channels_render_flat_and_zero_channels_are_dead(tmp_path, normalize):
    # Channel c is c + 1 everywhere, except channel 0 which is exactly 0.
    model = constant_channel_model(3)
    conv = model.get_layer("const")
    conv.set_weights([np.zeros((1, 1, 1, 3), np.float32), np.array([0.0, 2.0, 3.0], np.float32)])
    with ActivationLogger(model, ramp_images(2), tmp_path, normalize=normalize) as logger:
        record = logger.log(0)["const"]
    assert record.stats.dead.tolist() == [True, False, False]
    assert (record.stats.std == 0).all()
    levels = mosaic_indices(read_run(tmp_path / RUN), "const/mosaic")[0]
    cols, _ = grid_shape(3)
    for channel, value in enumerate([0.0, 2.0, 3.0]):
        got = cell(levels, channel, cols, 4, 4)
        # Layer scale [0, 3]; a channel scale has no contrast: the low end, never NaN.
        want = 0 if normalize == "channel" else round(value / 3.0 * (LEVELS - 1))
        assert (got == want).all(), (channel, np.unique(got))


def test_one_channel_layer(tmp_path):
    model = lambda_model(lambda t: t * 2.0)
    with ActivationLogger(model, ramp_images(2), tmp_path, top_k=5) as logger:
        record = logger.log(0)["x"]
    assert record.grid.cols == record.grid.rows == 1 and record.top.tolist() == [[0], [0]]
    acc = read_run(tmp_path / RUN)
    for view, size in (("mosaic", (4, 4)), ("topk", (64, 64)), ("overlay", (9, 4))):
        width, height, _ = images_at(acc, f"x/{view}")
        assert (width, height) == size, view


def test_2048_channels_every_channel_has_its_cell(tmp_path):
    channels = 2048
    model = constant_channel_model(channels)  # channel c is c + 1 everywhere
    with ActivationLogger(model, np.zeros((1, 4, 4, 1), np.uint8), tmp_path, top_k=5) as logger:
        record = logger.log(0)["const"]
    cols, rows = grid_shape(channels)
    assert (record.grid.cols, record.grid.rows) == (cols, rows) == (46, 45)
    assert record.top.tolist() == [[2047, 2046, 2045, 2044, 2043]]
    (levels,) = mosaic_indices(read_run(tmp_path / RUN), "const/mosaic")
    assert levels.shape == (rows * 5 - 1, cols * 5 - 1)
    for channel in (0, 1, 45, 46, 1000, 2047):
        want = round((channel + 1) / channels * (LEVELS - 1))
        assert (cell(levels, channel, cols, 4, 4) == want).all(), channel


def test_1x1_maps_are_drawn_as_points_without_overlay(tmp_path):
    inputs = keras.Input((1, 1, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(5, 1, name="point")(inputs))
    with ActivationLogger(model, ramp_images(2, size=1, channels=3), tmp_path) as logger:
        record = logger.log(0)["point"]
    assert (record.grid.cell_h, record.grid.cell_w) == (STRIP_CELL, STRIP_CELL)
    acc = read_run(tmp_path / RUN)
    tags = set(acc.Tags()["tensors"])
    assert {"point/mosaic", "point/topk"} <= tags and "point/overlay" not in tags
    assert "No overlay" in acc.summary_metadata["point/mosaic"].summary_description
    width, height, _ = images_at(acc, "point/mosaic")
    assert (width, height) == (3 * (STRIP_CELL + 1) - 1, 2 * (STRIP_CELL + 1) - 1)


def test_1024x1024_maps_are_pooled_to_the_size_cap(tmp_path):
    inputs = keras.Input((1024, 1024, 1))
    conv = keras.layers.Conv2D(2, 1, name="big")
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([np.array([1.0, -1.0], np.float32).reshape(1, 1, 1, 2), np.zeros(2)])
    images = ramp_images(1, size=1024)
    with ActivationLogger(model, images, tmp_path) as logger:
        record = logger.log(0)["big"]
    # 2 cells of 1024 px side by side do not fit 2048 px: pooled by 2.
    assert (record.grid.cols, record.grid.cell_h, record.grid.cell_w) == (2, 512, 512)
    acc = read_run(tmp_path / RUN)
    for view in ("mosaic", "topk", "overlay"):
        width, height, _ = images_at(acc, f"big/{view}")
        assert max(width, height) <= 2048, view
    width, height, _ = images_at(acc, "big/overlay")  # on the probe shrunk to fit: 1023 px
    assert (width, height) == (2 * 1023 + 1, 1023)
    (levels,) = mosaic_indices(acc, "big/mosaic")
    # Pooled ramp: channel 0 rises left to right, channel 1 (negated) falls.
    assert levels[0, 0] < levels[-1, 510] and levels[0, 513] > levels[-1, 1023 - 1]


def conv1d_and_dense_model():
    """An image model whose middle is 1-D: Conv2D -> Reshape (N, 64, 4) -> Conv1D -> Dense."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv2d")(inputs)
    x = keras.layers.Reshape((64, 4), name="flat")(x)
    x = keras.layers.Conv1D(6, 3, name="conv1d")(x)
    x = keras.layers.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="dense")(x))


def test_conv1d_and_dense_layers_selected_explicitly_are_strips_and_points(tmp_path):
    model = conv1d_and_dense_model()
    # By default only spatial (rank-4) outputs are selected.
    assert [i.path for i in ActivationLogger(model, ramp_images(2, 8, 3), tmp_path).layers] == [
        "conv2d"
    ]
    images = ramp_images(2, 8, 3)
    with ActivationLogger(model, images, tmp_path, layers=["conv1d", "dense"]) as logger:
        records = logger.log(0)
        acts = logger.activations()
    assert acts["conv1d"].shape == (2, 1, 62, 6) and acts["dense"].shape == (2, 1, 1, 5)
    conv1d, dense = records["conv1d"].grid, records["dense"].grid
    # Conv1D: one column of 8 px strips (channels x positions); Dense: 8 px points.
    assert (conv1d.cols, conv1d.rows, conv1d.cell_h, conv1d.cell_w) == (1, 6, STRIP_CELL, 62)
    assert (dense.cols, dense.rows, dense.cell_h, dense.cell_w) == (3, 2, STRIP_CELL, STRIP_CELL)
    acc = read_run(tmp_path / RUN)
    tags = set(acc.Tags()["tensors"])
    for layer in ("conv1d", "dense"):
        assert {f"{layer}/mosaic", f"{layer}/topk", f"{layer}/channel_stats"} <= tags
        assert f"{layer}/overlay" not in tags
        assert "No overlay" in acc.summary_metadata[f"{layer}/mosaic"].summary_description
    width, height, _ = images_at(acc, "conv1d/mosaic")
    assert (width, height) == (62, 6 * (STRIP_CELL + 1) - 1)
    (levels, _) = mosaic_indices(acc, "conv1d/mosaic")
    a = acts["conv1d"][0, 0]
    lo, hi = min(0.0, float(acts["conv1d"].min())), float(acts["conv1d"].max())
    for channel in range(6):
        strip = levels[channel * (STRIP_CELL + 1) : channel * (STRIP_CELL + 1) + STRIP_CELL]
        want = np.rint((a[:, channel] - lo) / (hi - lo) * (LEVELS - 1))
        assert (strip == strip[0]).all()  # every row of the strip is the same
        np.testing.assert_allclose(strip[0], want, atol=1)
    _, strip_h, _ = images_at(acc, "conv1d/topk")
    assert strip_h == STRIP_CELL


def test_zero_channel_empty_and_rank_5_outputs_are_clear_errors(tmp_path):
    model = lambda_model(lambda t: t[..., :0])
    with (
        ActivationLogger(model, ramp_images(1), tmp_path / "zero", layers=["x"]) as logger,
        pytest.raises(ValueError, match="zero channels"),
    ):
        logger.log(0)
    assert not os.path.exists(tmp_path / "zero" / RUN)  # nothing written, not even a file
    model = lambda_model(lambda t: t[..., None])  # (N, 4, 4, 1, 1)
    with (
        ActivationLogger(model, ramp_images(1), tmp_path / "rank5", layers=["x"]) as logger,
        pytest.raises(ValueError, match="rank 5"),
    ):
        logger.log(0)
    # No position (a crop to zero rows): refused the same way on every backend, before the
    # reductions (whose empty-input behaviour differs by backend).
    model = lambda_model(lambda t: t[:, :0])
    with (
        ActivationLogger(model, ramp_images(1), tmp_path / "empty", layers=["x"]) as logger,
        pytest.raises(ValueError, match=r"'x' has an empty output \(shape \(0, 4, 1\)"),
    ):
        logger.log(0)
    assert not os.path.exists(tmp_path / "empty" / RUN)


# ---------------------------------------------------------------------------
# Probes


def test_zero_probes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="zero probes"):
        Probes(np.zeros((0, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="zero probes"):
        ActivationLogger(small_cnn(), np.zeros((0, 16, 16, 3), np.uint8), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No image files found"):
        Probes.from_files(tmp_path / "empty")


def test_probes_of_the_wrong_size_or_channels_name_the_fix(tmp_path):
    images = np.zeros((2, 20, 12, 3), np.uint8)
    with pytest.raises(ValueError, match=r"\(20, 12, 3\).*\(16, 16, 3\).*resize_probes=True"):
        ActivationLogger(small_cnn(), images, tmp_path)
    logger = ActivationLogger(small_cnn(), images, tmp_path, resize_probes=True)
    assert logger.probes.image_size == (16, 16)
    with pytest.raises(ValueError, match="1 channels and the model wants 3.*color_mode='rgb'"):
        ActivationLogger(small_cnn(), np.zeros((2, 16, 16, 1), np.uint8), tmp_path)
    inputs = keras.Input((16, 3))  # a sequence model: not an image input
    sequence = keras.Model(inputs, keras.layers.Conv1D(2, 3, name="c")(inputs))
    with pytest.raises(ValueError, match=r"feeds batches of images \(N, H, W, C\)"):
        ActivationLogger(sequence, np.zeros((2, 16, 3), np.float32), tmp_path, layers=["c"])


@pytest.fixture(scope="module")
def shared_cnn():
    """One model for every probe dtype: the probes become float32 inputs of one shape, so
    the loggers share one compiled pass (JAX compiles once, not once per dtype)."""
    return small_cnn()


@pytest.mark.parametrize(
    "dtype", [np.float64, np.float16, np.int16, np.int64, np.uint16, np.bool_, np.uint8]
)
def test_probes_of_any_real_dtype_log(tmp_path, dtype, shared_cnn):
    images = (np.random.default_rng(0).random((2, 16, 16, 3)) > 0.5).astype(dtype)
    with ActivationLogger(shared_cnn, images, tmp_path, layers=["conv1"]) as logger:
        logger.log(0)
    assert logger.probes.display.dtype == np.uint8
    assert steps_of(read_run(tmp_path / RUN), "conv1/mosaic") == [0]


def test_float_probes_in_0_255_display_as_such():
    images = np.full((1, 4, 4, 3), 200.0, np.float32)  # keras.utils.img_to_array's range
    assert (Probes(images).display == 200).all()
    assert (Probes(images / 255.0).display == 200).all()
    nan = np.full((1, 4, 4, 3), np.nan, np.float32)
    assert (Probes(nan).display == 0).all()


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (np.zeros((2, 4, 4, 3), np.complex64), "dtype complex64"),
        (np.array([["a", "b"], ["c", "d"]]), "dtype <U1"),
        (None, "dtype object"),
        ([np.zeros((4, 4, 3)), np.zeros((5, 4, 3))], "ragged"),
        (np.zeros((2, 2, 4, 4, 3), np.uint8), r"shape \(N, H, W, C\)"),
        (np.zeros((2, 0, 4, 3), np.uint8), "empty images"),
    ],
    ids=["complex", "strings", "none", "ragged", "rank5", "empty"],
)
def test_probes_of_a_wrong_kind_are_clear_errors(images, match):
    with pytest.raises(ValueError, match=match):
        Probes(images)


def _write_files(folder) -> dict[str, str]:
    from PIL import Image

    folder.mkdir()
    good = folder / "good.png"
    Image.new("RGB", (16, 16), (10, 20, 30)).save(good)
    png = good.read_bytes()
    jpeg = folder / "photo.jpg"
    Image.new("RGB", (64, 64), (200, 0, 0)).save(jpeg, quality=90)
    cases = {
        "empty.png": b"",
        "text.png": b"this is not an image\n",
        "truncated.png": png[: len(png) // 2],
        "truncated.jpg": jpeg.read_bytes()[:300],
        "header_only.png": png[:8],
    }
    paths = {}
    for name, data in cases.items():
        (folder / name).write_bytes(data)
        paths[name] = str(folder / name)
    return {"good": str(good), **paths}


def test_truncated_and_non_image_files_name_the_file(tmp_path):
    files = _write_files(tmp_path / "imgs")
    assert Probes.from_files([files["good"]]).display.shape == (1, 16, 16, 3)
    for name in ("empty.png", "text.png", "truncated.png", "truncated.jpg", "header_only.png"):
        with pytest.raises(ValueError, match=f"Cannot read image file .*{name}"):
            Probes.from_files([files["good"], files[name]])
    with pytest.raises(ValueError, match="Image file not found: .*missing.png"):
        Probes.from_files([str(tmp_path / "missing.png")])
    # A folder holding one bad file fails on that file, not silently.
    with pytest.raises(ValueError, match="Cannot read image file"):
        Probes.from_files(tmp_path / "imgs")


# ---------------------------------------------------------------------------
# Log directories and failed logs


def test_a_log_dir_under_a_regular_file_is_refused_up_front(tmp_path, images):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match=r"log_dir.*'.*file' is a file, not a directory"):
        ActivationLogger(small_cnn(), images, blocker / "logs")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / RUN).write_text("a file where the run folder goes")
    with pytest.raises(ValueError, match="the run directory .* is a file"):
        ActivationLogger(small_cnn(), images, tmp_path / "logs")
    assert blocker.read_text() == "not a directory"  # untouched


def test_a_log_dir_that_breaks_after_construction_fails_clearly_and_recovers(tmp_path, images):
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    logger = ActivationLogger(small_cnn(), images, log_dir, layers=["conv1"])
    log_dir.rmdir()
    log_dir.write_text("replaced by a file")  # as root, chmod would not stop the writer
    with pytest.raises(OSError, match=r"Cannot write the TensorBoard events of step 0 under"):
        logger.log(0)
    log_dir.unlink()
    log_dir.mkdir()
    logger.log(1)
    logger.close()
    acc = read_run(log_dir / RUN)
    assert steps_of(acc, "conv1/mosaic") == [1]
    assert steps_of(acc, "conv1/cka_first") == [1]  # the failed step is not the drift origin
    assert steps_of(acc, "_tb_activations/probes") == [1]  # the probe images still written once


def test_a_log_failing_in_rendering_writes_nothing_and_changes_no_state(
    tmp_path, images, monkeypatch
):
    logger = ActivationLogger(small_cnn(), images, tmp_path, layers=["conv1", "conv2"])
    logger.log(0)
    original = logger._render_layer
    calls = {"n": 0}

    def fails_on_second_layer(info, *args, **kwargs):
        calls["n"] += 1
        if info.path == "conv2":
            raise RuntimeError("boom in rendering")
        return original(info, *args, **kwargs)

    monkeypatch.setattr(logger, "_render_layer", fails_on_second_layer)
    size = os.path.getsize(logger._writer.path)
    with pytest.raises(RuntimeError, match="boom"):
        logger.log(1)
    assert os.path.getsize(logger._writer.path) == size  # not one byte written
    monkeypatch.setattr(logger, "_render_layer", original)
    logger.log(2)
    logger.close()
    acc = read_run(tmp_path / RUN)
    for tag in ("conv1/mosaic", "conv2/mosaic", "conv1/cka_first", "conv2/channel_stats"):
        assert steps_of(acc, tag) == [0, 2], tag
    # Drift at step 2 compares with step 0, the last written one.
    assert steps_of(acc, "conv1/cka_previous") == [2]
    assert scalar_values(acc, "conv1/cka_previous") == pytest.approx([1.0])


def test_a_write_failing_mid_record_keeps_earlier_steps_and_moves_to_a_new_file(
    tmp_path, images, monkeypatch
):
    logger = ActivationLogger(small_cnn(), images, tmp_path, layers=["conv1"])
    logger.log(0)
    first_file = logger._writer.path

    def half_a_record(step, values, **kwargs):
        # What a full disk leaves: the start of a record, then an error.
        with open(first_file, "ab") as f:
            f.write(b"\x40\x00\x00\x00\x00\x00\x00\x00\x12\x34\x56\x78partial-event")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(logger._writer, "write", half_a_record)
    with pytest.raises(OSError, match=r"step 1 .*No space left on device.*intact"):
        logger.log(1)
    logger.log(2)
    logger.close()
    files = sorted(os.listdir(tmp_path / RUN))
    assert len(files) == 2 and logger._writer.path != first_file
    acc = read_run(tmp_path / RUN)
    for tag in ("conv1/mosaic", "conv1/topk", "conv1/overlay", "conv1/channel_stats"):
        assert steps_of(acc, tag) == [0, 2], tag
    assert len(images_at(acc, "conv1/mosaic", 0)[2]) == 3  # step 0 complete, every probe
