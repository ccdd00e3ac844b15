import keras
import numpy as np
import pytest

from tb_activations import ActivationExtractor, select_layers
from tests.conftest import constant_channel_model, nested_backbone_model, small_cnn

ARTICLE_SHAPES = [
    (224, 224, 64), (224, 224, 64), (112, 112, 64),
    (112, 112, 128), (112, 112, 128), (56, 56, 128),
    (56, 56, 256), (56, 56, 256), (56, 56, 256), (28, 28, 256),
    (28, 28, 512), (28, 28, 512), (28, 28, 512), (14, 14, 512),
    (14, 14, 512), (14, 14, 512), (14, 14, 512), (7, 7, 512),
]  # fmt: skip


@pytest.mark.backends
def test_known_values_of_a_hand_set_model():
    model = constant_channel_model(5)
    ex = ActivationExtractor(model, select_layers(model, ["const"]))
    acts = ex(np.random.default_rng(0).random((2, 4, 4, 1)))
    assert list(acts) == ["const"]
    expected = np.broadcast_to(np.arange(1, 6, dtype=np.float32), (2, 4, 4, 5))
    np.testing.assert_array_equal(acts["const"], expected)
    assert acts["const"].dtype == np.float32


def test_vgg16_article_layers_have_the_articles_shapes():
    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(224, 224, 3))
    ex = ActivationExtractor(model, select_layers(model, None))
    acts = ex(np.zeros((1, 224, 224, 3), np.float32))
    assert [a.shape for a in acts.values()] == [(1, *s) for s in ARTICLE_SHAPES]


def test_nested_backbone_layer_through_the_outer_model():
    base, model = nested_backbone_model()
    infos = select_layers(model, ["mobilenetv2*/block_1_expand_relu", "mobilenetv2*/Conv1"])
    ex = ActivationExtractor(model, infos, include_output=True)
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
    acts, output = ex.run(x)
    # Same values as the inner model's own sub-model on the same input.
    inner = keras.Model(base.input, base.get_layer("block_1_expand_relu").output)
    np.testing.assert_allclose(
        acts[infos[1].path],
        keras.ops.convert_to_numpy(inner(x, training=False)),
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        output, keras.ops.convert_to_numpy(model(x, training=False)), rtol=1e-5, atol=1e-5
    )


@pytest.mark.backends
def test_inference_mode_dropout_and_batchnorm_untouched():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Dropout(0.9, name="drop")(x)
    model = keras.Model(inputs, x)
    before = [w.copy() for w in model.get_weights()]
    ex = ActivationExtractor(model, select_layers(model, ["drop"]))
    x_in = np.random.default_rng(1).random((4, 8, 8, 3)).astype(np.float32)
    a1, a2 = ex(x_in)["drop"], ex(x_in)["drop"]
    np.testing.assert_array_equal(a1, a2)  # no dropout noise
    np.testing.assert_allclose(
        a1, keras.ops.convert_to_numpy(model(x_in, training=False)), rtol=1e-6
    )
    for b, w in zip(before, model.get_weights()):
        np.testing.assert_array_equal(b, w)  # BatchNorm statistics not updated


@pytest.mark.backends
def test_channels_first_layers_come_back_channels_last():
    # Pooling runs channels-first on every CPU: Keras transposes around TF's NHWC pooling.
    inputs = keras.Input((3, 4, 6))  # channels-first: C=3, H=4, W=6
    pool = keras.layers.MaxPooling2D(2, data_format="channels_first", name="cf_pool")
    model = keras.Model(inputs, pool(inputs))
    infos = select_layers(model, ["cf_pool"])
    assert infos[0].channels_first and infos[0].channels_last_shape == (2, 3, 3)
    c, h, w = np.meshgrid(np.arange(3), np.arange(4), np.arange(6), indexing="ij")
    x = np.stack([100 * c + 10 * h + w, 1000 + 100 * c + 10 * h + w]).astype(np.float32)
    acts = ActivationExtractor(model, infos)(x)["cf_pool"]
    assert acts.shape == (2, 2, 3, 3)  # (N, H, W, C)
    # Each 2 x 2 window's maximum is its bottom-right pixel: (2i+1, 2j+1) of channel k.
    i, j, k = np.meshgrid(np.arange(2), np.arange(3), np.arange(3), indexing="ij")
    expected = 100 * k + 10 * (2 * i + 1) + (2 * j + 1)
    np.testing.assert_array_equal(acts[0], expected)
    np.testing.assert_array_equal(acts[1], 1000 + expected)


