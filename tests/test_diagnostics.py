"""Drift, predictions and channel probes as written by ActivationLogger / ActivationCallback.

Everything is read back from the event files with TensorBoard's own
EventAccumulator (size guidance 0: keep every event).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from tensorboard.util import tensor_util

from tb_activations import ActivationCallback, ActivationLogger, Probes, metadata
from tb_activations.diagnostics import (
    class_probabilities,
    classifier_head,
    prediction_head,
    saturation_kind,
)
from tests.conftest import images_at, read_run, scalar_values, small_cnn, steps_of, tensor_tags


def text_at(acc, tag: str, step: int) -> str:
    event = next(e for e in acc.Tensors(tag) if e.step == step)
    return tensor_util.make_ndarray(event.tensor_proto).item().decode("utf-8")


def tensor_at(acc, tag: str, step: int) -> np.ndarray:
    event = next(e for e in acc.Tensors(tag) if e.step == step)
    return tensor_util.make_ndarray(event.tensor_proto)


@pytest.fixture
def probes(rng):
    return Probes(rng.integers(0, 256, size=(5, 16, 16, 3), dtype=np.uint8))


# -- the metric in a trained model -------------------------------------------


def digits_model():
    """A frozen first conv, two trained convs, and a ReLU branch forced dead (bias -100)."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="frozen")(inputs)
    x = keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="conv_a")(x)
    dead = keras.layers.Conv2D(
        4,
        3,
        padding="same",
        activation="relu",
        bias_initializer=keras.initializers.Constant(-100.0),
        name="dead",
    )(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_b")(x)
    x = keras.layers.Concatenate()(
        [keras.layers.GlobalAveragePooling2D()(x), keras.layers.GlobalAveragePooling2D()(dead)]
    )
    outputs = keras.layers.Dense(10, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("frozen").trainable = False
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    return model


def test_fit_on_digits_cka_falls_for_trained_layers_and_stays_one_when_frozen(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target
    model = digits_model()
    frozen_before = [w.copy() for w in model.get_layer("frozen").get_weights()]
    probe_idx = [0, 1, 2, 3, 4, 5, 6, 7]
    probes = Probes(x[probe_idx], labels=[int(v) for v in y[probe_idx]])
    callback = ActivationCallback(
        probes,
        tmp_path,
        layers=["frozen", "conv_a", "dead", "conv_b"],
        pin_reference_at_epoch=1,
        class_names=[str(i) for i in range(10)],
        views=("mosaic",),
    )
    model.fit(x, y, epochs=4, batch_size=64, verbose=0, callbacks=[callback])
    assert callback.failures == 0
    for before, after in zip(frozen_before, model.get_layer("frozen").get_weights()):
        np.testing.assert_array_equal(before, after)

    acc = read_run(tmp_path / "activations")
    frozen = scalar_values(acc, "frozen/cka_first")
    assert steps_of(acc, "frozen/cka_first") == [0, 1, 2, 3]
    assert frozen == [1.0, 1.0, 1.0, 1.0]  # float32 1.0 exactly
    assert scalar_values(acc, "frozen/cka_previous") == [1.0, 1.0, 1.0]
    for layer in ("conv_a", "conv_b"):
        cka = scalar_values(acc, f"{layer}/cka_first")
        assert cka[0] == 1.0
        assert max(cka[1:]) < 0.999 and min(cka[1:]) < 0.99, (layer, cka)
        # Pinned at the end of epoch 1 (before its log): 1 there, written from then on.
        assert steps_of(acc, f"{layer}/cka_reference") == [1, 2, 3]
        assert scalar_values(acc, f"{layer}/cka_reference")[0] == pytest.approx(1.0, abs=1e-6)
    # The dead branch: dead from the first step, never newly dead, CKA undefined.
    assert scalar_values(acc, "dead/dead_fraction") == [1.0, 1.0, 1.0, 1.0]
    assert scalar_values(acc, "dead/newly_dead_fraction") == [0.0, 0.0, 0.0]
    assert all(np.isnan(v) for v in scalar_values(acc, "dead/cka_first"))
    # Predictions of the final step equal the trained model's own.
    table = tensor_at(acc, metadata.PREDICTIONS_TAG, 3)
    assert table.shape == (8, 4) and table.dtype == np.float32
    probs = model.predict(x[probe_idx], verbose=0)
    np.testing.assert_array_equal(table[:, 0], probs.argmax(axis=1))
    np.testing.assert_allclose(table[:, 1], probs.max(axis=1), rtol=1e-5)
    np.testing.assert_array_equal(table[:, 2], y[probe_idx])
    text = text_at(acc, metadata.PREDICTIONS_TEXT_TAG, 3)
    assert text.startswith("Step 3: predictions on the 8 probes;")
    assert "labelled probes correct" in text and "| probe_0 | 0 (0) |" in text
    # The heatmap: layers x steps, the frozen row in the colormap's top colour.
    width, height, [img] = images_at(acc, metadata.CKA_HEATMAP_TAG, 3)
    assert (width, height) == img.size and height == 4 * 14
    from tb_activations.colormaps import LEVELS, palette

    rgb = np.asarray(img.convert("RGB"))
    assert tuple(rgb[7, -1]) == tuple(palette("magma")[LEVELS - 1])


# -- channel signals ------------------------------------------------------------


def test_dead_layer_is_reported_dead_from_the_first_step(tmp_path, probes):
    import keras

    inputs = keras.Input((16, 16, 3))
    conv = keras.layers.Conv2D(4, 3, activation="relu", name="neg")
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(conv(inputs)))
    conv.set_weights([np.full((3, 3, 3, 4), 0.01, np.float32), np.full(4, -1000.0, np.float32)])
    with ActivationLogger(model, probes, tmp_path, views=("mosaic",)) as logger:
        logger.log(0)
        logger.log(1)
    acc = read_run(tmp_path / "activations")
    assert scalar_values(acc, "neg/dead_fraction") == [1.0, 1.0]
    assert scalar_values(acc, "neg/newly_dead_fraction") == [0.0]
    assert "neg/saturated_fraction" not in tensor_tags(acc)  # ReLU does not saturate


def test_newly_dead_and_saturated_fractions(tmp_path, probes):
    import keras

    inputs = keras.Input((16, 16, 3))
    relu = keras.layers.Conv2D(4, 1, activation="relu", name="relu")
    sig = keras.layers.Conv2D(5, 1, activation="sigmoid", name="sig")
    x = relu(inputs)
    model = keras.Model(inputs, sig(x))
    relu.set_weights([np.zeros((1, 1, 3, 4), np.float32), np.array([1, 1, 1, 1], np.float32)])
    # sig = sigmoid(0 * x + b): two channels saturated high, one low, two not.
    sig.set_weights([np.zeros((1, 1, 4, 5), np.float32), np.array([20, 20, -20, 0, 1], np.float32)])
    with ActivationLogger(model, probes, tmp_path, views=("mosaic",)) as logger:
        logger.log(0)
        relu.set_weights([np.zeros((1, 1, 3, 4), np.float32), np.array([1, -1, -1, 1], np.float32)])
        logger.log(1)
    acc = read_run(tmp_path / "activations")
    assert scalar_values(acc, "relu/dead_fraction") == [0.0, 0.5]
    assert scalar_values(acc, "relu/newly_dead_fraction") == [0.5]
    assert scalar_values(acc, "sig/saturated_fraction") == [pytest.approx(0.6)] * 2
    assert "relu/saturated_fraction" not in tensor_tags(acc)


def test_saturation_kind_reads_the_activation():
    import keras

    assert saturation_kind(keras.layers.Dense(2, activation="tanh")) == "tanh"
    assert saturation_kind(keras.layers.Activation("sigmoid")) == "sigmoid"
    assert saturation_kind(keras.layers.Conv2D(2, 1, activation="relu")) is None
    assert saturation_kind(keras.layers.MaxPooling2D()) is None


def test_drift_tags_and_steps_written(tmp_path, probes):
    model = small_cnn()
    with ActivationLogger(model, probes, tmp_path, layers=["conv1", "conv3"]) as logger:
        for step in (0, 5, 10):
            logger.log(step)
    acc = read_run(tmp_path / "activations")
    tags = tensor_tags(acc)
    for layer in ("conv1", "conv3"):
        assert steps_of(acc, f"{layer}/cka_first") == [0, 5, 10]
        for name in ("cka_previous", "newly_dead_fraction", "topk_overlap", "channel_rank_corr"):
            assert steps_of(acc, f"{layer}/{name}") == [5, 10]
        assert f"{layer}/cka_reference" not in tags  # nothing pinned
        # Weights did not change: nothing drifts.
        assert scalar_values(acc, f"{layer}/cka_previous") == [1.0, 1.0]
        assert scalar_values(acc, f"{layer}/topk_overlap") == [1.0, 1.0]
        event = acc.Tensors(f"{layer}/cka_first")[0]
        assert event.tensor_proto.dtype == 1  # DT_FLOAT: float32
    md = acc.SummaryMetadata("conv1/cka_first")
    assert md.plugin_data.plugin_name == "scalars" and "debiased" in md.summary_description
    assert steps_of(acc, metadata.CKA_HEATMAP_TAG) == [0, 5, 10]
    assert steps_of(acc, metadata.CHANNEL_PROBES_TAG) == [0, 5, 10]
    text = text_at(acc, metadata.CHANNEL_PROBES_TAG, 10)
    assert "**`conv1`**" in text and "strongest probe" in text
    assert acc.SummaryMetadata(metadata.PREDICTIONS_TEXT_TAG).plugin_data.plugin_name == "text"
    pred_md = acc.SummaryMetadata(metadata.PREDICTIONS_TAG)
    content = metadata.parse_plugin_metadata(pred_md.plugin_data.content)
    assert content["fields"] == list(metadata.PREDICTION_FIELDS) and content["num_classes"] == 3


def test_drift_off_writes_no_drift_tags(tmp_path, probes):
    with ActivationLogger(small_cnn(), probes, tmp_path, drift=False, predictions=False) as logger:
        logger.log(0)
        logger.log(1)
    tags = tensor_tags(read_run(tmp_path / "activations"))
    assert not {t for t in tags if t.rsplit("/", 1)[-1] in metadata.DRIFT_SCALAR_SUFFIXES}
    assert metadata.CKA_HEATMAP_TAG not in tags and metadata.PREDICTIONS_TAG not in tags


def test_pin_reference_and_the_heatmap_history_is_bounded(tmp_path, probes, monkeypatch):
    from tb_activations import diagnostics

    monkeypatch.setattr(diagnostics, "HEATMAP_STEPS", 3)
    model = small_cnn()
    with ActivationLogger(model, probes, tmp_path, layers=["conv2"], views=("mosaic",)) as logger:
        logger._diagnostics.history = diagnostics.deque(maxlen=diagnostics.HEATMAP_STEPS)
        logger.log(0)
        conv = model.get_layer("conv2")
        conv.set_weights([w * -1.0 for w in conv.get_weights()])
        logger.pin_reference()
        for step in range(1, 6):
            logger.log(step)
        assert len(logger._diagnostics.history) == 3
    acc = read_run(tmp_path / "activations")
    assert steps_of(acc, "conv2/cka_reference") == [1, 2, 3, 4, 5]
    assert scalar_values(acc, "conv2/cka_reference") == [pytest.approx(1.0, abs=1e-6)] * 5
    assert scalar_values(acc, "conv2/cka_first")[1] < 0.99
    widths = [images_at(acc, metadata.CKA_HEATMAP_TAG, s)[0] for s in range(6)]
    assert widths[2] == widths[3] == widths[5]  # at most 3 columns


# -- predictions -------------------------------------------------------------------


def test_class_probabilities():
    probs = np.array([[0.2, 0.8], [1.0, 0.0]])
    np.testing.assert_array_equal(class_probabilities(probs), probs)
    logits = np.array([[0.0, np.log(3.0)]])
    np.testing.assert_allclose(class_probabilities(logits), [[0.25, 0.75]])
    np.testing.assert_allclose(class_probabilities(np.array([[0.9]])), [[0.1, 0.9]])
    p = 1 / (1 + np.exp(2.0))  # a single logit outside [0, 1]: sigmoid
    np.testing.assert_allclose(class_probabilities(np.array([[-2.0]])), [[1 - p, p]])


def test_predictions_from_logits_with_labels_and_class_names(tmp_path, rng):
    import keras

    inputs = keras.Input((4, 4, 1))
    conv = keras.layers.Conv2D(1, 1, name="conv")
    dense = keras.layers.Dense(3, name="logits")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(conv(inputs))))
    conv.set_weights([np.ones((1, 1, 1, 1), np.float32), np.zeros(1, np.float32)])
    kernel = np.zeros((16, 3), np.float32)
    kernel[:, 2] = 1.0 / 16  # logit 2 = mean pixel; the others 0
    dense.set_weights([kernel, np.zeros(3, np.float32)])
    images = np.stack([np.full((4, 4, 1), v, np.float32) for v in (0.0, 0.2, 2.0, 5.0)])
    probes = Probes(images, names=["a", "b", "c", "d"], labels=["cat", 0, None, "bird"])
    with ActivationLogger(
        model,
        probes,
        tmp_path,
        class_names=["dog", "cat", "bird"],
        views=("mosaic",),
        predictions=True,  # logits: a classifier only because the user says so
    ) as logger:
        logger.log(0)
    acc = read_run(tmp_path / "activations")
    table = tensor_at(acc, metadata.PREDICTIONS_TAG, 0)
    e = np.exp
    expected_conf = [1 / 3, e(0.2) / (2 + e(0.2)), e(2) / (2 + e(2)), e(5) / (2 + e(5))]
    np.testing.assert_array_equal(table[:, 0], [0, 2, 2, 2])  # ties: the first class
    np.testing.assert_allclose(table[:, 1], expected_conf, rtol=1e-5)
    np.testing.assert_array_equal(table[:, 2], [1, 0, -1, 2])
    assert np.isnan(table[2, 3]) and table[3, 3] == pytest.approx(expected_conf[3], rel=1e-5)
    text = text_at(acc, metadata.PREDICTIONS_TEXT_TAG, 0)
    assert "1 of 3 labelled probes correct" in text
    assert "| a | cat (1) | dog (0) | 0.333 | 0.333 | **wrong** |" in text
    assert "| d | bird (2) | bird (2) | 0.987 | 0.987 | ok |" in text


