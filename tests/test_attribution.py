"""Attribution methods against known answers: CAM, a quadrant model, completeness, finite
differences, the Keras example's Grad-CAM recipe; bad input; tracing once."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tb_activations.attribution import (
    explain_layer,
    grad_cam,
    grad_cam_plus_plus,
    integrated_gradients,
    occlusion,
    saliency,
    smoothgrad,
    trace_count,
)
from tests.conftest import nested_backbone_model


def cam_model(saturate: bool = False):
    """conv (4 ch, relu) -> GAP -> Dense(3, softmax), weights set by hand."""
    inputs = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")
    gap = keras.layers.GlobalAveragePooling2D(name="gap")
    dense = keras.layers.Dense(3, activation="softmax", name="head")
    model = keras.Model(inputs, dense(gap(conv(inputs))))
    kernel = np.linspace(-1.0, 1.0, 3 * 3 * 2 * 4, dtype=np.float32).reshape(3, 3, 2, 4)
    conv.set_weights([np.roll(kernel, 5), np.array([0.1, -0.2, 0.3, 0.0], np.float32)])
    w = np.array([[2, -1, 0.5], [-1, 3, 1], [0.5, 0.5, -2], [1.5, -2, 2.5]], np.float32)
    # A bias of 1000 on class 0 saturates the softmax: its gradient is 0 in float32.
    bias = np.array([1000.0 if saturate else 0.0, 0, 0], np.float32)
    dense.set_weights([w, bias])
    return model, conv, w


def corr(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.parametrize("saturate", [False, True])
def test_grad_cam_is_cam_up_to_a_positive_constant(saturate):
    model, conv, w = cam_model(saturate)
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 2)).astype(np.float32)
    acts = keras.Model(model.inputs, conv.output).predict(x, verbose=0)
    for k in range(3):
        maps = grad_cam(model, x, k, layer="conv")
        cam = np.maximum(acts @ w[:, k], 0.0)  # Zhou et al. 2016, ReLU as Grad-CAM's
        assert maps.shape == (4, 6, 6) and maps.dtype == np.float32
        assert corr(maps, cam) > 0.999
        # The constant is 1 / (h w), from the average pooling.
        np.testing.assert_allclose(maps, cam / 36.0, rtol=1e-5, atol=1e-6)


def quadrant_model():
    """Class k's evidence is the image inside quadrant k (hand-set, position-masked)."""

    class QuadrantMask(keras.layers.Layer):
        def call(self, x):
            mask = np.zeros((1, 8, 8, 4), np.float32)
            for k, (r, c) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4)]):
                mask[0, r : r + 4, c : c + 4, k] = 1.0
            return x * mask

    inputs = keras.Input((8, 8, 1))
    conv = keras.layers.Conv2D(4, 1, activation="relu", name="conv")
    head = keras.layers.Dense(4, activation="softmax", name="head")
    outputs = head(keras.layers.GlobalAveragePooling2D()(QuadrantMask(name="mask")(conv(inputs))))
    model = keras.Model(inputs, outputs)
    conv.set_weights([np.ones((1, 1, 1, 4), np.float32), np.zeros(4, np.float32)])
    head.set_weights([10.0 * np.eye(4, dtype=np.float32), np.zeros(4, np.float32)])
    return model


def quadrant_mass(maps, k):
    r, c = [(0, 0), (0, 4), (4, 0), (4, 4)][k]
    m = np.abs(maps)
    return m[:, r : r + 4, c : c + 4].sum(axis=(1, 2)) / m.sum(axis=(1, 2))


def test_every_method_finds_the_quadrant_of_the_class():
    model = quadrant_model()
    x = np.random.default_rng(1).uniform(0.2, 1.0, size=(2, 8, 8, 1)).astype(np.float32)
    for k in range(4):
        for name, maps in [
            ("gradcam", grad_cam(model, x, k, layer="mask")),
            ("gradcam++", grad_cam_plus_plus(model, x, k, layer="mask")),
            ("saliency", saliency(model, x, k)),
            ("smoothgrad", smoothgrad(model, x, k, samples=4)),
            ("occlusion", occlusion(model, x, k, patch=2, stride=2)),
            ("integrated_gradients", integrated_gradients(model, x, k, steps=8)[..., 0]),
        ]:
            assert np.all(quadrant_mass(maps, k) > 0.99), (name, k)
            peaks = maps.reshape(2, -1).argmax(axis=1)
            assert all(quadrant_mass(np.eye(64)[p].reshape(1, 8, 8), k)[0] == 1 for p in peaks)


