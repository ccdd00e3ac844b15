"""The pictures' schedule of long runs (``images_every``) and how the plugin reads such runs.

A real logger on a tiny model writes the events; TensorBoard's own
``EventMultiplexer`` data provider reads them back for the plugin's functions.
"""

from __future__ import annotations

import numpy as np
import pytest

from tb_activations import ActivationLogger, metadata
from tests.conftest import read_run, scalar_values, steps_of
from tests.test_activations_plugin import KEEP_ALL, make_client, make_provider, tiny_model

RUN = metadata.DEFAULT_RUN_NAME
MOSAIC = metadata.view_tag("conv_b", "mosaic")


def _log(log_dir, steps, **kwargs) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(3, 16, 16, 3), dtype=np.uint8)
    logger = ActivationLogger(
        tiny_model(), images, log_dir, layers=["conv_a", "conv_b"], attribution=(), **kwargs
    )
    with logger:
        for step in steps:
            logger.log(step)


def _read(log_dir):
    return read_run(log_dir / RUN)


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory):
    """12 logs with the default schedule: pictures at logs 0-9 and 10, not 11."""
    log_dir = tmp_path_factory.mktemp("auto")
    _log(log_dir, [5 * i for i in range(12)], blocking=False)
    return log_dir


def test_auto_writes_pictures_at_the_first_ten_logs_then_every_tenth(auto_run):
    acc = _read(auto_run)
    steps = [5 * i for i in range(12)]
    assert steps_of(acc, MOSAIC) == steps[:11]
    for view in ("topk", "overlay"):
        assert steps_of(acc, metadata.view_tag("conv_a", view)) == steps[:11]
    # Every log keeps its statistics, colour scale, scalars and histograms.
    for tag in (
        metadata.stats_tag("conv_b"),
        metadata.scale_tag("conv_b"),
        metadata.scalar_tag("conv_b", "dead_fraction"),
        metadata.histogram_tag("conv_b"),
    ):
        assert steps_of(acc, tag) == steps, tag
    assert steps_of(acc, metadata.IMAGES_WRITTEN_TAG) == steps
    assert scalar_values(acc, metadata.IMAGES_WRITTEN_TAG) == [1.0] * 11 + [0.0]


def test_an_int_writes_every_kth_log_the_first_included(tmp_path):
    _log(tmp_path, range(7), images_every=3)
    assert steps_of(_read(tmp_path), MOSAIC) == [0, 3, 6]


@pytest.mark.backends
@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "always", None])
def test_bad_images_every_is_a_value_error(tmp_path, bad):
    with pytest.raises(ValueError, match="images_every"):
        ActivationLogger(tiny_model(), np.zeros((2, 16, 16, 3)), tmp_path, images_every=bad)


def _client(log_dir, images: int = 0):
    provider, _ = make_provider(str(log_dir), {**KEEP_ALL, "images": images})
    return make_client(provider, str(log_dir))


def _get(client, path: str):
    response = client.get(f"/data/plugin/activations{path}")
    return response.status_code, (response.json if response.is_json else None)


def test_plugin_steps_are_the_picture_steps_and_no_sampling_is_claimed(auto_run):
    client = _client(auto_run)
    steps = [5 * i for i in range(12)]
    status, listing = _get(client, f"/layers?run={RUN}")
    assert status == 200
    assert listing["steps"] == steps[:11]
    assert listing["logged_steps"] == steps
    assert listing["sampling"] is None  # step 55 has no pictures by design, not sampled away
    _, layer = _get(client, f"/steps?run={RUN}&layer=conv_b")
    assert (layer["steps"], layer["logged_steps"], layer["sampling"]) == (steps[:11], steps, None)
    # The statistics of a step without pictures are served; its picture is not there.
    status, stats = _get(client, f"/stats?run={RUN}&layer=conv_b&step=55")
    assert status == 200 and stats["stats_steps"] == steps
    assert _get(client, f"/image?run={RUN}&tag={MOSAIC}&step=55&index=0")[0] == 404
    assert _get(client, f"/image?run={RUN}&tag={MOSAIC}&step=50&index=0")[0] == 200


def test_plugin_still_reports_sampling_of_picture_steps(auto_run):
    _status, listing = _get(_client(auto_run, images=4), f"/layers?run={RUN}")
    assert len(listing["steps"]) == 4
    assert listing["sampling"]["kept"] == 4 and listing["sampling"]["logged"] == 11


def test_scalars_route_serves_the_loggers_own_timings(auto_run):
    status, answer = _get(_client(auto_run), f"/scalars?run={RUN}&layer={metadata.INTERNAL_PREFIX}")
    assert status == 200
    series = {s["name"]: s["points"] for s in answer["series"]}
    for tag in (metadata.STALL_SECONDS_TAG, metadata.WORKER_SECONDS_TAG, metadata.QUEUE_WAITS_TAG):
        points = series[tag.rsplit("/", 1)[1]]
        assert [p[0] for p in points] == [5 * i for i in range(12)]
        assert all(p[1] is not None and p[1] >= 0 for p in points)


def test_the_auto_rule_writes_19_of_100_logs():
    from tb_activations.step_render import images_due

    assert [i for i in range(100) if images_due("auto", i)] == [*range(10), *range(10, 100, 10)]
    assert [i for i in range(10) if images_due(4, i)] == [0, 4, 8]