def test_channels_first_conv_comes_back_channels_last_where_the_cpu_runs_it():
    inputs = keras.Input((3, 6, 5))  # channels-first input
    conv = keras.layers.Conv2D(4, 1, data_format="channels_first", name="cf")
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([np.zeros((1, 1, 3, 4), np.float32), np.arange(4, dtype=np.float32)])
    x = np.zeros((2, 3, 6, 5), np.float32)
    try:
        model(x)
    except Exception as err:  # TF's CPU Conv2D refuses NCHW on some CPUs (AMD EPYC)
        if "NHWC" not in str(err):
            raise
        pytest.skip(f"this CPU's TensorFlow runs no channels-first Conv2D: {err}")
    infos = select_layers(model, ["cf"])
    assert infos[0].channels_first
    acts = ActivationExtractor(model, infos)(x)["cf"]
    assert acts.shape == (2, 6, 5, 4)
    np.testing.assert_array_equal(acts[0, 0, 0], [0, 1, 2, 3])


@pytest.mark.backends
def test_dense_and_1d_outputs_become_rank_4():
    inputs = keras.Input((10, 3))
    x = keras.layers.Conv1D(4, 3, name="c1d")(inputs)
    y = keras.layers.Dense(7, name="dense")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, y)
    acts = ActivationExtractor(model, select_layers(model, ["c1d", "dense"]))(np.ones((2, 10, 3)))
    assert acts["c1d"].shape == (2, 1, 8, 4)
    assert acts["dense"].shape == (2, 1, 1, 7)


@pytest.mark.backends
def test_subclassed_model_outputs_are_captured_in_a_real_pass():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(3, 1, name="conv")
            self.pool = keras.layers.GlobalAveragePooling2D()

        def call(self, x):
            return self.pool(self.conv(x))

    net = Net()
    net(np.zeros((1, 4, 4, 2), np.float32))
    net.conv.set_weights(
        [np.zeros((1, 1, 2, 3), np.float32), np.array([1.0, 2.0, 3.0], np.float32)]
    )
    ex = ActivationExtractor(net, select_layers(net, ["conv"]), input_shape=(4, 4, 2))
    acts = ex(np.ones((2, 4, 4, 2)))
    np.testing.assert_array_equal(acts["conv"][1, 2, 3], [1.0, 2.0, 3.0])
    assert "call" not in vars(net.conv)  # hooks removed after tracing


@pytest.mark.backends
def test_extractor_is_traced_once():
    model = small_cnn()
    ex = ActivationExtractor(model, select_layers(model, None), levels=True)
    rng = np.random.default_rng(0)
    for n in (1, 3, 3):
        ex(np.zeros((n, 16, 16, 3)))
        ex.run_with_summaries(rng.random((n, 16, 16, 3)))  # new scales at every call
    if keras.backend.backend() == "tensorflow":  # one trace for any batch size
        assert ex._fn.experimental_get_tracing_count() == 1
        assert ex._fn_levels.experimental_get_tracing_count() <= 2  # shapes: reduce_retracing
    elif keras.backend.backend() == "jax":  # one trace per batch size, none per call
        assert ex._fn.jitted._cache_size() == 2
        assert ex._fn_levels.jitted._cache_size() == 2


def test_probe_size_mismatch_is_a_clear_error():
    from tb_activations.extraction import check_probe_shape

    with pytest.raises(
        ValueError,
        match=r"shape \(32, 32, 3\) but model 'small_cnn' expects .*\(16, 16, 3\).*target_size=\(16, 16\)",
    ):
        check_probe_shape(small_cnn(), (32, 32, 3))


@pytest.mark.backends
def test_device_reductions_equal_numpy_statistics_and_gram():
    from tb_activations.stats import ChannelStats, channel_stats

    model = small_cnn()
    ex = ActivationExtractor(model, select_layers(model, None), include_output=True)
    x = np.random.default_rng(0).random((3, 16, 16, 3)).astype(np.float32) * 255
    result = ex.run_with_summaries(x)
    np.testing.assert_allclose(
        result.output, keras.ops.convert_to_numpy(model(x, training=False)), rtol=1e-5
    )
    for path, a in result.activations.items():
        expected = channel_stats(a)
        got = ChannelStats.from_reduced(result.stats[path], a.shape[1] * a.shape[2])
        for field in ("mean", "max", "min", "std"):
            np.testing.assert_allclose(
                getattr(got, field), getattr(expected, field), rtol=1e-5, atol=1e-4
            )
        np.testing.assert_array_equal(got.dead, expected.dead)
        flat = a.reshape(3, -1).astype(np.float64)
        np.testing.assert_allclose(result.grams[path], flat @ flat.T, rtol=1e-5)


