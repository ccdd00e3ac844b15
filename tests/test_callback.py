import keras
import numpy as np
import pytest

from tb_activations import ActivationCallback, Probes
from tests.conftest import images_at, read_run, session_starts, small_cnn, steps_of


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 16, 16, 3), dtype=np.float32)
    y = (x[:, :8].mean(axis=(1, 2, 3)) > x[:, 8:].mean(axis=(1, 2, 3))).astype("int32")
    return x, y


def _fit(callbacks, epochs=3, **kwargs):
    keras.utils.set_random_seed(1)
    model = small_cnn(seed=1)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = _data()
    history = model.fit(
        x, y, epochs=epochs, batch_size=16, verbose=0, shuffle=False, callbacks=callbacks, **kwargs
    )
    return model, history


def test_fit_logs_every_epoch_side_by_side_with_keras_tensorboard(tmp_path):
    x, _ = _data()
    probes = Probes(x[:2])
    _fit(
        [
            ActivationCallback(probes, tmp_path, layers=["conv*"]),
            keras.callbacks.TensorBoard(str(tmp_path)),
        ]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["activations", "train"]
    acc = read_run(tmp_path / "activations")
    tags = set(acc.Tags()["tensors"])
    assert {"conv1/mosaic", "conv2/topk", "conv3/overlay", "conv3/dead_fraction"} <= tags
    core = (
        "mosaic",
        "topk",
        "overlay",
        "channel_stats",
        "mean_activation",
        "dead_fraction",
        "cka_first",
    )
    for tag in tags:
        if tag.rsplit("/", 1)[-1] in core:
            assert steps_of(acc, tag) == [0, 1, 2], tag
    w, h, pngs = images_at(acc, "conv1/mosaic", step=2)
    assert (w, h) == (2 * 17 - 1, 2 * 17 - 1) and [p.size for p in pngs] == [(w, h)] * 2


def test_history_and_weights_equal_a_run_without_the_callback(tmp_path):
    x, _ = _data()
    model_a, hist_a = _fit([])
    model_b, hist_b = _fit([ActivationCallback(Probes(x[:3]), tmp_path, freq=2)])
    assert hist_a.history.keys() == hist_b.history.keys()
    for key in hist_a.history:
        np.testing.assert_allclose(hist_a.history[key], hist_b.history[key], rtol=1e-6)
    for wa, wb in zip(model_a.get_weights(), model_b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-6)


def test_batch_frequency_uses_global_batch_steps(tmp_path):
    x, _ = _data()
    _fit([ActivationCallback(Probes(x[:1]), tmp_path, layers=["pool1"], freq=3)], epochs=2)
    acc = read_run(tmp_path / "activations")
    assert steps_of(acc, "pool1/mosaic") == [3, 6]  # 4 batches per epoch, 8 in all


def test_resumed_fit_continues_epoch_steps(tmp_path):
    x, y = _data()
    model = small_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    cb = ActivationCallback(Probes(x[:1]), tmp_path, layers=["pool1"])
    model.fit(x, y, epochs=2, verbose=0, callbacks=[cb])
    model.fit(x, y, epochs=4, initial_epoch=2, verbose=0, callbacks=[cb])
    assert steps_of(read_run(tmp_path / "activations"), "pool1/mosaic") == [0, 1, 2, 3]


@pytest.mark.parametrize("freq, starts", [("epoch", [0, 1]), (3, [1, 5])])
def test_sessions_start_with_the_run_and_where_a_fit_goes_back(tmp_path, freq, starts):
    """SessionLog.START at the run's first step, none for a fit that continues, and one at
    the first epoch (or the batch after optimizer.iterations) of a fit that goes back."""
    x, y = _data()
    model = small_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    cb = ActivationCallback(Probes(x[:1]), tmp_path, layers=["pool1"], freq=freq)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[cb])  # batches 1-8
    model.fit(x, y, epochs=3, initial_epoch=2, batch_size=16, verbose=0, callbacks=[cb])
    model.optimizer.iterations.assign(4)  # back to the checkpoint of epoch 0
    model.fit(x, y, epochs=2, initial_epoch=1, batch_size=16, verbose=0, callbacks=[cb])
    assert session_starts(tmp_path / "activations") == starts


