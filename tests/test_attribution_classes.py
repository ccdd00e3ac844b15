"""``attribution_classes=``: maps of chosen classes, written per step, read back with TensorBoard."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tb_activations import ActivationCallback, ActivationLogger, Probes, metadata
from tb_activations.attribution import grad_cam, trace_count
from tests.conftest import read_run, small_cnn
from tests.test_attribution import quadrant_model
from tests.test_attribution_step import quadrant_probes, tensor_of

NAMES = ["nw", "ne", "sw", "se"]


def wide_model():
    """A conv keeping a 128 x 96 map (pooled to 64 x 48 when stored), GAP, 3 classes."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((128, 96, 1))
    a = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv")(inputs)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(a))
    return keras.Model(inputs, out)


def pooled(maps, f):
    n, h, w = maps.shape
    return maps.reshape(n, h // f, f, w // f, f).mean(axis=(2, 4))


def test_chosen_classes_are_written_per_step_as_grad_cam_of_that_class(tmp_path):
    model = wide_model()
    x = np.random.default_rng(0).uniform(0, 1, (3, 128, 96, 1)).astype(np.float32)
    with ActivationLogger(
        model,
        x,
        tmp_path,
        layers=["conv"],  # extracted: Grad-CAM takes its output from the extraction pass
        attribution=("gradcam",),
        attribution_classes=[2, "a", 2],
        attribution_top_k=3,  # and the runners-up: ranks 2 and 3 of each probe
        class_names=["a", "b", "c"],
    ) as logger:
        logger.log(0)
        traced = trace_count(model)
        logger.log(1)
        # The chosen classes ride in the same compiled pass: nothing traced again
        # (eager PyTorch traces nothing: it counts calls).
        assert trace_count(model) == traced or keras.backend.backend() == "torch"
    acc = read_run(tmp_path / "activations")
    assert [e.step for e in acc.Tensors("attribution/gradcam/class_maps")] == [0, 1]
    maps, content = tensor_of(acc, "attribution/gradcam/class_maps")
    assert content["kind"] == "attribution_classes" and content["classes"] == [2, 0]
    assert content["ranks"] == [2, 3]
    assert content["layer"] == "conv" and content["colormap"] == "magma"
    assert content["alpha"] == 0.5 and content["class_names"] == ["a", "b", "c"]
    assert maps.shape == (3, 4, 64, 48)
    probs = keras.ops.convert_to_numpy(model(x))
    order = np.argsort(-probs, axis=1)
    columns = [np.full(3, 2), np.full(3, 0), order[:, 1], order[:, 2]]
    for j, c in enumerate(columns):
        want = pooled(grad_cam(model, x, c, "conv"), 2)
        np.testing.assert_allclose(maps[:, j], want, rtol=1e-4, atol=1e-6)
    scores, _ = tensor_of(acc, "attribution/gradcam/class_scores")
    assert scores.shape == (3, 4, 2)
    np.testing.assert_array_equal(scores[:, :, 0], np.stack(columns, axis=1))
    np.testing.assert_allclose(
        scores[:, :, 1], np.take_along_axis(probs, np.stack(columns, axis=1), 1), rtol=1e-4
    )
    # The predicted class's map is written as before.
    assert "attribution/gradcam/overlay" in acc.Tags()["tensors"]
    # Without the model output at hand (predictions=False), one forward pass ranks them.
    from tb_activations.attribution.step import AttributionStep

    step = AttributionStep(model, Probes(x), ("gradcam",), layer="conv", top_k=2)
    alone, given = step.compute("gradcam"), step.compute("gradcam", probs)
    np.testing.assert_array_equal(alone.class_ids, order[:, 1:2])
    np.testing.assert_array_equal(given.class_ids, order[:, 1:2])
    np.testing.assert_allclose(alone.class_maps, given.class_maps, rtol=1e-5)


def test_chosen_classes_with_labels_and_every_method_in_one_batch(tmp_path):
    # The quadrant model: class k's evidence is quadrant k. Probe 1 is labelled 2 and
    # predicted 3 (so its label map is in the same batch as the chosen classes).
    model = quadrant_model()
    probes = quadrant_probes()
    with ActivationLogger(
        model,
        probes,
        tmp_path,
        layers=["conv"],  # "mask" is not extracted: Grad-CAM runs the whole model
        attribution=("gradcam", "saliency"),
        attribution_layer="mask",
        attribution_classes=["ne", 0],
        class_names=NAMES,
    ) as logger:
        logger.log(0)
    acc = read_run(tmp_path / "activations")
    x = probes.inputs
    stored, content = tensor_of(acc, "attribution/gradcam/maps")
    assert content["classes"] == [[0, -1], [3, 2]]  # the label map is still written
    np.testing.assert_allclose(stored[1, 1], grad_cam(model, x[1:], 2, "mask")[0], rtol=1e-5)
    class_maps, content = tensor_of(acc, "attribution/gradcam/class_maps")
    assert content["classes"] == [1, 0]
    for j, c in enumerate([1, 0]):
        np.testing.assert_allclose(class_maps[:, j], grad_cam(model, x, [c, c], "mask"), rtol=1e-5)
    saliency_maps, content = tensor_of(acc, "attribution/saliency/class_maps")
    assert saliency_maps.shape == (2, 2, 8, 8) and content["layer"] is None
    # Saliency of class 1 ("ne") lies in quadrant 1 (rows 0-3, columns 4-7) for both probes.
    ne = np.abs(saliency_maps[:, 0])
    assert (ne[:, :4, 4:].sum(axis=(1, 2)) > 0.99 * ne.sum(axis=(1, 2))).all()


def test_bad_classes_fail_at_construction_naming_the_value(tmp_path):
    model = quadrant_model()
    probes = quadrant_probes()

    def build(**kwargs):
        return ActivationLogger(model, probes, tmp_path, layers=["conv"], **kwargs)

    with pytest.raises(ValueError, match=r"in \[0, 3\].*bad value: 4"):
        build(attribution_classes=[1, 4])
    with pytest.raises(ValueError, match=r"'nw', 'ne', 'sw', 'se'.*bad value: 'north'"):
        build(attribution_classes=["north"], class_names=NAMES)
    with pytest.raises(ValueError, match=r"names need `class_names=`.*bad value: 'ne'"):
        build(attribution_classes=["ne"])
    with pytest.raises(ValueError, match="bad value: True"):
        build(attribution_classes=[True])
    with pytest.raises(ValueError, match="bad value: -1"):
        build(attribution_classes=-1)
    with pytest.raises(
        ValueError, match=r"attribution_top_k.*\[1, 4\].*Received: attribution_top_k=5"
    ):
        build(attribution_top_k=5)
    with pytest.raises(ValueError, match="attribution_top_k=0"):
        build(attribution_top_k=0)
    with pytest.raises(ValueError, match="no attribution method is on"):
        build(attribution=(), attribution_classes=[1])
    # The callback checks what it can before the model is known: types and names.
    with pytest.raises(ValueError, match="bad value: 'north'"):
        ActivationCallback(probes, tmp_path, attribution_classes=["north"], class_names=NAMES)
    with pytest.raises(ValueError, match="bad value: 2.5"):
        ActivationCallback(probes, tmp_path, attribution_classes=[2.5])


def test_callback_writes_the_chosen_classes_each_epoch(tmp_path, images):
    model = small_cnn()
    model.compile("sgd", "sparse_categorical_crossentropy")
    cb = ActivationCallback(
        Probes(images, labels=[0, 1, 2]),
        tmp_path,
        layers=["conv3"],
        attribution_classes=["two"],
        class_names=["zero", "one", "two"],
    )
    model.fit(images.astype("float32"), np.array([0, 1, 2]), epochs=2, verbose=0, callbacks=[cb])
    acc = read_run(tmp_path / "activations")
    assert [e.step for e in acc.Tensors("attribution/gradcam/class_maps")] == [0, 1]
    scores, content = tensor_of(acc, "attribution/gradcam/class_scores")
    assert content["classes"] == [2] and (scores[:, 0, 0] == 2).all()
    assert set(metadata.ATTRIBUTION_CLASS_SUFFIXES) == {"class_maps", "class_scores"}


# -- the plugin: /attribution and /attribution_map over the event files -------------------


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    from tests.test_activations_plugin import make_provider

    log_dir = str(tmp_path_factory.mktemp("logs"))
    model = quadrant_model()
    probes = quadrant_probes()
    with ActivationLogger(
        model,
        probes,
        log_dir,
        layers=["conv"],
        attribution=("gradcam",),
        attribution_layer="mask",
        attribution_classes=["ne", 0],
        attribution_top_k=2,
        class_names=NAMES,
    ) as logger:
        for step in (0, 5):
            logger.log(step)
    with ActivationLogger(model, probes, log_dir, run_name="plain", layers=["conv"]) as logger:
        logger.log(0)  # Grad-CAM by default, no chosen classes
    provider, _ = make_provider(log_dir)
    return {"dir": log_dir, "provider": provider, "model": model, "x": probes.inputs}


def test_attribution_answer_lists_the_chosen_classes(logged):
    from tb_activations import plugin_data
    from tests.test_activations_plugin import CTX

    answer = plugin_data.attribution(logged["provider"], CTX, experiment_id="", run="activations")
    cam = answer["methods"][0]
    assert cam["chosen"] == {
        "classes": [1, 0],
        "ranks": [2],
        "colormap": "magma",
        "alpha": 0.5,
        "maps": "attribution/gradcam/class_maps",
    }
    probs = keras.ops.convert_to_numpy(logged["model"](logged["x"]))
    second = np.argsort(-probs, axis=1, kind="stable")[:, 1]
    for entry in cam["steps"]:
        assert entry["chosen"]["classes"] == [[1, 0, c] for c in second]
        np.testing.assert_allclose(
            np.asarray(entry["chosen"]["probabilities"])[:, :2], probs[:, [1, 0]], rtol=1e-4
        )
    plain = plugin_data.attribution(logged["provider"], CTX, experiment_id="", run="plain")
    assert plain["methods"][0]["chosen"] is None
    assert plain["methods"][0]["steps"][0]["chosen"] is None


def test_attribution_map_route_finds_any_logged_class(logged):
    from tests.test_activations_plugin import ROUTE, make_client

    client = make_client(logged["provider"], logged["dir"])
    model, x = logged["model"], logged["x"]

    def get(probe, cls, steps="0,5", run="activations", method="gradcam"):
        return client.get(
            f"{ROUTE}/attribution_map?run={run}&method={method}&probe={probe}&class={cls}"
            f"&steps={steps}"
        )

    for cls in ("ne", "1"):  # a chosen class, by name and by index
        answer = get(0, cls).json
        assert answer["class"] == 1 and answer["logged"] is True
        assert [s["source"] for s in answer["steps"]] == ["chosen", "chosen"]
        np.testing.assert_allclose(
            answer["steps"][1]["map"], grad_cam(model, x[:1], 1, "mask")[0], rtol=1e-5
        )
    assert answer["colormap"] == "magma" and answer["alpha"] == 0.5
    assert len(answer["colors"]) == 256 and answer["colors"][answer["nan_index"]] == [255, 0, 255]
    # Probe b: predicted se (3), labelled sw (2); neither is a chosen class.
    answer = get(1, "predicted").json
    assert answer["class"] is None and answer["steps"][0]["class"] == 3
    assert answer["steps"][0]["source"] == "predicted"
    label = get(1, "label").json
    assert label["class"] == 2 and label["steps"][0]["source"] == "label"
    np.testing.assert_allclose(
        label["steps"][0]["map"], grad_cam(model, x[1:], 2, "mask")[0], rtol=1e-5
    )
    assert get(1, "se").json["steps"][0]["source"] == "predicted"
    # Class sw on probe a: not logged at all; a step that was not logged: no map.
    absent = get(0, "sw", steps="0,3").json
    assert absent["logged"] is False
    assert [(s["source"], s["map"]) for s in absent["steps"]] == [(None, None), (None, None)]
    bad = get(0, "north")
    assert bad.status_code == 400 and "'nw', 'ne', 'sw', 'se'" in bad.get_data(as_text=True)
    assert get(0, "1", method="nope").status_code == 400
    assert get(0, "1", steps="x").status_code == 400
    assert get(0, "1", steps=",".join(["0"] * 65)).status_code == 400
    assert get(7, "1").status_code == 404
    assert get(0, "1", run="nope").status_code == 404
    assert get(0, "1", method="saliency").status_code == 404
    # The 2nd highest score of each probe, whatever its class.
    for probe in (0, 1):
        ranked = get(probe, "rank2").json
        assert ranked["rank"] == 2 and ranked["logged"] is True and ranked["class"] is None
        c = ranked["steps"][1]["class"]
        predicted = get(probe, "predicted").json["steps"][1]["class"]
        assert ranked["steps"][1]["source"] == "rank" and c != predicted
        np.testing.assert_allclose(
            ranked["steps"][1]["map"], grad_cam(model, x[probe:][:1], c, "mask")[0], rtol=1e-5
        )
    assert get(0, "rank3").json["steps"][0]["map"] is None
    assert get(0, "rank1").json["rank"] == 1
    # The probes of the plain run have labels; its maps come from the predicted/label rows.
    assert get(1, "label", run="plain").json["steps"][0]["source"] == "label"


def test_cli_log_writes_the_chosen_classes(tmp_path, capsys):
    from tb_activations.cli import main
    from tests.test_cli import smooth_image

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, name="logits"),  # logits: attribution is named
        ]
    )
    model.save(tmp_path / "m.keras")
    from PIL import Image

    Image.fromarray(smooth_image(16, 16, 0)).save(tmp_path / "cat.png")
    args = ["log", str(tmp_path / "m.keras"), str(tmp_path / "cat.png"), "-q", "--layers", "conv"]
    args += ["--preprocess", "unit", "--log-dir", str(tmp_path / "logs"), "--attribution"]
    assert main([*args, "gradcam", "--attribution-class", "2", "--attribution-class", "0"]) == 0
    acc = read_run(tmp_path / "logs" / "activations")
    maps, content = tensor_of(acc, "attribution/gradcam/class_maps")
    assert content["classes"] == [2, 0] and maps.shape == (1, 2, 16, 16)
    assert main([*args, "gradcam", "--attribution-class", "3", "--run-name", "bad"]) == 2
    assert "--attribution-class" in capsys.readouterr().err
    assert main([*args, "none", "--attribution-class", "1", "--run-name", "off"]) == 2
    assert "no attribution method is on" in capsys.readouterr().err
    assert main([*args, "gradcam", "--attribution-top-k", "9", "--run-name", "k"]) == 2
    assert "--attribution-top-k" in capsys.readouterr().err