def head_model(units: int, activation, *, softmax_layer: bool = False, nested: bool = False):
    """(4, 4, 1) -> mean pixel m -> Dense(units): output j = (j + 1) * m - 1, then ``activation``."""
    import keras

    inputs = keras.Input((4, 4, 1))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(1, 1, name="conv")(inputs))
    dense = keras.layers.Dense(units, activation=None if softmax_layer else activation, name="d")
    out = dense(x)
    if softmax_layer:
        out = keras.layers.Activation(activation, name="act")(out)
    model = keras.Model(inputs, out)
    model.get_layer("conv").set_weights(
        [np.ones((1, 1, 1, 1), np.float32), np.zeros(1, np.float32)]
    )
    dense.set_weights(
        [np.arange(1, units + 1, dtype=np.float32)[None], -np.ones(units, np.float32)]
    )
    if nested:
        model = keras.Sequential([keras.Input((4, 4, 1)), model])
    return model


def test_classifier_head_reads_the_final_activation():
    import keras

    assert classifier_head(head_model(3, "softmax")) == "softmax"
    assert classifier_head(head_model(1, "sigmoid")) == "sigmoid"
    assert classifier_head(head_model(3, "softmax", softmax_layer=True)) == "softmax"
    assert classifier_head(head_model(3, "sigmoid", nested=True)) == "sigmoid"
    assert classifier_head(head_model(3, None)) is None  # logits
    assert classifier_head(head_model(1, "relu")) is None  # a regression head
    inputs = keras.Input((3,))
    assert classifier_head(keras.Model(inputs, keras.layers.Softmax()(inputs))) == "softmax"
    assert prediction_head(head_model(3, None), True) == "logits"
    assert prediction_head(head_model(3, None), None) is None


