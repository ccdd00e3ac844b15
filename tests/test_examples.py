"""Every script of examples/ runs with its --quick flag and writes what it says."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

from tb_activations import metadata
from tests.conftest import read_run, steps_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def run_example(name: str, cwd, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, name), "--quick", *args],
        cwd=cwd,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "view in TensorBoard: tensorboard --logdir" in proc.stdout
    assert metadata.SAMPLING_FLAG in proc.stdout
    return proc


def test_every_example_is_tested():
    scripts = sorted(os.path.basename(p) for p in glob.glob(os.path.join(EXAMPLES, "*.py")))
    assert scripts == [
        "custom_training_loop.py",
        "fit_with_callback.py",
        "transfer_learning.py",
        "vgg16_article.py",
    ]


def test_sample_images_are_small():
    for path in glob.glob(os.path.join(EXAMPLES, "images", "*.png")):
        assert os.path.getsize(path) < 100_000, path


def test_vgg16_article(tmp_path):
    proc = run_example("vgg16_article.py", tmp_path)
    assert "17 block5_pool" in proc.stdout  # the article's table: 18 layers, no input layer
    out = tmp_path / "out" / "vgg16_article"
    acc = read_run(out / "logs" / "activations")
    pools = [f"block{i}_pool" for i in range(1, 6)]
    assert {f"{p}/{v}" for p in pools for v in ("mosaic", "topk", "overlay")} <= set(
        acc.Tags()["tensors"]
    )
    assert "block1_conv1/mosaic" not in acc.Tags()["tensors"]
    assert sorted(os.listdir(out / "png" / "image")) == sorted(
        f"{p}_{v}.png" for p in pools for v in ("mosaic", "topk", "overlay")
    )


def test_fit_with_callback(tmp_path):
    run_example("fit_with_callback.py", tmp_path)
    out = tmp_path / "out" / "fit_with_callback"
    assert sorted(os.listdir(out)) == ["activations", "train", "validation"]
    acc = read_run(out / "activations")
    assert steps_of(acc, "conv1/mosaic") == [0, 1]  # --quick: two epochs
    assert {"conv1/mosaic", "pool1/mosaic", "conv2/mosaic"} <= set(acc.Tags()["tensors"])


def test_transfer_learning_nested_backbone(tmp_path):
    proc = run_example("transfer_learning.py", tmp_path)
    assert "mobilenetv2_1.00_96/block_1_expand_relu (48, 48, 96)" in proc.stdout
    acc = read_run(tmp_path / "out" / "transfer_learning" / "activations")
    tags = set(acc.Tags()["tensors"])
    expected = {f"mobilenetv2_1.00_96/block_{i}_expand_relu/mosaic" for i in range(1, 17)}
    assert expected <= tags
    assert steps_of(acc, "mobilenetv2_1.00_96/block_1_expand_relu/mosaic") == [0]


def test_custom_training_loop(tmp_path):
    proc = run_example("custom_training_loop.py", tmp_path)
    assert "step 20:" in proc.stdout
    out = tmp_path / "out" / "custom_training_loop"
    acc = read_run(out / "activations")
    assert steps_of(acc, "conv2/mosaic") == [0, 10, 20]  # --quick: 20 steps, a log every 10
    assert os.listdir(out / "train")  # the loss curve next to it
