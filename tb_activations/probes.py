"""Probe images: the fixed inputs whose activations are watched.

A :class:`Probes` holds two views of the same images: ``display`` (uint8
RGB, what a person sees, used for overlays) and ``inputs`` (float32, what the
model receives, after the model's own preprocessing).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

Preprocess = Callable[[np.ndarray], Any]


#: A float batch is read as 0..255 when more than this fraction of its finite
#: values exceed :data:`FLOAT_255_ABOVE`; else as 0..1.
FLOAT_255_FRACTION = 0.01
#: See :data:`FLOAT_255_FRACTION`: above interpolation overshoot (a bicubic or
#: Lanczos resize of a 0..1 image reaches about 1.1), far below a 0..255 image.
FLOAT_255_ABOVE = 1.5


def float_scale(images: np.ndarray) -> float:
    """255.0 if float ``images`` are in 0..1, 1.0 if in 0..255 (see :func:`_to_display`)."""
    finite = images[np.isfinite(images)]
    if finite.size == 0:
        return 255.0
    above = np.count_nonzero(finite > FLOAT_255_ABOVE)
    return 1.0 if above > FLOAT_255_FRACTION * finite.size else 255.0


def _to_display(images: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(N, H, W, 3)`` of uint8, int, bool or float images (1, 3 or 4 channels).

    The display rules (documented in ``docs/guide/probes.md``):

    - uint8 as is; bool: ``True`` is 255.
    - uint16 (16-bit images): scaled from 0..65535. Other integer types: as
      0..255 when every value is at most 255, else as 0..65535 (e.g. PIL's
      16-bit mode ``"I"`` gives int32); values outside are clipped.
    - float: the batch is read as 0..255 when more than 1 % of its finite
      values exceed 1.5 (``keras.utils.img_to_array`` gives 0..255 floats),
      else as 0..1: a few values just above 1 (resize overshoot) neither
      darken every probe nor count as 0..255. Values outside are clipped,
      NaN shows black, +Inf white.
    """
    if images.dtype == np.uint8:
        display = images
    elif np.issubdtype(images.dtype, np.floating):
        with np.errstate(over="ignore"):
            finite = np.nan_to_num(images.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        scale = float_scale(images)
        display = np.clip(np.rint(finite * scale), 0, 255).astype(np.uint8)
        display[np.isposinf(images)] = 255
    elif images.dtype == np.bool_:
        display = images.astype(np.uint8) * 255
    elif np.issubdtype(images.dtype, np.integer):
        if images.dtype == np.uint16 or (images.size and images.max() > 255):
            wide = np.clip(images.astype(np.float64), 0, 65535) * (255.0 / 65535.0)
            display = np.rint(wide).astype(np.uint8)
        else:
            display = np.clip(images, 0, 255).astype(np.uint8)
    else:
        raise ValueError(
            "Invalid value for argument `images`. Expected uint8, int, bool or float pixel "
            f"values. Received dtype: {images.dtype}"
        )
    channels = display.shape[-1]
    if channels == 1:
        display = np.repeat(display, 3, axis=-1)
    elif channels == 4:
        display = display[..., :3]
    elif channels == 2 or channels > 4:
        # Not a picture: show the first channel as grey so overlays still work.
        display = np.repeat(display[..., :1], 3, axis=-1)
    return np.ascontiguousarray(display)


def _bad_label(i: int, value: Any, why: str) -> ValueError:
    return ValueError(
        f"Invalid value for argument `labels`: label {i} is {value!r}, {why}. Expected one "
        "class index (an int, or an integral float) or class name (a str) per probe, one-hot "
        "rows (N, K), or None for no label."
    )


def _row_index(i: int, row: np.ndarray) -> int:
    """The class of one-hot (or label-smoothed) ``row``; raises for a multi-hot row."""
    if not np.isfinite(row).all() or (row < 0).any() or not np.isclose(row.sum(), 1.0, atol=1e-3):
        raise _bad_label(
            i, row.tolist(), "a row that is not one-hot (several classes, or not summing to 1)"
        )
    return int(np.argmax(row))


def _one_label(i: int, value: Any) -> int | str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):  # tf.string labels
        return value.decode("utf-8", "replace")
    arr = np.asarray(value)
    if arr.ndim > 0 and arr.size == 1:  # (1,) from an (N, 1) layout
        arr = arr.reshape(())
    if arr.ndim == 1 and arr.dtype.kind in "biuf":
        return _row_index(i, arr.astype(np.float64))
    if arr.ndim != 0:
        raise _bad_label(i, value, f"an array of shape {arr.shape}")
    v = arr.item()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if np.isfinite(v) and v == round(v):
            return int(v)
        raise _bad_label(i, value, "a float that is not a whole number")
    raise _bad_label(i, value, f"of type {type(value).__name__}")


