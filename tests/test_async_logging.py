"""Background logging (blocking=False): training waits for the device pass only, and every
step handed over is written whole, in order, or reported."""

from __future__ import annotations

import threading

import keras
import numpy as np
import pytest

from tb_activations import ActivationCallback, ActivationLogger, Probes, metadata
from tests.conftest import images_at, read_run, scalar_values, small_cnn, steps_of


@pytest.fixture
def probes(images):
    return Probes(np.concatenate([images, images[::-1]], axis=0))  # 6 probes


def _gate_the_worker(monkeypatch):
    """Hold every step on the worker until the returned event is set (a test hook)."""
    gate = threading.Event()
    original = ActivationLogger._finish_step

    def held(self, *args, **kwargs):
        gate.wait(timeout=60)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ActivationLogger, "_finish_step", held)
    return gate


def test_background_logging_writes_what_blocking_logging_writes(tmp_path, probes):
    model = small_cnn()
    for name, blocking in (("sync", True), ("async", False)):
        with ActivationLogger(model, probes, tmp_path / name, blocking=blocking) as logger:
            for step in range(4):
                out = logger.log(step)
                assert (out is None) == (not blocking)
    sync, bg = (
        read_run(tmp_path / "sync" / "activations"),
        read_run(tmp_path / "async" / "activations"),
    )
    timing = {metadata.STALL_SECONDS_TAG, metadata.WORKER_SECONDS_TAG, metadata.QUEUE_WAITS_TAG}
    assert set(sync.Tags()["tensors"]) - timing == set(bg.Tags()["tensors"]) - timing
    for tag in set(sync.Tags()["tensors"]) - timing:
        assert steps_of(sync, tag) == steps_of(bg, tag), tag
    assert steps_of(bg, "conv1/mosaic") == list(range(4))
    for tag in ("conv1/mosaic", "conv3/topk", "conv2/mosaic"):
        for step in range(4):
            a = [np.asarray(i) for i in images_at(sync, tag, step)[2]]
            b = [np.asarray(i) for i in images_at(bg, tag, step)[2]]
            assert all(np.array_equal(x, y) for x, y in zip(a, b)), (tag, step)
    assert scalar_values(bg, "conv3/cka_first") == pytest.approx(
        scalar_values(sync, "conv3/cka_first")
    )
    assert metadata.QUEUE_WAITS_TAG in bg.Tags()["tensors"]


def test_log_returns_before_the_step_is_rendered_and_waits_at_the_third(
    tmp_path, probes, monkeypatch
):
    gate = _gate_the_worker(monkeypatch)
    logger = ActivationLogger(small_cnn(), probes, tmp_path, layers=["conv1"], blocking=False)
    logger.log(0)  # on the worker, held at the gate
    logger.log(1)  # queued: two in flight
    assert logger._worker.pending == 2
    third = threading.Thread(target=logger.log, args=(2,))
    third.start()
    third.join(timeout=1.0)
    assert third.is_alive()  # the bounded queue holds training back, nothing is dropped
    gate.set()
    third.join(timeout=60)
    logger.close()
    acc = read_run(tmp_path / "activations")
    assert steps_of(acc, "conv1/mosaic") == [0, 1, 2]
    assert scalar_values(acc, metadata.QUEUE_WAITS_TAG)[-1] == 1.0


def test_a_failed_background_step_is_raised_by_the_next_log(tmp_path, probes, monkeypatch):
    logger = ActivationLogger(small_cnn(), probes, tmp_path, layers=["conv1"], blocking=False)
    logger.log(0)
    logger.flush()
    original = logger._writer.write

    def full(step, values):
        if step == 1:
            raise OSError("disk full")
        return original(step, values)

    monkeypatch.setattr(logger._writer, "write", full)
    logger.log(1)
    logger._drain()
    with pytest.raises(OSError, match="disk full") as info:
        logger.log(2)  # says step 1 failed; step 2 is handed over all the same
    assert "while writing step 1" in "\n".join(getattr(info.value, "__notes__", []))
    logger.log(3)
    logger.close()
    assert steps_of(read_run(tmp_path / "activations"), "conv1/mosaic") == [0, 2, 3]


