"""Every Keras backend: the same activations and pictures, no TensorFlow where it is not the backend.

The JAX and PyTorch runs are subprocesses (``tests/backend_worker.py``) under
their own ``KERAS_BACKEND``; this process compares what they return and
wrote with the TensorFlow backend's own results and TensorBoard's readers.
Tests marked ``backends`` also run in-process under each backend in CI
(``KERAS_BACKEND=jax python -m pytest -m backends``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.conftest import backend_env, images_at, read_run, steps_of

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "backend_worker.py"
OTHER_BACKENDS = ["jax", "torch"]


def _run_worker(mode, backend, tmp_path, env=None, timeout=240):
    out = tmp_path / f"{mode}_{backend}.npz"
    full_env = backend_env(backend, PYTHONPATH=str(ROOT), **(env or {}))
    proc = subprocess.run(
        [sys.executable, str(WORKER), mode, str(tmp_path / "logs"), str(out)],
        env=full_env,
        cwd=ROOT,
        capture_output=True,
        timeout=timeout,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    with np.load(out) as data:
        return {k.replace("__", "/"): data[k] for k in data.files}


def _importable(name):
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def _skip_without(backend):
    if not _importable(backend):
        pytest.skip(f"{backend} is not installed (pip install -e '.[{backend}]')")


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_fit_logs_without_tensorflow_and_agrees_with_the_tensorflow_backend(backend, tmp_path):
    _skip_without("jax")
    _skip_without("torch")  # the worker ends by switching to the other one
    if keras.backend.backend() != "tensorflow":
        pytest.skip("compares with the TensorFlow backend in this process")
    from tb_activations import ActivationExtractor, ActivationLogger, Probes, select_layers
    from tests.backend_worker import X, exact_model

    got = _run_worker("fit", backend, tmp_path)
    assert str(got["backend"]) == backend
    assert not got["tensorflow_loaded"], "TensorFlow was imported on the JAX/PyTorch backend"

    # The callback wrote every step, readable with TensorBoard's own loader.
    acc = read_run(tmp_path / "logs" / "activations")
    assert steps_of(acc, "conv/mosaic") == [1, 2]
    # The activations follow weight changes: after doubling, and after fitting.
    np.testing.assert_array_equal(got["conv_doubled"], 2 * got["conv_before"])
    assert not np.array_equal(got["conv_after_fit"], got["conv_before"])
    np.testing.assert_allclose(got["conv_after_fit"], got["conv_fit_reference"], rtol=1e-6)
    np.testing.assert_array_equal(got["sub_doubled"], 2 * got["sub_first"])
    assert not got["sub_hooks_left"]

    # A backend switched after the extractor was built: a clear error, not a wrong picture.
    other = "torch" if backend == "jax" else "jax"
    messages = json.loads(str(got["messages"]))
    assert f"switched from {backend!r} to {other!r}" in messages["extractor"]
    # ... and the logger built before the switch refuses the next step, writing nothing of it.
    assert f"switched from {backend!r} to {other!r}" in messages["logger"]
    assert "Build the model and the logger again" in messages["logger"]
    assert steps_of(read_run(tmp_path / "logs" / "switch" / "activations"), "conv/mosaic") == [0]
    assert messages["rebuild"].startswith("TypeError: Expected a Keras model")
    assert "keras.config.set_backend" in messages["rebuild"]

    # The same numbers as the TensorFlow backend on the same hand-set weights.
    model = exact_model(keras)
    ours = ActivationExtractor(
        model, select_layers(model, ["conv", "relu", "pool"]), levels=True
    ).run_with_summaries(X)
    for path in ("conv", "relu", "pool"):
        np.testing.assert_array_equal(got[f"act/{path}"], ours.activations[path])  # exact
        np.testing.assert_array_equal(got[f"levels/{path}"], ours.levels[path])
        np.testing.assert_allclose(got[f"stats/{path}"], ours.stats[path], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(got[f"gram/{path}"], ours.grams[path], rtol=1e-6)

    # ... and the same pictures, pixel for pixel.
    tf_dir = tmp_path / "tf"
    logger = ActivationLogger(
        model, Probes(X), str(tf_dir), layers=["relu"], views=["mosaic", "topk"]
    )
    logger.log(0)
    logger.close()
    theirs_acc = read_run(tmp_path / "logs" / "exact" / "activations")
    ours_acc = read_run(tf_dir / "activations")
    for tag in ("relu/mosaic", "relu/topk"):
        w1, h1, theirs = images_at(theirs_acc, tag)
        w2, h2, mine = images_at(ours_acc, tag)
        assert (w1, h1) == (w2, h2) and len(theirs) == len(mine)
        for a, b in zip(theirs, mine):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_unsupported_backend_names_the_supported_ones(tmp_path):
    got = _run_worker("unsupported", "numpy", tmp_path)
    message = str(got["message"])
    assert "Unsupported Keras backend 'numpy'" in message
    assert "tensorflow, jax, torch" in message
    # The logger says the same, and leaves nothing on disk.
    assert "Unsupported Keras backend 'numpy'" in str(got["logger_message"])
    assert "tensorflow, jax, torch" in str(got["logger_message"])
    assert not (tmp_path / "logs").exists()


def test_jax_data_parallel_one_writer_every_step(tmp_path):
    _skip_without("jax")
    got = _run_worker(
        "jax_data_parallel",
        "jax",
        tmp_path,
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    assert int(got["devices"]) == 2 and bool(got["writes"])
    assert not got["tensorflow_loaded"]
    run = tmp_path / "logs" / "activations"
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # one writer
    assert steps_of(read_run(run), "conv/mosaic") == [1, 2, 3, 4]  # every step
    np.testing.assert_allclose(got["conv"], got["conv_reference"], rtol=1e-6)


def test_torch_distributed_only_rank_0_writes(tmp_path):
    _skip_without("torch")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(
        os.environ,
        KERAS_BACKEND="torch",
        PYTHONPATH=str(ROOT),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE="2",
    )
    procs = []
    for rank in range(2):
        out = tmp_path / f"rank{rank}.npz"
        log_dir = tmp_path / f"logs{rank}"
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), "torch_distributed", str(log_dir), str(out)],
                env=dict(env, RANK=str(rank)),
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-4000:]
    for rank in range(2):
        with np.load(tmp_path / f"rank{rank}.npz") as got:
            assert int(got["rank"]) == rank and bool(got["writes"]) == (rank == 0)
            assert not got["tensorflow_loaded"]
    assert steps_of(read_run(tmp_path / "logs0" / "activations"), "conv/mosaic") == [1, 2]
    assert not (tmp_path / "logs1").exists()  # nothing on disk from rank 1


# -- in this process, under whichever backend runs the suite (CI: each of them) --------------


@pytest.mark.backends
def test_activations_follow_weight_changes():
    from tb_activations import ActivationExtractor, select_layers
    from tests.backend_worker import BIAS, KERNEL, X, exact_model

    model = exact_model(keras)
    ex = ActivationExtractor(model, select_layers(model, ["conv"]), levels=True)
    first = ex.run_with_summaries(X)
    model.get_layer("conv").set_weights([KERNEL * 3, BIAS * 3])
    second = ex.run_with_summaries(X)
    np.testing.assert_array_equal(second.activations["conv"], 3 * first.activations["conv"])
    np.testing.assert_allclose(
        second.stats["conv"][..., :4], 3 * first.stats["conv"][..., :4], rtol=1e-5
    )
    model.get_layer("conv").set_weights([KERNEL, BIAS])
    np.testing.assert_array_equal(ex(X)["conv"], first.activations["conv"])


@pytest.mark.backends
def test_a_model_of_another_framework_is_a_clear_error():
    from tb_activations import ActivationExtractor

    class NotKeras:
        name = "module"

    with pytest.raises(
        TypeError, match=r"Expected a Keras model .*tensorflow.*jax.*torch.*NotKeras"
    ):
        ActivationExtractor(NotKeras(), [object()])


@pytest.mark.backends
def test_a_torch_module_is_a_clear_error_on_every_entry_point(tmp_path):
    # A real model of another framework, handed to the logger, the layer listing and the
    # extractor: each names the Keras backends it supports.
    torch = pytest.importorskip("torch")
    from tb_activations import ActivationExtractor, ActivationLogger, list_layers, select_layers

    module = torch.nn.Conv2d(1, 2, 1)
    message = r"Expected a Keras model .*'tensorflow', 'jax', 'torch'.*Conv2d.*torch\.nn\.Module"
    x = np.zeros((2, 4, 4, 1), np.float32)
    with pytest.raises(TypeError, match=message):
        ActivationLogger(module, x, tmp_path)
    with pytest.raises(TypeError, match=message):
        list_layers(module)
    with pytest.raises(TypeError, match=message):
        select_layers(module, ["conv"])
    with pytest.raises(TypeError, match=message):
        ActivationExtractor(module, [object()])
    assert not tmp_path.joinpath("activations").exists()


@pytest.mark.backends
def test_backend_helpers_name_the_current_backend():
    from tb_activations import backend

    assert backend.current() == keras.backend.backend() == backend.configured()
    assert backend.is_chief(None)
    with pytest.raises(ValueError, match=r"Expected one of \('tensorflow', 'jax', 'torch'\)"):
        backend.module("numpy")


@pytest.mark.backends
def test_nested_backbone_layers_through_the_outer_model():
    from tb_activations import ActivationExtractor, select_layers
    from tests.backend_worker import X

    inputs = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(3, 3, padding="same", name="conv")
    backbone = keras.Model(inputs, keras.layers.ReLU(name="relu")(conv(inputs)), name="backbone")
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            backbone,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    infos = select_layers(model, ["backbone/relu", "backbone/conv"])
    ex = ActivationExtractor(model, infos, include_output=True)
    acts, output = ex.run(X)
    inner = keras.ops.convert_to_numpy(backbone(X, training=False))
    np.testing.assert_allclose(acts["backbone/relu"], inner, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        output, keras.ops.convert_to_numpy(model(X, training=False)), rtol=1e-5, atol=1e-5
    )
    conv.set_weights([w * 2 for w in conv.get_weights()])  # followed through the nesting
    np.testing.assert_allclose(ex(X)["backbone/relu"], 2 * inner, rtol=1e-5, atol=1e-5)


#: The files whose tests marked ``backends`` rerun under JAX and PyTorch (docs/guide/backends.md).
BACKEND_FILES = [
    "tests/test_extraction.py",
    "tests/test_backends.py",
    "tests/test_histograms.py",
    # Issue 12, "Bad input": the hostile-input and dtype tests, whole; the bad-input tests
    # of the other modules; the logger's, the CLI's and drift's backend-dependent core.
    "tests/test_hostile_input.py",
    "tests/test_dtypes.py",
    "tests/test_logger.py",
    "tests/test_cli.py",
    "tests/test_callback.py",
    "tests/test_attribution.py",
    "tests/test_attribution_step.py",
    "tests/test_channel_examples.py",
    "tests/test_examples_log.py",
    "tests/test_feature_vis.py",
    "tests/test_long_runs.py",
]

#: Skips allowed under another backend (a limit of that backend, said in the reason).
BACKEND_SKIPS = ("jax_enable_x64",)


def test_every_file_with_backend_marked_tests_is_rerun():
    # A test marked `backends` in a file missing from BACKEND_FILES would never run
    # under JAX or PyTorch, silently.
    marked = {
        f"tests/{path.name}"
        for path in (ROOT / "tests").glob("test_*.py")
        if "pytest.mark.backends" in path.read_text()
    }
    assert marked <= set(BACKEND_FILES), sorted(marked - set(BACKEND_FILES))


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_backend_marked_tests_pass_under(backend):
    """CI runs the suite on TensorFlow; this runs the tests marked ``backends`` on the others."""
    _skip_without(backend)
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        pytest.skip("already running under another backend")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-m",
            "backends",
            "-p",
            "no:cacheprovider",
            "-n",  # in this process: its terminal summary checks this process's modules
            "0",
            *BACKEND_FILES,
        ],
        env=backend_env(backend),
        cwd=ROOT,
        capture_output=True,
        timeout=500,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
    # As a user's process on that backend (tests/conftest.py keeps TensorFlow out).
    assert "tensorflow imported: no" in proc.stdout
    skipped = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    assert all(any(ok in line for ok in BACKEND_SKIPS) for line in skipped), skipped
