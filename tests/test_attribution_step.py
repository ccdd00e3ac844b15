"""Attribution in the logger and the callback: what is written, read back with TensorBoard."""

from __future__ import annotations

import threading
import warnings

import keras
import numpy as np
import pytest

from tb_activations import ActivationCallback, ActivationLogger, Probes, metadata
from tb_activations.attribution import grad_cam, trace_count
from tests.conftest import images_at, read_run, small_cnn
from tests.test_attribution import quadrant_model


def quadrant_probes(labels=(0, 2)):
    """Probe i is bright in quadrant ``labels`` of its row: probe 0 in quadrant 0, probe 1
    in quadrant 3; probe 1 is labelled 2, so the model (predicting 3) gets it wrong."""
    x = np.full((2, 8, 8, 1), 0.1, np.float32)
    x[0, :4, :4] = 0.9
    x[1, 4:, 4:] = 0.9
    return Probes(x, names=["a", "b"], labels=list(labels))


def tensor_of(acc, tag, step=None):
    from tensorboard.util import tensor_util

    events = acc.Tensors(tag)
    event = events[-1] if step is None else next(e for e in events if e.step == step)
    content = metadata.parse_plugin_metadata(acc.SummaryMetadata(tag).plugin_data.content)
    return tensor_util.make_ndarray(event.tensor_proto), content


def test_logger_writes_predicted_and_true_class_maps(tmp_path):
    model = quadrant_model()
    probes = quadrant_probes()
    with ActivationLogger(
        model,
        probes,
        tmp_path,
        # "mask" is extracted: Grad-CAM takes its output from the extraction pass.
        layers=["conv", "mask"],
        attribution=("gradcam", "occlusion"),
        attribution_layer="mask",
        attribution_every=2,
        overlay_format="png",
        class_names=["nw", "ne", "sw", "se"],
    ) as logger:
        for step in range(3):
            logger.log(step)
    acc = read_run(tmp_path / "activations")
    maps, content = tensor_of(acc, "attribution/gradcam/maps")
    assert content["kind"] == "attribution" and content["layer"] == "mask"
    assert content["classes"] == [[0, -1], [3, 2]]
    x = probes.inputs
    np.testing.assert_allclose(maps[:, 0], grad_cam(model, x, [0, 3], "mask"), rtol=1e-5)
    np.testing.assert_allclose(maps[1, 1], grad_cam(model, x[1:], 2, "mask")[0], rtol=1e-5)
    assert np.isnan(maps[0, 1]).all()
    width, height, pngs = images_at(acc, "attribution/gradcam/overlay")
    assert (width, height) == (17, 8) and [p.size for p in pngs] == [(17, 8)] * 2
    # Probe 0 is predicted as labelled: the right half is the probe itself.
    assert np.array_equal(np.asarray(pngs[0].convert("RGB"))[:, 9:], probes.display[0])
    # The costly parts (occlusion, the average drop) run every second log.
    assert [e.step for e in acc.Tensors("attribution/occlusion/overlay")] == [0, 2]
    assert [e.step for e in acc.Tensors("attribution/gradcam/overlay")] == [0, 1, 2]
    assert [e.step for e in acc.Tensors("attribution/gradcam/average_drop")] == [0, 2]
    assert all(0 <= d <= 1 for d in content["average_drop"])
    at_1 = tensor_of(acc, "attribution/gradcam/classes", step=1)[0]
    assert at_1[:, :2].tolist() == [[0, -1], [3, 2]] and np.isnan(at_1[:, 2]).all()


def test_grad_cam_is_on_by_default_for_classifiers_only(tmp_path, images):
    # A classifier as the predictions table has it: an (N, K) output out of a softmax.
    with ActivationLogger(small_cnn(), images, tmp_path / "clf", layers=["conv1"]) as logger:
        logger.log(0)
    tags = set(read_run(tmp_path / "clf" / "activations").Tags()["tensors"])
    assert {metadata.attribution_tag("gradcam", s) for s in metadata.ATTRIBUTION_SUFFIXES} <= tags
    conv = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(2, 3, name="c")])
    for model, kwargs in [(conv, {}), (small_cnn(), {"attribution": ()})]:
        with ActivationLogger(model, images, tmp_path / "off", **kwargs) as logger:
            logger.log(0)
        tags = read_run(tmp_path / "off" / "activations").Tags()["tensors"]
        assert not [t for t in tags if t.startswith("attribution/")]


