"""Precision policies and dtypes (issue 7, item 3).

Models run under ``mixed_float16`` / ``mixed_bfloat16``, in float64, or end
in integer and boolean layers; the logger must give float32 activations and
statistics and the same pictures as a float32 twin, up to the policy's
rounding. Weights are set by hand so that every expected value is worked out
on paper. The global policy is always put back to ``"float32"``.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from tensorboard.util import tensor_util

from tb_activations import ActivationCallback, ActivationLogger, Probes
from tb_activations.colormaps import LEVELS, NAN_INDEX
from tests.conftest import images_at, read_run, scalar_values

CHANNELS = 4
SIZE = 6

# Overflow and NaN are expected here, as values: never as numpy warnings. Every test here
# also runs under KERAS_BACKEND=jax and =torch (tests/test_backends.py).
pytestmark = [pytest.mark.filterwarnings("error::RuntimeWarning"), pytest.mark.backends]


@pytest.fixture
def policy():
    """Sets a global dtype policy for one test; always restores ``"float32"``."""
    try:
        yield keras.mixed_precision.set_global_policy
    finally:
        keras.mixed_precision.set_global_policy("float32")


def ramp_model(dtype: str | None = None, scale: float = 1.0):
    """1x1 conv on a grey ``SIZE`` x ``SIZE`` input: channel ``c`` is ``scale * (c + 1) * x``.

    Then a 2x2 max-pool and a dense head on the pooled means, so that the
    model also has a classifier output (predictions under the policy).
    """
    kwargs = {} if dtype is None else {"dtype": dtype}
    inputs = keras.Input((SIZE, SIZE, 1))
    conv = keras.layers.Conv2D(CHANNELS, 1, name="conv", **kwargs)
    x = conv(inputs)
    x = keras.layers.MaxPooling2D(name="pool", **kwargs)(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap", **kwargs)(x)
    head = keras.layers.Dense(3, activation="softmax", name="head", **kwargs)
    model = keras.Model(inputs, head(x))
    conv.set_weights(
        [
            (scale * np.arange(1, CHANNELS + 1, dtype=np.float64)).reshape(1, 1, 1, CHANNELS),
            np.zeros(CHANNELS),
        ]
    )
    head.set_weights([np.eye(CHANNELS, 3), np.zeros(3)])
    return model


def ramp_probes(preprocess=None) -> Probes:
    """Two grey probes: a horizontal ramp 0..1 and its mirror."""
    ramp = np.broadcast_to(np.linspace(0.0, 1.0, SIZE, dtype=np.float32), (SIZE, SIZE))
    images = np.stack([ramp, ramp[:, ::-1]])[..., None]
    return Probes(images, names=["ramp", "mirror"], preprocess=preprocess)


def expected_conv(scale: float = 1.0) -> np.ndarray:
    x = ramp_probes().inputs  # (2, SIZE, SIZE, 1)
    return x * (scale * np.arange(1, CHANNELS + 1, dtype=np.float32))


def log_once(model, tmp_path, **kwargs):
    with ActivationLogger(model, ramp_probes(), tmp_path, top_k=2, **kwargs) as logger:
        records = logger.log(0)
        acts = logger.activations()
    return records, acts, read_run(tmp_path / "activations")


def mosaic_levels_of(acc, layer: str) -> list[np.ndarray]:
    _, _, pngs = images_at(acc, f"{layer}/mosaic")
    assert all(p.mode == "P" for p in pngs)
    return [np.asarray(p) for p in pngs]


@pytest.mark.parametrize(
    ("name", "compute", "rtol", "max_level_diff"),
    [("mixed_float16", "float16", 2e-3, 1), ("mixed_bfloat16", "bfloat16", 1e-2, 2)],
)
def test_mixed_precision_gives_float32_activations_stats_and_the_float32_pictures(
    tmp_path, policy, name, compute, rtol, max_level_diff
):
    reference_records, reference_acts, reference = log_once(ramp_model(), tmp_path / "f32")
    policy(name)
    model = ramp_model()
    assert model.get_layer("conv").compute_dtype == compute  # the policy is really in force
    records, acts, acc = log_once(model, tmp_path / name)

    for layer in ("conv", "pool"):
        assert acts[layer].dtype == np.float32
        np.testing.assert_allclose(acts[layer], reference_acts[layer], rtol=rtol, atol=1e-6)
        stats = records[layer].stats
        assert {a.dtype for a in (stats.mean, stats.max, stats.min, stats.std)} == {
            np.dtype(np.float32)
        }
        np.testing.assert_allclose(
            stats.stacked(), reference_records[layer].stats.stacked(), rtol=rtol, atol=1e-5
        )
        assert records[layer].top.tolist() == reference_records[layer].top.tolist()
        for got, want in zip(mosaic_levels_of(acc, layer), mosaic_levels_of(reference, layer)):
            assert got.shape == want.shape
            assert np.abs(got.astype(int) - want.astype(int)).max() <= max_level_diff
    np.testing.assert_allclose(acts["conv"], expected_conv(), rtol=rtol, atol=1e-6)
    # The written statistics are float32 tensors, as in float32.
    stored = tensor_util.make_ndarray(acc.Tensors("conv/channel_stats")[0].tensor_proto)
    assert stored.dtype == np.float32 and stored.shape == (2, CHANNELS, 4)
    # Predictions (from the float16 head) and every scalar were written.
    assert scalar_values(acc, "conv/nonfinite_count") == [0.0]
    assert "_tb_activations/predictions" in acc.Tags()["tensors"]


def test_float16_overflow_is_counted_and_drawn_in_the_nan_colour(tmp_path, policy):
    # Kernel 16000 * (c + 1) fits float16 (max 65504); on inputs 0..4 the products
    # overflow where they exceed 65504: those values are +Inf, the others exact.
    policy("mixed_float16")
    model = ramp_model(scale=16000.0)
    probes = ramp_probes(preprocess=lambda x: x * 4.0)
    with ActivationLogger(model, probes, tmp_path, layers=["conv"], top_k=2) as logger:
        records = logger.log(0)
        acts = logger.activations()
    acc = read_run(tmp_path / "activations")
    expected = probes.inputs * (16000.0 * np.arange(1, CHANNELS + 1, dtype=np.float32))
    overflow = expected > 65504
    assert overflow.any() and not overflow.all()
    assert np.isposinf(acts["conv"][overflow]).all()
    np.testing.assert_allclose(acts["conv"][~overflow], expected[~overflow], rtol=2e-3)
    assert records["conv"].stats.nonfinite.tolist() == overflow.reshape(2, -1).sum(1).tolist()
    assert scalar_values(acc, "conv/nonfinite_count") == [float(overflow.sum())]
    first = mosaic_levels_of(acc, "conv")[0]
    for channel in range(CHANNELS):
        r, q = divmod(channel, 2)  # 4 channels: a 2 x 2 grid
        cell = first[r * (SIZE + 1) : r * (SIZE + 1) + SIZE, q * (SIZE + 1) : q * (SIZE + 1) + SIZE]
        np.testing.assert_array_equal(cell == NAN_INDEX, overflow[0, ..., channel])


def test_mixed_precision_fit_with_the_callback(tmp_path, policy):
    policy("mixed_float16")
    model = ramp_model()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((8, SIZE, SIZE, 1), dtype=np.float32)
    y = np.arange(8) % 3
    callback = ActivationCallback(ramp_probes(), str(tmp_path), layers=["conv", "pool"])
    model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[callback])
    assert callback.failures == 0  # the callback warns instead of raising: none failed
    acc = read_run(tmp_path / "activations")
    assert [e.step for e in acc.Tensors("conv/mosaic")] == [0, 1]
    stored = tensor_util.make_ndarray(acc.Tensors("pool/channel_stats")[-1].tensor_proto)
    assert stored.dtype == np.float32 and np.isfinite(stored).all()


def test_float64_model_gives_float32_values_and_the_float32_pictures(tmp_path, policy):
    reference_records, _, reference = log_once(ramp_model(), tmp_path / "f32")
    policy("float64")
    model = ramp_model()
    assert model.get_layer("conv").compute_dtype == "float64"
    records, acts, acc = log_once(model, tmp_path / "f64")
    assert acts["conv"].dtype == np.float32
    np.testing.assert_allclose(acts["conv"], expected_conv(), rtol=1e-6)
    for layer in ("conv", "pool"):
        assert records[layer].stats.mean.dtype == np.float32
        np.testing.assert_allclose(
            records[layer].stats.stacked(), reference_records[layer].stats.stacked(), rtol=1e-6
        )
        for got, want in zip(mosaic_levels_of(acc, layer), mosaic_levels_of(reference, layer)):
            np.testing.assert_array_equal(got, want)


def test_float64_values_beyond_float32_become_inf_and_are_counted(tmp_path):
    if keras.backend.backend() == "jax":
        import jax

        if not jax.config.read("jax_enable_x64"):
            pytest.skip("JAX computes float64 layers in float32 unless jax_enable_x64 is set")
    # A float64 layer (explicit dtype, no global policy): 1e300 * x is finite in float64
    # but not in float32, where statistics and pictures are computed.
    records, acts, acc = log_once(ramp_model(dtype="float64", scale=1e300), tmp_path)
    big = expected_conv(1.0) > 0  # every nonzero input overflows
    assert np.isposinf(acts["conv"][big]).all() and (acts["conv"][~big] == 0).all()
    assert scalar_values(acc, "conv/nonfinite_count") == [float(big.sum())]
    stats = records["conv"].stats
    assert np.isfinite(stats.stacked()).all()  # statistics over the finite values only


def integer_model():
    """Integer and boolean layers after a known conv: ``x > 0.5``, ``round(4 x)`` as int32 and uint8."""
    inputs = keras.Input((SIZE, SIZE, 1))
    conv = keras.layers.Conv2D(2, 1, name="conv")
    x = conv(inputs)
    as_bool = keras.layers.Lambda(lambda t: t > 0.5, name="as_bool")(x)
    as_int = keras.layers.Lambda(
        lambda t: keras.ops.cast(keras.ops.round(4.0 * t), "int32"), name="as_int"
    )(x)
    as_uint8 = keras.layers.Lambda(
        lambda t: keras.ops.cast(keras.ops.round(4.0 * t), "uint8"), name="as_uint8"
    )(x)
    model = keras.Model(inputs, [as_bool, as_int, as_uint8])
    conv.set_weights([np.array([1.0, 0.5]).reshape(1, 1, 1, 2), np.zeros(2)])
    return model


def test_integer_and_boolean_outputs_render_their_values(tmp_path):
    records, acts, acc = log_once(
        integer_model(), tmp_path, layers=["as_bool", "as_int", "as_uint8"], colormap="gray"
    )
    x = ramp_probes().inputs * np.array([1.0, 0.5], np.float32)
    expected = {
        "as_bool": (x > 0.5).astype(np.float32),
        "as_int": np.round(4 * x).astype(np.float32),
        "as_uint8": np.round(4 * x).astype(np.float32),
    }
    for layer, want in expected.items():
        assert acts[layer].dtype == np.float32
        np.testing.assert_array_equal(acts[layer], want)
        stats = records[layer].stats
        assert stats.mean.dtype == np.float32
        np.testing.assert_allclose(stats.mean, want.mean(axis=(1, 2)), rtol=1e-6)
        np.testing.assert_array_equal(stats.max, want.max(axis=(1, 2)))
        # Layer scale [0, max]: level = round(value / max * 253), exactly.
        hi = want.max()
        for probe, levels in enumerate(mosaic_levels_of(acc, layer)):
            for channel in range(2):
                cell = levels[:SIZE, channel * (SIZE + 1) : channel * (SIZE + 1) + SIZE]
                np.testing.assert_array_equal(
                    cell, np.rint(want[probe, ..., channel] / hi * (LEVELS - 1))
                )
    # Booleans: False is the low end (0), True the high end.
    levels = mosaic_levels_of(acc, "as_bool")[0]
    assert set(np.unique(levels[:SIZE, :SIZE]).tolist()) == {0, LEVELS - 1}
