"""Interrupted and resumed runs: what is on disk stays readable, steps continue, files close.

A fit stopped by an exception, ``KeyboardInterrupt`` or a killed process
never reaches ``on_train_end``; every log is one event flushed at once, so
TensorBoard's own reader sees every finished log and nothing of the
unfinished one.
"""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
import textwrap
import urllib.parse
import weakref
from pathlib import Path

import keras
import numpy as np
import pytest

from tb_activations import ActivationCallback, ActivationLogger, Probes
from tests.conftest import read_run, session_starts, small_cnn, steps_of

ROOT = Path(__file__).parent.parent
CORE = ("conv1/mosaic", "conv2/topk", "conv3/overlay", "conv1/channel_stats", "conv2/cka_first")


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 16, 16, 3), dtype=np.float32)
    y = (x[:, :8].mean(axis=(1, 2, 3)) > x[:, 8:].mean(axis=(1, 2, 3))).astype("int32")
    return x, y


def _model():
    model = small_cnn(seed=1)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


class StopAt(keras.callbacks.Callback):
    """Raises ``error`` after batch ``batch`` of epoch ``epoch`` (mid-epoch)."""

    def __init__(self, epoch: int, batch: int, error: BaseException):
        super().__init__()
        self.epoch, self.batch, self.error, self.current = epoch, batch, error, -1

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.current, batch) == (self.epoch, self.batch):
            raise self.error


def _open_files() -> set[str]:
    fds = Path("/proc/self/fd")
    out = set()
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # an fd closed while listing
            out.add(os.readlink(fd))
    return out


def _event_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("events.out.tfevents.*"))


def _assert_complete_steps(run_dir: Path, steps: list[int]) -> None:
    acc = read_run(run_dir)
    for tag in CORE:
        assert steps_of(acc, tag) == steps, tag


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_fit_stopped_mid_epoch_leaves_every_finished_log_readable(tmp_path, error):
    x, y = _data()
    cb = ActivationCallback(Probes(x[:4]), tmp_path, layers=["conv*"])
    with pytest.raises(type(error)):
        _model().fit(x, y, epochs=6, batch_size=16, verbose=0, callbacks=[cb, StopAt(3, 1, error)])
    # Background logging: a step handed over just before the interruption may still be
    # on the worker; it is written all the same (interpreter exit flushes it too).
    cb.logger.flush()
    # on_train_end never ran: the file is still open, and already complete.
    (path,) = _event_files(tmp_path / "activations")
    assert str(path) in _open_files()
    _assert_complete_steps(tmp_path / "activations", [0, 1, 2])


@pytest.mark.parametrize("resume_with", ["same callback", "new callback"])
def test_a_resumed_fit_continues_the_steps_without_duplicates(tmp_path, resume_with):
    x, y = _data()
    probes = Probes(x[:4])
    model = _model()
    cb = ActivationCallback(probes, tmp_path, layers=["conv*"])
    with pytest.raises(KeyboardInterrupt):
        model.fit(
            x,
            y,
            epochs=6,
            batch_size=16,
            verbose=0,
            callbacks=[cb, StopAt(3, 1, KeyboardInterrupt())],
        )
    if resume_with == "new callback":  # as after a restart: a new logger, a new event file
        cb = ActivationCallback(probes, tmp_path, layers=["conv*"])
    model.fit(x, y, epochs=5, initial_epoch=3, batch_size=16, verbose=0, callbacks=[cb])
    files = _event_files(tmp_path / "activations")
    assert len(files) == (1 if resume_with == "same callback" else 2)
    _assert_complete_steps(tmp_path / "activations", [0, 1, 2, 3, 4])
    assert cb.failures == 0
    assert str(files[-1]) not in _open_files()  # on_train_end closed it