@pytest.mark.parametrize(("units", "activation"), [(1, None), (1, "relu"), (4, None), (4, "tanh")])
def test_no_predictions_for_regression_heads_and_embeddings(tmp_path, units, activation):
    # Before: a (N, 1) regression output was shown as a binary classifier through a
    # sigmoid, an embedding as classes through a softmax.
    images = np.stack([np.full((4, 4, 1), v, np.float32) for v in (0.0, 0.5, 1.0)])
    with ActivationLogger(head_model(units, activation), images, tmp_path, views=("mosaic",)) as lg:
        assert lg._want_output is False
        lg.log(0)
    acc = read_run(tmp_path / "activations")
    assert metadata.PREDICTIONS_TAG not in tensor_tags(acc)
    assert metadata.PREDICTIONS_TEXT_TAG not in tensor_tags(acc)


def test_sigmoid_heads_are_shown_as_the_probabilities_they_are(tmp_path):
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    m = np.array([0.0, 0.5, 1.0])  # mean pixel of each probe
    images = np.stack([np.full((4, 4, 1), v, np.float32) for v in m])
    # Multi-label: 3 independent sigmoids, p_j = sigmoid((j + 1) m - 1), never softmaxed.
    probes = Probes(images, names=["a", "b", "c"], labels=[0, 2, 2])
    with ActivationLogger(head_model(3, "sigmoid"), probes, tmp_path / "multi") as lg:
        lg.log(0)
    acc = read_run(tmp_path / "multi" / "activations")
    table = tensor_at(acc, metadata.PREDICTIONS_TAG, 0)
    p = sig(np.arange(1, 4)[None] * m[:, None] - 1)
    np.testing.assert_array_equal(table[:, 0], [0, 2, 2])  # at m = 0 all equal: the first
    np.testing.assert_allclose(table[:, 1], p.max(axis=1), rtol=1e-5)
    np.testing.assert_allclose(table[:, 3], p[[0, 1, 2], [0, 2, 2]], rtol=1e-5)
    assert "multi-label (sigmoid)" in text_at(acc, metadata.PREDICTIONS_TEXT_TAG, 0)
    # Binary: one sigmoid p = sigmoid(m - 1) -> classes [1 - p, p].
    with ActivationLogger(head_model(1, "sigmoid"), probes, tmp_path / "binary") as lg:
        lg.log(0)
    table = tensor_at(read_run(tmp_path / "binary" / "activations"), metadata.PREDICTIONS_TAG, 0)
    p = sig(m - 1)
    np.testing.assert_array_equal(table[:, 0], (p > 0.5).astype(int))
    np.testing.assert_allclose(table[:, 1], np.maximum(p, 1 - p), rtol=1e-5)
    # Softmax outputs are taken as they are (a separate Activation layer too).
    with ActivationLogger(
        head_model(3, "softmax", softmax_layer=True), probes, tmp_path / "soft"
    ) as lg:
        lg.log(0)
    table = tensor_at(read_run(tmp_path / "soft" / "activations"), metadata.PREDICTIONS_TAG, 0)
    z = np.arange(1, 4)[None] * m[:, None] - 1
    soft = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(table[:, 1], soft.max(axis=1), rtol=1e-5)


