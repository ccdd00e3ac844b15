import os

import keras
import numpy as np
import pytest

from tb_activations import ActivationLogger, Probes
from tb_activations.colormaps import LEVELS
from tb_activations.render import grid_shape
from tests.conftest import (
    constant_channel_model,
    images_at,
    read_run,
    scalar_values,
    session_starts,
    small_cnn,
    steps_of,
    traces,
)


@pytest.mark.backends
def test_log_writes_every_view_stat_and_scalar(tmp_path, images):
    model = small_cnn()
    logger = ActivationLogger(
        model, Probes(images, names=["a", "b", "c"]), tmp_path, layers=["conv*", "pool1"], top_k=2
    )
    for step in (0, 5):
        logger.log(step)
    logger.close()
    acc = read_run(tmp_path / "activations")
    layers = ["conv1", "pool1", "conv2", "conv3"]
    expected = {
        f"{layer}/{s}"
        for layer in layers
        for s in (
            "mosaic",
            "topk",
            "overlay",
            "mean_activation",
            "dead_fraction",
            "nonfinite_count",
            "channel_stats",
        )
    }
    expected |= {"_tb_activations/stall_seconds", "_tb_activations/worker_seconds"}
    assert expected <= set(acc.Tags()["tensors"])
    for tag in expected:
        assert steps_of(acc, tag) == [0, 5], tag
    # conv2: 8x8x6 maps -> 3x2 grid of 8x8 cells with 1 px separators; 3 probes.
    w, h, pngs = images_at(acc, "conv2/mosaic")
    assert (w, h) == (3 * 9 - 1, 2 * 9 - 1) and len(pngs) == 3
    assert all(p.size == (w, h) for p in pngs)
    # Overlay: [strongest | mean] at the probe's display size.
    w, h, pngs = images_at(acc, "conv2/overlay")
    assert (w, h) == (2 * 16 + 1, 16)
    assert (
        "top 2 channels by mean" in acc.summary_metadata["conv2/mosaic"].summary_description.lower()
    )


@pytest.mark.backends
def test_hand_set_model_top_k_and_mosaic_pixels(tmp_path):
    channels = 5
    model = constant_channel_model(channels)
    probes = Probes(np.zeros((1, 4, 4, 1), np.uint8))
    with ActivationLogger(model, probes, tmp_path, top_k=3, colormap="gray") as logger:
        records = logger.log(0)
    assert records["const"].top.tolist() == [[4, 3, 2]]
    acc = read_run(tmp_path / "activations")
    _, _, (mosaic,) = images_at(acc, "const/mosaic")
    assert mosaic.mode == "P"  # palette PNG: one byte per pixel
    idx = np.asarray(mosaic)
    cols, _ = grid_shape(channels)
    for c in range(channels):
        r, q = divmod(c, cols)
        cell = idx[r * 5 : r * 5 + 4, q * 5 : q * 5 + 4]
        assert (cell == round((c + 1) * (LEVELS - 1) / channels)).all()
    # The strip shows channels 4, 3, 2 left to right: brightest first in gray.
    _, _, (strip,) = images_at(acc, "const/topk")
    grey = np.asarray(strip.convert("L"))
    cell = grey.shape[0]
    assert grey[0, 0] > grey[0, cell + 1] > grey[0, 2 * (cell + 1)]
    stats = acc.Tensors("const/channel_stats")[0]
    from tensorboard.util import tensor_util

    arr = tensor_util.make_ndarray(stats.tensor_proto)
    assert arr.shape == (1, channels, 4)
    np.testing.assert_array_equal(arr[0, :, 0], np.arange(1, channels + 1))


@pytest.mark.backends
def test_dead_fraction_and_nan_activations(tmp_path):
    inputs = keras.Input((4, 4, 1))
    conv = keras.layers.Conv2D(4, 1, name="conv")
    model = keras.Model(inputs, conv(inputs))
    # Two channels all-zero (dead), one NaN channel (a NaN is not "dead").
    conv.set_weights(
        [np.zeros((1, 1, 1, 4), np.float32), np.array([0.0, 0.0, 1.0, np.nan], np.float32)]
    )
    with ActivationLogger(model, np.zeros((2, 4, 4, 1), np.uint8), tmp_path) as logger:
        records = logger.log(0)
    assert records["conv"].stats.dead.tolist() == [True, True, False, False]
    acc = read_run(tmp_path / "activations")
    assert scalar_values(acc, "conv/dead_fraction") == [0.5]
    assert scalar_values(acc, "conv/nonfinite_count") == [2 * 16]
    _, _, pngs = images_at(acc, "conv/mosaic")
    rgb = np.asarray(pngs[0].convert("RGB"))
    assert tuple(rgb[5, 5]) == (255, 0, 255)  # the NaN channel (4th cell) in magenta


