"""ActivationCallback: log activations on fixed probes while ``model.fit`` trains."""

from __future__ import annotations

import inspect
import os
import warnings
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
            batch count, ``optimizer.iterations``).
        epoch_freq: With ``freq="epoch"``, log every ``epoch_freq`` epochs.
            Defaults to 1.
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
        **logger_kwargs: Any other :class:`~tb_activations.ActivationLogger`
            option (``top_k``, ``rank_by``, ``colormap``, ``normalize``, ...).

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
        examples_pool: Any = None,
        examples_freq: int | None = None,
        feature_vis_freq: int | None = None,
        **logger_kwargs: Any,
    ) -> None:
        super().__init__()
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
        self.probes = probes if isinstance(probes, Probes) else Probes(probes)
        self.log_dir = os.fspath(log_dir)
        self.layers = layers
        self.freq = freq
        if freq != "epoch":
            # A batch hook only when logging by batch: Keras dispatches batch
            # callbacks asynchronously only while no callback overrides them.
            self.on_train_batch_end = self._on_train_batch_end
        self.epoch_freq = epoch_freq
        self.logger_kwargs = logger_kwargs
        self.logger = None
        self.failures = 0
        self._session_pending = False  # set by on_train_begin: each fit tells where it starts
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

    def on_train_begin(self, logs: dict | None = None) -> None:
        from tb_activations.logger import ActivationLogger

        if self.logger is None or self.logger.model is not self.model or self.logger._closed:
            # Built once per model: the sub-model is traced here, not per epoch.
            self.logger = ActivationLogger(
                self.model, self.probes, self.log_dir, layers=self.layers, **self.logger_kwargs
            )
            self.logger.extractor  # noqa: B018  (build it now, outside the timed epochs)
        self.writes = _should_write(self.model)
        self._session_pending = True
        if self.freq != "epoch":
            # Batch steps are optimizer.iterations: this fit's first step is the next one.
            self.logger._begin_session(self._global_batch(-1) + 1)
            self._session_pending = False

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._session_pending and self.logger is not None:
            # Where this fit starts: if the logger already logged past it (a restart from
            # an older checkpoint), the next log supersedes the run's steps from here on.
            self.logger._begin_session(epoch)
            self._session_pending = False

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
            self._log(epoch)
        self._schedule.epoch_end(self, epoch)

    def _on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.freq == "epoch" or not self.writes:
            return
        step = self._global_batch(batch)
        if step % self.freq == 0:
            self._log(step)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._schedule.train_end(self)
        if self.logger is not None:
            self.logger._writer.close()  # flush to disk; reopened if fit() runs again

    def _global_batch(self, batch: int) -> int:
        optimizer = getattr(self.model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        if iterations is not None:
            return int(keras.ops.convert_to_numpy(iterations))
        return batch + 1

    def _log(self, step: int) -> None:
        if self.logger is None or not self.writes:
            return
        try:
            self.logger.log(step)
        except Exception as err:  # a logging add-on must never end the training run
            self.failures += 1
            warnings.warn(
                f"tb_activations: logging activations at step {step} failed and was skipped; "
                f"training continues. {type(err).__name__}: {err}",
                RuntimeWarning,
                stacklevel=2,
            )


def _should_write(model: Any) -> bool:
    """Whether this process writes summaries: ``False`` on non-chief ``tf.distribute`` workers,
    on JAX processes other than 0, and on ``torch.distributed`` ranks other than 0."""
    from tb_activations import backend

    return backend.is_chief(model)