def test_predictions_option_checks(tmp_path, probes):
    import keras

    inputs = keras.Input((16, 16, 3))
    fmap = keras.Model(inputs, keras.layers.Conv2D(2, 3, name="c")(inputs))
    with pytest.raises(ValueError, match="not a classifier's"):
        ActivationLogger(fmap, probes, tmp_path, predictions=True)
    with ActivationLogger(fmap, probes, tmp_path, views=("mosaic",)) as logger:  # auto: off
        assert logger._want_output is False
        logger.log(0)
    assert metadata.PREDICTIONS_TAG not in tensor_tags(read_run(tmp_path / "activations"))


# -- options, normalisation, self-measurement ----------------------------------------


def test_option_errors(tmp_path, probes, images):
    model = small_cnn()
    with pytest.raises(ValueError, match="`cka`"):
        ActivationLogger(model, probes, tmp_path, cka="unbiased")
    # 3 probes are too few CKA samples: spatial positions are (the few-probe rule).
    tracker = ActivationLogger(model, images, tmp_path, cka="debiased")._diagnostics.tracker
    assert (tracker.cka, tracker.positions) == ("debiased", 22)
    tracker = ActivationLogger(model, images, tmp_path, cka_positions=4)._diagnostics.tracker
    assert (tracker.cka, tracker.positions) == ("debiased", 4)
    with pytest.raises(ValueError, match="'first', 'running_max'"):
        ActivationLogger(model, probes, tmp_path, normalize="fixed")
    with pytest.raises(ValueError, match="`pin_reference_at_epoch`"):
        ActivationCallback(probes, tmp_path, pin_reference_at_epoch=-1)
    with pytest.raises(TypeError, match="unexpected keyword"):
        ActivationCallback(probes, tmp_path, pin_reference=True)