def test_close_raises_a_failure_not_reported_yet(tmp_path, probes, monkeypatch):
    logger = ActivationLogger(small_cnn(), probes, tmp_path, layers=["conv1"], blocking=False)
    monkeypatch.setattr(
        ActivationLogger, "_render_all", lambda *a, **k: (_ for _ in ()).throw(ValueError("bad"))
    )
    logger.log(0)
    with pytest.raises(ValueError, match="bad"):
        logger.close()


def _data(n=8):
    rng = np.random.default_rng(0)
    return rng.random((n, 16, 16, 3), dtype=np.float32), rng.integers(0, 3, n)


def test_the_callback_logs_in_the_background_and_flushes_at_train_end(tmp_path, monkeypatch):
    gate = _gate_the_worker(monkeypatch)
    x, y = _data()
    model = small_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    cb = ActivationCallback(Probes(x[:6]), tmp_path, layers=["conv2"])
    assert cb.logger_kwargs["blocking"] is False
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(cb.logger._worker.pending)
            if epoch == 1:
                gate.set()  # the worker may go on from here

    model.fit(x, y, epochs=4, batch_size=8, verbose=0, callbacks=[cb, Watch()])
    assert seen[:2] == [1, 2]  # epochs 0 and 1 went on while their steps waited
    assert cb.failures == 0
    acc = read_run(tmp_path / "activations")
    assert steps_of(acc, "conv2/mosaic") == [0, 1, 2, 3]  # on_train_end flushed them all
    stalls = scalar_values(acc, metadata.STALL_SECONDS_TAG)
    workers = scalar_values(acc, metadata.WORKER_SECONDS_TAG)
    assert len(stalls) == len(workers) == 4 and all(s > 0 for s in stalls + workers)


def test_a_failed_background_step_warns_and_training_goes_on(tmp_path, monkeypatch):
    x, y = _data()
    model = small_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    cb = ActivationCallback(Probes(x[:6]), tmp_path, layers=["conv2"])
    original = ActivationLogger._finish_step

    def fail_at_one(self, step, *args, **kwargs):
        if step == 1:
            raise OSError("disk full")
        return original(self, step, *args, **kwargs)

    monkeypatch.setattr(ActivationLogger, "_finish_step", fail_at_one)
    with pytest.warns(RuntimeWarning, match="step 1 failed and was skipped; training continues"):
        history = model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[cb])
    assert len(history.history["loss"]) == 3 and cb.failures == 1
    assert steps_of(read_run(tmp_path / "activations"), "conv2/mosaic") == [0, 2]


def test_an_interrupted_fit_still_writes_every_step_handed_over(tmp_path, monkeypatch):
    gate = _gate_the_worker(monkeypatch)
    x, y = _data()
    model = small_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    cb = ActivationCallback(Probes(x[:6]), tmp_path, layers=["conv2"])

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=5, batch_size=8, verbose=0, callbacks=[cb, Interrupt()])
    gate.set()
    cb.logger.close()  # what interpreter exit does (an atexit hook) in a script
    assert steps_of(read_run(tmp_path / "activations"), "conv2/mosaic") == [0, 1]


def test_blocking_must_be_a_bool_like_option_and_pin_reference_waits_for_the_worker(
    tmp_path, probes
):
    with ActivationLogger(small_cnn(), probes, tmp_path, layers=["conv3"], blocking=False) as lg:
        lg.log(0)
        lg.pin_reference()  # waits for step 0 first: drift state stays in step order
        lg.log(1)
    acc = read_run(tmp_path / "activations")
    assert steps_of(acc, "conv3/cka_reference") == [1]