def smooth_model(softmax: bool = False):
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(3, 3, activation="tanh", name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(4, activation="softmax" if softmax else None, name="head"),
        ]
    )


def test_integrated_gradients_complete_within_one_percent():
    model = smooth_model()
    x = np.random.default_rng(2).normal(size=(3, 6, 6, 2)).astype(np.float32)
    baseline = np.full((6, 6, 2), 0.3, np.float32)
    classes = [0, 2, 3]
    ig = integrated_gradients(model, x, classes, steps=64, baseline=baseline)
    assert ig.shape == x.shape and ig.dtype == np.float32
    out = model.predict(np.concatenate([x, baseline[None]]), verbose=0)
    expected = out[np.arange(3), classes] - out[3, classes]
    np.testing.assert_allclose(ig.sum(axis=(1, 2, 3)), expected, rtol=0.01)


def test_softmax_models_are_explained_by_their_logits():
    logits_model, softmax_model = smooth_model(), smooth_model(softmax=True)
    softmax_model.set_weights(logits_model.get_weights())
    x = np.random.default_rng(3).normal(size=(2, 6, 6, 2)).astype(np.float32)
    np.testing.assert_allclose(
        integrated_gradients(softmax_model, x, 1, steps=16),
        integrated_gradients(logits_model, x, 1, steps=16),
        rtol=1e-5,
        atol=1e-6,
    )
    ex = explain_layer(softmax_model, x, "predicted", "conv")
    np.testing.assert_allclose(ex.logits, logits_model.predict(x, verbose=0), rtol=1e-5)
    np.testing.assert_array_equal(ex.classes, ex.logits.argmax(axis=1))


def test_saliency_matches_finite_differences():
    model = smooth_model()
    x = np.random.default_rng(4).normal(size=(1, 6, 6, 2)).astype(np.float64)
    eps = 1e-2
    steps = eps * np.eye(x.size).reshape(-1, *x.shape[1:])
    out = model.predict(np.concatenate([x + steps, x - steps]).astype(np.float32), verbose=0)
    fd = ((out[: x.size, 2] - out[x.size :, 2]) / (2 * eps)).reshape(x.shape)
    np.testing.assert_allclose(saliency(model, x, 2), np.abs(fd).max(axis=-1), rtol=2e-2, atol=1e-3)


def test_traced_once_and_follows_weight_changes():
    model, conv, w = cam_model()
    x = np.random.default_rng(5).normal(size=(5, 6, 6, 2)).astype(np.float32)
    first = grad_cam(model, x, 0, layer="conv")
    traces = trace_count(model)
    for n in (1, 3, 5):
        grad_cam(model, x[:n], "predicted", layer="conv")
    grad_cam(model, x, 0, layer="conv", batch_size=2)
    assert trace_count(model) == traces == 1
    integrated_gradients(model, x, 0, steps=4)
    saliency(model, x[:2], 1)
    traces = trace_count(model)
    integrated_gradients(model, x[:3], [0, 1, 2], steps=8, batch_size=5)
    saliency(model, x, 1)
    assert trace_count(model) == traces
    model.get_layer("head").set_weights([-w, np.zeros(3, np.float32)])
    acts = keras.Model(model.inputs, conv.output).predict(x, verbose=0)
    after = grad_cam(model, x, 0, layer="conv")
    assert not np.allclose(after, first)
    np.testing.assert_allclose(after, np.maximum(acts @ -w[:, 0], 0) / 36, rtol=1e-5, atol=1e-6)


def test_given_layer_output_gives_the_same_maps():
    # The logger passes the layer's output from its extraction pass: only the head runs.
    model = quadrant_model()
    x = np.random.default_rng(9).uniform(0, 1, size=(3, 8, 8, 1)).astype(np.float32)
    acts = keras.Model(model.inputs, model.get_layer("mask").output).predict(x, verbose=0)
    for plus in (False, True):
        ex = explain_layer(model, x, [0, 1, 3], "mask", plus=plus)
        given = explain_layer(model, x, [0, 1, 3], "mask", plus=plus, activations=acts)
        np.testing.assert_allclose(given.maps, ex.maps, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(given.logits, ex.logits, rtol=1e-6)
    with pytest.raises(ValueError, match=r"shape \(3, 8, 8, 4\)"):
        explain_layer(model, x, 0, "mask", activations=acts[:, :4])


def test_nested_backbone_layer_paths():
    import tensorflow as tf

    base, model = nested_backbone_model()
    x = np.random.default_rng(6).uniform(-1, 1, size=(2, 32, 32, 3)).astype(np.float32)
    path = f"{base.name}/out_relu"
    maps = grad_cam(model, x, [0, 1], layer=path)
    with tf.GradientTape() as tape:
        a = base(x, training=False)
        tape.watch(a)
        y = model.layers[2](model.layers[1](a))
        score = tf.reduce_sum(y * tf.one_hot([0, 1], 2))
    g = tape.gradient(score, a).numpy()
    expected = np.maximum((a.numpy() * g.mean(axis=(1, 2))[:, None, None, :]).sum(-1), 0)
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)
    # The default layer is the last spatial layer, inside the backbone.
    assert explain_layer(model, x).layer == path