@pytest.mark.backends
def test_summarize_of_the_forward_maps_equals_the_fused_pass():
    # Background logging: forward pass on the training thread, reductions on the worker.
    model = small_cnn()
    ex = ActivationExtractor(
        model, select_layers(model, None), include_output=True, levels=True, histogram_bins=8
    )
    x = np.random.default_rng(1).random((4, 16, 16, 3)).astype(np.float32) * 255
    fused, split = ex.run_with_summaries(x), ex.summarize(ex.tensors(x))
    np.testing.assert_array_equal(fused.output, split.output)
    for name in ("activations", "stats", "grams", "mean_maps", "levels", "histograms"):
        a, b = getattr(fused, name), getattr(split, name)
        assert a.keys() == b.keys() and a, name
        for path in a:
            np.testing.assert_allclose(a[path], b[path], rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.backends
def test_device_reductions_count_nan_and_ignore_it():
    from tb_activations.stats import ChannelStats

    inputs = keras.Input((2, 2, 1))
    conv = keras.layers.Conv2D(2, 1, name="c")
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([np.zeros((1, 1, 1, 2), np.float32), np.array([np.nan, 0.0], np.float32)])
    result = ActivationExtractor(model, select_layers(model, ["c"])).run_with_summaries(
        np.ones((2, 2, 2, 1))
    )
    stats = ChannelStats.from_reduced(result.stats["c"], 4)
    assert stats.nonfinite.tolist() == [4, 4] and stats.dead.tolist() == [False, True]
    assert np.isfinite(stats.stacked()).all() and np.isfinite(result.grams["c"]).all()


@pytest.mark.backends
@pytest.mark.parametrize("case", ["normal", "channels_first_memory", "nan_and_inf", "zero", "huge"])
def test_backend_reductions_equal_the_keras_ops_reference(case):
    # PyTorch has its own fused reductions (backend/torch.py); elsewhere they are the reference.
    from tb_activations import extraction

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 7, 4)).astype(np.float32) * 3
    if case == "nan_and_inf":
        x[0, 1, 2, 3], x[1, 0, 0, 0], x[2, 4, 6, 1] = np.nan, np.inf, -np.inf
    elif case == "zero":
        x[:] = 0.0
    elif case == "huge":  # sums overflow float32: the reference's infinities
        x = np.where(x > 0, 3e38, -3e38).astype(np.float32)
    t = keras.ops.convert_to_tensor(x)
    if case == "channels_first_memory":  # as Keras' PyTorch pooling leaves its outputs
        t = keras.ops.transpose(keras.ops.convert_to_tensor(x.transpose(0, 3, 1, 2)), (0, 2, 3, 1))
    ref = (
        extraction._device_summary,
        extraction._device_histogram,
        extraction._device_levels,
    )
    own = extraction._reductions(keras.backend.backend())
    numpy = keras.ops.convert_to_numpy
    want, got = ref[0](t), own[0](t)
    for a, b in zip(want, got):  # statistics, Gram, mean map
        np.testing.assert_allclose(numpy(b), numpy(a), rtol=1e-5, atol=1e-6)
    for a, b in zip(ref[1](t, want[0], 7), own[1](t, got[0], 7)):  # edges, counts: exact
        assert numpy(a).dtype == numpy(b).dtype
        np.testing.assert_array_equal(numpy(b), numpy(a))
    lo, scale = np.array([-2.0], np.float32), np.array([20.0], np.float32)
    want_levels = numpy(ref[2]([t], lo, scale)[0])
    got_levels = numpy(
        own[2]([t], keras.ops.convert_to_tensor(lo), keras.ops.convert_to_tensor(scale))[0]
    )
    assert got_levels.dtype == np.uint8
    np.testing.assert_array_equal(got_levels, want_levels)


