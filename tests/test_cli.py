"""The ``tb-activations`` command, run through subprocess as a user runs it."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tb_activations import metadata
from tb_activations.cli import main
from tests.conftest import images_at, read_run, session_starts, steps_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINGFISHER = os.path.join(ROOT, "examples", "images", "kingfisher.png")


def cli_command() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "tb-activations")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "tb_activations"]


def run_cli(*args: str, cwd=None, env: dict | None = None, timeout: float = 300):
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [*cli_command(), *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_user_error(proc, *fragments: str) -> None:
    """Exit code 2, one ``tb-activations: error:`` line on stderr, no traceback."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = [
        line for line in proc.stderr.splitlines() if line.startswith("tb-activations: error:")
    ]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A small saved .keras model with a nested model, 16x16 RGB input."""
    import keras

    keras.utils.set_random_seed(0)
    inner = keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_b"),
        ],
        name="backbone",
    )
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a")(inputs)
    x = keras.layers.MaxPooling2D(name="pool_a")(x)
    x = inner(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(2, name="logits")(x)
    model = keras.Model(inputs, outputs, name="small")
    path = tmp_path_factory.mktemp("model") / "small.keras"
    model.save(path)
    return str(path)


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    """uint8 RGB gradients with a bright blob: smooth, so JPEG copies stay close."""
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    cy, cx = np.random.default_rng(seed).uniform(0.3, 0.7, 2)
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) * 20)
    rgb = np.stack([xx, yy, blob], axis=-1) * 255
    return rgb.astype(np.uint8)


@pytest.fixture
def image_dir(tmp_path):
    """Two RGB images of different sizes (the CLI resizes them to the model's input)."""
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(smooth_image(20, 24, 0)).save(folder / "cat.png")
    Image.fromarray(smooth_image(16, 16, 1)).save(folder / "dog.jpg")
    (folder / "notes.txt").write_text("not an image, ignored by extension")
    return folder


# -- no TensorFlow needed --------------------------------------------------------


def test_help_of_every_subcommand():
    top = run_cli("--help")
    assert top.returncode == 0
    for command in ("log", "demo", "layers"):
        assert command in top.stdout
        sub = run_cli(command, "--help")
        assert sub.returncode == 0, sub.stderr
        assert f"usage: tb-activations {command}" in sub.stdout
    assert "--png-dir" in run_cli("log", "--help").stdout
    assert "--serve" in run_cli("demo", "--help").stdout


def test_help_does_not_import_tensorflow():
    code = (
        "import sys\n"
        "from tb_activations.cli import main\n"
        "assert main(['log', '--help']) == 0\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_help_of_a_command_lists_its_models_instead_of_sending_to_itself(capsys):
    for command in ("log", "layers"):
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "--help of 'log'" not in out
        assert "all are listed below" in out
        assert "convnext_xlarge." in out.replace("\n", " ")  # the last name of the list


@pytest.mark.backends
@pytest.mark.parametrize("cut", ["truncated", "empty", "text"])
def test_a_broken_keras_file_is_not_reported_missing(tmp_path, capsys, cut):
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # a .keras file is a zip archive
        archive.writestr("config.json", "{}" * 500)
        archive.writestr("model.weights.h5", b"\0" * 2000)
    whole = buffer.getvalue()
    content = {"truncated": whole[: len(whole) // 2], "empty": b"", "text": b"hello"}[cut]
    path = tmp_path / "model.keras"
    path.write_bytes(content)
    assert main(["layers", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not found" not in err
    assert f"it exists ({len(content)} bytes) but is not a .keras archive" in err
    assert "truncated" in err


def test_main_returns_exit_codes():
    assert main(["--version"]) == 0
    assert main([]) == 2  # no command: help on stderr
    assert main(["log"]) == 2  # argparse: MODEL and IMAGE missing


def test_unknown_model_lists_valid_names(tmp_path):
    proc = run_cli("log", "alexnet", KINGFISHER, cwd=tmp_path)
    assert_user_error(proc, "unknown model 'alexnet'", "vgg16", "mobilenet_v2", "convnext_tiny")
    assert not os.path.exists(tmp_path / "logs")


def test_missing_model_file(tmp_path):
    assert_user_error(run_cli("layers", str(tmp_path / "nope.keras")), "model file not found")


@pytest.mark.parametrize("content", [b"not a png at all", b""])
def test_unreadable_image(tmp_path, content):
    bad = tmp_path / "broken.png"
    bad.write_bytes(content)
    proc = run_cli("log", "vgg16", str(bad), "--weights", "none", cwd=tmp_path)
    assert_user_error(proc, "cannot read image", "broken.png")


def test_missing_image_and_empty_directory(tmp_path):
    proc = run_cli("log", "vgg16", str(tmp_path / "missing.jpg"))
    assert_user_error(proc, "image not found", "missing.jpg")
    (tmp_path / "empty").mkdir()
    proc = run_cli("log", "vgg16", str(tmp_path / "empty"))
    assert_user_error(proc, "no image files in directory")


def test_missing_weights_file(tmp_path):
    proc = run_cli("log", "vgg16", KINGFISHER, "--weights", str(tmp_path / "w.h5"))
    assert_user_error(proc, "weights file not found")


# -- with a model --------------------------------------------------------------


def test_layers_lists_nested_paths_and_shapes(model_file):
    proc = run_cli("layers", model_file)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("small.keras: input (16, 16, 3), 6 selectable layers")
    rows = {line[2:].split()[0]: line for line in lines[1:]}
    assert list(rows) == ["conv_a", "pool_a", "backbone", "backbone/conv_b", "gap", "logits"]
    assert rows["conv_a"].startswith("*") and "(16, 16, 4)" in rows["conv_a"]
    assert rows["backbone/conv_b"].startswith("*") and "(8, 8, 6)" in rows["backbone/conv_b"]
    assert not rows["gap"].startswith("*") and "(6)" in rows["gap"]
    assert not rows["backbone"].startswith(
        "*"
    )  # a nested model's own output: its last layer is listed


def test_layers_with_pattern_and_no_match(model_file):
    proc = run_cli("layers", model_file, "--layers", "backbone/*")
    assert proc.returncode == 0, proc.stderr
    marked = [line.split()[1] for line in proc.stdout.splitlines()[1:] if line.startswith("*")]
    assert marked == ["backbone/conv_b"]
    proc = run_cli("layers", model_file, "--layers", "conv_z")
    assert_user_error(proc, "'conv_z' matches no layer", "conv_a", "backbone/conv_b")


@pytest.mark.backends
def test_log_model_file_writes_events_and_pngs(model_file, image_dir, tmp_path):
    log_dir, png_dir = tmp_path / "logs", tmp_path / "png"
    proc = run_cli(
        "log", model_file, image_dir, "--layers", "conv_a", "backbone/*",
        "--log-dir", log_dir, "--png-dir", png_dir, "--top-k", "3", "--step", "7",
        "--preprocess", "unit",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"tensorboard --logdir {log_dir} {metadata.SAMPLING_FLAG}" in proc.stdout
    assert "PNG files: 12 in" in proc.stdout
    assert "conv_a" in proc.stderr and "backbone/conv_b" in proc.stderr  # progress lines

    acc = read_run(log_dir / "activations")
    layers = ["conv_a", "backbone/conv_b"]
    assert set(acc.Tags()["tensors"]) >= {
        metadata.view_tag(layer, view) for layer in layers for view in metadata.VIEWS
    }
    assert steps_of(acc, "conv_a/mosaic") == [7]

    names = sorted(os.listdir(png_dir))
    assert names == ["cat", "dog"]
    for i, probe in enumerate(names):
        files = sorted(os.listdir(png_dir / probe))
        assert files == sorted(
            f"{stem}_{view}.png"
            for stem in ("conv_a", "backbone__conv_b")
            for view in metadata.VIEWS
        )
        for layer, stem in zip(layers, ("conv_a", "backbone__conv_b")):
            for view in metadata.VIEWS:
                # The PNG file is the picture TensorBoard holds for that probe.
                _, _, tb_images = images_at(acc, metadata.view_tag(layer, view))
                with Image.open(png_dir / probe / f"{stem}_{view}.png") as png:
                    assert png.format == "PNG" and png.size == tb_images[i].size
                    ours = np.asarray(png.convert("RGB"), np.float32)
                theirs = np.asarray(tb_images[i].convert("RGB"), np.float32)
                if view == "overlay":  # TensorBoard's overlays may be JPEG: close, not equal
                    assert np.abs(ours - theirs).mean() < 8
                else:
                    assert np.array_equal(ours, theirs)
    assert not glob.glob(str(png_dir / "**" / ".tmp-*"), recursive=True)


def test_log_max_image_size_caps_events_and_pngs(model_file, image_dir, tmp_path):
    proc = run_cli(
        "log", model_file, image_dir / "cat.png", "--layers", "conv_a", "--max-image-size", "20",
        "--overlay-quality", "50", "--log-dir", "logs", "--png-dir", "png", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    acc = read_run(tmp_path / "logs" / "activations")
    for view in metadata.VIEWS:  # 16x16x4 maps: a 33 px mosaic, a 33 px overlay pair
        width, height, tb_images = images_at(acc, metadata.view_tag("conv_a", view))
        assert max(width, height) <= 20, view
        with Image.open(tmp_path / "png" / "cat" / f"conv_a_{view}.png") as png:
            assert png.size == tb_images[0].size == (width, height), view
    # One step per call, in any order: no SessionLog.START that would hide later steps.
    assert session_starts(tmp_path / "logs" / "activations") == []
    proc = run_cli("log", model_file, image_dir, "--overlay-quality", "0", cwd=tmp_path)
    assert_user_error(proc, "overlay_quality", "1..95")


def test_log_quiet_png_only(model_file, image_dir, tmp_path):
    proc = run_cli("log", model_file, image_dir / "cat.png", "--png-dir", "out", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "conv_a" not in proc.stderr  # no progress lines
    assert proc.stdout.strip() == "PNG files: 9 in out"  # conv_a, pool_a, backbone/conv_b
    assert not (tmp_path / "logs").exists()  # --png-dir alone writes no event file
    umask = os.umask(0o022)
    os.umask(umask)
    mode = os.stat(tmp_path / "out" / "cat" / "conv_a_mosaic.png").st_mode & 0o777
    assert mode == 0o666 & ~umask  # as open() would make it, not mkstemp's private 0600


def test_log_no_layer_matched_lists_layers(model_file, image_dir, tmp_path):
    proc = run_cli("log", model_file, image_dir, "--layers", "block*_pool", cwd=tmp_path)
    assert_user_error(proc, "'block*_pool' matches no layer", "conv_a, pool_a, backbone")
    assert not (tmp_path / "logs").exists()


def test_imagenet_weights_offline_hint(tmp_path):
    # An empty Keras cache and a proxy that refuses connections: the download must fail.
    env = {
        "KERAS_HOME": str(tmp_path / "keras_home"),
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "no_proxy": "",
        "NO_PROXY": "",
    }
    proc = run_cli("log", "mobilenet_v2", KINGFISHER, cwd=tmp_path, env=env)
    assert_user_error(
        proc, "cannot download the ImageNet weights", "--weights PATH", "--weights none"
    )
    assert "Downloading" not in proc.stdout  # keras' download message is kept off stdout


@pytest.mark.slow
def test_log_vgg16_article_one_liner(tmp_path):
    proc = run_cli(
        "log", "vgg16", KINGFISHER, "--weights", "none", "--layers", "block*_pool",
        "--png-dir", "out", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "logs").exists()
    folder = tmp_path / "out" / "kingfisher"
    assert len(os.listdir(folder)) == 15
    # (channels, side) of each pooling layer at 224x224 input.
    pools = {1: (64, 112), 2: (128, 56), 3: (256, 28), 4: (512, 14), 5: (512, 7)}
    for block, (channels, side) in pools.items():
        cols = int(np.ceil(np.sqrt(channels)))
        rows = int(np.ceil(channels / cols))
        with Image.open(folder / f"block{block}_pool_mosaic.png") as img:
            # Every channel has a cell (the article's floor() dropped some); 1 px separators.
            assert img.size == (cols * (side + 1) - 1, rows * (side + 1) - 1)
        with Image.open(folder / f"block{block}_pool_topk.png") as img:
            cell = side * int(np.ceil(64 / side))  # cells enlarged to at least 64 px
            assert img.size == (5 * (cell + 1) - 1, cell)
        with Image.open(folder / f"block{block}_pool_overlay.png") as img:
            assert img.size == (2 * 224 + 1, 224)  # strongest channel | channel mean
            assert img.mode == "RGB"


def test_broken_model_and_weights_files(model_file, image_dir, tmp_path):
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip archive")
    assert_user_error(run_cli("layers", broken), "cannot load model file", "broken.keras")
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"not an HDF5 file")
    proc = run_cli("log", model_file, image_dir, "--weights", weights, cwd=tmp_path)
    assert_user_error(proc, "cannot load weights from", "w.weights.h5")


@pytest.mark.backends
def test_a_sweep_of_log_calls_carries_the_drift_reference(model_file, image_dir, tmp_path):
    """One process per step (a sweep over checkpoints): each call compares with the run's
    first step and the previous call, not with itself. Known answers: step 2 logs the
    weights of step 0 again, so its cka_first is 1 and its cka_previous step 1's cka_first."""
    import keras

    from tests.conftest import scalar_values

    changed = keras.models.load_model(model_file)
    conv = changed.get_layer("conv_a")
    kernel, bias = conv.get_weights()
    conv.set_weights([np.random.default_rng(1).normal(size=kernel.shape), bias])
    changed_file = tmp_path / "changed.keras"
    changed.save(changed_file)
    log_dir = tmp_path / "logs"
    for step, model in enumerate((model_file, changed_file, model_file)):
        args = ["log", str(model), str(image_dir), "--layers", "conv_a", "-q"]
        assert main([*args, "--log-dir", str(log_dir), "--step", str(step)]) == 0
    acc = read_run(log_dir / "activations")
    first = scalar_values(acc, "conv_a/cka_first")
    assert first[0] == pytest.approx(1.0) and first[1] < 0.99
    assert first[2] == pytest.approx(1.0, abs=1e-6)
    assert scalar_values(acc, "conv_a/cka_previous") == pytest.approx([first[1], first[1]])
    assert steps_of(acc, "conv_a/cka_previous") == [1, 2]


def test_log_into_a_run_of_another_layout_is_a_one_line_error(
    model_file, image_dir, tmp_path, capsys
):
    """TensorBoard keeps a tag's first layout: a second call with another --max-image-size
    (another mosaic grid) into the same run is refused, naming a fresh --run-name."""
    args = [
        "log",
        model_file,
        str(image_dir),
        "--layers",
        "conv_a",
        "-q",
        "--log-dir",
        str(tmp_path),
    ]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--max-image-size", "16", "--step", "1"]) == 2
    err = capsys.readouterr().err
    assert "'conv_a' (grid" in err and "--run-name activations_2" in err and "Traceback" not in err
    assert main([*args, "--max-image-size", "16", "--run-name", "activations_2"]) == 0