@pytest.mark.backends
def test_bad_input_raises_clear_errors():
    model, _, _ = cam_model()
    x = np.zeros((2, 6, 6, 2), np.float32)
    with pytest.raises(ValueError, match="'gap' has output shape"):
        grad_cam(model, x, 0, layer="gap")
    with pytest.raises(ValueError, match="matches no layer"):
        grad_cam(model, x, 0, layer="nope")
    with pytest.raises(ValueError, match=r"class 3 is out of range.*\[0, 2\]"):
        grad_cam(model, x, [0, 3])
    with pytest.raises(ValueError, match="2 integer class indices"):
        saliency(model, x, [0, 1, 2])
    with pytest.raises(ValueError, match="Expected 'predicted'"):
        saliency(model, x, "best")
    with pytest.raises(ValueError, match=r"shape \(7, 6, 2\)"):
        grad_cam(model, np.zeros((2, 7, 6, 2)), 0)
    with pytest.raises(ValueError, match="patch"):
        occlusion(model, x, 0, patch=7)
    conv_only = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3)])
    with pytest.raises(ValueError, match="not a score per class"):
        saliency(conv_only, x, 0)


def test_non_finite_gradients_stay_non_finite():
    inputs = keras.Input((4, 4, 1))
    a = keras.layers.Conv2D(2, 1, activation="relu", name="conv")(inputs)
    root = keras.layers.Lambda(lambda t: keras.ops.sqrt(t), name="sqrt")(a)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(root))
    model = keras.Model(inputs, out)
    x = np.zeros((1, 4, 4, 1), np.float32)  # sqrt'(0) = inf
    maps = grad_cam(model, x, 0, layer="conv")
    assert maps.shape == (1, 4, 4) and not np.isfinite(maps).all()


@pytest.mark.slow
def test_vgg16_matches_the_keras_example_recipe():
    import tensorflow as tf

    keras.utils.set_random_seed(7)
    model = keras.applications.VGG16(weights=None, input_shape=(64, 64, 3), classes=10)
    x = np.random.default_rng(7).uniform(-100, 100, size=(2, 64, 64, 3)).astype(np.float32)
    ours = grad_cam(model, x, "predicted", layer="block5_conv3")
    # keras.io/examples/vision/grad_cam: remove the last softmax, GradientTape over a model
    # returning [last conv output, predictions], pooled gradients, weighted sum, ReLU, / max.
    model.layers[-1].activation = None
    grad_model = keras.Model(model.inputs, [model.get_layer("block5_conv3").output, model.output])
    for i in range(2):
        with tf.GradientTape() as tape:
            last_conv_layer_output, preds = grad_model([x[i : i + 1]])
            pred_index = tf.argmax(preds[0])
            class_channel = preds[:, pred_index]
        grads = tape.gradient(class_channel, last_conv_layer_output)
        pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
        heatmap = last_conv_layer_output[0] @ pooled_grads[..., tf.newaxis]
        heatmap = tf.squeeze(heatmap)
        heatmap = tf.maximum(heatmap, 0) / tf.math.reduce_max(heatmap)
        np.testing.assert_allclose(ours[i] / ours[i].max(), heatmap.numpy(), atol=1e-5)


def test_subclassed_models_get_the_input_methods():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(2, 3, activation="tanh")
            self.flat = keras.layers.Flatten()
            self.head = keras.layers.Dense(3)

        def call(self, x):
            return self.head(self.flat(self.conv(x)))

    net = Net()
    net(keras.Input((6, 6, 2)))
    x = np.random.default_rng(8).normal(size=(2, 6, 6, 2)).astype(np.float32)
    assert saliency(net, x, 1).shape == (2, 6, 6)
    ig = integrated_gradients(net, x, [0, 2], steps=32)
    out = np.asarray(net(np.concatenate([x, np.zeros_like(x[:1])])))
    np.testing.assert_allclose(
        ig.sum(axis=(1, 2, 3)), out[[0, 1], [0, 2]] - out[2, [0, 2]], rtol=0.01
    )
    with pytest.raises(ValueError, match="subclassed"):
        grad_cam(net, x, 0)
