"""Activation histograms: reduced on the device, written for TensorBoard's stock Histograms tab."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from tb_activations import ActivationExtractor, ActivationLogger, Probes, select_layers
from tests.conftest import read_run


def _identity_model(shape=(4, 4, 1)):
    inputs = keras.Input(shape)
    return keras.Model(inputs, keras.layers.Activation("linear", name="c")(inputs))


@pytest.mark.backends
def test_device_histogram_known_counts_ignoring_nan():
    x = np.arange(32, dtype=np.float32).reshape(2, 4, 4, 1)
    x[0, 0, 0, 0] = np.nan  # the 0: the finite values are 1..31
    x[1, 0, 0, 0] = np.inf  # and the 16 with it
    model = _identity_model()
    result = ActivationExtractor(
        model, select_layers(model, ["c"]), histogram_bins=4
    ).run_with_summaries(x)
    hist = result.histograms["c"]
    assert hist.dtype == np.float64 and hist.shape == (4, 3)
    # 4 bins over [1, 31]: [1, 8.5) [8.5, 16) [16, 23.5) [23.5, 31]
    np.testing.assert_allclose(hist[:, 0], [1, 8.5, 16, 23.5])
    np.testing.assert_allclose(hist[:, 1], [8.5, 16, 23.5, 31])
    np.testing.assert_array_equal(hist[:, 2], [8, 7, 7, 8])
    assert hist[:, 2].sum() == np.isfinite(x).sum()


@pytest.mark.backends
def test_constant_layer_gets_one_unit_range_and_no_histograms_by_default():
    model = _identity_model()
    x = np.full((2, 4, 4, 1), 3.0, np.float32)
    hist = (
        ActivationExtractor(model, select_layers(model, ["c"]), histogram_bins=2)
        .run_with_summaries(x)
        .histograms["c"]
    )
    np.testing.assert_allclose(hist, [[2.5, 3.0, 0], [3.0, 3.5, 32]])
    assert (
        ActivationExtractor(model, select_layers(model, ["c"])).run_with_summaries(x).histograms
        == {}
    )


@pytest.mark.backends
def test_device_histogram_counts_every_value_once_on_both_paths():
    # All finite (the short path) and with one NaN (the masked one): each value in the bin
    # numpy's float32 arithmetic puts it in, the NaN in none.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 7, 1)).astype(np.float32)
    model = _identity_model((5, 7, 1))
    ex = ActivationExtractor(model, select_layers(model, ["c"]), histogram_bins=7)
    lo, hi = x.min(), x.max()
    width = np.float32((hi - lo) / np.float32(7))
    index = np.clip(np.floor((x - lo) / width), 0, 6).astype(int).ravel()
    expected = np.bincount(index, minlength=7)
    np.testing.assert_array_equal(ex.run_with_summaries(x).histograms["c"][:, 2], expected)
    assert lo < x[1, 2, 3, 0] < hi  # the range stays as it is without this value
    x[1, 2, 3, 0] = np.nan
    expected[index[1 * 35 + 2 * 7 + 3]] -= 1
    np.testing.assert_array_equal(ex.run_with_summaries(x).histograms["c"][:, 2], expected)


def test_histogram_bins_must_be_bounded():
    model = _identity_model()
    for bad in (-1, 1001, 2.5, True):
        with pytest.raises(ValueError, match=r"`histogram_bins`.*0\.\.1000.*Received"):
            ActivationExtractor(model, select_layers(model, ["c"]), histogram_bins=bad)


def test_logger_writes_stock_histograms_read_by_the_histograms_plugin(tmp_path):
    from tensorboard.backend import application
    from tensorboard.backend.event_processing import data_provider as tb_data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.histogram import histograms_plugin
    from tensorboard.plugins.histogram import metadata as histogram_metadata
    from tensorboard.util import tensor_util
    from werkzeug import test as werkzeug_test

    x = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4, 1)
    model = _identity_model()
    with ActivationLogger(
        model, Probes(x), str(tmp_path), layers=["c"], views=["mosaic"], histogram_bins=8
    ) as logger:
        logger.log(0)
        logger.log(5)

    # TensorBoard's own reader: a histograms-plugin tensor per step.
    acc = read_run(tmp_path / "activations")
    events = acc.Tensors("c/histogram")
    assert [e.step for e in events] == [0, 5]
    meta = acc.SummaryMetadata("c/histogram")
    assert meta.plugin_data.plugin_name == histogram_metadata.PLUGIN_NAME
    hist = tensor_util.make_ndarray(events[0].tensor_proto)
    assert hist.shape == (8, 3) and hist[:, 2].sum() == 32
    np.testing.assert_allclose([hist[0, 0], hist[-1, 1]], [0, 31])

    # The stock Histograms tab's route.
    multiplexer = plugin_event_multiplexer.EventMultiplexer(size_guidance={"tensors": 0})
    multiplexer.AddRunsFromDirectory(str(tmp_path))
    multiplexer.Reload()
    provider = tb_data_provider.MultiplexerDataProvider(multiplexer, str(tmp_path))
    context = base_plugin.TBContext(data_provider=provider, logdir=str(tmp_path))
    plugin = histograms_plugin.HistogramsPlugin(context)
    client = werkzeug_test.Client(application.TensorBoardWSGI([plugin], data_provider=provider))
    tags = json.loads(client.get("/data/plugin/histograms/tags").get_data())
    assert "c/histogram" in tags["activations"]
    answer = client.get("/data/plugin/histograms/histograms?run=activations&tag=c/histogram")
    assert answer.status_code == 200
    data = json.loads(answer.get_data())
    assert [d[1] for d in data] == [0, 5]
    buckets = data[0][2]
    assert len(buckets) == 8 and sum(b[2] for b in buckets) == 32