@pytest.mark.backends
def test_activations_returns_float32_channels_last(images):
    logger = ActivationLogger(small_cnn(), images, "unused", layers=["pool1"])
    acts = logger.activations()
    assert (
        list(acts) == ["pool1"]
        and acts["pool1"].shape == (3, 8, 8, 4)
        and acts["pool1"].dtype == np.float32
    )
    assert not os.path.exists("unused")  # nothing written until log()


@pytest.mark.backends
def test_extractor_built_once_across_logs(tmp_path, images):
    logger = ActivationLogger(small_cnn(), images, tmp_path)
    logger.log(0)
    ex = logger.extractor
    logger.log(1)
    assert logger.extractor is ex
    assert traces(ex._fn_summaries) in (1, None)  # traced once (None: PyTorch traces nothing)


@pytest.mark.backends
def test_wrong_probe_shape_and_resize(tmp_path):
    model = small_cnn()
    big = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=r"\(32, 32, 3\).*\(16, 16, 3\)"):
        ActivationLogger(model, big, tmp_path)
    logger = ActivationLogger(model, big, tmp_path, resize_probes=True)
    assert logger.probes.inputs.shape == (2, 16, 16, 3)


@pytest.mark.backends
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layers": ["nope"]}, "'nope' matches no layer. Selectable layers: conv1, pool1"),
        ({"top_k": 0}, "top_k"),
        ({"rank_by": "median"}, "rank_by"),
        ({"normalize": "global"}, "normalize"),
        ({"views": ["heat"]}, "views"),
        ({"colormap": "nocmap"}, "not a known colormap"),
        ({"run_name": "../x"}, "run_name"),
    ],
)
def test_bad_options_raise_clear_errors(tmp_path, images, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ActivationLogger(small_cnn(), images, tmp_path, **kwargs)


@pytest.mark.backends
def test_zero_channel_layer_is_a_clear_error(tmp_path, images):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(2, 1, name="c")(inputs)
    empty = keras.layers.Lambda(lambda t: t[..., :0], name="empty")(x)
    model = keras.Model(inputs, [x, empty])
    logger = ActivationLogger(model, images, tmp_path, layers=["empty"])
    with pytest.raises(ValueError, match="zero channels"):
        logger.log(0)
    assert not os.path.exists(tmp_path / "activations")  # nothing half-written


def test_rank_by_max_and_overlay_uses_strongest_channel(tmp_path):
    model = constant_channel_model(3)
    with ActivationLogger(
        model, np.zeros((1, 4, 4, 1), np.uint8), tmp_path, rank_by="max", top_k=1, views=["overlay"]
    ) as logger:
        records = logger.log(0)
    assert records["const"].top.tolist() == [[2]]
    acc = read_run(tmp_path / "activations")
    assert {t for t in acc.Tags()["tensors"] if t.endswith(("mosaic", "topk", "overlay"))} == {
        "const/overlay"
    }


def test_size_cap_limits_written_images(tmp_path):
    inputs = keras.Input((64, 64, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(16, 1, name="c")(inputs))
    with ActivationLogger(
        model, np.zeros((1, 64, 64, 1), np.uint8), tmp_path, max_image_size=128
    ) as logger:
        logger.log(0)
    acc = read_run(tmp_path / "activations")
    for view in ("mosaic", "topk", "overlay"):
        w, h, pngs = images_at(acc, f"c/{view}")
        assert max(w, h) <= 128, view
        assert all(p.size == (w, h) for p in pngs), view
    # The overlay pair of a 64x64 probe (129 px) is drawn on the probe shrunk to 63x63.
    assert images_at(acc, "c/overlay")[:2] == (2 * 63 + 1, 63)
    with ActivationLogger(
        model, np.zeros((1, 64, 64, 1), np.uint8), tmp_path / "b", max_image_size=32
    ) as logger:
        logger.log(0)
    acc = read_run(tmp_path / "b" / "activations")
    assert images_at(acc, "_tb_activations/probes")[:2] == (32, 32)  # written once, capped too


def test_overlay_quality_trades_bytes(tmp_path):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (2, 48, 48, 3), dtype=np.uint8)
    inputs = keras.Input((48, 48, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="c")(inputs))
    sizes = {}
    for q in (30, 95):
        with ActivationLogger(
            model, noise, tmp_path / str(q), views=["overlay"], overlay_quality=q
        ) as logger:
            logger.log(0)
        acc = read_run(tmp_path / str(q) / "activations")
        w, h, jpegs = images_at(acc, "c/overlay")
        assert (w, h) == (97, 48) and [j.format for j in jpegs] == ["JPEG", "JPEG"]
        sizes[q] = acc.Tensors("c/overlay")[-1].tensor_proto.ByteSize()
    assert sizes[30] < 0.5 * sizes[95]


@pytest.mark.backends
@pytest.mark.parametrize("bad", [0, 96, 90.0, True, "90"])
def test_overlay_quality_is_checked(tmp_path, bad):
    with pytest.raises(ValueError, match=r"overlay_quality.*1\.\.95.*Received"):
        ActivationLogger(small_cnn(), np.zeros((1, 16, 16, 3)), tmp_path, overlay_quality=bad)


def test_session_starts_where_a_run_begins_or_restarts(tmp_path, images, monkeypatch):
    from tb_activations import summary

    def log(*steps, **kwargs):
        with ActivationLogger(small_cnn(), images, tmp_path, layers=["conv2"], **kwargs) as lg:
            for step in steps:
                lg.log(step)

    log(5, 6)  # the run's first event: START, so that the Python loader counts restarts
    log(6)  # another logger of this process, maybe on another step axis: no START
    assert session_starts(tmp_path / "activations") == [5]
    monkeypatch.setattr(summary, "_OPENED_PATHS", set())  # as in a new process
    log(6)  # restarted at 6: TensorBoard drops the earlier 6s
    log(2, session_start=False)  # out of order, as the command line may: nothing dropped
    assert session_starts(tmp_path / "activations") == [5, 6]


@pytest.mark.backends
def test_pin_reference_reuses_the_traced_pass(tmp_path, images):
    logger = ActivationLogger(small_cnn(), images, tmp_path, layers=["conv2"])
    logger.log(0)
    logger.pin_reference()
    records = logger.log(1)
    ex = logger.extractor
    assert traces(ex._fn_summaries) in (1, None)  # None: PyTorch runs eagerly
    assert traces(ex._fn) in (0, None)
    assert records["conv2"].stats.mean.shape == (3, 6)
    acc = read_run(tmp_path / "activations")
    assert scalar_values(acc, "conv2/cka_reference") == [pytest.approx(1.0)]


@pytest.mark.parametrize(
    "change, field",
    [
        ({"max_image_size": 16}, "grid"),  # 2x2 cells of 16 px pooled to 8 px
        ({"names": ["x", "y", "z"]}, "probes"),
        ({"top_k": 2}, "top_k"),
    ],
)
def test_a_run_refuses_data_in_another_layout(tmp_path, images, change, field):
    """TensorBoard keeps a tag's first metadata (the grid, probes, top_k): data in another
    layout is refused with the fix named, before anything is written; the same layout goes in."""
    model = small_cnn()
    with ActivationLogger(model, Probes(images), tmp_path, layers=["conv1"], top_k=3) as logger:
        logger.log(0)
    names = change.pop("names", None)
    options = {"top_k": 3, **change}
    other = ActivationLogger(
        model, Probes(images, names=names), tmp_path, layers=["conv1"], **options
    )
    for attempt in (other.check_run, lambda: other.log(1)):
        with pytest.raises(ValueError, match=rf"'conv1' \({field} .*run_name='activations_2'"):
            attempt()
    other.close()
    assert steps_of(read_run(tmp_path / "activations"), "conv1/mosaic") == [0]
    with ActivationLogger(model, Probes(images), tmp_path, layers=["conv*"], top_k=3) as same:
        same.check_run()
        same.log(1)  # conv2 and conv3 are new tags: their first layout is this one
    assert steps_of(read_run(tmp_path / "activations"), "conv1/mosaic") == [0, 1]


def test_layer_descriptions_hold_no_step_values(tmp_path):
    """TensorBoard shows a tag's first description forever: it must not be step 0's top
    channels or counts. Each step's values are in the step's data."""
    from tensorboard.backend.event_processing import event_file_loader

    model = constant_channel_model(4)
    probes = Probes(np.zeros((1, 4, 4, 1), np.uint8))
    with ActivationLogger(model, probes, tmp_path, top_k=2) as logger:
        logger.log(0)
        model.layers[-1].set_weights([np.zeros((1, 1, 1, 4), np.float32), np.float32([9, 0, 0, 1])])
        logger.log(1)
    descriptions = {}
    for event in event_file_loader.EventFileLoader(logger._writer.path or "").Load():
        for value in event.summary.value:
            if value.tag in ("const/topk", "const/mosaic"):
                descriptions.setdefault(value.tag, set()).add(value.metadata.summary_description)
    assert all(len(d) == 1 for d in descriptions.values()), descriptions
    (topk,) = descriptions["const/topk"]
    assert "top 2 channels by mean" in topk and "#3" not in topk and "step 0" not in topk


@pytest.mark.backends
def test_more_probes_than_one_pass_takes_is_a_clear_error(tmp_path):
    many = np.zeros((257, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match=r"257 probes, more than the 256 .*Probes\(x\[:16\]\)"):
        ActivationLogger(small_cnn(), many, tmp_path)


@pytest.mark.backends
def test_several_loggers_on_one_model_share_one_trace(tmp_path, images):
    """Loggers on one model (callbacks, notebook cells, sweeps) reuse one traced function
    (one ``jax.jit`` compilation on JAX): TensorFlow's "triggered tf.function retracing"
    warning is never printed."""
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    tf_logger = logging.getLogger("tensorflow")
    tf_logger.addHandler(handler)
    try:
        model = small_cnn()
        for i in range(7):
            with ActivationLogger(model, Probes(images), tmp_path, run_name=f"r{i}") as logger:
                logger.log(0)
    finally:
        tf_logger.removeHandler(handler)
    assert not [r for r in records if "retracing" in r.getMessage()]
    assert traces(logger.extractor._fn_summaries) in (1, None)  # None: PyTorch runs eagerly


@pytest.mark.backends
@pytest.mark.parametrize("n_probes", [1, 2])
def test_drift_with_one_or_two_probes_compares_positions(tmp_path, n_probes):
    """1 probe gave NaN, 2 probes exactly 1.0 at every step: with few probes the spatial
    positions are the samples; a 1x1 layer, still short of samples, gets no CKA and says so."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same", name="conv")
    point = keras.layers.Conv2D(4, 16, name="point")  # 1x1 maps
    model = keras.Model(inputs, point(conv(inputs)))
    probes = Probes(np.random.default_rng(0).random((n_probes, 16, 16, 3), dtype=np.float32))
    with ActivationLogger(model, probes, tmp_path) as logger:
        with pytest.warns(RuntimeWarning, match=r"no CKA drift for 1 layer\(s\) \(point\)"):
            logger.log(0)
        kernel, bias = conv.get_weights()
        conv.set_weights([np.random.default_rng(1).normal(size=kernel.shape), bias])
        logger.log(1)
    acc = read_run(tmp_path / "activations")
    cka = scalar_values(acc, "conv/cka_first")
    assert cka[0] == pytest.approx(1.0) and np.isfinite(cka[1]) and cka[1] < 0.99
    assert "positions per probe" in acc.summary_metadata["conv/cka_first"].summary_description
    assert "point/cka_first" not in acc.Tags()["tensors"]
    assert "No CKA drift" in acc.summary_metadata["point/mosaic"].summary_description


def test_layout_check_and_drift_state_need_no_tensorflow_on_jax(tmp_path):
    """The run skim (layout check) and the CLI's drift state use the writer's file layer:
    on the JAX backend TensorFlow is never imported."""
    pytest.importorskip("jax")
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import sys
        import keras
        import numpy as np
        from tb_activations import ActivationLogger, Probes, drift_state
        from tb_activations.logger import RunLayoutError

        # (keras.utils.set_random_seed would import TensorFlow: a plain model here)
        inputs = keras.Input((16, 16, 3))
        model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv1")(inputs))
        images = np.zeros((2, 16, 16, 3), np.uint8)
        with ActivationLogger(model, Probes(images), {str(tmp_path)!r}) as logger:
            logger.log(0)
            drift_state.save(logger, 0)
            assert drift_state.load(logger, 1) == 0
        other = ActivationLogger(model, Probes(images, names=["a", "b"]), {str(tmp_path)!r})
        assert drift_state.load(other, 1) is None  # other probes: drift starts over
        try:
            other.check_run()
            raise SystemExit("not refused")
        except RunLayoutError as err:
            assert err.fresh_run_name == "activations_2", err
        assert "tensorflow" not in sys.modules, "tensorflow imported"
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=root)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
