"""The offline demo end to end: ``tb-activations demo`` for 2 epochs, then what it wrote."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from PIL import Image

from tb_activations import metadata
from tests.conftest import images_at, read_run, steps_of
from tests.test_cli import run_cli

pytest.importorskip("sklearn")

LAYERS = ["conv1", "pool1", "conv2", "pool2", "conv3", "pool3"]
PROBES = [f"digit_{d}" for d in (0, 1, 2, 3, 5, 6, 8, 9)]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    proc = run_cli(
        "demo", "--epochs", "2", "--log-dir", root / "logs", "--png-dir", root / "png", cwd=root
    )
    return root, proc


def test_demo_exits_and_says_how_to_view(demo_run):
    root, proc = demo_run
    assert proc.returncode == 0, proc.stderr
    assert f"tensorboard --logdir {root / 'logs'}" in proc.stdout
    assert metadata.SAMPLING_FLAG in proc.stdout  # the one command that keeps every step
    epoch_lines = [line for line in proc.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epoch_lines] == ["epoch 1/2", "epoch 2/2"]
    assert "Traceback" not in proc.stderr


def test_demo_runs_next_to_keras_tensorboard(demo_run):
    from tensorboard.backend.event_processing import plugin_event_multiplexer

    root, _ = demo_run
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(root / "logs"))
    mux.Reload()
    assert set(mux.Runs()) == {"activations", "train", "validation"}
    # keras.callbacks.TensorBoard: the loss per epoch, on the same step axis (epoch index).
    train_tags = set(mux.Runs()["train"]["tensors"])
    assert "epoch_loss" in train_tags
    assert [e.step for e in mux.Tensors("train", "epoch_loss")] == [0, 1]


def test_demo_activation_tags_and_steps(demo_run):
    root, _ = demo_run
    acc = read_run(root / "logs" / "activations")
    tags = set(acc.Tags()["tensors"])
    expected = {metadata.view_tag(layer, view) for layer in LAYERS for view in metadata.VIEWS}
    expected |= {metadata.stats_tag(layer) for layer in LAYERS}
    expected |= {
        metadata.scalar_tag(layer, s) for layer in LAYERS for s in metadata.SCALAR_SUFFIXES
    }
    assert tags >= expected
    for tag in expected:
        assert steps_of(acc, tag) == [0, 1], tag  # one log per epoch
    # The probes are the eight digits, labelled, in every view.
    content = metadata.parse_plugin_metadata(
        acc.SummaryMetadata(metadata.stats_tag("conv1")).plugin_data.content
    )
    assert content["probes"] == PROBES
    assert content["labels"] == ["0", "1", "2", "3", "5", "6", "8", "9"]
    width, height, images = images_at(acc, "conv1/mosaic", step=1)
    assert len(images) == 8 and (width, height) == (4 * 65 - 1, 4 * 65 - 1)  # 16 channels, 64 px


def test_demo_writes_the_last_conv_layers_top_examples(demo_run):
    from tensorboard.util import tensor_util

    root, _ = demo_run
    acc = read_run(root / "logs" / "activations")
    assert steps_of(acc, metadata.examples_data_tag("conv3")) == [1]  # at the end of training
    data = tensor_util.make_ndarray(
        acc.Tensors(metadata.examples_data_tag("conv3"))[0].tensor_proto
    )
    assert data.shape == (48, 9, 5)
    index = metadata.decode_json_bytes(
        tensor_util.make_ndarray(acc.Tensors(metadata.examples_index_tag("conv3"))[0].tensor_proto)
    )
    assert index["pool_size"] == 360
    winners = {str(int(i)) for i in data[..., 1].ravel() if i >= 0}
    assert set(index["labels"]) == winners  # every winner labelled with its digit
    assert {int(v) for v in index["labels"].values()} <= set(range(10))


def test_demo_png_files(demo_run):
    root, _ = demo_run
    png = root / "png"
    assert sorted(os.listdir(png)) == PROBES
    for probe in PROBES:
        assert len(os.listdir(png / probe)) == len(LAYERS) * 3
    with Image.open(png / "digit_3" / "conv1_mosaic.png") as img:
        assert img.size == (259, 259)
    with Image.open(png / "digit_3" / "conv2_overlay.png") as img:
        assert img.size == (129, 64)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_starts_tensorboard_on_localhost(demo_run):
    root, _ = demo_run
    port = _free_port()
    # A shell starts background jobs with SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: restore Ctrl-C's default, as an interactive terminal has it.
    code = (
        "import signal, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from tb_activations.demo import serve\n"
        f"sys.exit(serve({str(root / 'logs')!r}, port={port}))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        runs = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and runs is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2) as r:
                    runs = json.loads(r.read())
            except OSError:
                assert proc.poll() is None, "TensorBoard exited early"
                time.sleep(0.5)
        assert runs is not None, "TensorBoard did not answer within 60 s"
        assert {"activations", "train", "validation"} <= set(runs)
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does: serve() stops TensorBoard, exits 0
        try:
            assert proc.wait(timeout=30) == 0
        finally:
            proc.kill()


def test_demo_bad_options_are_one_line_errors():
    for args, fragment in [
        (["--epochs", "0"], "--epochs must be a positive int"),
        (["--size", "4"], "--size must be at least 8 (three 2x2 poolings)"),
    ]:
        proc = run_cli("demo", *args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.strip() == f"tb-activations: error: {fragment}, got {args[1]}"


def test_demo_default_grad_cam_shows_where_the_digit_is(demo_run):
    """The demo's default attribution (Grad-CAM at pool3) is not blank: most probes' maps of
    their predicted class have positive cells (after 2 epochs; a head straight from Flatten
    to the softmax gave maps zero everywhere for every probe at every epoch), and the maps
    are stronger on the digit's strokes than off them."""
    import numpy as np
    from tensorboard.util import tensor_util

    from tb_activations import demo

    root, _ = demo_run
    acc = read_run(root / "logs" / "activations")
    last = acc.Tensors("attribution/gradcam/maps")[-1]
    maps = tensor_util.make_ndarray(last.tensor_proto)[:, 0]  # (probes, h, w): predicted class
    assert maps.shape[0] == len(PROBES)
    shown = maps.max(axis=(1, 2)) > 0
    assert shown.sum() >= len(PROBES) // 2, maps.max(axis=(1, 2))
    data = demo.load_digits_data()
    probes = demo.demo_probes(data).inputs[..., 0]  # (N, 64, 64) in 0..1
    h, w = maps.shape[1:]
    ink = probes.reshape(len(probes), h, 64 // h, w, 64 // w).mean(axis=(2, 4))
    pairs = [(m / m.max(), i) for m, i, s in zip(maps, ink, shown, strict=True) if s]
    on = [m[i > i.mean()].mean() for m, i in pairs]
    off = [m[i <= i.mean()].mean() for m, i in pairs]
    assert np.mean(on) > np.mean(off), (on, off)
