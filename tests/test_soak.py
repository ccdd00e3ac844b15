"""Soak: a 200-epoch fit with the callback at every epoch keeps memory flat and the log readable,
with background logging whose worker is forced to be slower than training."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from tb_activations import ActivationCallback, ActivationLogger, Probes, metadata
from tb_activations.diagnostics import HEATMAP_STEPS
from tests.conftest import read_run, scalar_values, small_cnn, steps_of

EPOCHS = 200
WARM = 20  # epochs before the baseline: first traces, allocator pools, caches
# Per step the logger handles ~1.3 MB of activations and ~0.2 MB of encoded
# images and events: keeping either per step would add 40-260 MB by the end.
RSS_TOLERANCE_MB = 16


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
def test_200_epochs_keep_memory_flat_and_the_log_readable(tmp_path, monkeypatch):
    # A test hook: the worker starts step s only once training has captured step s + 2
    # (or after 1 s), so it is always behind: training then finds two steps in flight
    # and waits, on any machine; nothing may be dropped or reordered.
    original, capture = ActivationLogger._finish_step, ActivationLogger._capture
    captured = [-1]

    def counting_capture(self, step, *args, **kwargs):
        out = capture(self, step, *args, **kwargs)
        captured[0] = max(captured[0], step)
        return out

    def slow(self, step, *args, **kwargs):
        deadline = time.monotonic() + 1.0
        while captured[0] < step + 2 and time.monotonic() < deadline:
            time.sleep(0.002)
        return original(self, step, *args, **kwargs)

    monkeypatch.setattr(ActivationLogger, "_capture", counting_capture)
    monkeypatch.setattr(ActivationLogger, "_finish_step", slow)
    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 3, 16)
    model = small_cnn(input_shape=(32, 32, 3), seed=1)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    # images_every=1: pictures at every epoch, the heaviest soak.
    cb = ActivationCallback(Probes(x[:8]), tmp_path, pin_reference_at_epoch=5, images_every=1)
    samples: dict[int, tuple[float, int, int, int, int]] = {}

    class Sample(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):  # runs after the logging callback
            diagnostics = cb.logger._diagnostics
            samples[epoch] = (
                _rss_mb(),
                diagnostics.tracker.nbytes(),
                len(diagnostics.history),
                threading.active_count(),
                _open_fds(),
            )

    start = time.perf_counter()
    model.fit(x, y, epochs=EPOCHS, batch_size=16, verbose=0, callbacks=[cb, Sample()])
    seconds = time.perf_counter() - start
    assert cb.failures == 0

    rss = {e: s[0] for e, s in samples.items()}
    growth = rss[EPOCHS - 1] - rss[WARM]
    second_half = rss[EPOCHS - 1] - rss[EPOCHS // 2]
    print(
        f"\nsoak: {EPOCHS} epochs in {seconds:.1f} s; RSS {rss[0]:.1f} MB after epoch 0, "
        f"{rss[WARM]:.1f} after {WARM}, {rss[EPOCHS // 2]:.1f} after {EPOCHS // 2}, "
        f"{rss[EPOCHS - 1]:.1f} at the end: +{growth:.1f} MB over the last {EPOCHS - 1 - WARM} "
        f"epochs; drift state {samples[EPOCHS - 1][1]} bytes; "
        f"{sum(f.stat().st_size for f in (tmp_path / 'activations').iterdir()) / 2**20:.1f} MB of events"
    )
    assert growth < RSS_TOLERANCE_MB, rss
    assert second_half < RSS_TOLERANCE_MB / 2, rss

    # Drift references do not grow: first, previous and pinned Grams only.
    # (sampled on the training thread, while the worker may be up to two steps behind)
    assert samples[8][1] == samples[EPOCHS - 1][1] > 0
    assert len(cb.logger._diagnostics.history) == min(EPOCHS, HEATMAP_STEPS)
    # No thread or file handle per step.
    # (no growth: objects of earlier tests collected meanwhile may end threads of theirs)
    assert samples[EPOCHS - 1][3] <= samples[WARM][3] and samples[EPOCHS - 1][4] <= samples[WARM][4]

    files = list(Path(tmp_path / "activations").iterdir())
    assert len(files) == 1
    acc = read_run(tmp_path / "activations")
    every = list(range(EPOCHS))
    for tag in ("conv1/mosaic", "conv2/topk", "conv3/overlay", "pool1/channel_stats"):
        assert steps_of(acc, tag) == every, tag
    assert steps_of(acc, "conv3/cka_reference") == list(range(5, EPOCHS))
    waits = scalar_values(acc, metadata.QUEUE_WAITS_TAG)
    assert waits == sorted(waits) and waits[-1] > 0  # the slow worker did hold training back
