"""Drift carried between processes that each log one step into a run (the command line).

A ``tb-activations log ... --step N`` call builds a new logger, whose drift
tracker has seen no step: alone, every call would be its own first step and
``cka_first`` a flat 1.0. :func:`load` gives the logger the cached Grams of
the run's earlier calls (its first step, the previous call, the channel
signals, the CKA heatmap's history) and :func:`save` stores them after the
call's step is written, in one small file of the run directory that
TensorBoard ignores (:data:`FILENAME`, a few ``n x n`` float64 Grams per layer).

A stored state is used only by a logger of the same layers, probes and CKA
options, and only for a step after the stored first step: a call at or
before it (a sweep run again from the start) begins a new reference.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import numpy as np

#: The state file in the run directory (no ``tfevents`` in its name: TensorBoard skips it).
FILENAME = "tb_activations_drift.npz"

_VERSION = 1


def _path(logger: Any) -> str:
    return os.path.join(logger.run_dir, FILENAME)


def _identity(logger: Any) -> dict[str, Any]:
    tracker = logger._diagnostics.tracker
    return {
        "version": _VERSION,
        "layers": [i.path for i in logger.layers],
        "probes": list(logger.probes.names),
        "cka": tracker.cka,
        "positions": tracker.positions,
        "seed": tracker.seed,
        "min_samples": tracker.min_samples,
    }


def load(logger: Any, step: int) -> int | None:
    """Give ``logger`` the drift state its run holds, if it applies to ``step``.

    Returns:
        The step of the stored reference (the run's first logged step), or
        ``None`` when nothing applies (no state, another set-up, or ``step``
        at or before the stored first step).
    """
    from tb_activations.summary import gfile

    diagnostics = logger._diagnostics
    path = _path(logger)
    if diagnostics.tracker is None or not gfile().exists(path):
        return None
    try:
        with gfile().GFile(path, "rb") if "://" in path else open(path, "rb") as f:
            data = np.load(io.BytesIO(f.read()), allow_pickle=False)
            meta = json.loads(str(data["meta"]))
            arrays = {k: data[k] for k in data.files if k != "meta"}
    except Exception:  # unreadable, whatever the file system raises: drift starts over
        return None
    first = meta.pop("first_step", None)
    if meta != _identity(logger) or not isinstance(first, int) or step <= first:
        return None
    layers = _identity(logger)["layers"]
    state: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        head, _, field = key.partition(":")
        if head.isdigit() and int(head) < len(layers):
            state.setdefault(layers[int(head)], {})[field] = value
    diagnostics.tracker.load_state_dict(state)
    steps, columns = arrays.get("history_steps"), arrays.get("history_cka")
    if steps is not None and columns is not None:
        diagnostics.history.clear()
        diagnostics.history.extend(
            (int(s), columns[:, i].astype(np.float32))
            for i, s in enumerate(steps)
            if int(s) != step  # this call writes its own column
        )
    return first


def save(logger: Any, first_step: int) -> None:
    """Store ``logger``'s drift state in its run (after a written step), atomically."""
    from tb_activations.summary import gfile

    diagnostics = logger._diagnostics
    if diagnostics.tracker is None:
        return
    layers = _identity(logger)["layers"]
    arrays: dict[str, np.ndarray] = {}
    for layer, fields in diagnostics.tracker.state_dict().items():
        if layer in layers:
            for field, value in fields.items():
                arrays[f"{layers.index(layer)}:{field}"] = value
    history = list(diagnostics.history)
    if history:
        arrays["history_steps"] = np.array([s for s, _ in history], np.int64)
        arrays["history_cka"] = np.stack([c for _, c in history], axis=1)
    meta = {**_identity(logger), "first_step": int(first_step)}
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(meta)), **arrays)
    # Written beside, then renamed over: a killed call leaves the previous state whole.
    path = _path(logger)
    tmp = f"{path}.tmp-{os.getpid()}"
    fs = gfile()
    if "://" not in path:
        with open(tmp, "wb") as f:
            f.write(buffer.getvalue())
        os.replace(tmp, path)
    elif hasattr(fs, "rename"):  # tf.io.gfile
        with fs.GFile(tmp, "wb") as f:
            f.write(buffer.getvalue())
        fs.rename(tmp, path, overwrite=True)
    else:  # TensorBoard's gfile has no rename: written in place
        with fs.GFile(path, "wb") as f:
            f.write(buffer.getvalue())
