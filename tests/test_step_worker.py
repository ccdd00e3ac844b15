"""StepWorker: order, bounded queue, errors reported on the caller's thread, flush at exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

from tb_activations.step_worker import StepWorker


def test_jobs_run_in_submission_order_off_the_calling_thread():
    done: list[tuple[int, str]] = []
    worker = StepWorker(max_in_flight=3)
    for i in range(20):
        worker.submit(lambda i=i: done.append((i, threading.current_thread().name)))
    worker.close()
    assert [i for i, _ in done] == list(range(20))
    assert {name for _, name in done} == {"tb_activations-writer"}


def test_a_full_queue_makes_the_caller_wait_and_counts_it():
    gate = threading.Event()
    worker = StepWorker(max_in_flight=1)
    worker.submit(gate.wait)  # the worker is busy until the gate opens
    threading.Timer(0.2, gate.set).start()
    waited = worker.submit(lambda: None)  # must wait for the first to finish
    assert waited >= 0.15
    assert worker.stats.waits == 1
    assert worker.stats.wait_seconds == pytest.approx(waited)
    worker.close()
    assert worker.pending == 0


def test_an_error_in_the_worker_is_raised_at_the_next_call_after_queueing_it():
    done: list[int] = []

    def fail():
        raise OSError("disk full")

    worker = StepWorker(max_in_flight=2)
    worker.submit(fail)
    worker.flush(raise_errors=False)  # the failure is pending, not raised
    with pytest.raises(OSError, match="disk full"):
        worker.submit(lambda: done.append(2))  # raised, but this job is queued all the same
    worker.submit(lambda: done.append(3))
    worker.close()
    assert done == [2, 3]


def test_take_errors_reports_each_failure_once():
    gate = threading.Event()
    worker = StepWorker(max_in_flight=3)
    worker.submit(gate.wait)  # holds the worker: both failures happen after both submits
    for i in range(2):
        worker.submit(lambda i=i: (_ for _ in ()).throw(ValueError(f"step {i}")))
    gate.set()
    worker.flush(raise_errors=False)
    assert [str(e) for e in worker.take_errors()] == ["step 0", "step 1"]
    assert worker.take_errors() == []
    worker.close()


def test_close_raises_a_pending_error_once_and_is_idempotent():
    worker = StepWorker()

    def fail():
        raise ValueError("bad step")

    worker.submit(fail)
    with pytest.raises(ValueError, match="bad step"):
        worker.close()
    worker.close()  # nothing left to raise
    with pytest.raises(RuntimeError, match="closed"):
        worker.submit(lambda: None)


def test_flush_timeout_returns_false_while_a_job_runs():
    gate = threading.Event()
    worker = StepWorker()
    worker.submit(gate.wait)
    assert worker.flush(timeout=0.05) is False
    gate.set()
    assert worker.flush() is True
    worker.close()


def test_invalid_max_in_flight_names_the_argument():
    with pytest.raises(ValueError, match="max_in_flight"):
        StepWorker(max_in_flight=0)


def test_interpreter_exit_finishes_steps_in_flight(tmp_path):
    out = tmp_path / "steps.txt"
    code = textwrap.dedent(
        f"""
        import time
        from tb_activations.step_worker import StepWorker
        w = StepWorker(max_in_flight=2)
        def write(i):
            time.sleep(0.1)
            with open({str(out)!r}, "a") as f:
                f.write(f"{{i}}\\n")
        for i in range(4):
            w.submit(lambda i=i: write(i))
        # no close(): the interpreter exits with two steps still in flight
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert out.read_text().split() == ["0", "1", "2", "3"]


def test_a_slow_worker_never_holds_more_than_max_in_flight():
    seen: list[int] = []
    worker = StepWorker(max_in_flight=2)

    def slow():
        seen.append(worker.pending)
        time.sleep(0.01)

    for _ in range(10):
        worker.submit(slow)
        assert worker.pending <= 2
    worker.close()
    assert max(seen) <= 2
