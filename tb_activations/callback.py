"""ActivationCallback: log activations on fixed probes while ``model.fit`` trains."""

from __future__ import annotations

import inspect
import os
import warnings
import weakref
from collections.abc import Sequence
from typing import Any

import keras

from tb_activations.layer_selection import LayerSpec
from tb_activations.probes import Probes


class ActivationCallback(keras.callbacks.Callback):
    """Writes activation mosaics, top-k strips and overlays to TensorBoard during ``fit``.

    Args:
        probes: A :class:`~tb_activations.Probes` (or an array of images).
        log_dir: TensorBoard log directory; events go to ``log_dir/activations``
            so it can be the same as ``keras.callbacks.TensorBoard``'s.
        layers: Layer selection, see :class:`~tb_activations.ActivationLogger`.
            Defaults to ``None``: every layer with a spatial output.
        freq: ``"epoch"`` (default) to log at the end of every epoch
            (step = epoch index, continuing after ``fit(initial_epoch=...)``),
            or a positive int ``n`` to log every ``n`` batches (step = global
            batch count, ``optimizer.iterations``; with
            ``compile(steps_per_execution=k)`` at the first batch hook at or
            past each multiple of ``n``).
        epoch_freq: With ``freq="epoch"``, log every ``epoch_freq`` epochs.
            Defaults to 1. An error with an int ``freq``.
        pin_reference_at_epoch: Pin the activations at the end of this epoch
            (0-based, before that epoch's log) as the drift reference
            (``L/cka_reference``), see
            :meth:`~tb_activations.ActivationLogger.pin_reference`. Defaults
            to ``None``: no reference.
        examples_pool: Images whose top examples per channel are written
            (see :meth:`~tb_activations.ActivationLogger.log_examples`).
            Defaults to ``None``: none.
        examples_freq: Write examples every this many epochs. Defaults to
            ``None``: once, at the end of training.
        feature_vis_freq: Every this many epochs, write images optimised for
            the 4 strongest channels of each layer
            (:func:`~tb_activations.visualize_channels`). Defaults to ``None``: never.
        log_before_training: Also log the state before training, when
            ``fit`` starts. With ``freq="epoch"`` every step is then the
            number of epochs completed: the state before training is step
            ``initial_epoch`` and the end of epoch ``e`` (0-based) is step
            ``e + 1``. With an int ``freq`` it is step ``optimizer.iterations``
            (0 before a first fit). Defaults to ``False``.
        **logger_kwargs: Any other :class:`~tb_activations.ActivationLogger`
            option (``top_k``, ``rank_by``, ``colormap``, ``normalize``, ...).

    Steps: a second ``fit`` of the same model that continues training (its
    optimizer's iteration count went on) appends: its epoch steps continue
    after the last logged one (``fit(epochs=3)`` then ``fit(epochs=2)`` logs
    steps 0-4). A ``fit`` that went back (weights and optimizer restored from
    an older checkpoint) replaces the run's steps from its first one on, in
    TensorBoard's view (a ``SessionLog.START``).

    The extractor is built once, at ``on_train_begin``. Logging runs in
    inference mode and never changes weights, metrics or history. If a log
    fails, the callback warns and training goes on. Every log is flushed to
    disk as one event, so a run stopped by an exception, ``KeyboardInterrupt``
    or a killed process leaves event files complete up to its last log; the
    event file is closed at ``on_train_end`` (and, if ``fit`` never got there,
    when the logger is collected or the interpreter exits).

    Under a ``tf.distribute`` strategy (``MirroredStrategy``,
    ``MultiWorkerMirroredStrategy``) only the worker that should save
    summaries, the chief (``strategy.extended.should_save_summary``), logs
    and writes: the other workers build the same logger (so a bad option
    fails everywhere alike) but never extract or open a file
    (:attr:`writes` is ``False``). The extraction is a plain ``tf.function``
    called outside ``strategy.run``: it reads the chief's local (first)
    replica of the weights and runs no collective op, so no worker waits on
    it beyond the chief's log time.

    Examples:
        >>> model.fit(x, y, epochs=10, callbacks=[
        ...     ActivationCallback(probes, "logs/run1", layers=["conv*"]),
        ...     keras.callbacks.TensorBoard("logs/run1"),
        ... ])
    """

    def __init__(
        self,
        probes: Probes | Any,
        log_dir: str | os.PathLike,
        *,
        layers: Sequence[LayerSpec] | LayerSpec | None = None,
        freq: str | int = "epoch",
        epoch_freq: int = 1,
        pin_reference_at_epoch: int | None = None,
        log_before_training: bool = False,
        examples_pool: Any = None,
        examples_freq: int | None = None,
        feature_vis_freq: int | None = None,
        **logger_kwargs: Any,
    ) -> None:
        super().__init__()
        if isinstance(probes, (str, os.PathLike)):
            raise ValueError(
                "Invalid value for argument `probes`: received a path, "
                f"probes={os.fspath(probes)!r}. ActivationCallback takes the probes first and "
                "the log directory second (keras.callbacks.TensorBoard takes log_dir first): "
                "ActivationCallback(probes, log_dir, ...)."
            )
        from tb_activations.examples_log import ExamplesSchedule

        if examples_pool is not None:
            logger_kwargs["examples_pool"] = examples_pool
        self._schedule = ExamplesSchedule(
            examples_freq=examples_freq,
            feature_vis_freq=feature_vis_freq,
            enabled=logger_kwargs.get("examples_pool") is not None,
        )
        if pin_reference_at_epoch is not None and (
            isinstance(pin_reference_at_epoch, bool)
            or not isinstance(pin_reference_at_epoch, int)
            or pin_reference_at_epoch < 0
        ):
            raise ValueError(
                "Invalid value for argument `pin_reference_at_epoch`. Expected None or an int >= 0. "
                f"Received: pin_reference_at_epoch={pin_reference_at_epoch!r}"
            )
        self.pin_reference_at_epoch = pin_reference_at_epoch
        if freq != "epoch" and (isinstance(freq, bool) or not isinstance(freq, int) or freq < 1):
            raise ValueError(
                f"Invalid value for argument `freq`. Expected 'epoch' or a positive int. Received: freq={freq!r}"
            )
        if isinstance(epoch_freq, bool) or not isinstance(epoch_freq, int) or epoch_freq < 1:
            raise ValueError(
                f"Invalid value for argument `epoch_freq`. Expected a positive int. Received: epoch_freq={epoch_freq!r}"
            )
        if epoch_freq != 1 and freq != "epoch":
            raise ValueError(
                "Invalid value for argument `epoch_freq`: it applies to freq='epoch' only, and "
                f"freq={freq!r} logs every {freq} batches. Pass one of the two. "
                f"Received: epoch_freq={epoch_freq!r}"
            )
        if not isinstance(log_before_training, bool):
            raise ValueError(
                "Invalid value for argument `log_before_training`. Expected True or False. "
                f"Received: log_before_training={log_before_training!r}"
            )
        from tb_activations.logger import check_probe_count

        self.probes = probes if isinstance(probes, Probes) else Probes(probes)
        check_probe_count(self.probes)
        self.log_dir = os.fspath(log_dir)
        self.layers = layers
        self.freq = freq
        if freq != "epoch":
            # A batch hook only when logging by batch: Keras dispatches batch
            # callbacks asynchronously only while no callback overrides them.
            self.on_train_batch_end = self._on_train_batch_end
        self.epoch_freq = epoch_freq
        self.log_before_training = log_before_training
        # Training waits only for the device pass: rendering and writing go to the
        # logger's background worker unless blocking=True is asked for.
        logger_kwargs.setdefault("blocking", False)
        self.logger_kwargs = logger_kwargs
        self.logger = None
        self.failures = 0
        self._submitted: dict[int, int | None] = {}  # step -> optimizer iterations when logged
        self._session_pending = False  # set by on_train_begin: each fit tells where it starts
        # Epoch steps: epoch + _shift + _offset (_offset > 0 when a fit continues an earlier one).
        self._shift = 1 if log_before_training and freq == "epoch" else 0
        self._offset = 0
        self._next_step = 0  # freq=n: log at the first batch hook at or past this step
        self.writes = True  # False on non-chief workers, set at on_train_begin
        # Check the options now (a typo should fail at construction, not after an epoch).
        from tb_activations.logger import ActivationLogger

        accepted = set(inspect.signature(ActivationLogger).parameters) - {
            "model",
            "probes",
            "log_dir",
        }
        unknown = set(logger_kwargs) - accepted
        if unknown:
            raise TypeError(
                f"ActivationCallback got unexpected keyword arguments: {sorted(unknown)}. "
                f"ActivationLogger options are: {sorted(accepted)}"
            )
        if logger_kwargs.get("attribution_classes") is not None:
            # Types and names now; the index range when the model is known (on_train_begin).
            from tb_activations.attribution.step import resolve_classes_option

            resolve_classes_option(
                logger_kwargs["attribution_classes"], None, logger_kwargs.get("class_names")
            )

    def on_train_begin(self, logs: dict | None = None) -> None:
        from tb_activations.logger import ActivationLogger

        if self.logger is not None:
            # Steps of an earlier fit still on the worker (one stopped by an exception
            # skips on_train_end): written first, so that where they ended is known.
            self.logger._drain()
            self._record_progress()
        if self.logger is None or self.logger.model is not self.model or self.logger._closed:
            # Built once per model: the sub-model is traced here, not per epoch.
            self.logger = ActivationLogger(
                self.model, self.probes, self.log_dir, layers=self.layers, **self.logger_kwargs
            )
            self.logger.extractor  # noqa: B018  (build it now, outside the timed epochs)
            # A new callback on a model that logged into this run in this process (a
            # notebook cell run again): its steps go on from there, or replace them.
            earlier = _PROGRESS.get(self.model, {}).get(self._progress_key())
            if earlier is not None:
                self.logger._last_step = self.logger._max_step = earlier[0]
                self.logger._probes_written = True  # the same probes: the layout check says so
        self.writes = _should_write(self.model)
        if self.writes:
            # Refuse now, before training, data the run cannot show (TensorBoard keeps the
            # first layout of a tag): a clear error, not a warning per epoch.
            self.logger.check_run()
        # Where this fit starts is settled at its first on_epoch_begin: after every
        # callback's on_train_begin (BackupAndRestore restores the weights there).
        self._session_pending = True

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._session_pending and self.logger is not None:
            self._session_pending = False
            self._start_fit(epoch)

    def _start_fit(self, epoch: int) -> None:
        """Settle the steps of this fit: append to, or replace, what the run holds.

        A fit continues the last logged one when the optimizer's iteration
        count did not go back since that log; it went back on weights and
        optimizer restored from an older checkpoint (``load_weights``,
        ``BackupAndRestore``): then the steps from this fit's first one on
        replace the run's (``SessionLog.START``, written by the logger only
        where it logged past that step).
        """
        it0 = self._iterations()
        last, logged_at = self._last_log()
        continued = last is not None and it0 is not None and logged_at is not None
        continued = continued and it0 >= logged_at
        if self.freq != "epoch":
            # Batch steps are optimizer.iterations: they continue or go back by themselves.
            start = it0 if it0 is not None else 0
            self._next_step = (start // self.freq + 1) * self.freq
            before = self.log_before_training and not (continued and start == last)
            self.logger._begin_session(start if before else start + 1)
            if before:
                self._log(start)
            return
        self._offset = max(0, last + 1 - (epoch + self._shift)) if continued else 0
        before = epoch + self._offset  # the state before training, with log_before_training
        if not continued:
            self.logger._begin_session(before if self.log_before_training else epoch)
        if self.log_before_training and (not continued or before > last):
            self._log(before)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == self.pin_reference_at_epoch and self.logger is not None and self.writes:
            try:
                self.logger.pin_reference()
            except Exception as err:  # never end the training run
                self.failures += 1
                warnings.warn(
                    f"tb_activations: pinning the drift reference at epoch {epoch} failed; "
                    f"training continues. {type(err).__name__}: {err}",
                    RuntimeWarning,
                    stacklevel=2,
                )
        if self.freq == "epoch" and (epoch + 1) % self.epoch_freq == 0:
            self._log(self._epoch_step(epoch))
        self._schedule.epoch_end(self, epoch)

    def _on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.freq == "epoch" or not self.writes:
            return
        step = self._global_batch(batch)
        # At or past: with steps_per_execution=k the hook runs every k batches only.
        if step >= self._next_step:
            self._next_step = (step // self.freq + 1) * self.freq
            self._log(step)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._schedule.train_end(self)
        if self.logger is not None:
            # Finish the steps in flight, flush to disk, stop the worker and encoder
            # threads; they come back if fit() runs again.
            for err in self.logger._release():
                self._warn_failed(err)
            self._record_progress()

    def _epoch_step(self, epoch: int) -> int:
        """The step of the end of ``epoch`` (see "How steps are numbered" in the docs)."""
        return epoch + self._shift + self._offset

    def _iterations(self) -> int | None:
        optimizer = getattr(self.model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        if iterations is None:
            return None
        return int(keras.ops.convert_to_numpy(iterations))

    def _progress_key(self) -> tuple:
        return (
            self.logger.run_dir,
            self.freq == "epoch",
            tuple(i.path for i in self.logger.layers),
        )

    def _last_log(self) -> tuple[int | None, int | None]:
        """``(step, optimizer iterations)`` of this logger's last log, or ``(None, None)``;
        iterations ``None`` where unknown (the logger was also called by hand)."""
        mine = self.logger._last_step
        if mine is None:
            return None, None
        entry = _PROGRESS.get(self.model, {}).get(self._progress_key())
        return entry if entry is not None and entry[0] == mine else (mine, None)

    def _global_batch(self, batch: int) -> int:
        iterations = self._iterations()
        return batch + 1 if iterations is None else iterations

    def _warn_failed(self, err: BaseException) -> None:
        """Count and warn about a step that failed on the logger's background worker."""
        self.failures += 1
        step = getattr(err, "tb_activations_step", "?")
        warnings.warn(
            f"tb_activations: logging activations at step {step} failed and was skipped; "
            f"training continues. {type(err).__name__}: {err}",
            RuntimeWarning,
            stacklevel=3,
        )

    def _record_progress(self) -> None:
        """Remember the last written step and the optimizer's iterations when it was logged."""
        step = self.logger._last_step
        if step is not None and step in self._submitted:
            progress = _PROGRESS.setdefault(self.model, {})
            progress[self._progress_key()] = (step, self._submitted[step])
        # Steps in flight are at most a few: keep the latest, drop the rest.
        while len(self._submitted) > 8:
            self._submitted.pop(next(iter(self._submitted)))

    def _log(self, step: int) -> None:
        if self.logger is None or not self.writes:
            return
        # A background step that failed since the last hook is said now, once.
        for err in self.logger.take_failures():
            self._warn_failed(err)
        handed_over = False
        try:
            self._submitted[step] = self._iterations()
            self.logger.log(step)
            handed_over = True
        except Exception as err:  # a logging add-on must never end the training run
            if hasattr(err, "tb_activations_step"):
                # A step that failed while being written (this one when blocking, an
                # earlier one in the background: this one was handed over all the same).
                handed_over = err.tb_activations_step != step
                self._warn_failed(err)
            else:
                self.failures += 1
                warnings.warn(
                    f"tb_activations: logging activations at step {step} failed and was "
                    f"skipped; training continues. {type(err).__name__}: {err}",
                    RuntimeWarning,
                    stacklevel=2,
                )
        if self.logger.blocking:
            self._record_progress()
        elif handed_over:
            # In the background the step is written later: count it as logged now (a later
            # failure is warned about, and on_train_end records what was really written),
            # so that a fit started before the worker is done continues after it.
            progress = _PROGRESS.setdefault(self.model, {})
            progress[self._progress_key()] = (step, self._submitted.get(step))


# model -> {(run_dir, by epoch, layer paths): (last logged step, optimizer iterations then)}:
# what a later fit of the same model needs to tell a continuation from a restart, also
# with a new callback. Weak keys and plain ints: it keeps no model alive.
_PROGRESS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _should_write(model: Any) -> bool:
    """Whether this process writes summaries: ``False`` on non-chief ``tf.distribute`` workers,
    on JAX processes other than 0, and on ``torch.distributed`` ranks other than 0."""
    from tb_activations import backend

    return backend.is_chief(model)