def class_labels(labels: Any, n: int) -> list[int | str | None] | None:
    """``labels`` as one class index (int) or name (str) or ``None`` per probe.

    Accepts a sequence of ints, integral floats (``3.0``), bools, strings or
    ``None``; an ``(N,)`` or ``(N, 1)`` array (CIFAR-10's layout); or one-hot
    ``(N, K)`` rows (each taken as its argmax).

    Raises:
        ValueError: for a count other than ``n``, a non-integral float, a
            multi-hot row, or anything that is not a class.
    """
    if labels is None:
        return None
    if isinstance(labels, (str, bytes)):
        raise ValueError(
            "Invalid value for argument `labels`. Expected one label per probe (a list or an "
            f"array). Received a single {type(labels).__name__}: {labels!r}"
        )
    try:
        arr = np.asarray(labels)
    except ValueError:  # ragged: per-element below
        arr = None
    if arr is not None and arr.dtype.kind in "biuf" and arr.ndim == 2:
        if arr.shape[1] == 1:
            values: list[Any] = list(arr[:, 0])
        else:
            values = [_row_index(i, row) for i, row in enumerate(arr.astype(np.float64))]
    elif arr is not None and arr.dtype.kind in "biuf" and arr.ndim > 2:
        raise ValueError(
            "Invalid value for argument `labels`. Expected (N,), (N, 1) or one-hot (N, K) "
            f"class labels. Received an array of shape {arr.shape}"
        )
    else:
        values = list(labels)
    if len(values) != n:
        raise ValueError(
            f"Invalid value for argument `labels`: expected {n} labels (one per probe). Received {len(values)}."
        )
    return [_one_label(i, v) for i, v in enumerate(values)]


