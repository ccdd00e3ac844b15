"""The plugin's /attribution route over real event files (TensorBoard's multiplexer and WSGI app)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tb_activations import ActivationLogger, plugin_data
from tests.test_activations_plugin import CTX, ROUTE, make_client, make_provider
from tests.test_attribution import quadrant_model
from tests.test_attribution_step import quadrant_probes


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    log_dir = str(tmp_path_factory.mktemp("logs"))
    with ActivationLogger(
        quadrant_model(),
        quadrant_probes(),
        log_dir,
        layers=["conv"],
        attribution=("gradcam", "saliency"),
        attribution_layer="mask",
        class_names=["nw", "ne", "sw", "se"],
    ) as logger:
        for step in (0, 5):
            logger.log(step)
    with ActivationLogger(
        quadrant_model(), quadrant_probes(), log_dir, run_name="plain", attribution=()
    ) as logger:
        logger.log(0)
    provider, _ = make_provider(log_dir)
    return {"dir": log_dir, "provider": provider}


def test_attribution_answer_per_method_and_step(logged):
    answer = plugin_data.attribution(logged["provider"], CTX, experiment_id="", run="activations")
    assert [m["method"] for m in answer["methods"]] == ["gradcam", "saliency"]
    cam = answer["methods"][0]
    assert cam["layer"] == "mask" and cam["probes"] == ["a", "b"]
    assert cam["class_names"] == ["nw", "ne", "sw", "se"]
    assert [s["step"] for s in cam["steps"]] == [0, 5]
    # Probe a: predicted nw as labelled; probe b: predicted se, labelled sw.
    rows = cam["steps"][-1]["rows"]
    assert [r[:2] for r in rows] == [[0, -1], [3, 2]]
    # The average drop is measured at the first log (then every `attribution_every`).
    assert all(0 <= r[2] <= 1 for r in cam["steps"][0]["rows"])
    assert [r[2] for r in rows] == [None, None]
    assert answer["methods"][1]["layer"] is None
    plain = plugin_data.attribution(logged["provider"], CTX, experiment_id="", run="plain")
    assert plain == {"run": "plain", "methods": []}


def test_attribution_route_and_its_images(logged):
    client = make_client(logged["provider"], logged["dir"])
    answer = client.get(f"{ROUTE}/attribution?run=activations")
    assert answer.status_code == 200
    tag = answer.json["methods"][0]["overlay"]
    image = client.get(f"{ROUTE}/image?run=activations&tag={tag}&step=5&index=1")
    assert image.status_code == 200
    assert Image.open(io.BytesIO(image.data)).size == (17, 8)
    assert client.get(f"{ROUTE}/attribution?run=nope").status_code == 404
    assert client.get(f"{ROUTE}/attribution").status_code == 400
    assert np.isfinite(answer.json["methods"][1]["steps"][0]["rows"][0][2])
