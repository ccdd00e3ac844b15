"""The printed TensorBoard command, as a user meets it.

A real ``tensorboard`` started with exactly the command the CLI, the demo,
the examples and the dashboard print (:func:`metadata.tensorboard_command`)
must show every logged step, more than TensorBoard's default 10, in its own
Images tab and in the Activations tab, under both data loaders.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tb_activations import metadata

STEPS = list(range(12))  # more than the 10 images TensorBoard keeps by default
LAYER = "conv"
RUN = metadata.DEFAULT_RUN_NAME
TENSORBOARD = str(Path(sys.executable).with_name("tensorboard"))
PORT_LINE = re.compile(r"TensorBoard \S+ at http://127\.0\.0\.1:(\d+)/")
GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guide" / "viewing.md"


def start(command: str, err_path: Path, *, load_fast: bool) -> subprocess.Popen:
    """``command`` as printed, plus only what a test needs: a free port and the loader."""
    argv = shlex.split(command)
    assert argv[0] == "tensorboard"
    argv = [
        TENSORBOARD,
        *argv[1:],
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        f"--load_fast={'true' if load_fast else 'false'}",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    with open(err_path, "w") as err:
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)


def wait_url(proc: subprocess.Popen, err_path: Path, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = PORT_LINE.search(err_path.read_text(errors="replace"))
        if match:
            return f"http://127.0.0.1:{match.group(1)}"
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"tensorboard did not start: {err_path.read_text()[-2000:]}")


def get(url: str, path: str, **params):
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url}{path}?{query}" if params else url + path, timeout=20) as r:
        body = r.read()
    return json.loads(body) if r.headers.get_content_type() == "application/json" else body


def wait_loaded(url: str, timeout: float = 90) -> None:
    """Until the stock Images route has every step (the loader reads in the background)."""
    deadline = time.monotonic() + timeout
    answer = None
    while time.monotonic() < deadline:
        try:
            answer = get(
                url, "/data/plugin/images/images", run=RUN, tag=f"{LAYER}/mosaic", sample=0
            )
            if len(answer) >= len(STEPS):
                return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"steps never all loaded: {answer}")


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory) -> Path:
    import keras

    from tb_activations import ActivationLogger

    root = tmp_path_factory.mktemp("viewing")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(3, 3, activation="relu", name=LAYER)]
    )
    images = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 1)).astype(np.float32)
    with ActivationLogger(
        model, images, root, layers=[LAYER], views=("mosaic",), drift=False, images_every=1
    ) as logger:
        for step in STEPS:
            logger.log(step)
    return root


def test_the_printed_command_shows_every_step_in_both_tabs(log_dir, tmp_path):
    command = metadata.tensorboard_command(log_dir)
    assert command.endswith(" " + metadata.SAMPLING_FLAG)
    servers = {
        fast: start(command, tmp_path / f"tb_{fast}.err", load_fast=fast) for fast in (True, False)
    }
    try:
        for fast, proc in servers.items():
            url = wait_url(proc, tmp_path / f"tb_{fast}.err")
            wait_loaded(url)
            # TensorBoard's own Images tab: one entry per logged step of the mosaic.
            stock = get(url, "/data/plugin/images/images", run=RUN, tag=f"{LAYER}/mosaic", sample=0)
            assert [e["step"] for e in stock] == STEPS, fast
            png = get(url, "/data/plugin/images/individualImage?" + stock[0]["query"])
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
            # The Activations tab: every step kept, no sampling notice, each step readable.
            layers = get(url, "/data/plugin/activations/layers", run=RUN)
            assert layers["steps"] == STEPS and layers["sampling"] is None, fast
            for step in (STEPS[0], STEPS[-1]):
                stats = get(url, "/data/plugin/activations/stats", run=RUN, layer=LAYER, step=step)
                assert stats["stats_steps"] == STEPS, fast
                image = get(
                    url,
                    "/data/plugin/activations/image",
                    run=RUN,
                    tag=f"{LAYER}/mosaic",
                    step=step,
                    index=1,
                )
                assert image[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        for proc in servers.values():
            proc.terminate()
        for proc in servers.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_the_viewing_guide_prints_the_same_command():
    assert metadata.tensorboard_command("logs") in GUIDE.read_text()