def _restarted_from_an_older_checkpoint(tmp_path: Path, resume_with: str) -> Path:
    """Epochs 0-5 logged, then training restarts from the weights of epoch 2 and runs 3-4,
    with the same callback or in a new process."""
    x, y = _data()
    probes = Probes(x[:4])
    model = _model()
    weights = tmp_path / "epoch2.weights.h5"

    def keep(epoch, logs):
        if epoch == 2:
            model.save_weights(weights)

    cb = ActivationCallback(probes, tmp_path, layers=["conv*"])
    saver = keras.callbacks.LambdaCallback(on_epoch_end=keep)
    model.fit(x, y, epochs=6, batch_size=16, verbose=0, callbacks=[cb, saver])
    if resume_with == "same callback":
        model.load_weights(weights)
        model.fit(x, y, epochs=5, initial_epoch=3, batch_size=16, verbose=0, callbacks=[cb])
        assert cb.failures == 0
    else:
        script = textwrap.dedent(
            f"""
            from tb_activations import ActivationCallback, Probes
            from tests.test_interruptions import _data, _model

            x, y = _data()
            model = _model()
            model.load_weights({str(weights)!r})
            cb = ActivationCallback(Probes(x[:4]), {str(tmp_path)!r}, layers=["conv*"])
            model.fit(x, y, epochs=5, initial_epoch=3, batch_size=16, verbose=0, callbacks=[cb])
            assert cb.failures == 0
            """
        )
        env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.run(
            [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, timeout=180
        )
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return tmp_path / "activations"


def _tensorboard_view(run_dir: Path):
    """The accumulator of TensorBoard's Python loader (`--load_fast=false`) over ``run_dir``.

    (The legacy `event_accumulator` that read_run uses never purges tensors; the
    server does not use it.)
    """
    from tensorboard.backend.event_processing import plugin_event_accumulator

    acc = plugin_event_accumulator.EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


@pytest.mark.parametrize("resume_with", ["same callback", "new process"])
def test_a_restart_from_an_older_checkpoint_supersedes_the_later_steps(tmp_path, resume_with):
    run_dir = _restarted_from_an_older_checkpoint(tmp_path, resume_with)
    acc = _tensorboard_view(run_dir)
    for tag in CORE:  # one timeline: the old 3, 4 and 5 are gone
        assert [e.step for e in acc.Tensors(tag)] == [0, 1, 2, 3, 4], tag
    # On disk, nothing was deleted: the first session's steps 3-5 are still in its file.
    assert steps_of(read_run(run_dir), "conv1/mosaic") == [0, 1, 2, 3, 4, 5, 3, 4]
    first_session_end = acc.Tensors("conv1/mosaic")[2].wall_time
    assert all(e.wall_time > first_session_end for e in acc.Tensors("conv1/mosaic")[3:])
    assert session_starts(run_dir) == [0, 3]


def test_two_callbacks_sharing_a_run_keep_every_step(tmp_path):
    """One by epoch, one by batch, in one run: neither drops the other's steps (no START
    from the second), through a continued fit too."""
    x, y = _data()
    probes = Probes(x[:2])
    model = _model()
    by_epoch = ActivationCallback(probes, tmp_path, layers=["pool1"])
    by_batch = ActivationCallback(probes, tmp_path, layers=["conv1"], freq=2)
    for first, last in ((0, 2), (2, 4)):
        model.fit(
            x, y, epochs=last, initial_epoch=first, batch_size=16, verbose=0,
            callbacks=[by_batch, by_epoch],
        )  # fmt: skip
    acc = _tensorboard_view(tmp_path / "activations")
    assert [e.step for e in acc.Tensors("pool1/mosaic")] == [0, 1, 2, 3]
    assert [e.step for e in acc.Tensors("conv1/mosaic")] == [2, 4, 6, 8, 10, 12, 14, 16]
    # The run's first event only: one START, before whichever logger's background worker
    # writes first (by_batch's session begins at step 1, by_epoch's at 0; under load either).
    assert session_starts(tmp_path / "activations") in ([1], [0])


@pytest.mark.parametrize("load_fast", [True, False], ids=["rust_loader", "python_loader"])
def test_the_dashboard_shows_one_timeline_after_a_restart(tmp_path, load_fast):
    from tests.test_dashboard_e2e import TensorBoard

    _restarted_from_an_older_checkpoint(tmp_path / "logs", "new process")
    board = TensorBoard(str(tmp_path / "logs"), tmp_path, load_fast=load_fast)
    try:
        board.wait_listening()
        board.wait_plugin_enabled()
        layers = board.get_json("/data/plugin/activations/layers?run=activations")
        assert layers["logged_steps"] == [0, 1, 2, 3, 4]
        assert layers["steps"] == [0, 1, 2, 3, 4]
        for layer in layers["layers"]:
            query = urllib.parse.urlencode({"run": "activations", "layer": layer["layer"]})
            steps = board.get_json(f"/data/plugin/activations/steps?{query}")
            assert steps["steps"] == [0, 1, 2, 3, 4]
    finally:
        board.stop()


def test_a_killed_process_keeps_every_finished_log(tmp_path):
    """SIGKILL in the middle of the fourth log(): no finalizer, no atexit, no flush on exit."""
    script = textwrap.dedent(
        f"""
        import os, signal
        import numpy as np
        from tb_activations import ActivationCallback, Probes
        from tb_activations.summary import SummaryWriter
        from tests.conftest import small_cnn

        write = SummaryWriter.write
        def die_at_step_3(self, step, *args, **kwargs):  # rendered, not yet written
            if step == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return write(self, step, *args, **kwargs)
        SummaryWriter.write = die_at_step_3

        rng = np.random.default_rng(0)
        x = rng.random((32, 16, 16, 3), dtype=np.float32)
        y = rng.integers(0, 3, 32)
        model = small_cnn(seed=1)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        cb = ActivationCallback(Probes(x[:4]), {str(tmp_path)!r}, layers=["conv*"])
        model.fit(x, y, epochs=6, batch_size=16, verbose=0, callbacks=[cb])
        """
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr.decode()[-3000:]
    _assert_complete_steps(tmp_path / "activations", [0, 1, 2])


def test_an_event_file_cut_inside_its_last_record_reads_up_to_the_record_before(tmp_path):
    """A crash during the write itself leaves a prefix of the last record on disk."""
    x, _ = _data()
    logger = ActivationLogger(_model(), Probes(x[:4]), tmp_path, layers=["conv*"])
    sizes = []
    for step in range(3):
        logger.log(step)
        sizes.append(os.path.getsize(logger._writer.path))
    logger.close()
    (path,) = _event_files(tmp_path / "activations")
    whole = path.read_bytes()
    for cut in (sizes[1] + 1, sizes[1] + 12, (sizes[1] + sizes[2]) // 2, sizes[2] - 1):
        path.write_bytes(whole[:cut])
        _assert_complete_steps(tmp_path / "activations", [0, 1])
    path.write_bytes(whole)
    _assert_complete_steps(tmp_path / "activations", [0, 1, 2])


def test_an_unclosed_logger_is_not_kept_alive_and_closes_its_file_when_collected(tmp_path):
    x, _ = _data()
    logger = ActivationLogger(_model(), Probes(x[:4]), tmp_path, layers=["conv1"])
    logger.log(0)
    path, ref = logger._writer.path, weakref.ref(logger)
    assert path in _open_files()
    del logger
    gc.collect()
    assert ref() is None
    assert path not in _open_files()
    assert steps_of(read_run(tmp_path / "activations"), "conv1/mosaic") == [0]


def test_interpreter_exit_closes_an_unclosed_event_file(tmp_path):
    script = textwrap.dedent(
        f"""
        import numpy as np
        from tb_activations import ActivationLogger, Probes
        from tb_activations.summary import RecordFile
        from tests.conftest import small_cnn

        close = RecordFile.close
        def reported_close(self):
            print("event file closed", flush=True)
            close(self)
        RecordFile.close = reported_close

        x = np.random.default_rng(0).random((4, 16, 16, 3), dtype=np.float32)
        logger = ActivationLogger(small_cnn(), Probes(x), {str(tmp_path)!r}, layers=["conv1"])
        logger.log(0)
        assert logger._writer._finalizer.atexit and logger._writer._finalizer.alive
        print("exiting", flush=True)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["exiting", "event", "file", "closed"]
    assert steps_of(read_run(tmp_path / "activations"), "conv1/mosaic") == [0]


def _multiplexer_steps(log_dir: Path, tag: str) -> list[int]:
    """Steps of ``tag`` in run ``activations`` as TensorBoard's Python multiplexer serves them."""
    from tensorboard.backend.event_processing import plugin_event_multiplexer

    mux = plugin_event_multiplexer.EventMultiplexer(tensor_size_guidance={"images": 0})
    mux.AddRunsFromDirectory(str(log_dir))
    mux.Reload()
    return [e.step for e in mux.Tensors("activations", tag)]


@pytest.mark.parametrize("second_with", ["same callback", "new callback"])
def test_a_second_fit_of_the_same_model_appends_its_steps(tmp_path, second_with):
    """fit(epochs=3) then fit(epochs=2) (a notebook): the weights went on, so do the steps:
    0-4, the first fit's steps and the probe images still there, no SessionLog.START."""
    x, y = _data()
    probes = Probes(x[:4])
    model = _model()
    cb = ActivationCallback(probes, tmp_path, layers=["conv*"])
    model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[cb])
    if second_with == "new callback":  # the notebook cell run again
        cb = ActivationCallback(probes, tmp_path, layers=["conv*"])
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[cb])
    run_dir = tmp_path / "activations"
    acc = _tensorboard_view(run_dir)
    for tag in CORE:
        assert [e.step for e in acc.Tensors(tag)] == [0, 1, 2, 3, 4], tag
    assert _multiplexer_steps(tmp_path, "conv1/mosaic") == [0, 1, 2, 3, 4]
    assert [e.step for e in acc.Tensors("_tb_activations/probes")] == [0]
    assert session_starts(run_dir) == [0]
    assert cb.failures == 0
