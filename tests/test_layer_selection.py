import keras
import pytest

from tb_activations import list_layers, select_layers
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