def test_logging_failure_warns_and_training_continues(tmp_path):
    x, _ = _data()
    cb = ActivationCallback(Probes(x[:1]), tmp_path, layers=["pool1"])

    def broken(step):
        raise OSError("disk full")

    class Breaker(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            cb.logger.log = broken

    with pytest.warns(
        RuntimeWarning,
        match="step 0 failed and was skipped; training continues. OSError: disk full",
    ):
        _, history = _fit([cb, Breaker()], epochs=2)
    assert len(history.history["loss"]) == 2 and cb.failures == 2


@pytest.mark.backends
def test_bad_callback_arguments():
    probes = Probes(np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="Expected 'epoch' or a positive int. Received: freq=0"):
        ActivationCallback(probes, "x", freq=0)
    with pytest.raises(TypeError, match="top_kk"):
        ActivationCallback(probes, "x", top_kk=3)


def test_epoch_logging_adds_no_batch_hook():
    from keras.src import utils

    probes = Probes(np.zeros((1, 16, 16, 3), np.uint8))
    assert utils.is_default(ActivationCallback(probes, "x").on_train_batch_end)
    assert not utils.is_default(ActivationCallback(probes, "x", freq=5).on_train_batch_end)


def test_freq_with_steps_per_execution_logs_at_the_first_hook_past_each_multiple(tmp_path):
    """6 batches per epoch run 4 at a time: hooks at 4, 6, 10, 12; freq=3 -> 4, 6, 10, 12
    (the first hook at or past 3, 6, 9, 12), not only 6 and 12."""
    x, y = _data(96)
    keras.utils.set_random_seed(1)
    model = small_cnn(seed=1)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", steps_per_execution=4)
    cb = ActivationCallback(Probes(x[:1]), tmp_path, layers=["pool1"], freq=3)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[cb])
    assert steps_of(read_run(tmp_path / "activations"), "pool1/mosaic") == [4, 6, 10, 12]


def _conv1_mean(model, probes):
    out = keras.Model(model.inputs, model.get_layer("conv1").output)(probes.inputs)
    return float(np.mean(keras.ops.convert_to_numpy(out)))


@pytest.mark.parametrize("freq, steps", [("epoch", [0, 1, 2, 3]), (4, [0, 4, 8, 12])])
def test_log_before_training_numbers_steps_by_training_done(tmp_path, freq, steps):
    """Step 0 is the untrained state; by epoch, epoch e ends at step e + 1; a continuing
    fit adds no second log of the state the last one left."""
    from tests.conftest import scalar_values

    x, y = _data()
    probes = Probes(x[:2])
    model = small_cnn(seed=1)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    untrained = _conv1_mean(model, probes)
    cb = ActivationCallback(probes, tmp_path, layers=["conv1"], freq=freq, log_before_training=True)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[cb])
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[cb])
    acc = read_run(tmp_path / "activations")
    assert steps_of(acc, "conv1/mosaic") == steps
    means = scalar_values(acc, "conv1/mean_activation")
    np.testing.assert_allclose(means[0], untrained, rtol=1e-5)
    assert abs(means[-1] - untrained) > 1e-6
    assert session_starts(tmp_path / "activations") == [0]


def test_mixed_up_and_ignored_arguments_are_errors():
    probes = Probes(np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match=r"probes first and the log directory second"):
        ActivationCallback("logs/run1", probes)
    with pytest.raises(ValueError, match=r"applies to freq='epoch' only.*epoch_freq=2"):
        ActivationCallback(probes, "x", freq=10, epoch_freq=2)
    with pytest.raises(ValueError, match=r"300 probes, more than the 256"):
        ActivationCallback(np.zeros((300, 16, 16, 3), np.uint8), "x")


def test_train_end_stops_the_encoder_threads(tmp_path):
    import threading

    def ours() -> set:  # (loggers of earlier tests left unclosed may hold threads of theirs)
        return {t for t in threading.enumerate() if t.name.startswith("tb_activations")}

    before = ours()
    x, _ = _data()
    cb = ActivationCallback(Probes(x[:2]), tmp_path, layers=["conv1"])
    _fit([cb], epochs=1)
    assert cb.logger._executor is None and cb.logger._worker is None
    assert not ours() - before  # no encoder thread, no background worker left running
