"""Top-activating examples: for every channel, the pool images that excite it most.

An *example pool* (an array, a :class:`~tb_activations.Probes`, a folder or
list of image files, or a ``tf.data.Dataset``) is streamed through the model
in batches, one traced pass per batch (the
:class:`~tb_activations.ActivationExtractor`). Per layer and channel, the
channel's maximum over positions and where it is are reduced on the device;
only ``(batch, channels)`` numbers come back, merged into a running top ``k``
of (value, image index, position). Memory beyond one batch's activations is
the ``layers x channels x k`` winners plus the display images they point to;
the pool's activations are never all held.

Ties are broken deterministically: a larger value first, then the lower
image index, then (within an image) the first position in row-major order.
So streaming gives the same winners as one big batch, whatever the batch size.

Each winner's crop is its image at the receptive field of its position
(:func:`~tb_activations.receptive_field`), padded where the field leaves the
image (Yosinski et al. 2015; Olah et al. 2017).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tb_activations.layer_selection import LayerInfo, LayerSpec, list_layers, select_layers
from tb_activations.probes import Preprocess, Probes, expand_image_paths
from tb_activations.receptive_fields import ReceptiveField, receptive_field

#: Default number of examples kept per channel (the Deep Visualization Toolbox's 9).
DEFAULT_K = 9


@dataclass(frozen=True)
class LayerExamples:
    """The top examples of every channel of one layer (plain numpy).

    Attributes:
        layer: Layer path.
        shape: ``(H, W, C)`` of the layer's output for one image, channels-last.
        field: Receptive field of one output position.
        values: float32 ``(C, k)``: each winner's activation (the channel's
            maximum over positions on that image), strongest first; NaN in
            empty slots.
        indices: int64 ``(C, k)``: the winners' image indices in the pool; -1
            in empty slots (a channel NaN on every image).
        positions: int64 ``(C, k, 2)``: ``(y, x)`` of the maximum in the layer's output.
    """

    layer: str
    shape: tuple[int, int, int]
    field: ReceptiveField
    values: np.ndarray
    indices: np.ndarray
    positions: np.ndarray

    @property
    def k(self) -> int:
        return int(self.values.shape[1])

    @property
    def channels(self) -> int:
        return int(self.values.shape[0])

    def boxes(self) -> np.ndarray:
        """int64 ``(C, k, 2, 2)``: ``[[y0, y1], [x0, x1]]`` input-pixel boxes (stop exclusive).

        A box can leave the image (negative start, or stop past the size).
        """
        size = np.asarray(self.field.size, np.int64)
        start = np.asarray(self.field.offset, np.int64) + self.positions * np.asarray(
            self.field.stride, np.int64
        )
        return np.stack([start, start + size], axis=-1)


@dataclass(frozen=True)
class TopExamples:
    """What :func:`top_examples` returns.

    Attributes:
        layers: ``{layer path: LayerExamples}`` in model order.
        images: ``{image index: uint8 (H, W, 3)}``, the display image of every winner.
        names: ``{image index: name}`` of every winner (file name, or ``image_<i>``).
        labels: ``{image index: label}`` of the winners that have one.
        pool_size: Number of images streamed.
        k: Examples kept per channel.
    """

    layers: dict[str, LayerExamples]
    images: dict[int, np.ndarray]
    names: dict[int, str]
    labels: dict[int, Any]
    pool_size: int
    k: int

    def crops(
        self, layer: str, channels: Sequence[int] | None = None, *, fill: int = 0
    ) -> np.ndarray:
        """uint8 ``(len(channels), k, fh, fw, 3)``: each winner's receptive field cut from its image.

        Args:
            layer: Layer path.
            channels: Channels to crop. Defaults to all.
            fill: Pixel value where the field leaves the image (and in empty
                slots). Defaults to 0 (black).
        """
        ex = self.layers[layer]
        chans = range(ex.channels) if channels is None else [int(c) for c in channels]
        fh, fw = ex.field.size
        boxes = ex.boxes()
        out = np.full((len(chans), ex.k, fh, fw, 3), fill, np.uint8)
        for row, c in enumerate(chans):
            for j in range(ex.k):
                index = int(ex.indices[c, j])
                if index >= 0:
                    out[row, j] = crop(self.images[index], boxes[c, j], fill=fill)
        return out


def crop(image: np.ndarray, box: Any, *, fill: int = 0) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` for a box ``[[y0, y1], [x0, x1]]``, padded with ``fill`` outside.

    Returns:
        ``(y1 - y0, x1 - x0, channels)`` of ``image``'s dtype.
    """
    (y0, y1), (x0, x1) = (int(v) for v in box[0]), (int(v) for v in box[1])
    h, w = image.shape[:2]
    out = np.full((y1 - y0, x1 - x0, *image.shape[2:]), fill, image.dtype)
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if sy0 < sy1 and sx0 < sx1:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def top_examples(
    model: Any,
    pool: Any,
    *,
    layers: Sequence[LayerSpec] | LayerSpec | None = None,
    k: int = DEFAULT_K,
    batch_size: int = 32,
    preprocess: Preprocess | None = None,
    target_size: tuple[int, int] | None = None,
    names: Sequence[str] | None = None,
    labels: Sequence[Any] | None = None,
    extractor: Any = None,
) -> TopExamples:
    """The ``k`` pool images that activate each channel of ``layers`` most, with their crops.

    Args:
        model: A Keras model taking images ``(H, W, C)``.
        pool: The example images: an array ``(N, H, W, C)`` (uint8, or float
            in [0, 1] or [0, 255]), a :class:`~tb_activations.Probes`, a folder
            or a list of image files and folders (loaded batch by batch; the
            sub-folder names are the labels), or a ``tf.data.Dataset`` of
            images or ``(image, label)`` pairs, batched or not.
        layers: Layer selection as for :class:`~tb_activations.ActivationLogger`;
            every layer needs a spatial output. Defaults to ``None``: every
            layer with one.
        k: Examples per channel. Defaults to 9.
        batch_size: Images per forward pass. Defaults to 32.
        preprocess: Applied to each batch (float32, as given) to make the
            model input, as in :class:`~tb_activations.Probes`. Defaults to
            ``None`` (a ``Probes`` pool keeps its own).
        target_size: ``(H, W)`` to resize files and dataset images to.
        names: One name per image of an array pool. Defaults to
            ``image_<index>`` (file names for files).
        labels: One label per image of an array pool. Defaults to ``None``.
        extractor: An :class:`~tb_activations.ActivationExtractor` of this
            model whose layers include the selected ones, to reuse its
            traced pass. Defaults to a new one.

    Returns:
        A :class:`TopExamples`.

    Raises:
        ValueError: for ``k < 1``, a bad ``batch_size``, an empty pool, a pool
            smaller than ``k``, images that do not fit the model, a layer
            without spatial output, or an unreadable image file (named).

    Example:

    >>> ex = top_examples(model, images, layers=["block5_pool"], k=9)
    >>> ex.layers["block5_pool"].indices.shape      # (512, 9) pool indices
    >>> ex.crops("block5_pool", [0]).shape          # (1, 9, 212, 212, 3) uint8
    """
    _check_positive_int("k", k)
    _check_positive_int("batch_size", batch_size)
    infos = _spatial_layers(model, layers)
    fields = {info.path: receptive_field(model, info) for info in infos}
    known = _known_size(pool)
    if known == 0:
        raise ValueError(
            f"Invalid value for argument `pool`: it holds no image. Pass at least k={k} images."
        )
    if known is not None and known < k:
        raise ValueError(
            f"Invalid value for argument `k`: the pool has {known} images, fewer than k={k}. "
            f"Expected k <= {known}, or a larger pool."
        )

    state: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    shapes: dict[str, tuple[int, int, int]] = {}
    images: dict[int, np.ndarray] = {}
    all_names: dict[int, str] = {}
    all_labels: dict[int, Any] = {}
    seen = 0
    for batch in _batches(pool, batch_size, preprocess, target_size, names, labels):
        if seen == 0:
            first_shape = batch.inputs.shape[1:]
            _check_fits(model, first_shape)
            extractor = _extractor_for(model, infos, first_shape, extractor)
        elif batch.inputs.shape[1:] != first_shape:
            raise ValueError(
                f"Invalid value for argument `pool`: image {seen} ({batch.names[0]!r}) has shape "
                f"{batch.inputs.shape[1:]}, the images before it {first_shape}. Expected images "
                "of one size; pass `target_size=(H, W)`."
            )
        tensors = dict(zip([i.path for i in extractor.layers], extractor.tensors(batch.inputs)))
        n = batch.inputs.shape[0]
        for info in infos:
            values, flat = _channel_max(tensors[info.path])
            out_shape = tuple(int(s) for s in tensors[info.path].shape[1:])
            shapes.setdefault(info.path, out_shape)  # type: ignore[arg-type]
            state[info.path] = _merge(
                state.get(info.path), values, flat, np.arange(seen, seen + n), out_shape[1], k
            )
        # Keep the display images (and names) of the current winners only.
        winners = set(np.unique(np.concatenate([s[1].ravel() for s in state.values()])).tolist())
        for i in range(n):
            if seen + i in winners:
                images[seen + i] = batch.display[i]
                all_names[seen + i] = batch.names[i]
                if batch.labels is not None and batch.labels[i] is not None:
                    all_labels[seen + i] = batch.labels[i]
        for index in [i for i in images if i not in winners]:
            del images[index]
            all_names.pop(index, None)
            all_labels.pop(index, None)
        seen += n
    if seen == 0:
        raise ValueError(
            f"Invalid value for argument `pool`: it holds no image. Pass at least k={k} images."
        )
    if seen < k:
        raise ValueError(
            f"Invalid value for argument `k`: the pool has {seen} images, fewer than k={k}. "
            f"Expected k <= {seen}, or a larger pool."
        )
    out = {}
    for info in infos:
        values, indices, flat = state[info.path]
        empty = ~np.isfinite(values) & ~(values > 0)  # -inf (NaN everywhere) slots
        width = shapes[info.path][1]
        positions = np.stack([flat // width, flat % width], axis=-1).astype(np.int64)
        positions[empty] = 0
        out[info.path] = LayerExamples(
            layer=info.path,
            shape=shapes[info.path],
            field=fields[info.path],
            values=np.where(empty, np.nan, values).astype(np.float32),
            indices=np.where(empty, -1, indices).astype(np.int64),
            positions=positions,
        )
    return TopExamples(
        layers=out,
        images=images,
        names=all_names,
        labels=all_labels,
        pool_size=seen,
        k=k,
    )


# -- the streaming top-k --------------------------------------------------------


def _channel_max(t: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per image and channel: the maximum over positions and its first flat position.

    Reduced where the activations are (``keras.ops``); NaN counts as -inf.
    Returns float32 ``(B, C)`` and int64 ``(B, C)`` numpy arrays.
    """
    import keras

    ops = keras.ops
    shape = t.shape
    flat = ops.reshape(t, (shape[0], shape[1] * shape[2], shape[3]))
    flat = ops.where(ops.isnan(flat), float("-inf"), flat)
    best = ops.max(flat, axis=1)
    # The first position holding the maximum: argmax does not promise which tie it returns.
    positions = ops.arange(shape[1] * shape[2], dtype="int32")[None, :, None]
    hit = ops.equal(flat, best[:, None, :])
    first = ops.min(ops.where(hit, positions, shape[1] * shape[2]), axis=1)
    return (
        ops.convert_to_numpy(best).astype(np.float32),
        ops.convert_to_numpy(first).astype(np.int64),
    )


def _merge(
    state: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    values: np.ndarray,
    flat: np.ndarray,
    indices: np.ndarray,
    width: int,
    k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The running top ``k`` per channel after a batch: ``(values, indices, flat) (C, k)``.

    Order: value descending, then image index ascending (one entry per image
    and channel, so the position needs no further key).
    """
    c = values.shape[1]
    cand_v = values.T
    cand_i = np.broadcast_to(indices[None, :], cand_v.shape)
    cand_p = flat.T
    if state is not None:
        cand_v = np.concatenate([state[0], cand_v], axis=1)
        cand_i = np.concatenate([state[1], cand_i], axis=1)
        cand_p = np.concatenate([state[2], cand_p], axis=1)
    order = np.lexsort((cand_i, -cand_v.astype(np.float64)), axis=-1)[:, :k]
    rows = np.arange(c)[:, None]
    return cand_v[rows, order], cand_i[rows, order], cand_p[rows, order]


# -- layers ---------------------------------------------------------------------


def _spatial_layers(model: Any, layers: Any) -> list[LayerInfo]:
    available = list_layers(model)
    infos = select_layers(model, layers, available=available)
    flat = [i for i in infos if not i.is_feature_map]
    if flat:
        valid = [i.path for i in available if i.is_feature_map]
        bad = ", ".join(f"{i.path!r} (output {i.shape})" for i in flat)
        raise ValueError(
            f"Invalid value for argument `layers`: {bad} has no spatial output (H, W, C), so its "
            f"channels have no position to crop. Expected layers among: {valid}"
        )
    return infos


def _extractor_for(
    model: Any, infos: list[LayerInfo], input_shape: tuple[int, ...], given: Any
) -> Any:
    """``given`` if it extracts every layer of ``infos``, else a new extractor of ``infos``.

    A given extractor traced for another image size (a model without a fixed
    input size, probes and pool of different sizes) is replaced by a new one.
    """
    from tb_activations.extraction import ActivationExtractor

    if given is not None and tuple(getattr(given, "input_shape", input_shape)) != tuple(
        input_shape
    ):
        given = None
    if given is not None:
        have = {i.path for i in given.layers}
        missing = [i.path for i in infos if i.path not in have]
        if missing:
            raise ValueError(
                f"Invalid value for argument `extractor`: it does not extract layers {missing}. "
                f"Expected an extractor of this model with layers including {[i.path for i in infos]}."
            )
        return given
    return ActivationExtractor(model, infos, input_shape=tuple(int(s) for s in input_shape))


def _check_fits(model: Any, input_shape: tuple[int, ...]) -> None:
    from tb_activations.extraction import check_probe_shape

    try:
        check_probe_shape(model, tuple(input_shape))
    except ValueError as err:
        raise ValueError(f"Invalid value for argument `pool`: {err}") from None


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a positive int. "
            f"Received: {name}={value!r}"
        )


# -- the pool -------------------------------------------------------------------


@dataclass(frozen=True)
class _Batch:
    display: np.ndarray  # uint8 (B, H, W, 3)
    inputs: np.ndarray  # float32 (B, ...), the model input
    names: list[str]
    labels: list[Any] | None


def _is_paths(pool: Any) -> bool:
    if isinstance(pool, (str, os.PathLike)):
        return True
    return (
        isinstance(pool, (list, tuple))
        and bool(pool)
        and all(isinstance(p, (str, os.PathLike)) for p in pool)
    )


def _known_size(pool: Any) -> int | None:
    """Number of images when known before streaming (arrays, Probes, files), else ``None``."""
    if isinstance(pool, Probes):
        return len(pool)
    if _is_paths(pool):
        return None  # counted when expanded, with a message naming the folder
    if _is_dataset(pool):
        return None
    shape = getattr(pool, "shape", None)
    if shape is None:
        try:
            shape = np.shape(pool)
        except ValueError:
            return None
    return int(shape[0]) if len(shape) >= 1 else None


def _is_dataset(pool: Any) -> bool:
    cls = type(pool)
    return any(
        c.__module__.startswith("tensorflow") and "Dataset" in c.__name__ for c in cls.__mro__
    )


def _batches(
    pool: Any,
    batch_size: int,
    preprocess: Preprocess | None,
    target_size: tuple[int, int] | None,
    names: Sequence[str] | None,
    labels: Sequence[Any] | None,
) -> Iterator[_Batch]:
    if isinstance(pool, Probes):
        for start in range(0, len(pool), batch_size):
            sl = slice(start, start + batch_size)
            yield _Batch(
                pool.display[sl],
                pool.inputs[sl],
                pool.names[sl],
                None if pool.labels is None else list(pool.labels[sl]),
            )
        return
    if _is_paths(pool):
        yield from _file_batches(pool, batch_size, preprocess, target_size)
        return
    if _is_dataset(pool):
        yield from _dataset_batches(pool, batch_size, preprocess, target_size)
        return
    if not hasattr(pool, "shape"):
        try:
            pool = np.asarray(pool)
        except ValueError as err:
            raise ValueError(
                "Invalid value for argument `pool`. Expected an array (N, H, W, C), a Probes, "
                f"image files or a folder, or a tf.data.Dataset. Received a ragged "
                f"{type(pool).__name__}: {err}"
            ) from None
    n = int(pool.shape[0])
    if len(pool.shape) not in (3, 4):
        raise ValueError(
            "Invalid value for argument `pool`. Expected an array of shape (N, H, W, C) "
            f"or (N, H, W). Received shape: {tuple(pool.shape)}"
        )
    for arg, given in (("names", names), ("labels", labels)):
        if given is not None and len(given) != n:
            raise ValueError(
                f"Invalid value for argument `{arg}`: expected {n} (one per pool image). "
                f"Received {len(given)}."
            )
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        chunk = np.asarray(pool[start:stop])
        if chunk.ndim == 3:
            chunk = chunk[..., None]
        probes = Probes(chunk, preprocess=preprocess)
        yield _Batch(
            probes.display,
            probes.inputs,
            [f"image_{i}" for i in range(start, stop)]
            if names is None
            else list(names[start:stop]),
            None if labels is None else list(labels[start:stop]),
        )


def _file_batches(
    pool: Any, batch_size: int, preprocess: Preprocess | None, target_size: Any
) -> Iterator[_Batch]:
    given = [pool] if isinstance(pool, (str, os.PathLike)) else list(pool)
    files = expand_image_paths(given)
    if not files:
        raise ValueError(
            f"Invalid value for argument `pool`: no image file in {[os.fspath(p) for p in given]}; "
            "it holds no image."
        )
    roots = [os.path.normpath(os.fspath(p)) for p in given if os.path.isdir(p)]
    labels = [os.path.basename(os.path.dirname(f)) for f in files]
    has_classes = any(os.path.normpath(os.path.dirname(f)) not in roots for f in files) and bool(
        roots
    )
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        # Probes.from_files names an unreadable file in its ValueError.
        probes = Probes.from_files(
            chunk,
            target_size=target_size,
            preprocess=preprocess,
            names=[os.path.relpath(f, roots[0]) if roots else f for f in chunk],
        )
        yield _Batch(
            probes.display,
            probes.inputs,
            probes.names,
            labels[start : start + batch_size] if has_classes else None,
        )


def _dataset_batches(
    dataset: Any, batch_size: int, preprocess: Preprocess | None, target_size: Any
) -> Iterator[_Batch]:
    import tensorflow as tf

    from tb_activations.probes import _is_batched, class_labels

    # The same reading of elements as Probes.from_dataset: batched grey (B, H, W) elements are
    # batches, and labels become class indices (one-hot rows, (N, 1), whole floats, bytes).
    spec = dataset.element_spec
    if isinstance(spec, tuple):
        spec = spec[0]
    spec_shape = getattr(spec, "shape", None)
    spec_shape = None if spec_shape is None or spec_shape.rank is None else spec_shape.as_list()
    images: list[np.ndarray] = []
    labels: list[Any] = []
    seen = 0

    def flush() -> _Batch:
        arr = np.stack(images)
        if arr.ndim == 3:  # grey (B, H, W)
            arr = arr[..., None]
        if target_size is not None and arr.shape[1:3] != tuple(target_size):
            arr = tf.image.resize(arr, target_size).numpy().astype(arr.dtype)
        probes = Probes(arr, preprocess=preprocess)
        names = [f"image_{i}" for i in range(seen, seen + len(images))]
        out_labels = None
        if any(v is not None for v in labels):
            try:
                out_labels = class_labels(labels, len(labels))
            except ValueError as err:
                raise ValueError(f"Invalid value for argument `pool`: {err}") from None
        return _Batch(probes.display, probes.inputs, names, out_labels)

    for element in dataset:
        if isinstance(element, dict):
            raise ValueError(
                "Invalid value for argument `pool`: dataset elements that are dicts are not "
                "supported; map them to (image, label)."
            )
        image, label = (element[0], element[1]) if isinstance(element, tuple) else (element, None)
        image = np.asarray(image)
        batched = _is_batched(image, spec_shape)
        batch_images = list(image) if batched else [image]
        if label is None:
            batch_labels: list[Any] = [None] * len(batch_images)
        else:
            label = np.asarray(label)
            batch_labels = list(label) if batched else [label]
            if len(batch_labels) != len(batch_images):
                raise ValueError(
                    f"Invalid value for argument `pool`: a dataset element has "
                    f"{len(batch_images)} images and labels of shape {label.shape}: expected "
                    "one label per image."
                )
        for img, lab in zip(batch_images, batch_labels):
            images.append(img)
            labels.append(lab)
            if len(images) == batch_size:
                yield flush()
                seen += len(images)
                images, labels = [], []
    if images:
        yield flush()
