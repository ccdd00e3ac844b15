"""Writing top examples (and optimised images) of channels as TensorBoard summaries.

Per layer ``L`` and example-step (see :mod:`tb_activations.metadata`):

- ``L/examples`` (plugin ``images``): pages of a grid, one row per channel
  (``#c`` in the left gutter), its ``k`` crops left to right, strongest
  first, each labelled with its value under it;
- ``L/examples_data`` (this plugin): float32 ``(C, k, 5)``, per winner its
  value, pool image index, ``y``, ``x`` in the layer's output, and whether it
  is new since the previous example-step (1/0; -1 at the first); the plugin
  content holds the grid geometry, the receptive field, and the names and
  labels of the winning images.

:class:`ExamplesLog` is what :meth:`~tb_activations.ActivationLogger.log_examples`
runs: one streamed pass over the pool, rendering, and one event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tb_activations import metadata
from tb_activations.channel_examples import DEFAULT_K, TopExamples, top_examples

#: Side of one crop in the grid, in px.
DEFAULT_CELL = 64
#: Channels (grid rows) per page.
DEFAULT_CHANNELS_PER_PAGE = 32
#: Height of the value label under each crop, width of the channel gutter, gap between cells.
LABEL_H, GUTTER_W, SEP = 12, 30, 2


@dataclass(frozen=True)
class ExamplesGrid:
    """Geometry of the example pages in PNG pixels.

    Channel ``c`` is on page ``c // rows``, row ``c % rows``; its ``j``-th crop
    has its top-left corner at ``(GUTTER_W + j * (cell + SEP), row * (cell + LABEL_H + SEP))``.
    """

    channels: int
    k: int
    rows: int
    pages: int
    cell: int

    @property
    def width(self) -> int:
        return GUTTER_W + self.k * (self.cell + SEP) - SEP

    @property
    def height(self) -> int:
        return self.rows * (self.cell + LABEL_H + SEP) - SEP

    def as_dict(self) -> dict[str, int]:
        return {
            "channels": self.channels,
            "k": self.k,
            "rows": self.rows,
            "pages": self.pages,
            "cell": self.cell,
            "label_h": LABEL_H,
            "gutter_w": GUTTER_W,
            "sep": SEP,
            "width": self.width,
            "height": self.height,
        }


def render_pages(
    examples: TopExamples,
    layer: str,
    *,
    cell: int = DEFAULT_CELL,
    channels_per_page: int = DEFAULT_CHANNELS_PER_PAGE,
) -> tuple[np.ndarray, ExamplesGrid]:
    """uint8 ``(pages, H, W, 3)``: every channel's crops, labelled, paged.

    Crops are fitted into ``cell`` x ``cell`` (aspect kept; area-averaged when
    shrunk, nearest-neighbour when enlarged, so a 6-pixel field stays sharp).
    Empty slots stay dark grey; a non-finite value is labelled as such.
    """
    from PIL import Image, ImageDraw, ImageFont

    ex = examples.layers[layer]
    rows = max(1, min(channels_per_page, ex.channels))
    grid = ExamplesGrid(
        channels=ex.channels, k=ex.k, rows=rows, pages=-(-ex.channels // rows), cell=cell
    )
    font = ImageFont.load_default()
    fh, fw = ex.field.size
    s = cell / max(fh, fw)
    size = (max(1, round(fw * s)), max(1, round(fh * s)))
    resample = Image.BOX if s < 1 else Image.NEAREST
    pages = np.full((grid.pages, grid.height, grid.width, 3), 24, np.uint8)
    for page in range(grid.pages):
        img = Image.fromarray(pages[page])
        draw = ImageDraw.Draw(img)
        for row in range(rows):
            c = page * rows + row
            if c >= ex.channels:
                break
            y = row * (cell + LABEL_H + SEP)
            draw.text((2, y + cell // 2 - 6), f"#{c}", fill=(220, 220, 220), font=font)
            crops = examples.crops(layer, [c])[0]
            for j in range(ex.k):
                x = GUTTER_W + j * (cell + SEP)
                if ex.indices[c, j] < 0:
                    draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(48, 48, 48))
                    continue
                tile = Image.fromarray(crops[j]).resize(size, resample)
                img.paste(tile, (x + (cell - size[0]) // 2, y + (cell - size[1]) // 2))
                draw.text(
                    (x + 1, y + cell), _label(ex.values[c, j]), fill=(235, 235, 235), font=font
                )
        pages[page] = np.asarray(img)
    return pages, grid


def _label(value: float) -> str:
    return f"{value:.3g}" if np.isfinite(value) else str(value)


def examples_values(
    examples: TopExamples,
    *,
    previous: dict[str, np.ndarray] | None = None,
    cell: int = DEFAULT_CELL,
    channels_per_page: int = DEFAULT_CHANNELS_PER_PAGE,
    image_format: str = "jpeg",
    quality: int = 90,
    compress_level: int = 1,
) -> list:
    """Summary values of ``examples``: per layer the pages and the data tensor.

    Args:
        examples: From :func:`~tb_activations.top_examples`.
        previous: ``{layer: int (C, k) indices}`` of the previous example-step,
            to mark which winners are new. Defaults to ``None`` (first step).
        cell: Side of one crop in px. Defaults to 64.
        channels_per_page: Grid rows per page. Defaults to 32.
        image_format: ``"jpeg"`` (crops are photographs) or ``"png"``.
        quality: JPEG quality. Defaults to 90.
        compress_level: PNG zlib level. Defaults to 1.
    """
    from tb_activations.encode import encode_jpeg, encode_rgb_png
    from tb_activations.summary import float_tensor_value, image_value, scalar_value

    values = []
    for layer, ex in examples.layers.items():
        pages, grid = render_pages(examples, layer, cell=cell, channels_per_page=channels_per_page)
        if image_format == "jpeg":
            encoded = [encode_jpeg(p, quality) for p in pages]
        else:
            encoded = [encode_rgb_png(p, compress_level) for p in pages]
        new = _new_mask(ex.indices, None if previous is None else previous.get(layer))
        data = np.concatenate(
            [
                ex.values[..., None],
                ex.indices[..., None].astype(np.float32),
                ex.positions.astype(np.float32),
                new[..., None],
            ],
            axis=-1,
        ).astype(np.float32)
        winners = sorted({int(i) for i in ex.indices.ravel() if i >= 0})
        content = metadata.create_examples_content(
            layer=layer,
            shape=ex.shape,
            k=ex.k,
            field={
                "size": list(ex.field.size),
                "stride": list(ex.field.stride),
                "offset": list(ex.field.offset),
                "method": ex.field.method,
            },
            grid=grid.as_dict(),
        )
        index = {
            "pool_size": int(examples.pool_size),
            "names": {str(i): str(examples.names.get(i, f"image_{i}")) for i in winners},
            "labels": {str(i): str(examples.labels[i]) for i in winners if i in examples.labels},
        }
        desc = (
            # No step values here: TensorBoard keeps a tag's description from its first step.
            f"Top {ex.k} pool images per channel of `{layer}`, each cropped "
            f"at the receptive field of its strongest position ({ex.field.size[0]}x"
            f"{ex.field.size[1]} px, stride {ex.field.stride[0]}), value under each crop; "
            f"{grid.rows} channels per page, {grid.pages} page(s)."
        )
        values.append(
            image_value(
                metadata.examples_tag(layer),
                encoded,
                width=grid.width,
                height=grid.height,
                description=desc,
            )
        )
        values.append(
            float_tensor_value(
                metadata.examples_data_tag(layer),
                data,
                content=content,
                description=f"Per channel and rank: {', '.join(metadata.EXAMPLES_FIELDS)}.",
            )
        )
        values.append(
            float_tensor_value(
                metadata.examples_index_tag(layer),
                np.asarray(metadata.encode_json_bytes(index), np.float32),
                content=metadata.create_examples_index_content(layer=layer),
                description="Names and labels of the winning pool images (UTF-8 JSON bytes).",
            )
        )
        if previous is not None and layer in previous:
            values.append(
                scalar_value(
                    metadata.scalar_tag(layer, "examples_new_fraction"),
                    float(new.mean()),
                    description=f"Fraction of the top-{ex.k} examples of `{layer}`'s channels "
                    "that are new since the previous example-step.",
                )
            )
    return values


def _new_mask(indices: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
    """float32 ``(C, k)``: 1 where a winner was not among its channel's previous winners, else 0;
    -1 everywhere without a previous step (or a channel count that changed)."""
    if previous is None or previous.shape[0] != indices.shape[0]:
        return np.full(indices.shape, -1.0, np.float32)
    new = np.array(
        [
            [i >= 0 and i not in set(prev.tolist()) for i in row]
            for row, prev in zip(indices, previous)
        ],
        dtype=np.float32,
    )
    return new.reshape(indices.shape)


class ExamplesLog:
    """The examples part of an :class:`~tb_activations.ActivationLogger` (built by it).

    Args:
        logger: The logger whose model, writer and probes' preprocessing are used.
        pool: The example pool, see :func:`~tb_activations.top_examples`.
        k: Examples per channel. Defaults to 9.
        layers: Layer selection; defaults to the logger's layers with a
            spatial output.
        batch_size: Images per pass. Defaults to 32.
    """

    def __init__(
        self,
        logger: Any,
        pool: Any,
        *,
        k: int = DEFAULT_K,
        layers: Sequence[Any] | None = None,
        batch_size: int = 32,
    ) -> None:
        from tb_activations.channel_examples import _check_positive_int, _spatial_layers

        _check_positive_int("examples_k", k)
        _check_positive_int("examples_batch_size", batch_size)
        self.logger = logger
        self.pool = pool
        self.k = int(k)
        self.batch_size = int(batch_size)
        if layers is None:
            infos = [i for i in logger.layers if i.is_feature_map]
            if not infos and pool is not None:
                raise ValueError(
                    "Invalid value for argument `examples_layers`: none of the logger's layers "
                    f"{[i.path for i in logger.layers]} has a spatial output (H, W, C); pass "
                    "`examples_layers=` explicitly."
                )
        else:
            infos = _spatial_layers(logger.model, layers)
        self.layers = infos
        self.previous: dict[str, np.ndarray] = {}
        self.last: TopExamples | None = None

    def _extractor(self) -> Any:
        # The logger's traced pass when it extracts these layers: no second trace.
        have = {i.path for i in self.logger.layers}
        if all(i.path in have for i in self.layers):
            return self.logger.extractor
        return None

    def log(self, step: int, pool: Any = None) -> TopExamples:
        """Stream the pool, render and write one event at ``step``; nothing is written on failure."""
        logger = self.logger
        pool = self.pool if pool is None else pool
        if pool is None:
            raise ValueError(
                "Invalid value for argument `pool`: this logger has no example pool. Pass "
                "`examples_pool=` to ActivationLogger, or `pool=` to log_examples()."
            )
        examples = top_examples(
            logger.model,
            pool,
            layers=[i.path for i in self.layers],
            k=self.k,
            batch_size=self.batch_size,
            preprocess=logger.probes.preprocess,
            extractor=self._extractor(),
        )
        values = examples_values(
            examples,
            previous=self.previous or None,
            image_format=logger.overlay_format,
            quality=logger.overlay_quality,
            compress_level=logger.compress_level,
        )
        _write(logger, step, values)
        self.previous = {name: ex.indices.copy() for name, ex in examples.layers.items()}
        self.last = examples
        return examples


def _write(logger: Any, step: int, values: list) -> None:
    """One event at ``step`` on the logger's writer; a failed write gets a fresh event file."""
    try:
        logger._writer.write(int(step), values)
    except BaseException as err:
        logger._abandon_event_file()
        if isinstance(err, OSError) or type(err).__module__.startswith("tensorflow"):
            raise OSError(
                f"Cannot write the TensorBoard events of step {step} under {logger.run_dir!r}: "
                f"{err}. Steps written before are intact; the next write starts a new event file."
            ) from err
        raise