@pytest.mark.backends
@pytest.mark.parametrize(
    "values, on_device",
    [
        ("normal", True),
        ("nan_and_inf", True),
        ("all_zero", True),
        ("ties", True),  # values landing exactly on .5 levels: round half to even, as np.rint
        # TensorFlow's and XLA's reductions flush them (the same scale either way);
        # PyTorch's keep them, and then the scale needs float64: the host's.
        ("subnormal", None),
        ("tiny", False),  # 253 / span overflows float32: the host quantizes in float64
        ("huge", False),  # sums overflow float32: statistics and levels are redone on the host
    ],
)
def test_device_levels_equal_the_host_levels(values, on_device):
    from tb_activations.render import to_levels, value_range_from_stats
    from tb_activations.stats import ChannelStats

    rng = np.random.default_rng(0)
    x = {
        "normal": rng.standard_normal((3, 6, 6, 1)),
        "nan_and_inf": np.where(rng.random((3, 6, 6, 1)) < 0.2, np.nan, rng.random((3, 6, 6, 1))),
        "all_zero": np.zeros((3, 6, 6, 1)),
        "ties": np.tile(
            np.arange(36, dtype=np.float64).reshape(1, 6, 6, 1) * 253 / 35 / 2, (3, 1, 1, 1)
        ),
        "subnormal": rng.random((3, 6, 6, 1)) * 1e-44,
        "tiny": rng.random((3, 6, 6, 1)) * 1e-37,
        "huge": np.full((3, 6, 6, 1), 3e38) * rng.choice([-1, 1], (3, 6, 6, 1)),
    }[values].astype(np.float32)
    if values == "nan_and_inf":
        x[0, 0, 0, 0] = np.inf
    inputs = keras.Input((6, 6, 1))
    if values not in ("subnormal", "tiny", "huge"):
        conv = keras.layers.Conv2D(3, 1, name="c")  # channels: x, -x / 2, x + 1
        model = keras.Model(inputs, conv(inputs))
        conv.set_weights(
            [np.array([[[[1.0, -0.5, 1.0]]]], np.float32), np.array([0, 0, 1], np.float32)]
        )
    else:  # x itself: no arithmetic that could flush subnormals to zero
        model = keras.Model(inputs, keras.layers.Activation("linear", name="c")(inputs))
    ex = ActivationExtractor(model, select_layers(model, ["c"]), levels=True)
    result = ex.run_with_summaries(x)
    if on_device is None:
        on_device = keras.backend.backend() != "torch"
    assert ("c" in result.levels) == on_device
    if on_device:
        a = result.activations["c"]
        stats = ChannelStats.from_reduced(result.stats["c"], 36)
        host = to_levels(a, *value_range_from_stats(stats, "layer"))
        assert result.levels["c"].dtype == np.uint8
        np.testing.assert_array_equal(result.levels["c"], host)
    assert (
        ActivationExtractor(model, select_layers(model, ["c"])).run_with_summaries(x).levels == {}
    )


@pytest.mark.backends
def test_extra_layers_come_from_the_same_pass_without_reductions():
    model = small_cnn()
    x = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
    both = ActivationExtractor(model, select_layers(model, ["conv1", "conv3"]))(x)
    ex = ActivationExtractor(
        model,
        select_layers(model, ["conv1"]),
        include_output=True,
        histogram_bins=4,
        extra_layers=select_layers(model, ["conv3"]),
    )
    result = ex.run_with_summaries(x)
    assert list(result.activations) == ["conv1"] and list(result.stats) == ["conv1"]
    assert list(result.histograms) == ["conv1"] and list(result.extras) == ["conv3"]
    np.testing.assert_array_equal(result.extras["conv3"], both["conv3"])
    np.testing.assert_allclose(result.output, keras.ops.convert_to_numpy(model(x)), rtol=1e-6)
    maps = ex.tensors(x)  # layers, extras, then the output
    assert len(maps) == 3
    np.testing.assert_array_equal(ex.extras_of(maps)["conv3"], both["conv3"])
    assert list(ex.summarize(maps).stats) == ["conv1"]


@pytest.mark.backends
def test_empty_maps_are_refused_before_the_reductions_on_every_backend():
    # TensorFlow reduces an empty tensor to its identity, JAX and PyTorch raise their own
    # errors: the summaries refuse the layer first, with one message on every backend.
    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t[..., :0], name="none")(inputs))
    ex = ActivationExtractor(model, select_layers(model, ["none"]))
    x = np.ones((2, 4, 4, 1), np.float32)
    assert ex(x)["none"].shape == (2, 4, 4, 0)  # plain extraction still works
    with pytest.raises(ValueError, match=r"'none' has an output with zero channels"):
        ex.run_with_summaries(x)
    with pytest.raises(ValueError, match=r"'none' has an output with zero channels"):
        ex.summarize(ex.tensors(x))
