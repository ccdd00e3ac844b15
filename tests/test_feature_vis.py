"""Feature visualization: a red detector's image is red, and the objective rises."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tb_activations.feature_vis import _random_transforms, visualize_channels


def _detector(size: int = 32) -> keras.Model:
    """Channel 0: r - (g + b) / 2 (red); channel 1: g - (r + b) / 2 (green); 3x3 conv, ReLU."""
    inp = keras.Input((size, size, 3))
    conv = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="det")
    model = keras.Model(inp, conv(inp))
    w = np.zeros((3, 3, 3, 2), np.float32)
    w[1, 1] = [[1.0, -0.5], [-0.5, 1.0], [-0.5, -0.5]]
    conv.set_weights([w, np.zeros(2, np.float32)])
    return model


def test_red_channel_image_is_red_and_objective_rises():
    model = _detector()
    vis = visualize_channels(model, "det", [0, 1], steps=96, batch_size=2, learning_rate=0.5)
    assert vis.images.shape == (2, 32, 32, 3) and vis.images.dtype == np.uint8
    red = vis.images[0].reshape(-1, 3).mean(axis=0)
    green = vis.images[1].reshape(-1, 3).mean(axis=0)
    # Red-dominated: red well above mid-grey, green and blue far below it (and vice versa).
    assert red[0] > 150 and red[0] - max(red[1], red[2]) > 80, red
    assert green[1] > 150 and green[1] - max(green[0], green[2]) > 80, green
    assert vis.history.shape == (96, 2)
    # The objective rises from 0 to a plateau near 0.55 (the optimum, 1, needs saturated
    # colours). The margins hold on every backend and seed tried: JAX and PyTorch follow
    # the exact gradient of the affine resampling, TensorFlow its registered approximation
    # (the inverse warp), so their trajectories differ from the first steps.
    assert (vis.history[-5:].mean(axis=0) > vis.history[:5].mean(axis=0) + 0.4).all()
    assert (vis.objective > 0.45).all()
    # ... and is the channel's mean activation on the final (untransformed) image.
    out = keras.ops.convert_to_numpy(model(vis.images.astype(np.float32) / 255.0))
    np.testing.assert_allclose(out[[0, 1], ..., [0, 1]].mean(axis=(1, 2)), vis.objective, atol=0.01)
    assert vis.channels.tolist() == [0, 1]


def test_batches_of_channels_give_the_same_images_in_order():
    model = _detector()
    one = visualize_channels(model, "det", [1, 0, 1], steps=4, batch_size=2, seed=3)
    assert one.images.shape[0] == 3 and one.channels.tolist() == [1, 0, 1]
    assert one.history.shape == (4, 3)


def test_transforms_keep_the_centre_without_jitter():
    rng = np.random.default_rng(0)
    t = _random_transforms(rng, 4, 9, 9, 0, (0.8, 1.2), 15.0)
    centre = np.array([4.0, 4.0])
    for row in t:
        mapped = row[[0, 1]] @ centre + row[2], row[[3, 4]] @ centre + row[5]
        np.testing.assert_allclose(mapped, centre, atol=1e-5)


@pytest.mark.backends
def test_bad_input():
    model = _detector()
    with pytest.raises(ValueError, match=r"\[5\] out of range.*2 channels"):
        visualize_channels(model, "det", [0, 5])
    with pytest.raises(ValueError, match=r"`steps`.*Received: steps=0"):
        visualize_channels(model, "det", [0], steps=0)
    with pytest.raises(ValueError, match=r"`channels`"):
        visualize_channels(model, "det", [])
    with pytest.raises(ValueError, match=r"`size`.*32x32"):
        visualize_channels(model, "det", [0], size=64)


def test_repeated_calls_reuse_one_runner_and_see_new_weights():
    from tb_activations.feature_vis import _RUNNERS

    model = _detector()
    first = visualize_channels(model, "det", [0], steps=2, batch_size=1)
    again = visualize_channels(model, "det", [0], steps=2, batch_size=1)
    assert len(_RUNNERS[model]) == 1  # built once: no sub-model or trace per call
    np.testing.assert_array_equal(first.images, again.images)
    conv = model.get_layer("det")
    conv.set_weights([w * 0 for w in conv.get_weights()])  # a dead channel now
    dead = visualize_channels(model, "det", [0], steps=2, batch_size=1)
    assert len(_RUNNERS[model]) == 1
    assert float(np.abs(dead.objective).max()) == 0.0 != float(np.abs(first.objective).max())