def log_examples(logger: Any, step: int, pool: Any = None) -> TopExamples:
    """What :meth:`~tb_activations.ActivationLogger.log_examples` does (see there)."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(
            f"Invalid value for argument `step`. Expected an int >= 0. Received: step={step!r}"
        )
    if logger._closed:
        raise RuntimeError("This ActivationLogger is closed; create a new one to log again.")
    if not logger._examples.layers:
        raise ValueError(
            "No layer for examples: none of the logger's layers "
            f"{[i.path for i in logger.layers]} has a spatial output (H, W, C); pass "
            "`examples_layers=` to ActivationLogger."
        )
    return logger._examples.log(int(step), pool)


def log_feature_vis(
    logger: Any,
    step: int,
    *,
    channels: int = 4,
    steps: int = 256,
    **options: Any,
) -> dict[str, Any]:
    """Optimised images of the ``channels`` strongest channels (probes' mean) of each layer.

    The layers are the example layers (``examples_layers``, by default the
    logger's layers with a spatial output). The images go through the probes'
    preprocessing, from the probes' value range (``[0, 255]`` for uint8
    probes), unless ``options`` say otherwise (``preprocess=``, ``input_range=``).
    Writes ``L/feature_vis`` (plugin ``images``, one image per channel, the
    channels in the description and in ``L/feature_vis_channels``).

    Returns:
        ``{layer: FeatureVisualization}``.
    """
    from tb_activations.encode import encode_rgb_png
    from tb_activations.feature_vis import visualize_channels
    from tb_activations.summary import float_tensor_value, image_value

    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(
            "Invalid value for argument `channels`. Expected a positive int. "
            f"Received: channels={channels!r}"
        )
    layers = logger._examples.layers or [i for i in logger.layers if i.is_feature_map]
    if not layers:
        raise ValueError(
            "No layer to visualize: none of the logger's layers "
            f"{[i.path for i in logger.layers]} has a spatial output (H, W, C)."
        )
    probes = logger.probes
    options.setdefault("preprocess", probes.preprocess)
    options.setdefault("input_range", _value_range(probes))
    acts = logger.activations()
    values, out = [], {}
    for info in layers:
        a = acts[info.path]
        # Mean over probes and positions, NaN/Inf as 0: the strongest channels on the probes.
        means = np.where(np.isfinite(a), a, 0.0).mean(axis=(0, 1, 2))
        top = np.argsort(-means, kind="stable")[:channels]
        vis = visualize_channels(logger.model, info, top.tolist(), steps=steps, **options)
        out[info.path] = vis
        images = vis.images if vis.images.shape[-1] == 3 else np.repeat(vis.images, 3, axis=-1)
        chans = ", ".join(f"#{int(c)} ({o:.3g})" for c, o in zip(vis.channels, vis.objective))
        values.append(
            image_value(
                metadata.feature_vis_tag(info.path),
                [encode_rgb_png(img, logger.compress_level) for img in images],
                width=images.shape[2],
                height=images.shape[1],
                description=f"Images optimised to excite channels of `{info.path}` "
                f"(mean activation reached): {chans}.",
            )
        )
        values.append(
            float_tensor_value(
                metadata.feature_vis_channels_tag(info.path),
                np.stack([vis.channels.astype(np.float32), vis.objective], axis=-1),
                content=metadata.create_feature_vis_content(layer=info.path, steps=steps),
                description="Per optimised image: channel, mean activation reached.",
            )
        )
    _write(logger, step, values)
    return out


def _value_range(probes: Any) -> tuple[float, float]:
    """Black and white in the probes' own values: ``(0, 255)`` for integer pixels or floats
    beyond 1, else ``(0, 1)`` (what ``preprocess`` receives, before it)."""
    raw = getattr(probes, "_raw", None)  # the images as given, before preprocessing
    if raw is None:
        return (0.0, 1.0)
    raw = np.asarray(raw)
    if raw.dtype.kind in "iu":
        return (0.0, 255.0)
    finite = raw[np.isfinite(raw)] if raw.dtype.kind == "f" else raw
    return (0.0, 255.0) if finite.size and float(finite.max()) > 1.0 else (0.0, 1.0)


class ExamplesSchedule:
    """When :class:`~tb_activations.ActivationCallback` writes examples and optimised images.

    Args:
        examples_freq: Every this many epochs; ``None`` (default): once, at
            the end of training. Only with an example pool.
        feature_vis_freq: Every this many epochs, optimised images of the
            ``feature_vis_channels`` strongest channels per layer. Defaults
            to ``None``: never (it costs ``steps`` forward and backward passes).
        feature_vis_channels: Channels per layer. Defaults to 4.
        feature_vis_steps: Optimisation steps. Defaults to 256.
        enabled: Whether there is an example pool.

    A failing pass warns and training goes on.
    """

    def __init__(
        self,
        *,
        examples_freq: int | None = None,
        feature_vis_freq: int | None = None,
        feature_vis_channels: int = 4,
        feature_vis_steps: int = 256,
        enabled: bool = False,
    ) -> None:
        for name, value in (
            ("examples_freq", examples_freq),
            ("feature_vis_freq", feature_vis_freq),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(
                    f"Invalid value for argument `{name}`. Expected None or a positive int "
                    f"(epochs). Received: {name}={value!r}"
                )
        for name, value in (
            ("feature_vis_channels", feature_vis_channels),
            ("feature_vis_steps", feature_vis_steps),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"Invalid value for argument `{name}`. Expected a positive int. "
                    f"Received: {name}={value!r}"
                )
        if examples_freq is not None and not enabled:
            raise ValueError(
                f"Invalid value for argument `examples_freq`: {examples_freq} needs an example "
                "pool. Pass `examples_pool=` too."
            )
        self.examples_freq = examples_freq
        self.feature_vis_freq = feature_vis_freq
        self.feature_vis_channels = feature_vis_channels
        self.feature_vis_steps = feature_vis_steps
        self.enabled = enabled
        self._last: tuple[int, int] | None = None  # (epoch, step) of the last epoch end
        self._tried: int | None = None  # step of the last examples pass (one try per step)

    def epoch_end(self, callback: Any, epoch: int) -> None:
        step = self._step(callback, epoch)
        self._last = (epoch, step)
        if self.enabled and self.examples_freq and (epoch + 1) % self.examples_freq == 0:
            self._examples(callback, step)
        if self.feature_vis_freq and (epoch + 1) % self.feature_vis_freq == 0:
            self._run(
                callback,
                step,
                "optimising channel images",
                lambda logger: logger.log_feature_vis(
                    step, channels=self.feature_vis_channels, steps=self.feature_vis_steps
                ),
            )

    def train_end(self, callback: Any) -> None:
        if self.enabled and self._last is not None and self._tried != self._last[1]:
            self._examples(callback, self._last[1])

    def _examples(self, callback: Any, step: int) -> None:
        self._tried = step
        self._run(callback, step, "top examples", lambda logger: logger.log_examples(step))

    @staticmethod
    def _step(callback: Any, epoch: int) -> int:
        # The callback's step axis: epochs, or global batches when it logs by batch.
        return (
            callback._epoch_step(epoch) if callback.freq == "epoch" else callback._global_batch(-1)
        )

    @staticmethod
    def _run(callback: Any, step: int, what: str, fn: Any) -> bool:
        import warnings

        if callback.logger is None or not callback.writes:
            return False
        try:
            fn(callback.logger)
        except Exception as err:  # an add-on must never end the training run
            callback.failures += 1
            warnings.warn(
                f"tb_activations: {what} at step {step} failed and were skipped; training "
                f"continues. {type(err).__name__}: {err}",
                RuntimeWarning,
                stacklevel=3,
            )
            return False
        return True
