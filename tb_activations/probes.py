"""Probe images: the fixed inputs whose activations are watched.

A :class:`Probes` holds two views of the same images: ``display`` (uint8
RGB, what a person sees, used for overlays) and ``inputs`` (float32, what the
model receives, after the model's own preprocessing).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

Preprocess = Callable[[np.ndarray], Any]


def _to_display(images: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(N, H, W, 3)`` of uint8, int, bool or float images (1, 3 or 4 channels).

    Floats are read as [0, 1], or as [0, 255] when a finite value exceeds 1
    (``keras.utils.img_to_array`` gives 0..255 floats); values outside are
    clipped and NaN shows black.
    """
    if images.dtype == np.uint8:
        display = images
    elif np.issubdtype(images.dtype, np.floating):
        with np.errstate(over="ignore"):
            finite = np.nan_to_num(images.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        scale = 1.0 if finite.size and finite.max() > 1.0 else 255.0
        display = np.clip(np.rint(finite * scale), 0, 255).astype(np.uint8)
        display[np.isposinf(images)] = 255
    elif images.dtype == np.bool_:
        display = images.astype(np.uint8) * 255
    elif np.issubdtype(images.dtype, np.integer):
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


class Probes:
    """A fixed batch of probe images.

    Args:
        images: Array ``(N, H, W, C)`` of display images, uint8 in [0, 255] or
            float in [0, 1]. ``(H, W)`` or ``(N, H, W)`` grey images are accepted
            and given a channel axis.
        preprocess: Function applied to ``images`` (as float32, same range as
            given) to make the model's input, e.g.
            ``keras.applications.vgg16.preprocess_input``. Defaults to ``None``:
            the model receives the values unchanged as float32.
        names: One name per probe. Defaults to ``probe_0``, ``probe_1``, ...
        labels: One label per probe (class index or name), or ``None``.

    Raises:
        ValueError: for zero probes, a wrong rank, or names/labels of the wrong length.

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
        if labels is not None:
            labels = list(labels)
            if len(labels) != n:
                raise ValueError(
                    f"Invalid value for argument `labels`: expected {n} labels (one per probe). Received {len(labels)}."
                )
        self.labels = labels

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
    ) -> Probes:
        """The first ``take`` images of a ``tf.data.Dataset`` or of a directory.

        Args:
            source: A ``tf.data.Dataset`` yielding images or ``(image, label)``
                pairs, batched or not; or a directory of images, whose
                sub-folder names become the labels (the layout of
                ``keras.utils.image_dataset_from_directory``).
            take: Number of probes. Defaults to 8.
            target_size: ``(H, W)`` to resize to. Defaults to ``None``.
            preprocess: See :class:`Probes`.
            class_names: Names for integer labels. Defaults to ``None``.
        """
        if not isinstance(take, int) or take < 1:
            raise ValueError(
                f"Invalid value for argument `take`. Expected a positive int. Received: take={take!r}"
            )
        if isinstance(source, (str, os.PathLike)):
            if not os.path.isdir(source):
                raise ValueError(
                    f"Invalid value for argument `source`: {os.fspath(source)!r} is not a directory."
                )
            files = expand_image_paths([source])[:take]
            labels = [os.path.basename(os.path.dirname(f)) for f in files]
            root = os.path.normpath(os.fspath(source))
            has_classes = any(os.path.normpath(os.path.dirname(f)) != root for f in files)
            return cls.from_files(
                files,
                target_size=target_size,
                preprocess=preprocess,
                labels=labels if has_classes else None,
            )
        return _from_tf_dataset(
            cls,
            source,
            take=take,
            target_size=target_size,
            preprocess=preprocess,
            class_names=class_names,
        )


def _from_tf_dataset(cls, dataset, *, take, target_size, preprocess, class_names) -> Probes:
    import tensorflow as tf

    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(
            "Invalid value for argument `source`. Expected a tf.data.Dataset or a directory. "
            f"Received: {type(dataset).__name__}"
        )
    images, labels = [], []
    for element in dataset:
        if isinstance(element, dict):
            raise ValueError(
                "Dataset elements that are dicts are not supported; map them to (image, label)."
            )
        image, label = (element[0], element[1]) if isinstance(element, tuple) else (element, None)
        image = np.asarray(image)
        batched = image.ndim == 4
        batch_images = list(image) if batched else [image]
        batch_labels = (
            (list(np.asarray(label)) if batched else [np.asarray(label)])
            if label is not None
            else [None] * len(batch_images)
        )
        images.extend(batch_images)
        labels.extend(batch_labels)
        if len(images) >= take:
            break
    if not images:
        raise ValueError("The dataset is empty: no probe image could be taken from it.")
    images, labels = images[:take], labels[:take]
    arr = np.stack(images)
    if target_size is not None and arr.shape[1:3] != tuple(target_size):
        arr = tf.image.resize(arr, target_size).numpy().astype(arr.dtype)
    if all(v is None for v in labels):
        out_labels = None
    else:
        out_labels = []
        for v in labels:
            v = np.asarray(v)
            if v.ndim == 1 and v.size > 1:  # one-hot
                v = np.argmax(v)
            v = v.item() if v.ndim == 0 else v.tolist()
            if class_names is not None and isinstance(v, int) and 0 <= v < len(class_names):
                v = class_names[v]
            out_labels.append(v)
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
