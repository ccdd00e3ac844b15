import warnings

import keras
import numpy as np
import pytest

from tb_activations import ActivationLogger, Probes, list_layers, select_layers
from tb_activations.layer_selection import (
    COSTLY_LAYERS,
    COSTLY_STEP_BYTES,
    SMALL_MODEL_LAYERS,
    SelectionCost,
    is_candidate,
    selection_cost,
    warn_if_costly,
)
from tests.conftest import nested_backbone_model, small_cnn


def test_default_selects_spatial_layers_in_model_order():
    model = small_cnn()
    assert [i.path for i in select_layers(model, None)] == ["conv1", "pool1", "conv2", "conv3"]


def test_never_selects_input_layers():
    inputs = keras.Input((8, 8, 3), name="image")
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, name="c")(inputs))
    assert [i.path for i in list_layers(model)] == ["c"]
    with pytest.raises(ValueError, match="'image' matches no layer"):
        select_layers(model, ["image"])


def test_names_globs_classes_predicates_mixed():
    model = small_cnn()
    got = select_layers(
        model, ["conv3", "pool*", keras.layers.Dense, lambda layer: layer.name == "conv1"]
    )
    assert [i.path for i in got] == ["conv1", "pool1", "conv3", "head"]


def test_unknown_name_lists_selectable_layers():
    with pytest.raises(ValueError) as err:
        select_layers(small_cnn(), ["conv9"])
    assert "'conv9' matches no layer" in str(err.value)
    assert "conv1, pool1, conv2, conv3, gap, head" in str(err.value)


def test_nested_backbone_paths_and_globs():
    base, model = nested_backbone_model()
    paths = [i.path for i in list_layers(model)]
    assert f"{base.name}/block_1_expand_relu" in paths
    got = select_layers(model, ["mobilenetv2*/block_1_expand_relu"])
    assert [i.path for i in got] == [f"{base.name}/block_1_expand_relu"]
    assert got[0].shape[:2] == (16, 16)
    # A bare inner name reaches the nested layer too.
    assert [i.path for i in select_layers(model, ["block_1_expand_relu"])] == [got[0].path]


def test_vgg16_article_layers_are_the_default_selection():
    model = keras.applications.VGG16(weights=None, include_top=True)
    infos = select_layers(model, None)
    assert len(infos) == 18
    assert [i.path for i in infos if i.class_name == "MaxPooling2D"] == [
        f"block{b}_pool" for b in range(1, 6)
    ]
    assert [i.path for i in select_layers(model, [keras.layers.MaxPooling2D])] == [
        f"block{b}_pool" for b in range(1, 6)
    ]


# -- the default rule ---------------------------------------------------------

IDENTITY_LAYERS = [
    keras.layers.Dropout(0.5, name="dropout"),
    keras.layers.SpatialDropout2D(0.5, name="spatial_dropout"),
    keras.layers.GaussianNoise(0.1, name="gaussian_noise"),
    keras.layers.GaussianDropout(0.1, name="gaussian_dropout"),
    keras.layers.AlphaDropout(0.1, name="alpha_dropout"),
    keras.layers.ActivityRegularization(0.01, name="activity_reg"),
    keras.layers.Identity(name="identity"),
]


