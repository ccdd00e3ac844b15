"""Top examples written by the logger and the callback, read back with TensorBoard's loader."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
from PIL import Image
from tensorboard.util import tensor_util

from tb_activations import ActivationCallback, ActivationLogger, Probes
from tb_activations.examples_log import GUTTER_W, render_pages
from tb_activations.metadata import decode_json_bytes, parse_plugin_metadata
from tests.conftest import read_run
from tests.test_channel_examples import RED, _detector, _pool, _scale


def _pages(acc, tag):
    event = acc.Tensors(tag)[-1]
    strings = tensor_util.make_ndarray(event.tensor_proto)
    w, h = int(strings[0]), int(strings[1])
    return w, h, [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in strings[2:]]


def _logger(tmp_path, pool, **kwargs):
    probes = Probes(_pool()[:2], preprocess=_scale)
    kwargs = {"examples_k": 4, **kwargs}
    return ActivationLogger(
        _detector(), probes, tmp_path, layers=["det"], examples_pool=pool, **kwargs
    )


def test_log_examples_writes_pages_and_data(tmp_path):
    logger = _logger(tmp_path, _pool(), overlay_format="png")
    ex = logger.log_examples(3)
    logger.close()
    acc = read_run(tmp_path / "activations")
    data_event = acc.Tensors("det/examples_data")[0]
    assert data_event.step == 3
    data = tensor_util.make_ndarray(data_event.tensor_proto)
    assert data.shape == (2, 4, 5)
    assert data[0, :, 1].tolist() == [2, 5, 11, 17]  # image indices of the red squares
    np.testing.assert_array_equal(data[..., 0], ex.layers["det"].values)
    assert (data[..., 4] == -1).all()  # first example-step: nothing to compare with
    content = parse_plugin_metadata(acc.SummaryMetadata("det/examples_data").plugin_data.content)
    assert content["kind"] == "examples" and content["k"] == 4
    assert content["field"] == {
        "size": [3, 3],
        "stride": [1, 1],
        "offset": [-1, -1],
        "method": "graph",
    }
    index_event = acc.Tensors("det/examples_index")[0]
    index = decode_json_bytes(tensor_util.make_ndarray(index_event.tensor_proto))
    assert index["names"]["2"] == "image_2" and index["pool_size"] == 24
    grid = content["grid"]
    w, h, pages = _pages(acc, "det/examples")
    assert (w, h) == (grid["width"], grid["height"]) and len(pages) == grid["pages"] == 1
    # Channel 0, rank 0: the brightest red square, its 3x3 field enlarged to the whole cell.
    cell = grid["cell"]
    tile = pages[0][:cell, GUTTER_W : GUTTER_W + cell]
    assert (tile[..., 0] == RED[2][1]).all() and (tile[..., 1:] == 0).all()
    # A plugin tag of another kind does not disturb the layer listing.
    assert "det/channel_stats" not in acc.Tags()["tensors"]


def test_second_example_step_marks_new_winners(tmp_path):
    pool = _pool()
    logger = _logger(tmp_path, pool)
    logger.log_examples(0)
    shuffled = pool.copy()
    shuffled[2] = 0  # the brightest red square is gone: one new winner for channel 0
    logger.log_examples(1, pool=shuffled)
    logger.close()
    acc = read_run(tmp_path / "activations")
    data = tensor_util.make_ndarray(acc.Tensors("det/examples_data")[1].tensor_proto)
    assert data[0, :, 1].tolist() == [5, 11, 17, 20]
    assert data[0, :, 4].tolist() == [0, 0, 0, 1]
    frac = acc.Tensors("det/examples_new_fraction")
    assert [e.step for e in frac] == [1]


def test_pages_split_channels():
    from tb_activations.channel_examples import top_examples

    ex = top_examples(_detector(), _pool(), layers=["det"], k=3, preprocess=_scale)
    pages, grid = render_pages(ex, "det", cell=16, channels_per_page=1)
    assert pages.shape == (2, grid.height, grid.width, 3) and grid.pages == 2 and grid.rows == 1


def test_log_examples_errors_and_nothing_written(tmp_path):
    logger = _logger(tmp_path, None)
    with pytest.raises(ValueError, match="no example pool"):
        logger.log_examples(0)
    with pytest.raises(ValueError, match=r"`examples_k`.*Received: examples_k=0"):
        _logger(tmp_path, _pool(), examples_k=0)
    folder = tmp_path / "pool"
    folder.mkdir()
    for i, img in enumerate(_pool()[:6]):
        Image.fromarray(img).save(folder / f"p{i}.png")
    (folder / "p4.png").write_bytes(b"broken")
    with pytest.raises(ValueError, match=r"p4\.png"):
        logger.log_examples(0, pool=folder)
    logger.close()
    assert (
        not list((tmp_path / "activations").glob("events.*"))
        or not read_run(tmp_path / "activations").Tags()["tensors"]
    )


@pytest.mark.backends
def test_callback_writes_examples_at_the_end_and_survives_a_bad_pool(tmp_path):
    model = _detector()
    model.compile(optimizer="sgd", loss="mse")
    x = _pool().astype(np.float32) / 255.0
    y = np.zeros((len(x), 2), np.float32)
    probes = Probes(_pool()[:2], preprocess=_scale)
    cb = ActivationCallback(
        probes, tmp_path / "good", layers=["det"], examples_pool=_pool(), examples_k=2, drift=False
    )
    model.fit(x, y, epochs=2, batch_size=12, verbose=0, callbacks=[cb])
    acc = read_run(tmp_path / "good" / "activations")
    assert [e.step for e in acc.Tensors("det/examples_data")] == [1]
    with pytest.raises(ValueError, match="`examples_freq`"):
        ActivationCallback(probes, tmp_path, examples_freq=0, examples_pool=_pool())
    folder = tmp_path / "bad"
    folder.mkdir()
    for i in range(3):
        (folder / f"b{i}.png").write_bytes(b"broken")
    cb = ActivationCallback(
        probes, tmp_path / "run", layers=["det"], examples_pool=folder, examples_freq=1, drift=False
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, epochs=2, batch_size=12, verbose=0, callbacks=[cb])
    assert len(history.history["loss"]) == 2
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert any("top examples at step 0 failed" in m and "b0.png" in m for m in messages)
    assert cb.failures == 2  # epochs 0 and 1; the end of training does not retry step 1


def test_log_feature_vis_writes_images(tmp_path):
    logger = _logger(tmp_path, None)
    out = logger.log_feature_vis(2, channels=1, steps=3)
    logger.close()
    assert out["det"].images.shape == (1, 16, 16, 3)
    acc = read_run(tmp_path / "activations")
    w, h, images = _pages(acc, "det/feature_vis")
    assert (w, h, len(images)) == (16, 16, 1)
    content = json.loads(acc.SummaryMetadata("det/feature_vis_channels").plugin_data.content)
    assert content["kind"] == "feature_vis"


def test_examples_route_reads_what_was_written(tmp_path):
    from tests.test_activations_plugin import make_client, make_provider

    pool = _pool()
    logger = _logger(tmp_path, pool)
    logger.log(0)
    logger.log_examples(0)
    shuffled = pool.copy()
    shuffled[2] = 0
    logger.log_examples(1, pool=shuffled)
    logger.log_feature_vis(1, channels=1, steps=2)
    logger.close()
    provider, _ = make_provider(str(tmp_path))
    client = make_client(provider, str(tmp_path))
    base = "/data/plugin/activations/"
    response = client.get(base + "examples?run=activations&layer=det")
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = json.loads(response.get_data(as_text=True))
    assert answer["k"] == 4 and answer["grid"]["pages"] == 1
    assert answer["field"]["size"] == [3, 3]
    assert [s["step"] for s in answer["steps"]] == [0, 1]
    second = answer["steps"][1]
    assert [slot[1] for slot in second["channels"][0]] == [5, 11, 17, 20]
    assert [slot[4] for slot in second["channels"][0]] == [0, 0, 0, 1]
    assert second["names"]["20"] == "image_20" and second["pool_size"] == 24
    assert answer["feature_vis"][0]["step"] == 1 and len(answer["feature_vis"][0]["channels"]) == 1
    page = client.get(base + "image?run=activations&tag=det/examples&step=1&index=0")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("image/")
    # A layer without examples answers empty lists; an unknown run 404.
    empty = json.loads(client.get(base + "examples?run=activations&layer=nope").get_data())
    assert empty["steps"] == [] and empty["feature_vis"] == []
    assert client.get(base + "examples?run=missing&layer=det").status_code == 404
    assert client.get(base + "examples?run=activations").status_code == 400
