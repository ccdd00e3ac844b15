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


# -- issue 16 defect 7: datasets, labels, dtypes ------------------------------------


def grey_digits(n: int = 10, size: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """``n`` grey images ``(n, size, size)`` uint8, image i filled with 10 * i, and labels i % 3."""
    x = np.stack([np.full((size, size), 10 * i, np.uint8) for i in range(n)])
    return x, np.arange(n) % 3


@pytest.mark.parametrize("batch", [None, 4, 32, "drop"])
def test_from_dataset_grey_mnist_layout_batched_or_not(batch):
    import tensorflow as tf

    x, y = grey_digits()
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if batch == "drop":
        ds = ds.batch(3, drop_remainder=True)  # element spec (3, 6, 6): known batch size
    elif batch is not None:
        ds = ds.batch(batch)
    probes = Probes.from_dataset(ds, take=8)
    assert probes.inputs.shape == (8, 6, 6, 1)
    np.testing.assert_array_equal(probes.inputs[:, 0, 0, 0], 10 * np.arange(8))
    assert probes.labels == [0, 1, 2, 0, 1, 2, 0, 1]


def test_from_dataset_one_hot_and_column_labels_per_image():
    import tensorflow as tf

    x, y = grey_digits()
    one_hot = np.eye(3, dtype=np.float32)[y]
    for labels in (one_hot, y[:, None]):  # (B, K) one-hot and CIFAR-10's (B, 1)
        ds = tf.data.Dataset.from_tensor_slices((x, labels)).batch(4)
        probes = Probes.from_dataset(ds, take=5, class_names=["a", "b", "c"])
        assert probes.labels == ["a", "b", "c", "a", "b"]


def test_from_dataset_color_mode_converts_channels(tmp_path):
    import tensorflow as tf

    rgb = np.zeros((2, 4, 4, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 100, 200, 50
    ds = tf.data.Dataset.from_tensor_slices(rgb)
    grey = Probes.from_dataset(ds, take=2, color_mode="grayscale")
    luma = round(0.299 * 100 + 0.587 * 200 + 0.114 * 50)
    assert grey.inputs.shape == (2, 4, 4, 1) and np.all(grey.inputs == luma)
    x, _ = grey_digits(2)
    back = Probes.from_dataset(tf.data.Dataset.from_tensor_slices(x), color_mode="rgb")
    assert back.inputs.shape == (2, 6, 6, 3)
    (tmp_path / "cls").mkdir()
    Image.new("RGB", (4, 4), (100, 200, 50)).save(tmp_path / "cls" / "a.png")
    folder = Probes.from_dataset(tmp_path, color_mode="grayscale")
    assert folder.inputs.shape == (1, 4, 4, 1) and folder.labels == ["cls"]
    with pytest.raises(ValueError, match="`color_mode`"):
        Probes.from_dataset(tmp_path, color_mode="grey")


def test_from_dataset_folder_takes_images_across_the_classes(tmp_path):
    for cls in ("cat", "dog", "eel"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.new("RGB", (4, 4)).save(tmp_path / cls / f"{cls}{i}.png")
    probes = Probes.from_dataset(tmp_path, take=7)
    assert probes.labels == ["cat"] * 3 + ["dog"] * 2 + ["eel"] * 2
    assert probes.names == ["cat0", "cat1", "cat2", "dog0", "dog1", "eel0", "eel1"]
    assert Probes.from_dataset(tmp_path, take=2).labels == ["cat", "dog"]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (np.eye(4)[[2, 0, 3]], [2, 0, 3]),  # one-hot
        (np.array([[0.05, 0.9, 0.05]] * 3), [1, 1, 1]),  # label smoothing
        (np.array([[1], [0], [7]]), [1, 0, 7]),  # CIFAR-10's (N, 1)
        (np.array([1.0, 2.0, 0.0], np.float32), [1, 2, 0]),  # float class indices
        ([np.int64(3), "cat", None], [3, "cat", None]),
        ([True, False, True], [1, 0, 1]),
        ([b"cat", 1.0, [0, 1]], ["cat", 1, 1]),
    ],
)
def test_labels_become_class_indices(images, labels, expected):
    got = Probes(images, labels=labels).labels
    assert got == expected and all(type(v) is type(e) for v, e in zip(got, expected, strict=True))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([0.5, 1, 2], "label 0 is 0.5, a float that is not a whole number"),
        (np.array([[1, 1, 0], [0, 1, 0], [1, 0, 0]]), "not one-hot"),
        ([0, 1, float("nan")], "label 2 is nan"),
        ("abc", "single str"),
        (np.zeros((3, 2, 2)), "shape \\(3, 2, 2\\)"),
        ([0, 1], "expected 3 labels"),
    ],
)
def test_labels_that_are_not_classes_raise(images, labels, message):
    with pytest.raises(ValueError, match=message):
        Probes(images, labels=labels)


def test_uint16_and_wide_int_images_are_scaled_not_clipped():
    img = np.array([0, 257, 32896, 65535], np.uint16).reshape(1, 2, 2, 1)
    np.testing.assert_array_equal(Probes(img).display[0, ..., 0].ravel(), [0, 1, 128, 255])
    # PIL's 16-bit mode "I" gives int32: scaled the same way once a value exceeds 255.
    np.testing.assert_array_equal(
        Probes(img.astype(np.int32)).display[0, ..., 0].ravel(), [0, 1, 128, 255]
    )
    small = np.array([0, 1, 128, 255], np.int64).reshape(1, 2, 2, 1)  # 0..255 ints: as is
    np.testing.assert_array_equal(Probes(small).display[0, ..., 0].ravel(), [0, 1, 128, 255])
    assert Probes(img).inputs.max() == 65535  # the model still gets the values as given


def test_float_range_is_judged_robustly():
    half = np.full((2, 10, 10, 3), 0.5, np.float32)
    overshoot = half.copy()
    overshoot[0, 0, 0, 0] = 1.2  # a bicubic resize's overshoot: still 0..1 (was: all dark)
    assert Probes(overshoot).display[1, 5, 5, 0] == 128
    assert Probes(overshoot).display[0, 0, 0, 0] == 255
    assert Probes(half * 255).display[1, 5, 5, 0] == 128  # img_to_array's 0..255 floats
    dark = np.zeros((1, 10, 10, 3), np.float32)
    dark[0, :2] = 200.0  # 20 % of the values far above 1: 0..255
    assert Probes(dark).display[0, 0, 0, 0] == 200