def test_non_finite_maps_are_drawn_and_counted(tmp_path):
    inputs = keras.Input((4, 4, 1))
    a = keras.layers.Conv2D(2, 1, activation="relu", name="conv")(inputs)
    root = keras.layers.Lambda(lambda t: keras.ops.sqrt(t), name="sqrt")(a)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(root))
    model = keras.Model(inputs, out)
    with ActivationLogger(
        model,
        np.zeros((1, 4, 4, 1)),
        tmp_path,
        layers=["conv"],
        attribution=("gradcam",),
        attribution_layer="conv",
        overlay_format="png",
    ) as logger:
        logger.log(0)
    acc = read_run(tmp_path / "activations")
    count = acc.Tensors("attribution/gradcam/nonfinite_count")[0]
    from tensorboard.util import tensor_util

    assert float(tensor_util.make_ndarray(count.tensor_proto)) == 16
    _, _, pngs = images_at(acc, "attribution/gradcam/overlay")
    assert (np.asarray(pngs[0].convert("RGB"))[:, :4] == (255, 0, 255)).all()


@pytest.mark.backends
def test_bad_options_fail_at_construction(tmp_path, images):
    model = small_cnn()
    with pytest.raises(ValueError, match="attribution"):
        ActivationLogger(model, images, tmp_path, attribution=("nope",))
    with pytest.raises(ValueError, match="'gap' has output shape"):
        ActivationLogger(model, images, tmp_path, attribution_layer="gap")
    with pytest.raises(ValueError, match="attribution_every"):
        ActivationLogger(model, images, tmp_path, attribution_every=0)
    conv = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(2, 3)])
    with pytest.raises(ValueError, match="not a score per class"):
        ActivationLogger(conv, images, tmp_path, attribution=("saliency",))
    with pytest.raises(TypeError):
        ActivationCallback(images, tmp_path, attribution_layers="conv1")


def argmax_model():
    """The score depends on an argmax of the conv: no gradient reaches the conv."""
    inputs = keras.Input((16, 16, 3))
    a = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    hard = keras.layers.Lambda(
        lambda t: keras.ops.cast(keras.ops.argmax(t, axis=-1), "float32"), name="hard"
    )(a)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(hard))
    return keras.Model(inputs, out)


def test_callback_fit_traces_once_and_survives_a_failing_method(tmp_path, images):
    model = small_cnn()
    model.compile("sgd", "sparse_categorical_crossentropy")
    x, y = images.astype("float32"), np.array([0, 1, 2])
    cb = ActivationCallback(Probes(images, labels=[0, 1, 2]), tmp_path, layers=["conv3"])
    model.fit(x, y, epochs=3, verbose=0, callbacks=[cb])
    acc = read_run(tmp_path / "activations")
    assert [e.step for e in acc.Tensors("attribution/gradcam/maps")] == [0, 1, 2]
    # Grad-CAM and the average drop's forward pass: one trace each, for all three epochs.
    assert trace_count(model) == 2

    broken = argmax_model()
    broken.compile("sgd", "sparse_categorical_crossentropy")
    cb = ActivationCallback(images, tmp_path / "b", layers=["conv"], attribution=("gradcam",))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        broken.fit(x, np.array([0, 1, 0]), epochs=2, verbose=0, callbacks=[cb])
    assert [w for w in caught if "attribution 'gradcam' failed" in str(w.message)]
    acc = read_run(tmp_path / "b" / "activations")
    assert [e.step for e in acc.Tensors("conv/channel_stats")] == [0, 1]
    assert "attribution/gradcam/maps" not in acc.Tags()["tensors"]


