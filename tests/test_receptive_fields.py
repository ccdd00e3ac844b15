"""Receptive fields: published figures, and the graph analysis against the measured field."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tb_activations.receptive_fields import ReceptiveField, receptive_field


@pytest.mark.slow
def test_vgg16_figures_of_araujo_et_al():
    model = keras.applications.VGG16(weights=None)
    expected = {
        "block1_pool": (6, 2),
        "block2_pool": (16, 4),
        "block3_pool": (44, 8),
        "block4_pool": (100, 16),
        "block5_pool": (212, 32),
    }
    for layer, (size, stride) in expected.items():
        rf = receptive_field(model, layer)
        assert rf.method == "graph"
        assert rf.size == (size, size) and rf.stride == (stride, stride), layer
    # 'same' 3x3 convolutions pad one pixel: the first field starts one pixel out per conv.
    assert receptive_field(model, "block1_conv2").offset == (-2, -2)
    assert receptive_field(model, "block1_pool").box((10, 3)) == ((18, 24), (4, 10))


def _chain(custom: bool = False) -> keras.Model:
    """Stride-2 'same' conv, dilated convs, pooling: every rule of the analysis at once."""
    keras.utils.set_random_seed(1)
    x = inp = keras.Input((48, 40, 2))
    x = keras.layers.Conv2D(3, 3, strides=2, padding="same", name="c1")(x)
    x = keras.layers.ZeroPadding2D(((2, 0), (1, 3)), name="pad")(x)
    x = keras.layers.Conv2D(3, 3, dilation_rate=2, padding="same", name="c2")(x)
    x = keras.layers.AveragePooling2D(2, name="pool")(x)
    x = keras.layers.Cropping2D(((1, 0), (0, 1)), name="crop")(x)
    if custom:
        x = _Double(name="custom")(x)
    x = keras.layers.Conv2D(4, (3, 2), dilation_rate=(2, 3), name="c3")(x)
    x = keras.layers.Conv2D(4, (3, 2), strides=(1, 2), name="c4")(x)
    return keras.Model(inp, x)


class _Double(keras.layers.Layer):
    """A layer the analysis does not know: element-wise, so the field is unchanged."""

    def call(self, x):
        return 2.0 * x


def test_dilated_strided_chain_matches_the_measured_field():
    model = _chain()
    for layer in ("c1", "pad", "c2", "pool", "crop", "c3", "c4"):
        graph = receptive_field(model, layer)
        measured = receptive_field(model, layer, empirical=True)
        assert graph.method == "graph" and measured.method == "empirical"
        assert (graph.size, graph.stride, graph.offset) == (
            measured.size,
            measured.stride,
            measured.offset,
        ), layer
    # By hand, per axis (size, jump, offset): c1 (3,2,0)/(3,2,0) with TF's SAME (left pad 0);
    # pad -> offset -4/-2; c2 k_eff 5, left 2 -> (11,2,-8)/(11,2,-6); pool -> (13,4,-8)/(13,4,-6);
    # crop -> offset -4/-6; c3 k_eff (5, 4) -> (29,4,-4)/(25,4,-6); c4 stride (1, 2) ->
    # (37,4,-4)/(29,8,-6).
    assert receptive_field(model, "c3") == ReceptiveField((29, 25), (4, 4), (-4, -6))
    assert receptive_field(model, "c4") == ReceptiveField((37, 29), (4, 8), (-4, -6))


def test_unknown_layer_falls_back_to_the_measured_field_once():
    model = _chain(custom=True)
    rf = receptive_field(model, "c4")
    assert rf.method == "empirical"
    assert (rf.size, rf.stride, rf.offset) == ((37, 29), (4, 8), (-4, -6))
    assert receptive_field(model, "c4") is rf  # cached: measured once
    # Layers before the unknown one are still computed from the graph.
    assert receptive_field(model, "crop").method == "graph"
    with pytest.raises(ValueError, match=r"_Double 'custom'.*empirical=None"):
        receptive_field(model, "c4", empirical=False)


def test_nested_backbone_and_merge_union():
    keras.utils.set_random_seed(2)
    inner_in = keras.Input((None, None, 3))
    a = keras.layers.Conv2D(2, 3, padding="same", name="a")(inner_in)
    b = keras.layers.Conv2D(2, 5, padding="same", name="b")(inner_in)
    y = keras.layers.Add(name="add")([a, b])
    y = keras.layers.ReLU(name="relu")(y)
    y = keras.layers.MaxPooling2D(2, name="mp")(y)
    backbone = keras.Model(inner_in, y, name="backbone")
    inp = keras.Input((32, 32, 3))
    x = keras.layers.ZeroPadding2D(2, name="zp")(inp)
    x = backbone(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2D(2, 3, name="head")(x)
    model = keras.Model(inp, x)
    # Add: the union of the 3x3 and 5x5 fields, aligned on the same centre.
    assert receptive_field(model, "backbone/add") == ReceptiveField((5, 5), (1, 1), (-4, -4))
    assert receptive_field(model, "backbone/mp") == ReceptiveField((6, 6), (2, 2), (-4, -4))
    assert receptive_field(model, "backbone") == receptive_field(model, "backbone/mp")
    assert receptive_field(model, "bn") == receptive_field(model, "backbone/mp")
    assert receptive_field(model, "head") == ReceptiveField((10, 10), (2, 2), (-4, -4))


def test_layer_without_spatial_output_and_unknown_layer():
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3, name="conv")(inp)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inp, keras.layers.Dense(3, name="dense")(x))
    with pytest.raises(ValueError, match=r"'gap'.*shape \(2,\).*Expected a layer with an output"):
        receptive_field(model, "gap")
    with pytest.raises(ValueError, match="matches no layer"):
        receptive_field(model, "nope")
    rf = receptive_field(model, "conv")
    assert rf.box((0, 5)) == ((0, 3), (5, 8))
    assert rf.center((0, 5)) == (1.0, 6.0)
    with pytest.raises(ValueError, match="Expected 2 coordinates"):
        rf.box((1,))


def test_measured_field_of_a_max_pool_chain_with_relu():
    """The measured field unions a few random inputs, so ReLU and max pooling do not shrink it."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((24, 24, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inp)
    x = keras.layers.MaxPooling2D(2, name="mp")(x)
    x = keras.layers.Conv2D(4, 3, name="c2")(x)
    model = keras.Model(inp, x)
    graph = receptive_field(model, "c2")
    measured = receptive_field(model, "c2", empirical=True)
    assert np.array_equal(graph.size, measured.size) and graph.size == (8, 8)
    assert graph.stride == measured.stride and graph.offset == measured.offset


def test_package_export_is_the_function():
    import tb_activations
    import tb_activations.receptive_fields  # a loaded module must not shadow the function

    assert callable(tb_activations.receptive_field)
    assert tb_activations.receptive_field is receptive_field
