import numpy as np
import pytest
from PIL import Image

from tb_activations import Probes


def test_uint8_images_feed_unchanged_as_float32(images):
    probes = Probes(images)
    assert probes.inputs.dtype == np.float32
    np.testing.assert_array_equal(probes.inputs, images.astype(np.float32))
    np.testing.assert_array_equal(probes.display, images)
    assert probes.names == ["probe_0", "probe_1", "probe_2"]


def test_float_images_in_unit_range_display_as_uint8():
    imgs = np.full((1, 2, 2, 3), 0.5, np.float32)
    probes = Probes(imgs)
    assert probes.display.dtype == np.uint8 and probes.display[0, 0, 0, 0] == 128
    np.testing.assert_allclose(probes.inputs, imgs)


def test_grey_images_get_three_display_channels():
    probes = Probes(np.zeros((2, 5, 5, 1), np.uint8))
    assert probes.display.shape == (2, 5, 5, 3)
    assert probes.inputs.shape == (2, 5, 5, 1)


def test_preprocess_gets_a_copy_and_defines_inputs(images):
    def prep(x):
        x -= 10.0  # in place, as keras' preprocess_input does
        return x

    probes = Probes(images, preprocess=prep)
    np.testing.assert_allclose(probes.inputs, images.astype(np.float32) - 10)
    np.testing.assert_array_equal(probes.display, images)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"images": np.zeros((0, 4, 4, 3), np.uint8)}, "zero probes"),
        ({"images": np.zeros((2, 2, 4, 4, 3), np.uint8)}, "Expected an array of shape"),
        ({"images": np.zeros((2, 4, 4, 3), np.uint8), "names": ["a"]}, "expected 2 names"),
        ({"images": np.zeros((2, 4, 4, 3), np.uint8), "names": ["a", "a"]}, "unique"),
        ({"images": np.zeros((2, 4, 4, 3), np.uint8), "labels": [1]}, "expected 2 labels"),
    ],
)
def test_bad_probes_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Probes(**kwargs)


def test_from_files_resizes_names_and_expands_directories(tmp_path):
    Image.new("RGB", (20, 10), (255, 0, 0)).save(tmp_path / "red.png")
    sub = tmp_path / "more"
    sub.mkdir()
    Image.new("L", (8, 8), 200).save(sub / "grey.jpg")
    probes = Probes.from_files([tmp_path / "red.png", sub], target_size=(6, 7))
    assert probes.inputs.shape == (2, 6, 7, 3)
    assert probes.names == ["red", "grey"]
    assert tuple(probes.display[0, 0, 0]) == (255, 0, 0)


def test_from_files_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="Cannot read image file .*bad.png"):
        Probes.from_files([bad])
    with pytest.raises(ValueError, match="not found"):
        Probes.from_files([tmp_path / "missing.png"])
    truncated = tmp_path / "trunc.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "full.png")
    truncated.write_bytes((tmp_path / "full.png").read_bytes()[:60])
    with pytest.raises(ValueError, match="trunc.png"):
        Probes.from_files([truncated])


def test_from_files_different_sizes_need_target_size(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    Image.new("RGB", (5, 5)).save(tmp_path / "b.png")
    with pytest.raises(ValueError, match="target_size"):
        Probes.from_files([tmp_path])


def test_from_dataset_directory_labels_from_subfolders(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / cls / "x.png")
    probes = Probes.from_dataset(tmp_path, take=5)
    assert len(probes) == 2 and probes.labels == ["cat", "dog"]


def test_from_dataset_tf_data_batched_with_labels():
    import tensorflow as tf

    x = np.arange(5 * 4 * 4 * 3, dtype=np.float32).reshape(5, 4, 4, 3) / 240.0
    y = np.array([0, 1, 2, 1, 0])
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    probes = Probes.from_dataset(ds, take=3, class_names=["a", "b", "c"])
    assert len(probes) == 3 and probes.labels == ["a", "b", "c"]
    np.testing.assert_allclose(probes.inputs, x[:3])


def test_resized_redoes_preprocessing(images):
    probes = Probes(images, preprocess=lambda x: x / 255.0).resized((8, 4))
    assert probes.inputs.shape == (3, 8, 4, 3)
    assert probes.inputs.max() <= 1.0