def test_background_logging_draws_and_encodes_attribution_on_the_worker(
    tmp_path, images, monkeypatch
):
    from tb_activations.attribution import step as attribution_step

    threads: dict[str, set] = {"capture": set(), "overlay": set(), "encode": set()}

    def recorded(name, fn):
        def call(*args, **kwargs):
            threads[name].add(threading.current_thread())
            return fn(*args, **kwargs)

        return call

    # Wrapped, not replaced: the real maps are drawn and encoded, and their threads noted.
    capture = attribution_step.AttributionStep.capture
    monkeypatch.setattr(attribution_step.AttributionStep, "capture", recorded("capture", capture))
    monkeypatch.setattr(
        attribution_step, "overlay_pair", recorded("overlay", attribution_step.overlay_pair)
    )
    monkeypatch.setattr(
        attribution_step, "encode_jpeg", recorded("encode", attribution_step.encode_jpeg)
    )
    with ActivationLogger(
        small_cnn(), images, tmp_path, layers=["conv1"], blocking=False
    ) as logger:
        for step in range(2):
            logger.log(step)
    main = threading.main_thread()
    assert threads["capture"] == {main}  # the maps need this step's weights
    assert threads["overlay"] and main not in threads["overlay"]
    assert threads["encode"] and main not in threads["encode"]
    acc = read_run(tmp_path / "activations")
    assert [e.step for e in acc.Tensors("attribution/gradcam/overlay")] == [0, 1]


@pytest.mark.parametrize("blocking", [True, False])
def test_grad_cam_at_a_layer_not_logged_reuses_the_extraction_pass(tmp_path, images, blocking):
    from tb_activations.attribution._target import target_of

    model = small_cnn()
    with ActivationLogger(
        model,
        images,
        tmp_path,
        layers=["conv1"],
        attribution=("gradcam",),
        attribution_layer="conv3",
        blocking=blocking,
    ) as logger:
        logger.log(0)
        # conv3 is an extra output of the one compiled pass, not a logged layer.
        assert [i.path for i in logger.extractor.extra_layers] == ["conv3"]
        assert [i.path for i in logger.layers] == ["conv1"]
    # The logger ran only the layers after conv3 (the head), from the extracted output.
    assert set(target_of(model)._compiled) >= {("gradcam_given", "conv3")}
    assert ("gradcam", "conv3") not in target_of(model)._compiled
    acc = read_run(tmp_path / "activations")
    tags = set(acc.Tags()["tensors"])
    assert not [t for t in tags if t.startswith("conv3/")]
    assert "conv1/mosaic" in tags
    # Known answer: the maps of grad_cam's own full pass at conv3.
    maps, content = tensor_of(acc, "attribution/gradcam/maps")
    assert content["layer"] == "conv3"
    pred = [c[0] for c in content["classes"]]
    np.testing.assert_allclose(
        maps[:, 0], grad_cam(model, images.astype("float32"), pred, "conv3"), rtol=1e-5, atol=1e-7
    )


def test_a_method_failing_on_the_worker_warns_and_the_step_is_written(
    tmp_path, images, monkeypatch
):
    from tb_activations.attribution import step as attribution_step

    def broken(*args, **kwargs):
        raise RuntimeError("cannot draw")

    monkeypatch.setattr(attribution_step, "overlay_pair", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ActivationLogger(
            small_cnn(), images, tmp_path, layers=["conv1"], blocking=False
        ) as logger:
            logger.log(0)
            logger.flush()  # no error: the step is written without the method
            logger.log(1)
    said = [str(w.message) for w in caught if "attribution 'gradcam' failed" in str(w.message)]
    assert len(said) == 2 and "at step 0" in said[0] and "cannot draw" in said[0]
    assert logger._attribution.failures == 2
    acc = read_run(tmp_path / "activations")
    assert [e.step for e in acc.Tensors("conv1/channel_stats")] == [0, 1]
    assert [e.step for e in acc.Tensors("conv1/mosaic")] == [0, 1]
    assert not [t for t in acc.Tags()["tensors"] if t.startswith("attribution/")]
