"""Tests of the Activations plugin: pure functions and HTTP routes.

Event files are written by the real :class:`~tb_activations.ActivationLogger`
on a tiny Keras model, then read back through TensorBoard's own
``EventMultiplexer`` -> ``MultiplexerDataProvider`` -> ``TensorBoardWSGI``
stack and ``werkzeug.test.Client`` (the pattern of TensorBoard's
``images_plugin_test.py``).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from tensorboard import context as tb_context
from tensorboard import errors
from tensorboard.backend import application
from tensorboard.backend.event_processing import data_provider as tb_data_provider
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from werkzeug import test as werkzeug_test

from tb_activations import metadata, plugin_data
from tb_activations.activations_plugin import ActivationsPlugin

ROUTE = "/data/plugin/activations"
RUN = metadata.DEFAULT_RUN_NAME
STEPS = [0, 10, 20, 30]
PROBE_NAMES = ["cat", "<b>dog</b>", "car"]
HOSTILE_RUN = "<img src=y onerror=alert(2)>"
HOSTILE_LAYER = "<img src=x onerror=alert(1)>"
HOSTILE_PROBE = "<script>alert(3)</script>"
SYNTHETIC_RUN = "synthetic"
DEAD_CHANNEL = 5
CTX = tb_context.RequestContext()
KEEP_ALL = {"images": 0, "scalars": 0, metadata.PLUGIN_NAME: 0}


def tiny_model():
    """Two convs on 16x16x3; channel 5 of ``conv_b`` is dead (zero kernel, bias -1, relu)."""
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a")(inputs)
    x = keras.layers.MaxPooling2D(name="pool_a")(x)
    conv_b = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_b")
    x = conv_b(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    kernel, bias = conv_b.get_weights()
    kernel[..., DEAD_CHANNEL] = 0.0
    bias[DEAD_CHANNEL] = -1.0
    conv_b.set_weights([kernel, bias])
    return model


def write_logdir(log_dir: str) -> dict:
    """Writes run ``activations`` (4 steps), a run with hostile run and probe
    names (2 steps), and run ``synthetic`` with a hostile layer name.

    Keras (through TensorFlow's name scopes) refuses ``<`` in layer names, so
    the hostile layer is written with :mod:`tb_activations.summary` directly.

    Returns:
        ``{step: {layer: float32 (N, C, 4) stats}}`` as the logger computed them.
    """
    from tb_activations import ActivationLogger, Probes

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 16, 16, 3), dtype=np.uint8)
    model = tiny_model()
    conv_a = model.get_layer("conv_a")
    written = {}
    with ActivationLogger(
        model, Probes(images, names=PROBE_NAMES), log_dir, top_k=3, predictions=True
    ) as logger:
        for step in STEPS:
            records = logger.log(step)
            written[step] = {path: r.stats.stacked() for path, r in records.items()}
            kernel, bias = conv_a.get_weights()
            conv_a.set_weights([kernel * 1.5, bias + 0.05])  # the maps change over "training"
    hostile_probes = Probes(images, names=[HOSTILE_PROBE, "b", "c"])
    with ActivationLogger(
        tiny_model(), hostile_probes, log_dir, run_name=HOSTILE_RUN, layers=["conv_b"]
    ) as logger:
        logger.log(0)
        logger.log(1)
    write_large_run(
        os.path.join(log_dir, SYNTHETIC_RUN), steps=2, layers=1, probes=2, prefix=HOSTILE_LAYER
    )
    return written


def make_provider(log_dir: str, tensor_size_guidance: dict | None = None):
    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        size_guidance={"tensors": 0, "scalars": 0},
        tensor_size_guidance=KEEP_ALL if tensor_size_guidance is None else tensor_size_guidance,
    )
    multiplexer.AddRunsFromDirectory(log_dir)
    multiplexer.Reload()
    return tb_data_provider.MultiplexerDataProvider(multiplexer, log_dir), multiplexer


def make_client(provider, log_dir: str) -> werkzeug_test.Client:
    context = base_plugin.TBContext(data_provider=provider, logdir=log_dir)
    app = application.TensorBoardWSGI([ActivationsPlugin(context)], data_provider=provider)
    return werkzeug_test.Client(app)


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    log_dir = str(tmp_path_factory.mktemp("logs"))
    written = write_logdir(log_dir)
    provider, multiplexer = make_provider(log_dir)
    return {"dir": log_dir, "written": written, "provider": provider, "multiplexer": multiplexer}


@pytest.fixture(scope="module")
def client(logged):
    return make_client(logged["provider"], logged["dir"])


def call(function, logged, **kwargs):
    return function(logged["provider"], CTX, experiment_id="", **kwargs)


# ---------------------------------------------------------------------------
# Pure functions


def test_list_runs_names_runs_with_activation_data(logged):
    answer = call(plugin_data.list_runs, logged)
    assert answer["runs"] == [
        {"run": HOSTILE_RUN, "layers": 1, "max_step": 1},
        {"run": RUN, "layers": 3, "max_step": 30},
        {"run": SYNTHETIC_RUN, "layers": 1, "max_step": 1},
    ]
    assert answer["skipped"] == []


def test_list_layers_in_model_order_with_shapes_probes_and_steps(logged):
    answer = call(plugin_data.list_layers, logged, run=RUN)
    layers = answer["layers"]
    assert [(lay["layer"], lay["index"], lay["class_name"], lay["shape"]) for lay in layers] == [
        ("conv_a", 0, "Conv2D", [16, 16, 4]),
        ("pool_a", 1, "MaxPooling2D", [8, 8, 4]),
        ("conv_b", 2, "Conv2D", [8, 8, 6]),
    ]
    for lay in layers:
        assert lay["probes"] == PROBE_NAMES
        assert lay["max_step"] == STEPS[-1]
        steps = call(plugin_data.layer_steps, logged, run=RUN, layer=lay["layer"])
        assert steps["steps"] == STEPS and steps["logged_steps"] == STEPS
        assert steps["sampling"] is None
        assert lay["views"] == {v: f"{lay['layer']}/{v}" for v in metadata.VIEWS}
        grid = lay["grid"]
        assert grid["cols"] * grid["rows"] >= lay["shape"][2]
        assert lay["top_k"] == 3
    assert answer["steps"] == STEPS
    assert answer["sampling"] is None
    assert answer["probe_images"] == {"tag": "_tb_activations/probes", "steps": [0]}


def test_list_layers_without_mosaic_takes_steps_from_another_view(tmp_path):
    from tb_activations import ActivationLogger

    images = np.random.default_rng(0).integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8)
    with ActivationLogger(tiny_model(), images, str(tmp_path), views=["topk"]) as logger:
        logger.log(3)
        logger.log(7)
    provider, _ = make_provider(str(tmp_path))
    answer = plugin_data.list_layers(provider, CTX, experiment_id="", run=RUN)
    for lay in answer["layers"]:
        assert lay["views"] == {"topk": f"{lay['layer']}/topk"}
        steps = plugin_data.layer_steps(
            provider, CTX, experiment_id="", run=RUN, layer=lay["layer"]
        )
        assert steps["steps"] == [3, 7]
    assert answer["steps"] == [3, 7]
    assert answer["sampling"] is None


def test_list_layers_unknown_run_is_not_found(logged):
    with pytest.raises(errors.NotFoundError, match="nope"):
        call(plugin_data.list_layers, logged, run="nope")


def test_list_layers_reports_sampling_and_names_the_flag(logged):
    # TensorBoard's default keeps 10 images per tag; keep 2 of the 4 steps here.
    provider, _ = make_provider(logged["dir"], {"images": 2, "scalars": 0, metadata.PLUGIN_NAME: 0})
    answer = plugin_data.list_layers(provider, CTX, experiment_id="", run=RUN)
    assert len(answer["steps"]) == 2 and answer["steps"][-1] == 30
    assert answer["logged_steps"] == STEPS
    sampling = answer["sampling"]
    assert sampling["kept"] == 2 and sampling["logged"] == 4
    assert sampling["flag"] == metadata.SAMPLING_FLAG
    assert sampling["flag"] in sampling["message"]
    steps = plugin_data.layer_steps(provider, CTX, experiment_id="", run=RUN, layer="conv_b")
    assert steps["steps"] == answer["steps"] and steps["logged_steps"] == STEPS
    assert steps["sampling"]["kept"] == 2 and steps["sampling"]["logged"] == 4


def test_layer_stats_are_the_logged_statistics(logged):
    for step in STEPS:
        for layer in ("conv_a", "pool_a", "conv_b"):
            answer = call(plugin_data.layer_stats, logged, run=RUN, layer=layer, step=step)
            expected = logged["written"][step][layer]
            np.testing.assert_array_equal(np.array(answer["stats"], np.float32), expected)
            assert answer["fields"] == ["mean", "max", "min", "std"]
            assert answer["channels"] == expected.shape[1]
            assert answer["stats_steps"] == STEPS


def test_layer_stats_marks_dead_channels(logged):
    answer = call(plugin_data.layer_stats, logged, run=RUN, layer="conv_b", step=20)
    assert answer["dead"] == [c == DEAD_CHANNEL for c in range(6)]
    assert all(row[DEAD_CHANNEL] == [0.0, 0.0, 0.0, 0.0] for row in answer["stats"])


@pytest.mark.parametrize(
    "kwargs", [{"layer": "conv_b", "step": 5}, {"layer": "nope", "step": 0}], ids=["step", "layer"]
)
def test_layer_stats_unknown_is_not_found(logged, kwargs):
    with pytest.raises(errors.NotFoundError):
        call(plugin_data.layer_stats, logged, run=RUN, **kwargs)


def test_image_bytes_are_the_stored_pngs(logged):
    from tensorboard.util import tensor_util

    events = logged["multiplexer"].Tensors(RUN, "conv_b/mosaic")
    stored = tensor_util.make_ndarray(next(e for e in events if e.step == 20).tensor_proto)
    for index in range(3):
        body = call(
            plugin_data.image_bytes, logged, run=RUN, tag="conv_b/mosaic", step=20, index=index
        )
        assert body == stored[index + 2]  # no re-encoding
        assert body.startswith(b"\x89PNG\r\n\x1a\n")


def test_image_size_matches_grid(logged):
    from PIL import Image

    layer = call(plugin_data.list_layers, logged, run=RUN)["layers"][2]
    grid = layer["grid"]
    body = call(plugin_data.image_bytes, logged, run=RUN, tag="conv_b/mosaic", step=0, index=1)
    width, height = Image.open(io.BytesIO(body)).size
    assert width == grid["cols"] * (grid["cell_w"] + grid["sep"]) - grid["sep"]
    assert height == grid["rows"] * (grid["cell_h"] + grid["sep"]) - grid["sep"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tag": "conv_b/mosaic", "step": 5, "index": 0},
        {"tag": "conv_b/mosaic", "step": 0, "index": 3},
        {"tag": "nope/mosaic", "step": 0, "index": 0},
    ],
    ids=["step", "index", "tag"],
)
def test_image_bytes_unknown_is_not_found(logged, kwargs):
    with pytest.raises(errors.NotFoundError):
        call(plugin_data.image_bytes, logged, run=RUN, **kwargs)


def test_layer_scalars_of_the_logger_with_drift(logged):
    answer = call(plugin_data.layer_scalars, logged, run=RUN, layer="conv_b")
    series = {s["name"]: s["points"] for s in answer["series"]}
    names = [s["name"] for s in answer["series"]]
    # Display order: drift first, then the core measures; whatever the logger wrote.
    known = [n for n in plugin_data.KNOWN_LAYER_SCALARS if n in series]
    assert names[: len(known)] == known
    assert {"dead_fraction", "mean_activation", "nonfinite_count"} <= set(names)
    assert series["dead_fraction"] == [[s, pytest.approx(1 / 6)] for s in STEPS]
    assert series["cka_first"][0] == [0, pytest.approx(1.0)]
    assert [s for s, _ in series["cka_previous"]] == STEPS[1:]


def test_predictions_per_step_and_probe(logged):
    answer = call(plugin_data.predictions, logged, run=RUN)
    assert answer["probes"] == PROBE_NAMES
    assert answer["num_classes"] == 3
    assert answer["fields"] == list(metadata.PREDICTION_FIELDS)
    assert [s["step"] for s in answer["steps"]] == STEPS
    for entry in answer["steps"]:
        assert len(entry["rows"]) == 3
        for predicted, confidence, label, label_probability in entry["rows"]:
            assert predicted in (0.0, 1.0, 2.0)
            assert 1 / 3 <= confidence <= 1.0
            assert label == -1.0 and label_probability is None  # the probes have no labels
    with pytest.raises(errors.NotFoundError):
        call(plugin_data.predictions, logged, run="nope")


def test_layer_scalars_show_drift_once_written_and_only_direct_children(tmp_path):
    from tb_activations import summary

    # The drift feature's scalars, written in the layout the logger will use,
    # plus a nested layer "a/b" that must not leak into layer "a".
    writer = summary.SummaryWriter(str(tmp_path / RUN))
    for step in range(3):
        writer.write(
            step,
            [
                summary.scalar_value("a/dead_fraction", 0.25),
                summary.scalar_value("a/cka_previous", 0.9),
                summary.scalar_value("a/cka_first", 1.0 - 0.1 * step),
                summary.scalar_value("a/b/dead_fraction", 0.5),
            ],
        )
    writer.close()
    provider, _ = make_provider(str(tmp_path))
    answer = plugin_data.layer_scalars(provider, CTX, experiment_id="", run=RUN, layer="a")
    assert [s["name"] for s in answer["series"]] == ["cka_first", "cka_previous", "dead_fraction"]
    assert answer["series"][0]["points"] == [
        [0, 1.0],
        [1, pytest.approx(0.9)],
        [2, pytest.approx(0.8)],
    ]
    nested = plugin_data.layer_scalars(provider, CTX, experiment_id="", run=RUN, layer="a/b")
    assert [s["name"] for s in nested["series"]] == ["dead_fraction"]


def test_static_file_serves_the_dashboard():
    body, content_type = plugin_data.static_file("index.js")
    assert content_type == "text/javascript"
    assert b"export async function render" in body
    assert plugin_data.static_file("style.css")[1] == "text/css"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../plugin_data.py",
        "..%2fplugin_data.py",
        "static/../index.js",
        "/etc/passwd",
        "..\\index.js",
        ".hidden.js",
        "plugin_data.py",
        "missing.js",
        "a" * 200 + ".js",
    ],
)
def test_static_file_refuses_anything_else(name):
    with pytest.raises(errors.NotFoundError):
        plugin_data.static_file(name)


def test_static_file_refuses_a_symlink_out_of_the_folder(tmp_path):
    outside = tmp_path / "secret.js"
    outside.write_text("secret")
    static = tmp_path / "static"
    static.mkdir()
    (static / "link.js").symlink_to(outside)
    with pytest.raises(errors.NotFoundError):
        plugin_data.static_file("link.js", static_dir=str(static))


@pytest.mark.parametrize("raw", ["x", "1.5", "", "1e3", "0x10", " 1", "9" * 30, "-1"])
def test_require_int_rejects_bad_values(raw):
    with pytest.raises(errors.InvalidArgumentError, match="step"):
        plugin_data.require_int({"step": raw}, "step")


# ---------------------------------------------------------------------------
# Routes


def get(client, path):
    return client.get(ROUTE + path)


def test_routes_answer_json(client, logged):
    runs = get(client, "/runs")
    assert runs.status_code == 200 and runs.mimetype == "application/json"
    assert [r["run"] for r in runs.json["runs"]] == [HOSTILE_RUN, RUN, SYNTHETIC_RUN]

    layers = get(client, f"/layers?run={RUN}").json
    assert [lay["layer"] for lay in layers["layers"]] == ["conv_a", "pool_a", "conv_b"]

    stats = get(client, f"/stats?run={RUN}&layer=conv_b&step=10")
    assert stats.status_code == 200
    np.testing.assert_array_equal(
        np.array(stats.json["stats"], np.float32), logged["written"][10]["conv_b"]
    )

    scalars = get(client, f"/scalars?run={RUN}&layer=conv_a").json
    assert scalars["series"][0]["name"] == "cka_first"

    predictions = get(client, f"/predictions?run={RUN}")
    assert predictions.status_code == 200
    assert [s["step"] for s in predictions.json["steps"]] == STEPS


def test_image_route_serves_stored_png(client, logged):
    response = get(client, f"/image?run={RUN}&tag=conv_a/topk&step=30&index=2")
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    direct = call(plugin_data.image_bytes, logged, run=RUN, tag="conv_a/topk", step=30, index=2)
    assert response.data == direct


def test_image_route_serves_jpeg_overlays_and_probe_pngs_with_their_type(client):
    overlay = get(client, f"/image?run={RUN}&tag=conv_a/overlay&step=30&index=0")
    assert overlay.status_code == 200 and overlay.mimetype == "image/jpeg"
    assert overlay.data[:2] == b"\xff\xd8"
    probe = get(client, f"/image?run={RUN}&tag=_tb_activations/probes&step=0&index=0")
    assert probe.status_code == 200 and probe.mimetype == "image/png"


def test_static_routes(client):
    index = get(client, "/index.js")
    assert index.status_code == 200 and index.mimetype == "text/javascript"
    names = sorted(os.listdir(plugin_data.STATIC_DIR))
    assert {"api.js", "dashboard.js", "mosaic.js", "channel.js", "style.css"} <= set(names)
    for name in names:
        assert get(client, f"/static/{name}").status_code == 200, name


@pytest.mark.parametrize(
    "path",
    [
        "/layers",
        "/layers?run=",
        f"/stats?run={RUN}&layer=conv_b",
        f"/stats?run={RUN}&layer=conv_b&step=abc",
        f"/stats?run={RUN}&layer=conv_b&step=-1",
        f"/stats?run={RUN}&step=0",
        f"/image?run={RUN}&tag=conv_b/mosaic&step=0",
        f"/image?run={RUN}&tag=conv_b/mosaic&step=0&index=<b>",
        "/image?tag=conv_b/mosaic&step=0&index=0",
        f"/scalars?run={RUN}",
        "/predictions",
    ],
)
def test_bad_or_missing_parameters_are_400(client, path):
    response = get(client, path)
    assert response.status_code == 400, response.data
    assert response.mimetype == "text/plain"
    assert b"parameter" in response.data


@pytest.mark.parametrize(
    "path",
    [
        "/layers?run=nope",
        "/layers?run=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        f"/stats?run={RUN}&layer=nope&step=0",
        f"/stats?run={RUN}&layer=conv_b&step=999",
        "/stats?run=nope&layer=conv_b&step=0",
        f"/image?run={RUN}&tag=conv_b/mosaic&step=999&index=0",
        f"/image?run={RUN}&tag=conv_b/mosaic&step=0&index=99",
        f"/image?run={RUN}&tag=conv_b/nope&step=0&index=0",
        "/image?run=nope&tag=conv_b/mosaic&step=0&index=0",
        "/scalars?run=nope&layer=conv_b",
        "/predictions?run=nope",
        "/static/../plugin_data.py",
        "/static/..%2fplugin_data.py",
        "/static/..%2f..%2fsetup.cfg",
        "/static/%2e%2e/activations_plugin.py",
        "/static/",
        "/static/sub/index.js",
    ],
)
def test_unknown_things_are_404_never_500(client, path):
    response = get(client, path)
    assert response.status_code == 404, (path, response.status_code, response.data)
    assert response.mimetype == "text/plain"


def test_hostile_names_travel_as_data(client):
    from urllib.parse import quote

    layers = get(client, f"/layers?run={quote(HOSTILE_RUN)}")
    assert layers.status_code == 200 and layers.mimetype == "application/json"
    assert layers.json["layers"][0]["probes"][0] == HOSTILE_PROBE
    synthetic = get(client, f"/layers?run={SYNTHETIC_RUN}").json
    (layer,) = synthetic["layers"]
    assert layer["layer"] == HOSTILE_LAYER + "0"
    tag = layer["views"]["mosaic"]
    assert tag == HOSTILE_LAYER + "0/mosaic"
    image = get(client, f"/image?run={SYNTHETIC_RUN}&tag={quote(tag)}&step=1&index=0")
    assert image.status_code == 200 and image.mimetype == "image/png"
    stats = get(client, f"/stats?run={SYNTHETIC_RUN}&layer={quote(layer['layer'])}&step=0")
    assert stats.status_code == 200
    # Error messages echo names only as text/plain, never as HTML.
    missing = get(client, f"/layers?run={quote('<b>x</b>')}")
    assert missing.status_code == 404 and missing.mimetype == "text/plain"


def test_plugin_is_listed_with_its_module(client):
    listing = client.get("/data/plugins_listing").json
    entry = listing["activations"]
    assert entry["enabled"] is True
    assert entry["tab_name"] == "Activations"
    assert entry["loading_mechanism"] == {
        "type": "IFRAME",
        "module_path": "/data/plugin/activations/index.js",
    }


def test_tab_disabled_without_activation_data(tmp_path):
    provider, _ = make_provider(str(tmp_path))
    empty = make_client(provider, str(tmp_path))
    assert empty.get("/data/plugins_listing").json["activations"]["enabled"] is False
    assert get(empty, "/runs").json == {"runs": [], "skipped": []}


def test_importing_the_plugin_imports_neither_tensorflow_nor_keras():
    code = (
        "import sys, json\n"
        "import tb_activations.activations_plugin\n"
        "print(json.dumps([m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules]))\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


# ---------------------------------------------------------------------------
# Performance: 50 steps x 20 layers x 8 probes


def _tiny_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((35, 35, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_large_run(
    run_dir: str,
    *,
    steps: int = 50,
    layers: int = 20,
    probes: int = 8,
    prefix: str = "backbone/block_",
) -> None:
    """The logger's layout at the issue's size, with small PNGs (listing reads no PNG)."""
    from tb_activations import summary

    png = _tiny_png()
    names = [f"probe_{i}" for i in range(probes)]
    grid = {"cols": 4, "rows": 4, "cell_w": 8, "cell_h": 8, "sep": 1}
    stats = np.ones((probes, 16, 4), np.float32)
    writer = summary.SummaryWriter(run_dir)
    for step in range(steps):
        values = []
        for i in range(layers):
            layer = f"{prefix}{i}"
            content = metadata.create_layer_content(
                layer=layer,
                index=i,
                class_name="Conv2D",
                shape=(8, 8, 16),
                probes=names,
                labels=None,
                grid=grid,
                top_k=5,
                rank_by="mean",
                colormap="magma",
                normalize="layer",
            )
            for view in metadata.VIEWS:
                values.append(
                    summary.image_value(
                        metadata.view_tag(layer, view), [png] * probes, width=35, height=35
                    )
                )
            values.append(
                summary.float_tensor_value(metadata.stats_tag(layer), stats, content=content)
            )
            for name in metadata.SCALAR_SUFFIXES:
                values.append(summary.scalar_value(metadata.scalar_tag(layer, name), 0.5))
        values.append(summary.scalar_value(metadata.LOG_SECONDS_TAG, 0.1))
        writer.write(step, values)
    writer.close()


def test_listing_50_steps_20_layers_8_probes_is_fast(tmp_path):
    write_large_run(str(tmp_path / RUN))
    provider, _ = make_provider(str(tmp_path))
    client = make_client(provider, str(tmp_path))
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        response = get(client, f"/layers?run={RUN}")
        timings.append(time.perf_counter() - start)
        assert response.status_code == 200
    answer = response.json
    assert len(answer["layers"]) == 20
    assert answer["steps"] == list(range(50))
    assert get(client, f"/steps?run={RUN}&layer=backbone/block_7").json["steps"] == list(range(50))
    assert answer["sampling"] is None
    start = time.perf_counter()
    assert get(client, "/runs").status_code == 200
    timings.append(time.perf_counter() - start)
    print(f"listing times (s): {[round(t, 4) for t in timings]}")
    assert max(timings) < 0.5


# ---------------------------------------------------------------------------
# At scale: one layer's steps, the channel history strip, reads kept until new data


def test_steps_route_per_layer(client):
    answer = get(client, f"/steps?run={RUN}&layer=conv_b")
    assert answer.status_code == 200
    assert answer.json == {
        "run": RUN,
        "layer": "conv_b",
        "steps": STEPS,
        "logged_steps": STEPS,
        "sampling": None,
    }
    assert get(client, f"/steps?run={RUN}&layer=nope").status_code == 404
    assert get(client, f"/steps?run={RUN}").status_code == 400


def test_channel_history_is_the_cell_of_each_stored_mosaic(client, logged):
    from PIL import Image

    layer = call(plugin_data.list_layers, logged, run=RUN)["layers"][2]
    grid, probe, channel = layer["grid"], 1, 4
    steps = [30, 0, 20, 999]  # any order; 999 was never logged
    query = f"run={RUN}&layer=conv_b&probe={probe}&channel={channel}&steps=30,0,20,999"
    response = get(client, f"/channel?{query}")
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.headers["X-Missing-Steps"] == "999"
    strip = np.asarray(Image.open(io.BytesIO(response.data)).convert("RGBA"))
    cw, ch = grid["cell_w"], grid["cell_h"]
    assert strip.shape == (ch, cw * len(steps), 4)
    col, row = channel % grid["cols"], channel // grid["cols"]
    x, y = col * (cw + grid["sep"]), row * (ch + grid["sep"])
    for i, step in enumerate(steps[:3]):
        png = call(
            plugin_data.image_bytes, logged, run=RUN, tag="conv_b/mosaic", step=step, index=probe
        )
        mosaic = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
        np.testing.assert_array_equal(
            strip[:, i * cw : (i + 1) * cw], mosaic[y : y + ch, x : x + cw]
        )
    assert (strip[:, 3 * cw :, 3] == 0).all()  # the missing step is transparent
    assert get(client, f"/channel?{query}").data == response.data  # cached: the same bytes


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("layer=conv_b&probe=0&channel=6&steps=0", 404),  # 6 channels: 0..5
        ("layer=conv_b&probe=3&channel=0&steps=0", 404),  # 3 probes
        ("layer=nope&probe=0&channel=0&steps=0", 404),
        ("layer=conv_b&probe=0&channel=0&steps=", 400),
        ("layer=conv_b&probe=0&channel=0&steps=1,x", 400),
        ("layer=conv_b&probe=0&channel=0&steps=-1", 400),
        ("layer=conv_b&probe=0&channel=0&steps=" + ",".join(["0"] * 201), 400),
        ("layer=conv_b&channel=0&steps=0", 400),
    ],
)
def test_channel_history_refuses_what_it_cannot_show(client, query, status):
    response = get(client, f"/channel?run={RUN}&{query}")
    assert response.status_code == status, response.data
    assert response.mimetype == "text/plain" and response.data


class CountingProvider:
    """A real data provider that counts its whole-tag reads (a spy, not a stand-in)."""

    def __init__(self, provider):
        self._provider = provider
        self.reads = []

    def __getattr__(self, name):
        attr = getattr(self._provider, name)
        if not name.startswith("read_") or name == "read_blob":
            return attr

        def counted(*args, **kwargs):
            self.reads.append((name, tuple(kwargs["run_tag_filter"].tags or ())))
            return attr(*args, **kwargs)

        return counted


def test_reads_are_kept_until_the_tag_gets_new_data(tmp_path):
    from tb_activations import summary

    run_dir = str(tmp_path / RUN)
    write_large_run(run_dir, steps=5, layers=2, probes=2)
    real, multiplexer = make_provider(str(tmp_path))
    provider = CountingProvider(real)
    client = make_client(provider, str(tmp_path))
    layer = "backbone/block_1"
    for step in range(5):  # Play: one step after the other, hover in between
        assert get(client, f"/stats?run={RUN}&layer={layer}&step={step}").status_code == 200
        assert get(client, f"/stats?run={RUN}&layer={layer}&step={step}").status_code == 200
        assert (
            get(client, f"/image?run={RUN}&tag={layer}/mosaic&step={step}&index=1").status_code
            == 200
        )
    stats_tag, mosaic_tag = metadata.stats_tag(layer), f"{layer}/mosaic"
    assert provider.reads.count(("read_tensors", (stats_tag,))) == 1
    assert provider.reads.count(("read_blob_sequences", (mosaic_tag,))) == 1

    # Training goes on: a new step is read once, and seen.
    writer = summary.SummaryWriter(run_dir)
    content = json.loads(
        real.list_tensors(CTX, experiment_id="", plugin_name=metadata.PLUGIN_NAME)[RUN][
            stats_tag
        ].plugin_content
    )
    writer.write(
        5,
        [
            summary.float_tensor_value(
                stats_tag, np.full((2, 16, 4), 7, np.float32), content=content
            )
        ],
    )
    writer.close()
    multiplexer.Reload()
    answer = get(client, f"/stats?run={RUN}&layer={layer}&step=5")
    assert answer.status_code == 200 and answer.json["stats"][0][0] == [7.0] * 4
    assert get(client, f"/stats?run={RUN}&layer={layer}&step=4").status_code == 200
    assert provider.reads.count(("read_tensors", (stats_tag,))) == 2


def test_read_cache_is_bounded_in_bytes():
    cache = plugin_data.ReadCache(max_bytes=100)
    computed = []

    def value(name):
        computed.append(name)
        return name

    for name in "abc":
        assert cache.get(name, 1, lambda n=name: value(n), size=lambda v: 40) == name
    assert cache.get("c", 1, lambda: value("c!"), size=lambda v: 40) == "c"  # kept
    assert cache.get("a", 1, lambda: value("a!"), size=lambda v: 40) == "a!"  # dropped (LRU)
    assert cache.get("c", 2, lambda: value("c2"), size=lambda v: 40) == "c2"  # new version
    assert computed == ["a", "b", "c", "a!", "c2"]


# ---------------------------------------------------------------------------
# Colour bar: the step's scale and the mosaic's palette


def test_stats_carry_the_colour_scale_of_the_step(logged):
    for step in STEPS:
        answer = call(plugin_data.layer_stats, logged, run=RUN, layer="conv_b", step=step)
        stats = logged["written"][step]["conv_b"]  # (N, C, [mean, max, min, std])
        # The logger's layer scale: [min(0, min), max] over every probe and channel.
        assert answer["scale"] == {
            "lo": pytest.approx(min(0.0, float(stats[..., 2].min()))),
            "hi": pytest.approx(float(stats[..., 1].max())),
        }
    synthetic = call(plugin_data.list_layers, logged, run=SYNTHETIC_RUN)["layers"][0]["layer"]
    old = call(plugin_data.layer_stats, logged, run=SYNTHETIC_RUN, layer=synthetic, step=0)
    assert old["scale"] is None  # written without a colour scale (older logger, other writer)


def test_palette_route_is_the_logger_colormap(client):
    from tb_activations import colormaps

    answer = get(client, f"/palette?run={RUN}&layer=conv_b")
    assert answer.status_code == 200
    palette = answer.json
    assert palette["colormap"] == "magma" and palette["levels"] == colormaps.LEVELS
    assert palette["colors"] == colormaps.palette("magma").tolist()
    # A mosaic stored as RGB by another writer has no palette to show.
    from urllib.parse import quote

    layer = quote(HOSTILE_LAYER + "0")
    assert get(client, f"/palette?run={SYNTHETIC_RUN}&layer={layer}").status_code == 404
    assert get(client, f"/palette?run={RUN}&layer=nope").status_code == 404


def test_per_channel_scales_come_per_channel(tmp_path):
    from tb_activations import ActivationLogger

    images = np.random.default_rng(0).integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8)
    with ActivationLogger(
        tiny_model(), images, str(tmp_path), layers=["conv_b"], normalize="channel"
    ) as logger:
        stats = logger.log(0)["conv_b"].stats.stacked()
    provider, _ = make_provider(str(tmp_path))
    answer = plugin_data.layer_stats(
        provider, CTX, experiment_id="", run=RUN, layer="conv_b", step=0
    )
    # One [lo, hi] per channel: its min and max over the probes.
    assert answer["scale"]["lo"] == pytest.approx(stats[..., 2].min(axis=0).tolist())
    assert answer["scale"]["hi"] == pytest.approx(stats[..., 1].max(axis=0).tolist())


# ---------------------------------------------------------------------------
# Activation histograms (the stock histograms plugin's data, in the Activations tab)


def test_histogram_route_is_the_logged_distribution_and_the_stock_tabs(client, logged):
    from tensorboard.plugins.histogram import histograms_plugin

    answer = get(client, f"/histogram?run={RUN}&layer=conv_b&step=20")
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    data = answer.json
    assert (data["tag"], data["step"], data["steps"]) == ("conv_b/histogram", 20, STEPS)
    buckets = np.array(data["buckets"], np.float64)
    assert buckets.shape == (30, 3)  # the logger's default histogram_bins
    # Known answers: every activation of the 3 probes (8x8x6 each) is counted once,
    # between the smallest min and the largest max the logger's statistics give.
    stats = logged["written"][20]["conv_b"]  # (probes, channels, [mean, max, min, std])
    assert data["count"] == buckets[:, 2].sum() == 3 * 8 * 8 * 6
    np.testing.assert_allclose(buckets[0, 0], stats[..., 2].min(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(buckets[-1, 1], stats[..., 1].max(), rtol=1e-5)
    np.testing.assert_allclose(buckets[1:, 0], buckets[:-1, 1])  # contiguous bins
    # Bucket for bucket what TensorBoard's own Histograms tab serves.
    provider = logged["provider"]
    context = base_plugin.TBContext(data_provider=provider, logdir=logged["dir"])
    stock = werkzeug_test.Client(
        application.TensorBoardWSGI(
            [histograms_plugin.HistogramsPlugin(context)], data_provider=provider
        )
    )
    stock_data = stock.get(f"/data/plugin/histograms/histograms?run={RUN}&tag=conv_b/histogram")
    by_step = {step: bs for _, step, bs in stock_data.json}
    assert sorted(by_step) == STEPS
    np.testing.assert_allclose(buckets, np.array(by_step[20], np.float64))


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        (f"run={RUN}&layer=conv_b", 400, b"`step`"),
        (f"run={RUN}&layer=conv_b&step=x", 400, b"`step`"),
        ("layer=conv_b&step=0", 400, b"`run`"),
        (f"run={RUN}&layer=conv_b&step=15", 404, b"kept steps: [0, 10, 20, 30]"),
        (f"run={RUN}&layer=nope&step=0", 404, b"no such layer"),
        ("run=nope&layer=conv_b&step=0", 404, b"No histogram"),
        (f"run={RUN}&layer=conv_b/histogram&step=0", 404, b"No histogram"),
        (f"run={RUN}&layer=conv_b&step=0&nearest=yes", 400, b"`nearest`"),
        (f"run={RUN}&layer=conv_b&step=15&nearest=0", 404, b"kept steps"),
        ("run=nope&layer=conv_b&step=0&nearest=1", 404, b"No histogram"),
    ],
)
def test_histogram_route_refuses_what_it_cannot_show(client, query, status, message):
    response = get(client, f"/histogram?{query}")
    assert response.status_code == status, response.data
    assert response.mimetype == "text/plain" and message in response.data


@pytest.mark.parametrize(
    ("requested", "answered"), [(15, 10), (10, 10), (9, 0), (1000, 30), (0, 0)]
)
def test_histogram_nearest_answers_the_last_kept_step_before(client, requested, answered):
    data = get(client, f"/histogram?run={RUN}&layer=conv_b&step={requested}&nearest=1").json
    assert (data["step"], data["requested_step"]) == (answered, requested)
    exact = get(client, f"/histogram?run={RUN}&layer=conv_b&step={answered}").json
    assert data["buckets"] == exact["buckets"]


def test_histogram_reads_are_kept_and_a_layer_without_histograms_is_no_error(tmp_path):
    import keras

    from tb_activations import ActivationLogger, Probes

    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.Activation("relu", name="c")(inputs))
    x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(2, 4, 4, 1)
    for run, bins in (("with", 4), ("without", 0)):
        with ActivationLogger(
            model, Probes(x), str(tmp_path), run_name=run, layers=["c"], views=["mosaic"],
            histogram_bins=bins,
        ) as logger:  # fmt: skip
            logger.log(0)
            logger.log(1)
    real, _ = make_provider(str(tmp_path))
    provider = CountingProvider(real)
    client = make_client(provider, str(tmp_path))
    for step in (0, 1, 0, 1):
        answer = get(client, f"/histogram?run=with&layer=c&step={step}")
        assert answer.status_code == 200
        # relu of linspace(-1, 1, 32): 16 zeros and (2i + 1) / 31 for i < 16; 4 bins over [0, 1].
        assert answer.json["buckets"] == [
            [0.0, 0.25, 20],  # the zeros and 1/31 .. 7/31
            [0.25, 0.5, 4],
            [0.5, 0.75, 4],
            [0.75, 1.0, 4],
        ]
        assert answer.json["count"] == 32
    assert provider.reads.count(("read_tensors", ("c/histogram",))) == 1
    # A layer logged with histogram_bins=0: no histogram, no error (the dashboard says so).
    none = get(client, "/histogram?run=without&layer=c&step=0&nearest=1")
    assert none.status_code == 200
    assert (none.json["buckets"], none.json["step"], none.json["steps"]) == (None, None, [])
