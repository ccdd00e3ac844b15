"""StepWorker: finishes logged steps on a background thread, in order, never dropping one.

The training thread runs the probes' forward pass and hands the host copies to
the worker; rendering, encoding, drift bookkeeping and writing happen here.
The queue is bounded: when the worker falls behind, the training thread waits
(and the wait is counted) instead of a step being dropped or memory growing.
A failure in the worker is kept and raised on the training thread at the next
:meth:`submit`, :meth:`flush` or :meth:`close`, so it is never lost.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Workers still open at interpreter exit are flushed by one atexit hook. Python runs
# atexit hooks while daemon threads still run, so the in-flight steps get written.
_LIVE: weakref.WeakSet[StepWorker] = weakref.WeakSet()


def _flush_all_at_exit() -> None:
    for worker in list(_LIVE):
        try:
            worker.close()
        except Exception as err:  # at exit there is nobody left to raise to
            import warnings

            warnings.warn(
                f"tb_activations: a step being written at interpreter exit failed: "
                f"{type(err).__name__}: {err}",
                RuntimeWarning,
                stacklevel=1,
            )


atexit.register(_flush_all_at_exit)


def lower_priority(niceness: int = 10) -> None:
    """Lower the calling thread's CPU priority (Linux), so that training's threads go first.

    On a machine with few cores the worker competes with training for the CPU;
    a niced thread takes only what training leaves. Elsewhere (other systems,
    no permission) this does nothing.
    """
    import os

    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), niceness))
    except (AttributeError, OSError):
        pass


@dataclass
class WorkerStats:
    """What the worker measured, read by the logger into its self-measurement scalars.

    Attributes:
        waits: Times the training thread waited because the queue was full.
        wait_seconds: Total seconds it waited for a free slot.
        last_busy_seconds: The worker's time on the last finished step.
    """

    waits: int = 0
    wait_seconds: float = 0.0
    last_busy_seconds: float = 0.0


class StepWorker:
    """One background thread running submitted step jobs in submission order.

    Args:
        max_in_flight: Steps handed over but not yet finished, at most. A
            :meth:`submit` beyond it waits for the oldest to finish. Defaults to 2.
        name: Thread name, for debuggers and ``py-spy``.

    Example:

    >>> worker = StepWorker()
    >>> worker.submit(lambda: write_step(3))   # returns at once
    >>> worker.flush()                          # every step written, or the first error raised
    """

    def __init__(self, *, max_in_flight: int = 2, name: str = "tb_activations-writer") -> None:
        if (
            isinstance(max_in_flight, bool)
            or not isinstance(max_in_flight, int)
            or max_in_flight < 1
        ):
            raise ValueError(
                "Invalid value for argument `max_in_flight`. Expected a positive int. "
                f"Received: max_in_flight={max_in_flight!r}"
            )
        self.max_in_flight = max_in_flight
        self.stats = WorkerStats()
        self._jobs: deque[Callable[[], Any]] = deque()
        self._in_flight = 0  # queued + running
        self._errors: deque[BaseException] = deque()
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        _LIVE.add(self)

    # -- training thread ------------------------------------------------------

    def wait_for_slot(self) -> float:
        """Wait until fewer than ``max_in_flight`` steps are pending.

        Returns:
            Seconds waited (0.0 when the worker kept up). A wait is counted in
            :attr:`stats`.
        """
        with self._cond:
            if self._in_flight < self.max_in_flight:
                return 0.0
            start = time.perf_counter()
            while self._in_flight >= self.max_in_flight:
                self._cond.wait()
            waited = time.perf_counter() - start
            self.stats.waits += 1
            self.stats.wait_seconds += waited
            return waited

    def submit(self, job: Callable[[], Any]) -> float:
        """Queue ``job``; wait first if ``max_in_flight`` steps are pending.

        Returns:
            Seconds spent waiting for a free slot (0.0 when the worker kept up).

        Raises:
            Exception: the error of an earlier job (once per failed job), raised
                after ``job`` is queued: a failed step never costs a later one.
            RuntimeError: if the worker is closed (``job`` is not queued).
        """
        with self._cond:
            if self._closed:
                raise RuntimeError("This StepWorker is closed.")
        waited = self.wait_for_slot()  # one producer (the training thread): no race here
        with self._cond:
            self._jobs.append(job)
            self._in_flight += 1
            self._cond.notify_all()
            self._raise_pending()
        return waited

    def take_errors(self) -> list[BaseException]:
        """The errors of failed jobs not reported yet, oldest first; they are reported now."""
        with self._cond:
            errors = list(self._errors)
            self._errors.clear()
            return errors

    def flush(self, timeout: float | None = None, *, raise_errors: bool = True) -> bool:
        """Wait until every submitted job has finished; raise the first pending error.

        Args:
            timeout: Seconds to wait at most; ``None`` waits as long as it takes.
            raise_errors: ``False`` leaves errors pending (for :meth:`take_errors`).

        Returns:
            ``True`` if everything finished, ``False`` on timeout.
        """
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while self._in_flight:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            if raise_errors:
                self._raise_pending()
            return True

    def close(self) -> None:
        """Finish what is in flight, stop the thread; raise a pending error once.

        Idempotent. A job that failed does not stop the ones after it (as a failed
        blocking ``log()`` does not stop the next): each step stands alone.
        """
        with self._cond:
            if self._closed and not self._thread.is_alive():
                self._raise_pending()
                return
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        _LIVE.discard(self)
        with self._cond:
            self._raise_pending()

    @property
    def pending(self) -> int:
        """Steps handed over and not finished yet."""
        with self._cond:
            return self._in_flight

    def _raise_pending(self) -> None:
        if self._errors:
            raise self._errors.popleft()

    # -- worker thread --------------------------------------------------------

    def _run(self) -> None:
        lower_priority()
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if not self._jobs:
                    return  # closed and drained
                job = self._jobs[0]
            start = time.perf_counter()
            error: BaseException | None = None
            try:
                job()
            except BaseException as err:  # handed to the training thread, never lost
                error = err
            with self._cond:
                self.stats.last_busy_seconds = time.perf_counter() - start
                self._jobs.popleft()
                self._in_flight -= 1
                if error is not None:
                    self._errors.append(error)
                self._cond.notify_all()