class Probes:
    """A fixed batch of probe images.

    Args:
        images: Array ``(N, H, W, C)`` of display images: uint8 in [0, 255],
            float in [0, 1] or [0, 255], uint16 in [0, 65535] (the display
            rules are in ``docs/guide/probes.md``). ``(H, W)`` or
            ``(N, H, W)`` grey images are accepted and given a channel axis.
        preprocess: Function applied to ``images`` (as float32, same range as
            given) to make the model's input, e.g.
            ``keras.applications.vgg16.preprocess_input``. Defaults to ``None``:
            the model receives the values unchanged as float32.
        names: One name per probe. Defaults to ``probe_0``, ``probe_1``, ...
        labels: One label per probe: a class index (an int, or a whole float
            such as ``3.0``) or a class name, ``None`` for none; an ``(N, 1)``
            array or one-hot ``(N, K)`` rows are taken as class indices.
            Defaults to ``None``.

    Raises:
        ValueError: for zero probes, a wrong rank, names/labels of the wrong
            length, or labels that are not classes (e.g. ``0.5``, multi-hot rows).

    Examples:
        >>> probes = Probes(np.zeros((2, 32, 32, 3), np.uint8), names=["cat", "dog"])
        >>> probes.inputs.shape, probes.display.dtype
        ((2, 32, 32, 3), dtype('uint8'))
    """

    def __init__(
        self,
        images: Any,
        *,
        preprocess: Preprocess | None = None,
        names: Sequence[str] | None = None,
        labels: Sequence[Any] | None = None,
    ) -> None:
        try:
            images = np.asarray(images)
        except ValueError as err:  # ragged nested lists
            raise ValueError(
                "Invalid value for argument `images`. Expected an array of shape (N, H, W, C) "
                f"(all images of one size). Received a ragged {type(images).__name__}: {err}"
            ) from None
        if images.dtype.kind not in "biuf":
            raise ValueError(
                "Invalid value for argument `images`. Expected uint8, int, bool or float pixel "
                f"values of shape (N, H, W, C). Received dtype {images.dtype} "
                f"({type(images).__name__} {np.shape(images)})"
            )
        if images.ndim == 2:
            images = images[None, ..., None]
        elif images.ndim == 3 and images.shape[-1] not in (1, 3, 4):
            images = images[..., None]
        elif images.ndim == 3:
            images = images[None]
        if images.ndim != 4:
            raise ValueError(
                "Invalid value for argument `images`. Expected an array of shape "
                f"(N, H, W, C). Received shape: {images.shape}"
            )
        if images.shape[0] == 0:
            raise ValueError(
                "Invalid value for argument `images`: there are zero probes. Pass at least one image."
            )
        if images.shape[1] == 0 or images.shape[2] == 0:
            raise ValueError(
                f"Invalid value for argument `images`: empty images of shape {images.shape}."
            )
        n = images.shape[0]
        self.display = _to_display(images)
        raw = images.astype(np.float32)
        if preprocess is not None:
            # Keras' preprocess_input may modify its argument in place: give it a copy.
            raw = np.asarray(preprocess(raw.copy()), dtype=np.float32)
        self.inputs = np.ascontiguousarray(raw)
        self.preprocess = preprocess
        self._raw = images
        if names is None:
            names = [f"probe_{i}" for i in range(n)]
        names = [str(x) for x in names]
        if len(names) != n:
            raise ValueError(
                f"Invalid value for argument `names`: expected {n} names (one per probe). Received {len(names)}."
            )
        if len(set(names)) != n:
            raise ValueError(
                f"Invalid value for argument `names`: names must be unique. Received: {names}"
            )
        self.names = names
        self.labels = class_labels(labels, n)

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __repr__(self) -> str:
        return f"Probes(n={len(self)}, input_shape={self.inputs.shape[1:]}, names={self.names})"

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the probe images."""
        return int(self.inputs.shape[1]), int(self.inputs.shape[2])

    def resized(self, size: tuple[int, int]) -> Probes:
        """A copy with images resized (bilinear) to ``size = (H, W)``, preprocessing redone."""
        from PIL import Image

        h, w = int(size[0]), int(size[1])
        out = []
        for img in self._raw:
            if img.dtype == np.uint8:
                pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
                arr = np.asarray(pil.resize((w, h), Image.BILINEAR))
                out.append(arr.reshape(h, w, -1))
            else:
                chans = [
                    np.asarray(
                        Image.fromarray(img[..., c].astype(np.float32), mode="F").resize(
                            (w, h), Image.BILINEAR
                        )
                    )
                    for c in range(img.shape[-1])
                ]
                out.append(np.stack(chans, axis=-1).astype(img.dtype))
        return Probes(
            np.stack(out), preprocess=self.preprocess, names=self.names, labels=self.labels
        )

    @classmethod
    def from_files(
        cls,
        paths: Iterable[str | os.PathLike],
        *,
        target_size: tuple[int, int] | None = None,
        preprocess: Preprocess | None = None,
        names: Sequence[str] | None = None,
        labels: Sequence[Any] | None = None,
        color_mode: str = "rgb",
    ) -> Probes:
        """Load probe images from files (directories are expanded, sorted).

        Args:
            paths: Image files or directories of image files.
            target_size: ``(H, W)`` to resize every image to. Defaults to ``None``:
                all images must already share one size.
            preprocess: See :class:`Probes`.
            names: Defaults to the file names without extension.
            labels: See :class:`Probes`.
            color_mode: ``"rgb"`` or ``"grayscale"``. Defaults to ``"rgb"``.

        Raises:
            ValueError: for a missing or unreadable file, no image at all, or
                images of different sizes without ``target_size``.
        """
        from PIL import Image, UnidentifiedImageError

        if color_mode not in ("rgb", "grayscale"):
            raise ValueError(
                f"Invalid value for argument `color_mode`. Expected 'rgb' or 'grayscale'. Received: {color_mode!r}"
            )
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        files = expand_image_paths(paths)
        if not files:
            raise ValueError(
                f"No image files found in {[os.fspath(p) for p in paths]} (extensions: {', '.join(IMAGE_EXTENSIONS)})."
            )
        arrays = []
        for path in files:
            try:
                with Image.open(path) as img:
                    img = img.convert("RGB" if color_mode == "rgb" else "L")
                    if target_size is not None:
                        img = img.resize((int(target_size[1]), int(target_size[0])), Image.BILINEAR)
                    arr = np.asarray(img)
            except FileNotFoundError:
                raise ValueError(f"Image file not found: {path}") from None
            except (UnidentifiedImageError, OSError, SyntaxError) as err:
                raise ValueError(f"Cannot read image file {path}: {err}") from None
            arrays.append(arr if arr.ndim == 3 else arr[..., None])
        sizes = {a.shape for a in arrays}
        if len(sizes) > 1:
            raise ValueError(
                f"Images have different sizes {sorted(sizes)}; pass `target_size=(H, W)` to resize them."
            )
        if names is None:
            names = _unique_names([os.path.splitext(os.path.basename(f))[0] for f in files])
        return cls(np.stack(arrays), preprocess=preprocess, names=names, labels=labels)

    @classmethod
    def from_dataset(
        cls,
        source: Any,
        *,
        take: int = 8,
        target_size: tuple[int, int] | None = None,
        preprocess: Preprocess | None = None,
        class_names: Sequence[str] | None = None,
        color_mode: str | None = None,
    ) -> Probes:
        """``take`` images of a ``tf.data.Dataset`` or of a directory of classes.

        Args:
            source: A ``tf.data.Dataset`` yielding images or ``(image, label)``
                pairs, batched or not (the first ``take`` images are taken); or a
                directory of images whose sub-folders are the classes (the layout
                of ``keras.utils.image_dataset_from_directory``): then the images
                are taken across the classes in turn (the first of each sorted
                class folder, then the second, ...), labelled with the folder's
                name.
            take: Number of probes. Defaults to 8.
            target_size: ``(H, W)`` to resize to. Defaults to ``None``.
            preprocess: See :class:`Probes`.
            class_names: Names for integer labels. Defaults to ``None``.
            color_mode: ``"rgb"`` (3 channels) or ``"grayscale"`` (1 channel)
                to convert the images to; ``None`` keeps a dataset's channels
                and reads files as RGB. Defaults to ``None``.

        Raises:
            ValueError: for a bad argument, an empty source, or labels that
                are not classes (see :class:`Probes`).
        """
        if not isinstance(take, int) or isinstance(take, bool) or take < 1:
            raise ValueError(
                f"Invalid value for argument `take`. Expected a positive int. Received: take={take!r}"
            )
        if color_mode not in (None, "rgb", "grayscale"):
            raise ValueError(
                "Invalid value for argument `color_mode`. Expected None, 'rgb' or 'grayscale'. "
                f"Received: {color_mode!r}"
            )
        if isinstance(source, (str, os.PathLike)):
            if not os.path.isdir(source):
                raise ValueError(
                    f"Invalid value for argument `source`: {os.fspath(source)!r} is not a directory."
                )
            files, labels = _across_classes(os.fspath(source), take)
            return cls.from_files(
                files,
                target_size=target_size,
                preprocess=preprocess,
                labels=labels,
                color_mode=color_mode or "rgb",
            )
        return _from_tf_dataset(
            cls,
            source,
            take=take,
            target_size=target_size,
            preprocess=preprocess,
            class_names=class_names,
            color_mode=color_mode,
        )


def _across_classes(root: str, take: int) -> tuple[list[str], list[str] | None]:
    """``take`` image files of ``root`` taken in turn from each class folder, and their labels.

    Classes are the sorted immediate sub-folders (their images found
    recursively); images directly in ``root`` form one more, unlabelled group.
    Returns the files grouped by class (labels ``None`` when there are no classes).
    """
    groups: dict[str | None, list[str]] = {}
    loose = sorted(
        os.path.join(root, n)
        for n in os.listdir(root)
        if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(root, n))
    )
    for name in sorted(os.listdir(root)):
        sub = os.path.join(root, name)
        if os.path.isdir(sub):
            found = expand_image_paths([sub])
            if found:
                groups[name] = found
    if loose:
        groups[None] = loose
    if not groups:
        raise ValueError(
            f"No image files found in {root!r} (extensions: {', '.join(IMAGE_EXTENSIONS)})."
        )
    chosen: dict[str | None, list[str]] = {k: [] for k in groups}
    count, depth = 0, 0
    while count < take and any(depth < len(v) for v in groups.values()):
        for key, found in groups.items():
            if depth < len(found) and count < take:
                chosen[key].append(found[depth])
                count += 1
        depth += 1
    files = [f for key in groups for f in chosen[key]]
    if list(groups) == [None]:
        return files, None
    labels = [key for key in groups for _ in chosen[key]]
    return files, labels


def _is_batched(image: np.ndarray, spec_shape: list | None) -> bool:
    """Whether one dataset element ``image`` is a batch (see ``docs/guide/probes.md``).

    Rank 4 is a batch ``(B, H, W, C)`` and rank 2 one grey image ``(H, W)``.
    Rank 3 is a batch of grey images ``(B, H, W)`` (the MNIST layout) when
    its last axis is not 1, 3 or 4 channels, or when the dataset's element
    spec has an unknown first axis in front of known sizes (what ``.batch()``
    makes); else one image ``(H, W, C)``.
    """
    if image.ndim != 3:
        return image.ndim == 4
    if image.shape[-1] not in (1, 3, 4):
        return True
    dims = spec_shape or []
    return len(dims) == 3 and dims[0] is None and dims[1] is not None and dims[2] is not None


def _convert_color(arr: np.ndarray, color_mode: str | None) -> np.ndarray:
    """``arr`` ``(N, H, W, C)`` with 3 channels (``"rgb"``) or 1 (``"grayscale"``)."""
    channels = arr.shape[-1]
    if color_mode is None:
        return arr
    if color_mode == "rgb":
        if channels == 1:
            return np.repeat(arr, 3, axis=-1)
        return arr[..., :3] if channels == 4 else arr
    if channels == 1:
        return arr
    # ITU-R 601-2 luma, as PIL's "L" and tf.image.rgb_to_grayscale.
    grey = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if np.issubdtype(arr.dtype, np.integer):
        grey = np.rint(grey)
    return grey[..., None].astype(arr.dtype)


def _from_tf_dataset(
    cls, dataset, *, take, target_size, preprocess, class_names, color_mode
) -> Probes:
    # Not loaded: it cannot be a tf.data.Dataset (and JAX / PyTorch users get no TensorFlow).
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(dataset, tf.data.Dataset):
        raise ValueError(
            "Invalid value for argument `source`. Expected a tf.data.Dataset or a directory. "
            f"Received: {type(dataset).__name__}"
        )
    spec = dataset.element_spec
    if isinstance(spec, tuple):
        spec = spec[0]
    spec_shape = getattr(spec, "shape", None)
    spec_shape = None if spec_shape is None or spec_shape.rank is None else spec_shape.as_list()
    images, labels = [], []
    for element in dataset:
        if isinstance(element, dict):
            raise ValueError(
                "Dataset elements that are dicts are not supported; map them to (image, label)."
            )
        image, label = (element[0], element[1]) if isinstance(element, tuple) else (element, None)
        image = np.asarray(image)
        batched = _is_batched(image, spec_shape)
        batch_images = list(image) if batched else [image]
        if label is None:
            batch_labels = [None] * len(batch_images)
        else:
            label = np.asarray(label)
            batch_labels = list(label) if batched else [label]
            if len(batch_labels) != len(batch_images):
                raise ValueError(
                    f"A dataset element has {len(batch_images)} images and labels of shape "
                    f"{label.shape}: expected one label per image."
                )
        images.extend(batch_images)
        labels.extend(batch_labels)
        if len(images) >= take:
            break
    if not images:
        raise ValueError("The dataset is empty: no probe image could be taken from it.")
    images, labels = images[:take], labels[:take]
    arr = np.stack(images)
    if arr.ndim == 3:  # grey (N, H, W)
        arr = arr[..., None]
    arr = _convert_color(arr, color_mode)
    if target_size is not None and arr.shape[1:3] != tuple(target_size):
        arr = tf.image.resize(arr, target_size).numpy().astype(arr.dtype)
    out_labels = None
    if any(v is not None for v in labels):
        out_labels = class_labels(labels, len(labels))
        if class_names is not None:
            out_labels = [
                class_names[v] if isinstance(v, int) and 0 <= v < len(class_names) else v
                for v in out_labels
            ]
    return cls(arr, preprocess=preprocess, labels=out_labels)


def expand_image_paths(paths: Iterable[str | os.PathLike]) -> list[str]:
    """``paths`` with directories replaced by their image files (recursive, sorted)."""
    files: list[str] = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs.sort()
                files.extend(
                    os.path.join(root, n)
                    for n in sorted(names)
                    if n.lower().endswith(IMAGE_EXTENSIONS)
                )
        else:
            files.append(p)
    return files


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0)
        out.append(n if k == 0 else f"{n}_{k}")
        seen[n] = k + 1
    return out