def _model_with_identity_layers():
    x = inputs = keras.Input((12, 12, 3))
    x = keras.layers.Rescaling(1 / 255, name="rescale")(x)
    x = keras.layers.RandomFlip(name="flip")(x)
    x = keras.layers.ZeroPadding2D(1, name="pad")(x)
    x = keras.layers.Conv2D(4, 3, name="conv1")(x)
    for layer in IDENTITY_LAYERS:
        x = layer(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.UpSampling2D(name="up")(x)
    x = keras.layers.Conv2D(2, 3, name="conv2")(x)
    return keras.Model(inputs, x)


def test_default_leaves_out_identity_preprocessing_and_padding_layers():
    model = _model_with_identity_layers()
    assert [i.path for i in select_layers(model, None)] == ["conv1", "pool", "conv2"]
    # An explicit name, class or glob still selects them.
    for layer in IDENTITY_LAYERS:
        assert [i.path for i in select_layers(model, [layer.name])] == [layer.name]
    assert [i.path for i in select_layers(model, [keras.layers.Dropout])] == [
        "dropout",
        "spatial_dropout",  # SpatialDropout2D is a Dropout
    ]
    # "all" is the former default: every spatial output.
    # rescale, flip, pad, conv1, pool, conv2, up and the identity layers.
    assert len(select_layers(model, "all")) == 7 + len(IDENTITY_LAYERS)


def _stem_and_stages(blocks_per_stage=3, stages=3):
    """A ResNet-like model: padded stem, pooling, residual stages at 16, 8 and 4 px,
    an SE branch (1x1 maps) in each block. Over 24 candidates: the stage rule applies."""
    x = inputs = keras.Input((32, 32, 3))
    x = keras.layers.ZeroPadding2D(1, name="stem_pad")(x)
    x = keras.layers.Conv2D(4, 3, name="stem_conv")(x)  # 32
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Activation("relu", name="stem_relu")(x)
    x = keras.layers.MaxPooling2D(name="stem_pool")(x)  # 16
    for s, channels in enumerate((4, 8, 8)[:stages]):
        for b in range(blocks_per_stage):
            stride = 2 if s > 0 and b == 0 else 1
            name = f"s{s}b{b}"
            shortcut = x
            if stride > 1:
                shortcut = keras.layers.Conv2D(channels, 1, strides=2, name=f"{name}_short")(x)
            y = keras.layers.Conv2D(
                channels, 3, strides=stride, padding="same", name=f"{name}_conv"
            )(x)
            y = keras.layers.BatchNormalization(name=f"{name}_bn")(y)
            se = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se")(y)
            se = keras.layers.Conv2D(channels, 1, activation="sigmoid", name=f"{name}_se_conv")(se)
            y = keras.layers.Multiply(name=f"{name}_excite")([y, se])
            y = keras.layers.Dropout(0.1, name=f"{name}_drop")(y)
            x = keras.layers.Add(name=f"{name}_add")([shortcut, y])
            x = keras.layers.Activation("relu", name=f"{name}_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x))


def test_large_model_gets_its_stage_outputs_and_pooling_layers():
    model = _stem_and_stages()
    assert len([i for i in list_layers(model) if is_candidate(i)]) > SMALL_MODEL_LAYERS
    # The last map before each stride-2 step (through the dropout, which is no
    # candidate), the pooling layer, the last map; not the 1x1 SE maps.
    expected = ["stem_relu", "stem_pool", "s0b2_out", "s1b2_out", "s2b2_out"]
    assert [i.path for i in select_layers(model, None)] == expected
    assert [i.path for i in select_layers(model, "stages")] == expected
    # Widening the default by a name; the keyword mixes with names, globs and classes.
    got = select_layers(model, ["default", "s1b0_conv", keras.layers.Multiply])
    assert [i.path for i in got if i.path not in expected] == [
        "s0b0_excite", "s0b1_excite", "s0b2_excite",
        "s1b0_conv", "s1b0_excite", "s1b1_excite", "s1b2_excite",
        "s2b0_excite", "s2b1_excite", "s2b2_excite",
    ]  # fmt: skip
    assert len(select_layers(model, ["all"])) > 60


def test_small_models_keep_every_computing_layer():
    # Two blocks: under the threshold, all candidates (the article's way on VGG16).
    model = _stem_and_stages(blocks_per_stage=1, stages=2)
    got = [i.path for i in select_layers(model, None)]
    assert len(got) <= SMALL_MODEL_LAYERS
    assert got[:5] == ["stem_conv", "stem_bn", "stem_relu", "stem_pool", "s0b0_conv"]
    assert not {"stem_pad", "s0b0_drop"} & set(got)


def test_stage_rule_without_known_sizes_reads_strides():
    # Built for any input size: the strides tell where the stages end.
    x = inputs = keras.Input((None, None, 3))
    for s in range(3):
        for b in range(9):
            x = keras.layers.Conv2D(
                2, 3, strides=2 if b == 0 else 1, padding="same", name=f"c{s}{b}"
            )(x)
    model = keras.Model(inputs, x)
    assert [i.path for i in select_layers(model, None)] == ["c08", "c18", "c28"]


def test_nested_backbone_behind_preprocessing_gets_its_stage_outputs():
    base, _ = nested_backbone_model()
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1 / 127.5, offset=-1),
            keras.layers.RandomFlip(),
            base,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    got = [i.path for i in select_layers(model, None)]
    # 16, 8, 4 and 2 px; the last stage is 1x1 (points, no map).
    assert got == [f"{base.name}/block_{b}_expand_relu" for b in (1, 3, 6, 13)]


def test_keyword_wins_over_a_layer_of_that_name_and_a_glob_reaches_it():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3, name="c")(inputs)
    model = keras.Model(inputs, keras.layers.Dropout(0.1, name="all")(x))
    assert [i.path for i in select_layers(model, "all")] == ["c", "all"]
    assert [i.path for i in select_layers(model, ["[a]ll"])] == ["all"]