def scaled_model(scale: float):
    """One 1x1 conv, output = ``scale * (c + 1)`` in channel ``c``."""
    import keras

    inputs = keras.Input((4, 4, 1))
    conv = keras.layers.Conv2D(2, 1, name="conv")
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([np.zeros((1, 1, 1, 2), np.float32), scale * np.array([1, 2], np.float32)])
    return model, conv


@pytest.mark.parametrize(
    ("normalize", "expected_hi"),
    [("layer", [2.0, 1.0, 4.0]), ("first", [2.0, 2.0, 2.0]), ("running_max", [2.0, 2.0, 4.0])],
)
def test_fixed_normalisation_across_steps(tmp_path, normalize, expected_hi):
    model, conv = scaled_model(1.0)
    probes = Probes(np.zeros((4, 4, 4, 1), np.float32))
    his = []
    with ActivationLogger(model, probes, tmp_path, normalize=normalize, views=("mosaic",)) as lg:
        for scale in (1.0, 0.5, 2.0):  # the channels fade, then grow
            conv.set_weights([np.zeros((1, 1, 1, 2), np.float32), scale * np.array([1, 2], "f4")])
            his.append(float(lg.log(len(his))["conv"].scale[1]))
    assert his == expected_hi


def test_normalize_first_uses_the_pinned_reference(tmp_path):
    model, conv = scaled_model(1.0)
    probes = Probes(np.zeros((4, 4, 4, 1), np.float32))
    with ActivationLogger(model, probes, tmp_path, normalize="first", views=("mosaic",)) as lg:
        assert float(lg.log(0)["conv"].scale[1]) == 2.0
        conv.set_weights([np.zeros((1, 1, 1, 2), np.float32), np.array([3, 6], "f4")])
        lg.pin_reference()
        assert float(lg.log(1)["conv"].scale[1]) == 6.0


def test_stall_and_worker_seconds_include_the_drift_work_when_blocking(
    tmp_path, probes, monkeypatch
):
    from tb_activations.diagnostics import Diagnostics

    original = Diagnostics.values

    def slow(self, *args, **kwargs):
        time.sleep(0.3)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Diagnostics, "values", slow)
    with ActivationLogger(small_cnn(), probes, tmp_path, views=("mosaic",)) as logger:
        logger.log(0)
    acc = read_run(tmp_path / "activations")
    assert scalar_values(acc, metadata.STALL_SECONDS_TAG)[0] >= 0.3
    assert scalar_values(acc, metadata.WORKER_SECONDS_TAG)[0] >= 0.3
