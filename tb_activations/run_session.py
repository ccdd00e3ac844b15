"""The run a logger writes to: restarts (``SessionLog.START``) and its layer layout.

TensorBoard keeps a tag's first metadata, and a ``SessionLog.START`` drops what
a run holds from its step on: this module decides where a logger writes a
START, and refuses (:class:`RunLayoutError`) to add layers of another layout
to a run that holds some. Functions take the
:class:`~tb_activations.ActivationLogger` for its run and session state.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tb_activations import metadata
from tb_activations.render import render_views
from tb_activations.step_render import layer_content
from tb_activations.summary import SummaryWriter, first_plugin_contents, run_files

if TYPE_CHECKING:
    from tb_activations.logger import ActivationLogger


#: Layer content fields that must not change within a run: TensorBoard keeps the
#: first metadata of a tag, so the dashboard would read new data with the old layout.
LAYOUT_FIELDS = (
    "layer",
    "class_name",
    "shape",
    "probes",
    "labels",
    "grid",
    "top_k",
    "rank_by",
    "colormap",
    "normalize",
    "stats_fields",
)


class RunLayoutError(ValueError):
    """A run holds layers in another layout than a logger would write (see :meth:`ActivationLogger.check_run`).

    Attributes:
        reason: What differs, and why it cannot be written there.
        fresh_run_name: A ``run_name`` not used yet in the log directory.
    """

    def __init__(self, reason: str, fresh_run_name: str) -> None:
        super().__init__(
            f"{reason} Pass a fresh `run_name` (e.g. run_name={fresh_run_name!r}) or log to an "
            "empty log directory."
        )
        self.reason = reason
        self.fresh_run_name = fresh_run_name


def layer_contents(values: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """``{channel_stats tag: plugin content}`` of the summary values of one step."""
    out = {}
    for value in values:
        plugin = value.metadata.plugin_data
        if plugin.plugin_name == metadata.PLUGIN_NAME and metadata.layer_of_stats_tag(value.tag):
            out[value.tag] = json.loads(plugin.content.decode("utf-8"))
    return out


def session_start_step(logger: ActivationLogger, step: int) -> int | None:
    """The step of the ``SessionLog.START`` to write before this step's event, or ``None``.

    A START makes TensorBoard drop everything the run holds from its step
    on, in every tag, so it is written only where that is what was meant:
    the run's first event (the Python loader counts restarts from there);
    this logger going back (a fit restarted from an older checkpoint); a
    new process writing to a run an earlier process wrote (a restart, or a
    continuation with nothing to drop). Never when another logger of this
    process writes the same run: its steps may count batches, not epochs.
    """
    if not logger._needs_start:
        return None
    start = step if logger._restart_step is None else min(logger._restart_step, step)
    if logger._max_step is not None:
        return start if start <= logger._max_step else None
    files, foreign = run_files(logger.run_dir)
    return start if not files or foreign else None


def begin_session(logger: ActivationLogger, step: int) -> None:
    """Training (re)starts at ``step``: the next log() supersedes what this run holds from
    ``step`` on (a ``fit`` resumed from an older checkpoint)."""
    if logger.session_start:
        logger._needs_start, logger._restart_step = True, int(step)


def check_run(logger: ActivationLogger) -> None:
    """Raise now if the run holds layers in another layout than this logger writes.

    :meth:`log` checks it anyway before its first write; this checks it
    ahead (one forward pass on one probe, only when the run holds events),
    as the callback does before training starts.

    Raises:
        RunLayoutError: a ``ValueError`` naming the layers, what differs, and a
            fresh ``run_name``.
    """
    if logger._layout_checked or logger._closed:
        return
    files, _ = run_files(logger.run_dir)
    if not files:
        return  # nothing to clash with yet; log() checks again before writing
    # The traced pass of log(), on one probe: no second trace.
    acts = logger.extractor.run_with_summaries(logger.probes.inputs[:1]).activations
    contents = {}
    for info in logger.layers:
        a = acts[info.path]
        k = min(logger.top_k, a.shape[-1])
        grid = render_views(
            np.zeros(a.shape, np.float32),
            logger._overlay_display()[:1],
            np.zeros((1, k), np.int64),
            (0.0, 1.0),
            views=("mosaic",),
            max_size=logger.max_image_size,
        ).grid
        contents[metadata.stats_tag(info.path)] = layer_content(logger, info, a.shape[1:], grid)
    check_layout(logger, contents)


def check_layout(logger: ActivationLogger, contents: dict[str, dict[str, Any]]) -> None:
    """Compare this logger's layer contents with the first ones the run holds."""
    held = first_plugin_contents(logger.run_dir, list(contents))
    clashes = []
    for tag, new in contents.items():
        old = held.get(tag)
        if old is None:
            continue
        diff = [f for f in LAYOUT_FIELDS if old.get(f) != new.get(f)]
        if diff:
            what = "; ".join(f"{f} {old.get(f)!r} -> {new.get(f)!r}" for f in diff[:3])
            clashes.append(f"{new.get('layer', tag)!r} ({what})")
    if clashes:
        raise RunLayoutError(
            f"Cannot log into run {logger.run_dir!r}: it already holds "
            f"{len(clashes)} of these layers in another layout: {', '.join(clashes[:3])}"
            f"{' ...' if len(clashes) > 3 else ''}. TensorBoard keeps only the first layout "
            "of a tag, so the dashboard would show the new data with the old geometry and "
            "probes.",
            fresh_run_name(logger),
        )
    logger._layout_checked = True


def fresh_run_name(logger: ActivationLogger) -> str:
    """A ``run_name`` not used yet in the log directory: ``<run_name>_2``, ``_3``..."""
    from tb_activations.summary import gfile

    i = 2
    while gfile().exists(os.path.join(logger.log_dir, f"{logger.run_name}_{i}")):
        i += 1
    return f"{logger.run_name}_{i}"


def abandon_event_file(logger: ActivationLogger) -> None:
    """Close the event file after a failed write: later steps go to a new file, so a
    partial record at the end of this one hides nothing written after it."""
    import contextlib

    # Already failing: the write's error is the one raised, not the close's.
    with contextlib.suppress(Exception):
        logger._writer.close()
    logger._writer = SummaryWriter(logger.run_dir)