# -- what a selection costs ---------------------------------------------------


def test_selection_cost_known_answer():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 1, name="c")(inputs))
    infos = select_layers(model, None)
    cost = selection_cost(infos, 2, (8, 8), views=("mosaic",))
    # A near-square mosaic of 4 cells of 9 x 9 px (separator included): 18 x 18 px per probe.
    assert cost == SelectionCost(
        layers=1, image_bytes=2 * 18 * 18, activation_bytes=2 * 4 * 8 * 8 * 4
    )
    # Top-k: 4 cells enlarged 8x to 64 px, 1 px apart; overlay: probe | probe, RGB.
    cost = selection_cost(infos, 1, (8, 8), views=("topk", "overlay"), top_k=5)
    assert cost.image_bytes == 64 * (4 * 65) + 3 * 8 * 17


def test_costly_selection_warns_once(tmp_path):
    x = inputs = keras.Input((8, 8, 3))
    for i in range(COSTLY_LAYERS + 1):
        x = keras.layers.Conv2D(2, 3, padding="same", name=f"c{i}")(x)
    model = keras.Model(inputs, x)
    probes = Probes(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.warns(UserWarning, match=rf"Logging {COSTLY_LAYERS + 1} layers on 1 probes"):
        ActivationLogger(model, probes, tmp_path, layers="all").close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ActivationLogger(model, probes, tmp_path / "b", layers="all").close()  # once
        ActivationLogger(model, probes, tmp_path / "c").close()  # the default: 4 stages
    # Bytes alone: 10 layers of 512 x 512 x 64 maps (2048 px mosaics) on 8 probes.
    x = inputs = keras.Input((512, 512, 3))
    for i in range(10):
        x = keras.layers.Conv2D(64, 1, name=f"wide{i}")(x)
    infos = select_layers(keras.Model(inputs, x), None)
    assert selection_cost(infos, 8, (512, 512)).image_bytes > COSTLY_STEP_BYTES
    with pytest.warns(UserWarning, match="Logging 10 layers on 8 probes .* MB of images"):
        warn_if_costly(infos, 8, (512, 512))


def test_subclassed_model_default_leaves_out_dropout(tmp_path):
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(3, 3, padding="same", name="conv")
            self.drop = keras.layers.Dropout(0.5, name="drop")
            self.pool = keras.layers.MaxPooling2D(name="pool")
            self.gap = keras.layers.GlobalAveragePooling2D(name="gap")

        def call(self, x):
            return self.gap(self.pool(self.drop(self.conv(x))))

    net = Net()
    net(np.zeros((1, 8, 8, 3), np.float32))  # built (an unbuilt one fails in the extractor)
    probes = Probes(np.zeros((1, 8, 8, 3), np.uint8))
    with ActivationLogger(net, probes, tmp_path) as logger:
        assert [i.path for i in logger.layers] == ["conv", "pool"]
    with ActivationLogger(net, probes, tmp_path, run_name="b", layers=["default", "drop"]) as lg:
        assert [i.path for i in lg.layers] == ["conv", "drop", "pool"]


@pytest.mark.slow
def test_mobilenetv2_default_is_its_stage_outputs():
    model = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(64, 64, 3))
    assert len(select_layers(model, "all")) == 153
    assert [i.path for i in select_layers(model, None)] == [
        "block_1_expand_relu",  # 32 px: the expansion that the stride-2 depthwise conv reads
        "block_3_expand_relu",
        "block_6_expand_relu",
        "block_13_expand_relu",
        "out_relu",  # 2 px
    ]
