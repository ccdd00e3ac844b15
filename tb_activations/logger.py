"""ActivationLogger: activations of a model on fixed probes, written to TensorBoard on demand."""

from __future__ import annotations

import json
import os
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tb_activations import metadata
from tb_activations.colormaps import palette
from tb_activations.diagnostics import FIXED_SCALES, Diagnostics, prediction_head
from tb_activations.encode import (
    DEFAULT_COMPRESS_LEVEL,
    default_executor,
    encode_jpeg,
    encode_palette_png,
    encode_rgb_png,
)
from tb_activations.layer_selection import (
    LayerInfo,
    LayerSpec,
    is_functional,
    list_layers,
    select_layers,
    selects_by_shape,
    warn_if_costly,
)
from tb_activations.probes import Probes
from tb_activations.render import (
    DEFAULT_MAX_SIZE,
    NORMALIZE,
    Grid,
    fit_images,
    fit_overlay_display,
    render_views,
    value_range,
    value_range_from_stats,
)
from tb_activations.stats import RANK_BY, ChannelStats, channel_stats, top_channels
from tb_activations.step_worker import StepWorker
from tb_activations.summary import (
    SummaryWriter,
    first_plugin_contents,
    float_tensor_value,
    histogram_value,
    image_value,
    run_files,
    scalar_value,
)

#: Most probes one logger takes: they all go through one forward pass, and every
#: step writes each layer's images once per probe (thousands of probes, e.g. a
#: training set passed by mistake, would run out of memory).
MAX_PROBES = 256

#: Layer content fields that must not change within a run: TensorBoard keeps the
#: first metadata of a tag, so the dashboard would read new data with the old layout.
LAYOUT_FIELDS = (
    "layer",
    "class_name",
    "shape",
    "probes",
    "labels",
    "grid",
    "top_k",
    "rank_by",
    "colormap",
    "normalize",
    "stats_fields",
)


class RunLayoutError(ValueError):
    """A run holds layers in another layout than a logger would write (see :meth:`ActivationLogger.check_run`).

    Attributes:
        reason: What differs, and why it cannot be written there.
        fresh_run_name: A ``run_name`` not used yet in the log directory.
    """

    def __init__(self, reason: str, fresh_run_name: str) -> None:
        super().__init__(
            f"{reason} Pass a fresh `run_name` (e.g. run_name={fresh_run_name!r}) or log to an "
            "empty log directory."
        )
        self.reason = reason
        self.fresh_run_name = fresh_run_name


@dataclass(frozen=True)
class _Captured:
    """What the training thread hands the worker for one step: host arrays only."""

    result: Any  # extraction.ExtractionResult
    attribution: list


@dataclass(frozen=True)
class LayerRecord:
    """What one ``log()`` computed for one layer (returned to the caller, plain data).

    Attributes:
        info: The layer.
        stats: Per-channel statistics.
        top: int ``(N, k)`` top channels per probe, strongest first.
        grid: Mosaic geometry in PNG pixels.
        scale: ``(lo, hi)`` colour scale used.
    """

    info: LayerInfo
    stats: ChannelStats
    top: np.ndarray
    grid: Grid
    scale: tuple[Any, Any]


class ActivationLogger:
    """Logs the activations of ``model`` on ``probes`` to TensorBoard, when asked.

    Args:
        model: A Keras model (Sequential, Functional, nested models included,
            or subclassed).
        probes: A :class:`~tb_activations.Probes`, or an array ``(N, H, W, C)``
            of display images (uint8, or float in [0, 1]) fed as they are.
        log_dir: TensorBoard log directory. Events go to the run
            ``log_dir/<run_name>``, so ``log_dir`` can be shared with
            ``keras.callbacks.TensorBoard``.
        layers: Which layers. ``None`` (default): every computing layer with a
            spatial (rank-4) output of a small model (VGG16's 18), the stage
            outputs and pooling layers of a large one (ResNet50's 6); layers
            that are the identity at inference (``Dropout``, ...), preprocessing
            and padding left out (see
            :func:`~tb_activations.layer_selection.default_layers`). Else a list of
            exact names or paths (``"backbone/block_1_expand_relu"``), globs
            (``"block*_pool"``), layer classes (``keras.layers.MaxPooling2D``),
            predicates ``callable(layer) -> bool``, or the keywords
            ``"default"``, ``"stages"`` and ``"all"`` (every spatial output):
            ``["default", "conv2_block1_out"]`` widens the default. A
            selection that costs much per step warns once.
        top_k: Channels in the top-k strip. Defaults to 5.
        rank_by: Statistic ranking channels: ``"mean"`` (default), ``"max"`` or ``"std"``.
        views: Image views to write, among ``"mosaic"``, ``"topk"``, ``"overlay"``.
            Defaults to all three.
        colormap: Matplotlib (or seaborn) colormap name. Defaults to
            ``"magma"``, where the low end of the scale is black: zero in a
            ReLU layer (the article's dead channels); in a layer with
            negative values the scale starts at its minimum, which is black,
            and zero is a colour partway up.
        normalize: ``"layer"`` (default): one colour scale per layer,
            ``[min(0, min), max]`` over all probes, re-fitted each step;
            ``"channel"``: one per channel; fixed across steps, so that a
            fading channel is seen fading: ``"first"``, the layer scale of
            the first logged step (or of the reference set by
            :meth:`pin_reference`), and ``"running_max"``, the widest layer
            scale seen so far. Values beyond a fixed scale are clipped.
        alpha: Opacity of the heatmap in overlays. Defaults to 0.5.
        max_image_size: Cap on the long side of every image, in px: mosaics
            and strips larger than it are mean-pooled to fit, overlays are
            drawn on probes shrunk to fit. Defaults to 2048. Lower it to
            write smaller event files.
        compress_level: zlib level of the PNGs. Defaults to 1 (fast).
        overlay_format: ``"jpeg"`` (default: overlays are photos, 5x smaller
            as JPEG) or ``"png"`` (lossless). Mosaics and top-k strips are
            always lossless palette PNGs.
        overlay_quality: JPEG quality of the overlays, 1-95. Defaults to 90;
            75 (Pillow's default) writes ~40% fewer overlay bytes.
        run_name: Sub-folder of ``log_dir``. Defaults to ``"activations"``.
        resize_probes: Resize probes that do not match the model's input size
            instead of raising. Defaults to ``False``.
        session_start: Write TensorBoard's ``SessionLog.START`` where a run
            restarts: at the first :meth:`log` into a run an earlier process
            wrote, and where a ``fit`` goes back to an older checkpoint. What
            the run held from that step on is then dropped from TensorBoard's
            view, so a restart shows one timeline. Defaults to ``True``;
            ``False`` adds steps to the run in any order (the command line
            does, one step per call).
        drift: Write per-layer drift scalars (linear CKA against the first
            step, the previous step and a pinned reference; newly dead,
            saturated, top-k overlap, channel rank correlation) and the
            layer x step CKA heatmap. Defaults to ``True``.
        cka: CKA estimator, ``"debiased"`` (default: unbiased with few
            samples and many features, see :mod:`tb_activations.drift`) or
            ``"biased"``.
        cka_positions: ``None`` (default): the few-probe rule: with at least
            8 probes the probes are CKA's samples; with fewer, enough fixed
            spatial positions per probe are (``ceil(64 / N)``), with the
            channels as features. An int ``k``: ``k`` positions per probe.
            A layer still short of 8 samples (1x1 maps of few probes) gets no
            CKA: a warning and its description say so.
        predictions: Write each probe's predicted class and confidence (and
            its label) per step. ``None`` (default): when the model is a
            classifier, i.e. its output ``(N, K)`` comes out of a final
            softmax or sigmoid (shown as the probabilities they are; several
            sigmoids as multi-label); ``True``: the output is a classifier's
            (logits are softmaxed, one logit goes through a sigmoid);
            ``False``: never.
        class_names: Names of the classifier's classes, for the predictions
            table and for probe labels given as names. Defaults to ``None``.
        examples_pool: Images for :meth:`log_examples` (top-activating
            examples per channel): an array, a folder or files, a
            ``tf.data.Dataset``, see :func:`~tb_activations.top_examples`;
            preprocessed like the probes. Defaults to ``None``.
        examples_k: Examples kept per channel. Defaults to 9.
        examples_layers: Layers whose channels get examples. Defaults to
            ``None``: the selected layers with a spatial output.
        examples_batch_size: Pool images per forward pass. Defaults to 32.
        attribution: Attribution methods whose maps are written per step, for
            each probe's predicted class and, where its label differs, the
            label's class (see :mod:`tb_activations.attribution.step`): among
            ``"gradcam"``, ``"gradcam++"``, ``"saliency"``, ``"smoothgrad"``,
            ``"integrated_gradients"``, ``"occlusion"``. ``None`` (default):
            Grad-CAM for a classifier (an ``(N, K)`` output out of a softmax
            or sigmoid, as for ``predictions``), none otherwise; ``()``: none.
        attribution_layer: Layer of Grad-CAM(++). Defaults to the last layer
            with a spatial output.
        attribution_every: Run the costly parts of attribution (SmoothGrad,
            integrated gradients, occlusion, and the average-drop measure: one
            more forward pass) every ``attribution_every`` logs, the first
            included. Defaults to 10.
        histogram_bins: Bins of the histogram of each layer's activations over
            the probes, written per step as ``<layer>/histogram`` in the stock
            ``histograms`` plugin's format (TensorBoard's Histograms and
            Distributions tabs), reduced on the device in the same pass.
            ``0``: none. Defaults to 30.
        blocking: ``True`` (default): :meth:`log` renders and writes before it
            returns. ``False``: :meth:`log` runs the device pass (the probes'
            forward pass, and the backward pass of attribution) on the calling
            thread, hands the host copies to a background worker that renders,
            encodes and writes, and returns ``None`` at once. At most two
            steps are in flight; a third :meth:`log` waits for the oldest
            (counted in ``_tb_activations/queue_waits``). Steps are written in
            order, each whole or not at all; a worker's failure is raised by
            the next :meth:`log`, :meth:`flush` or :meth:`close`. See
            :meth:`flush`.

    A run keeps one layout per layer: TensorBoard keeps only the first
    metadata of a tag, which holds the mosaic grid, shape, probe names and
    ``top_k``. :meth:`log` refuses (``ValueError``) to add data of another
    layout (other probes, ``max_image_size``, ``top_k``, model...) to a run
    that holds some, and names a fresh ``run_name``.

    Raises:
        ValueError: for an unknown layer (the message lists the selectable
            ones), probes that do not fit the model, more than
            :data:`MAX_PROBES` probes, or a bad option value.

    Examples:
        >>> logger = ActivationLogger(model, probes, "logs/vgg", layers=["block*_pool"], top_k=5)
        >>> logger.log(step=0)
        >>> acts = logger.activations()   # {"block1_pool": (N, 112, 112, 64) float32, ...}
    """

    def __init__(
        self,
        model: Any,
        probes: Probes | Any,
        log_dir: str | os.PathLike,
        *,
        layers: Sequence[LayerSpec] | LayerSpec | None = None,
        top_k: int = 5,
        rank_by: str = "mean",
        views: Sequence[str] = metadata.VIEWS,
        colormap: str = "magma",
        normalize: str = "layer",
        alpha: float = 0.5,
        max_image_size: int = DEFAULT_MAX_SIZE,
        compress_level: int = DEFAULT_COMPRESS_LEVEL,
        overlay_format: str = "jpeg",
        overlay_quality: int = 90,
        run_name: str = metadata.DEFAULT_RUN_NAME,
        resize_probes: bool = False,
        session_start: bool = True,
        drift: bool = True,
        cka: str | None = None,
        cka_positions: int | None = None,
        predictions: bool | None = None,
        class_names: Sequence[str] | None = None,
        examples_pool: Any = None,
        examples_k: int = 9,
        examples_layers: Sequence[LayerSpec] | LayerSpec | None = None,
        examples_batch_size: int = 32,
        attribution: Sequence[str] | str | None = None,
        attribution_layer: LayerSpec | None = None,
        attribution_every: int = 10,
        histogram_bins: int = 30,
        blocking: bool = True,
    ) -> None:
        from tb_activations.extraction import MAX_HISTOGRAM_BINS

        if (
            isinstance(histogram_bins, bool)
            or not isinstance(histogram_bins, int)
            or not 0 <= histogram_bins <= MAX_HISTOGRAM_BINS
        ):
            raise ValueError(
                "Invalid value for argument `histogram_bins`. Expected an int in "
                f"0..{MAX_HISTOGRAM_BINS} (0: no histograms). Received: histogram_bins={histogram_bins!r}"
            )
        self.histogram_bins = histogram_bins
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(
                f"Invalid value for argument `top_k`. Expected a positive int. Received: top_k={top_k!r}"
            )
        if rank_by not in RANK_BY:
            raise ValueError(
                f"Invalid value for argument `rank_by`. Expected one of {RANK_BY}. Received: rank_by={rank_by!r}"
            )
        if normalize not in NORMALIZE + FIXED_SCALES:
            raise ValueError(
                f"Invalid value for argument `normalize`. Expected one of {NORMALIZE + FIXED_SCALES}. Received: normalize={normalize!r}"
            )
        views = tuple(views)
        bad = [v for v in views if v not in metadata.VIEWS]
        if bad or not views:
            raise ValueError(
                f"Invalid value for argument `views`. Expected a non-empty subset of {metadata.VIEWS}. Received: views={views!r}"
            )
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(
                f"Invalid value for argument `alpha`. Expected a float in [0, 1]. Received: alpha={alpha!r}"
            )
        if not isinstance(max_image_size, int) or max_image_size < 16:
            raise ValueError(
                f"Invalid value for argument `max_image_size`. Expected an int >= 16. Received: max_image_size={max_image_size!r}"
            )
        if overlay_format not in ("jpeg", "png"):
            raise ValueError(
                f"Invalid value for argument `overlay_format`. Expected 'jpeg' or 'png'. Received: overlay_format={overlay_format!r}"
            )
        if (
            isinstance(overlay_quality, bool)
            or not isinstance(overlay_quality, int)
            or not 1 <= overlay_quality <= 95
        ):
            # Pillow: "values above 95 should be avoided"; 100 disables parts of JPEG's compression.
            raise ValueError(
                f"Invalid value for argument `overlay_quality`. Expected an int in 1..95. Received: overlay_quality={overlay_quality!r}"
            )
        if not isinstance(compress_level, int) or not 0 <= compress_level <= 9:
            raise ValueError(
                f"Invalid value for argument `compress_level`. Expected an int in 0..9. Received: compress_level={compress_level!r}"
            )
        if (
            not isinstance(run_name, str)
            or not run_name
            or os.path.isabs(run_name)
            or ".." in run_name.split("/")
        ):
            raise ValueError(
                f"Invalid value for argument `run_name`. Expected a relative folder name. Received: run_name={run_name!r}"
            )
        palette(colormap)  # fail now on an unknown colormap, not at the first log()
        _check_log_dir(os.path.join(os.fspath(log_dir), run_name))

        if not isinstance(probes, Probes):
            probes = Probes(probes)
        check_probe_count(probes)
        self.model = model
        self.top_k = top_k
        self.rank_by = rank_by
        self.views = views
        self.colormap = colormap
        self.normalize = normalize
        self.alpha = float(alpha)
        self.max_image_size = max_image_size
        self.compress_level = compress_level
        self.overlay_format = overlay_format
        self.overlay_quality = overlay_quality
        self.log_dir = os.fspath(log_dir)
        self.run_name = run_name
        self.run_dir = os.path.join(self.log_dir, run_name)
        self.probes = self._fit_probes(model, probes, resize_probes)
        self._fitted_display: np.ndarray | None = None
        self.layers = self._select(model, layers)
        warn_if_costly(
            self.layers,
            len(self.probes),
            self.probes.image_size,
            views=self.views,
            max_image_size=self.max_image_size,
            top_k=self.top_k,
        )
        # Built lazily, once: the sub-model on first use, the event file on first log().
        self._extractor = None
        self._writer = SummaryWriter(self.run_dir)
        self._executor = None
        self._closed = False
        self._probes_written = False
        self._layout_checked = False
        # Sessions of the run (SessionLog.START): see _session_start_step.
        self.session_start = bool(session_start)
        self._needs_start = self.session_start
        self._restart_step: int | None = None
        self._max_step: int | None = None  # the largest step this logger wrote
        self._last_step: int | None = None  # the step it wrote last
        # Drift, predictions and channel probes (tb_activations.diagnostics).
        head = prediction_head(model, predictions)
        self._want_output = head is not None
        self._diagnostics = Diagnostics(
            self.layers,
            self.probes,
            drift=drift,
            cka=cka,
            cka_positions=cka_positions,
            predictions=self._want_output,
            head=head,
            class_names=class_names,
            rank_by=rank_by,
            top_k=top_k,
            colormap=colormap,
        )
        self._fixed_scales: dict[str, tuple[Any, Any]] = {}  # normalize="first"/"running_max"
        # Top examples per channel (tb_activations.examples_log): options checked now.
        from tb_activations.examples_log import ExamplesLog

        self._examples = ExamplesLog(
            self,
            examples_pool,
            k=examples_k,
            layers=examples_layers,
            batch_size=examples_batch_size,
        )
        # Attribution maps per step (tb_activations.attribution.step), checked here.
        from tb_activations.attribution.step import attribution_step

        self._attribution = attribution_step(
            self, attribution, attribution_layer, attribution_every, class_names
        )
        self.blocking = bool(blocking)
        self._worker: StepWorker | None = None  # blocking=False: started at the first log()

    # -- set-up ---------------------------------------------------------------

    def _overlay_display(self) -> np.ndarray:
        """The probes' display images shrunk to fit overlays in ``max_image_size`` (once)."""
        if self._fitted_display is None:
            self._fitted_display = fit_overlay_display(self.probes.display, self.max_image_size)
        return self._fitted_display

    @staticmethod
    def _fit_probes(model: Any, probes: Probes, resize: bool) -> Probes:
        from tb_activations.extraction import check_probe_shape, model_input_shape

        expected = model_input_shape(model)
        fixed = expected is not None and len(expected) == 3 and None not in expected[:2]
        if resize and fixed and tuple(probes.image_size) != tuple(expected[:2]):
            probes = probes.resized(expected[:2])
        check_probe_shape(model, probes.inputs.shape[1:])
        return probes

    def _select(self, model: Any, layers: Any) -> list[LayerInfo]:
        available = list_layers(model)
        if is_functional(model) or any(i.shape is not None for i in available):
            return select_layers(model, layers, available=available)
        # A subclassed model: shapes are only known from a real forward pass.
        # The default rule and the keywords need every layer's shape: run them all once.
        by_shape = selects_by_shape(layers)
        candidates = (
            [i for i in available if not i.is_model]
            if by_shape
            else select_layers(model, layers, available=available)
        )
        probe = self.probes.inputs[:1]
        outs = shared_extractor(model, candidates, input_shape=probe.shape[1:]).tensors(probe)
        known = [_with_shape(i, tuple(o.shape[1:])) for i, o in zip(candidates, outs)]
        if not by_shape:
            return known
        # The extractor returns dense outputs as (1, 1, C) maps: only larger ones count as
        # spatial here (a name still selects the others).
        maps = [i if i.shape[0] > 1 or i.shape[1] > 1 else replace(i, shape=None) for i in known]
        chosen = {i.path for i in select_layers(model, layers, available=maps)}
        return [i for i in known if i.path in chosen]

    @property
    def extractor(self):
        """The :class:`~tb_activations.ActivationExtractor`, built on first use and reused."""
        if self._extractor is None:
            self._extractor = shared_extractor(
                self.model,
                self.layers,
                input_shape=self.probes.inputs.shape[1:],
                include_output=self._want_output,
                # Palette levels on the device where the scale is the step's layer scale.
                levels=self.normalize == "layer" and bool({"mosaic", "topk"} & set(self.views)),
                histogram_bins=self.histogram_bins,
            )
        return self._extractor

    # -- public API -----------------------------------------------------------

    def activations(self) -> dict[str, np.ndarray]:
        """The selected layers' activations on the probes, now.

        Returns:
            ``{layer_path: float32 array (N, H, W, C)}`` in model order, channels-last.
        """
        return self.extractor(self.probes.inputs)

    def log(self, step: int) -> dict[str, LayerRecord] | None:
        """Compute, render and write the activations at ``step``; flush to disk.

        With ``blocking=False`` only the device pass runs here; rendering and
        writing finish on the background worker (see :meth:`flush`).

        Args:
            step: The TensorBoard step (epoch, global batch, ...), an int >= 0.

        Returns:
            ``{layer_path: LayerRecord}``: the statistics and top channels
            written; ``None`` with ``blocking=False``.

        Raises:
            Exception: with ``blocking=False``, the error of an earlier step
                that failed on the worker (this step is then not logged).
        """
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(
                f"Invalid value for argument `step`. Expected an int >= 0. Received: step={step!r}"
            )
        if self._closed:
            raise RuntimeError("This ActivationLogger is closed; create a new one to log again.")
        step = int(step)
        start = time.perf_counter()
        if self.blocking:
            return self._finish(step, self._capture(step), start=start)
        worker = self._step_worker()
        for err in worker.take_errors():
            raise err  # an earlier step failed: said here, on the caller's thread
        captured = self._capture(step)
        worker.wait_for_slot()
        stall, waits = time.perf_counter() - start, worker.stats.waits
        worker.submit(lambda: self._finish(step, captured, stall=stall, waits=waits))
        return None

    def flush(self) -> None:
        """Wait until every step handed to the background worker is written.

        A no-op with ``blocking=True``.

        Raises:
            Exception: the error of a step that failed on the worker (once each).
        """
        if self._worker is not None:
            self._worker.flush()

    def take_failures(self) -> list[BaseException]:
        """Errors of background steps not reported yet (they are reported now), oldest first.

        Each carries a note naming its step. The callback warns with them and
        goes on; :meth:`log` raises them instead.
        """
        return [] if self._worker is None else self._worker.take_errors()

    def _step_worker(self) -> StepWorker:
        if self._worker is None:
            # Created on first use: a logger that never logs starts no thread.
            self._worker = StepWorker(max_in_flight=2)
            # A logger dropped without close(): its steps are still written, then the
            # thread ends (the worker holds no reference to the logger's frame).
            weakref.finalize(self, _close_quietly, self._worker)
        return self._worker

    def _drain(self) -> None:
        """Let the worker finish before the calling thread touches the step state.

        Errors stay pending: the next :meth:`log` (or :meth:`take_failures`) reports them.
        """
        if self._worker is not None:
            self._worker.flush(raise_errors=False)

    def _capture(self, step: int) -> _Captured:
        """The device work of one step, on the calling thread: what training waits for.

        One forward pass: the model output (for predictions) comes with the
        activations; statistics, Gram matrices and palette levels are reduced
        on the device in that same pass. Attribution needs the weights of this
        step, so its backward pass runs here too. What comes back is on the host.
        """
        result = self.extractor.run_with_summaries(self.probes.inputs)
        attribution = []
        if self._attribution is not None:
            attribution = self._attribution.values(
                step, self._overlay_display(), result.output, result.activations
            )
        return _Captured(result=result, attribution=attribution)

    def _finish(
        self,
        step: int,
        captured: _Captured,
        *,
        start: float | None = None,
        stall: float | None = None,
        waits: int | None = None,
    ) -> dict[str, LayerRecord]:
        """Render, measure drift and write one captured step (the worker's part).

        ``start`` (blocking) is when :meth:`log` began, so the stall is all of
        it; ``stall`` (background) is what the calling thread spent, and
        ``waits`` how many times it has waited for the worker so far.
        """
        try:
            return self._finish_step(step, captured, start, stall, waits)
        except BaseException as err:
            err.add_note(f"tb_activations: while writing step {step} of {self.run_dir!r}")
            err.tb_activations_step = step  # type: ignore[attr-defined]
            raise

    def _finish_step(
        self,
        step: int,
        captured: _Captured,
        start: float | None,
        stall: float | None,
        waits: int | None,
    ) -> dict[str, LayerRecord]:
        begin = time.perf_counter()
        result = captured.result
        # A failed step leaves no trace: the drift and fixed-scale state go back
        # to the last written step, and a failed write gets a fresh event file.
        checkpoint = self._diagnostics.checkpoint(), dict(self._fixed_scales)
        try:
            acts, output = result.activations, result.output
            records, values = self._render_all(
                acts, step, result.stats, result.mean_maps, result.levels
            )
            values.extend(self._diagnostics.values(acts, output, records, step, grams=result.grams))
            # Reduced on the device in the same pass; the stock Histograms/Distributions tabs.
            values.extend(
                histogram_value(
                    metadata.histogram_tag(path),
                    hist,
                    description=f"Distribution of the activations of `{path}` over the probes.",
                )
                for path, hist in result.histograms.items()
            )
            values.extend(captured.attribution)
            if not self._probes_written:
                values.append(self._probe_images())
                self._warn_no_cka(acts)
            now = time.perf_counter()
            values.extend(
                self._timing_values(
                    stall=now - start if stall is None else stall,
                    worker=now - begin,
                    waits=waits,
                )
            )
        except BaseException:
            self._diagnostics.rollback(checkpoint[0])
            self._fixed_scales = checkpoint[1]
            raise
        if not self._layout_checked:
            try:
                self._check_layout(_layer_contents(values))
            except BaseException:
                self._diagnostics.rollback(checkpoint[0])
                self._fixed_scales = checkpoint[1]
                raise
        try:
            session = self._session_start_step(step)
            if session is not None:
                self._writer.start_session(session)
            self._writer.write(step, values)
        except BaseException as err:
            self._diagnostics.rollback(checkpoint[0])
            self._fixed_scales = checkpoint[1]
            self._abandon_event_file()
            if isinstance(err, OSError) or type(err).__module__.startswith("tensorflow"):
                raise OSError(
                    f"Cannot write the TensorBoard events of step {step} under {self.run_dir!r}: "
                    f"{err}. Steps written before are intact; the next log() starts a new event file."
                ) from err
            raise
        self._probes_written = True
        self._needs_start, self._restart_step = False, None
        self._max_step = step if self._max_step is None else max(self._max_step, step)
        self._last_step = step
        return records

    def _timing_values(self, *, stall: float, worker: float, waits: int | None) -> list:
        """The logger's self-measurement scalars of one step."""
        values = [
            scalar_value(
                metadata.STALL_SECONDS_TAG,
                stall,
                description="Seconds the training thread spent in this `log()`: the stall "
                "training waited for (the device pass, and with `blocking=True` everything).",
            ),
            scalar_value(
                metadata.WORKER_SECONDS_TAG,
                worker,
                description="Seconds spent rendering, encoding and measuring this step "
                "(on the background worker with `blocking=False`).",
            ),
        ]
        if waits is not None:
            values.append(
                scalar_value(
                    metadata.QUEUE_WAITS_TAG,
                    float(waits),
                    description="Times so far that `log()` waited because the background "
                    "worker had two steps in flight (it fell behind training).",
                )
            )
        return values

    def _session_start_step(self, step: int) -> int | None:
        """The step of the ``SessionLog.START`` to write before this step's event, or ``None``.

        A START makes TensorBoard drop everything the run holds from its step
        on, in every tag, so it is written only where that is what was meant:
        the run's first event (the Python loader counts restarts from there);
        this logger going back (a fit restarted from an older checkpoint); a
        new process writing to a run an earlier process wrote (a restart, or a
        continuation with nothing to drop). Never when another logger of this
        process writes the same run: its steps may count batches, not epochs.
        """
        if not self._needs_start:
            return None
        start = step if self._restart_step is None else min(self._restart_step, step)
        if self._max_step is not None:
            return start if start <= self._max_step else None
        files, foreign = run_files(self.run_dir)
        return start if not files or foreign else None

    def _begin_session(self, step: int) -> None:
        """Training (re)starts at ``step``: the next log() supersedes what this run holds from
        ``step`` on (a ``fit`` resumed from an older checkpoint)."""
        self._drain()  # the session state belongs to the worker until it is idle
        if self.session_start:
            self._needs_start, self._restart_step = True, int(step)

    def check_run(self) -> None:
        """Raise now if the run holds layers in another layout than this logger writes.

        :meth:`log` checks it anyway before its first write; this checks it
        ahead (one forward pass on one probe, only when the run holds events),
        as the callback does before training starts.

        Raises:
            RunLayoutError: a ``ValueError`` naming the layers, what differs, and a
                fresh ``run_name``.
        """
        if self._layout_checked or self._closed:
            return
        files, _ = run_files(self.run_dir)
        if not files:
            return  # nothing to clash with yet; log() checks again before writing
        from tb_activations.render import render_views

        # The traced pass of log(), on one probe: no second trace.
        acts = self.extractor.run_with_summaries(self.probes.inputs[:1]).activations
        contents = {}
        for info in self.layers:
            a = acts[info.path]
            k = min(self.top_k, a.shape[-1])
            grid = render_views(
                np.zeros(a.shape, np.float32),
                self._overlay_display()[:1],
                np.zeros((1, k), np.int64),
                (0.0, 1.0),
                views=("mosaic",),
                max_size=self.max_image_size,
            ).grid
            contents[metadata.stats_tag(info.path)] = self._layer_content(info, a.shape[1:], grid)
        self._check_layout(contents)

    def _check_layout(self, contents: dict[str, dict[str, Any]]) -> None:
        """Compare this logger's layer contents with the first ones the run holds."""
        held = first_plugin_contents(self.run_dir, list(contents))
        clashes = []
        for tag, new in contents.items():
            old = held.get(tag)
            if old is None:
                continue
            diff = [f for f in LAYOUT_FIELDS if old.get(f) != new.get(f)]
            if diff:
                what = "; ".join(f"{f} {old.get(f)!r} -> {new.get(f)!r}" for f in diff[:3])
                clashes.append(f"{new.get('layer', tag)!r} ({what})")
        if clashes:
            raise RunLayoutError(
                f"Cannot log into run {self.run_dir!r}: it already holds "
                f"{len(clashes)} of these layers in another layout: {', '.join(clashes[:3])}"
                f"{' ...' if len(clashes) > 3 else ''}. TensorBoard keeps only the first layout "
                "of a tag, so the dashboard would show the new data with the old geometry and "
                "probes.",
                self._fresh_run_name(),
            )
        self._layout_checked = True

    def _fresh_run_name(self) -> str:
        from tb_activations.summary import gfile

        i = 2
        while gfile().exists(os.path.join(self.log_dir, f"{self.run_name}_{i}")):
            i += 1
        return f"{self.run_name}_{i}"

    def _abandon_event_file(self) -> None:
        """Close the event file after a failed write: later steps go to a new file, so a
        partial record at the end of this one hides nothing written after it."""
        import contextlib

        # Already failing: the write's error is the one raised, not the close's.
        with contextlib.suppress(Exception):
            self._writer.close()
        self._writer = SummaryWriter(self.run_dir)

    def _warn_no_cka(self, acts: dict[str, np.ndarray]) -> None:
        """Warn once (at the first log) about the layers that get no CKA, and why."""
        import warnings

        short = [p for p, a in acts.items() if self._no_cka_note(a.shape[1:])]
        if short:
            note = self._no_cka_note(acts[short[0]].shape[1:])
            warnings.warn(
                f"tb_activations: no CKA drift for {len(short)} layer(s) "
                f"({', '.join(short[:5])}{' ...' if len(short) > 5 else ''}): too few samples. "
                f"{short[0]}: {note}",
                RuntimeWarning,
                stacklevel=3,
            )

    def _probe_images(self):
        """The probes' display images, written once per logger, for the dashboard's overlays."""
        display = fit_images(self.probes.display, self.max_image_size, self.max_image_size)
        pngs = [encode_rgb_png(img, self.compress_level) for img in display]
        names = ", ".join(self.probes.names)
        return image_value(
            metadata.PROBE_IMAGES_TAG,
            pngs,
            width=display.shape[2],
            height=display.shape[1],
            description=f"The probe images, in order: {names}.",
        )

    def log_examples(self, step: int, *, pool: Any = None) -> Any:
        """Stream the example pool; write each channel's top examples at ``step``.

        One traced pass per batch; see :func:`~tb_activations.top_examples`
        and :mod:`tb_activations.examples_log` for what is written. Nothing is
        written if the pass fails (an unreadable file is named).

        Args:
            step: The TensorBoard step, an int >= 0.
            pool: Images to use instead of ``examples_pool``. Defaults to ``None``.

        Returns:
            The :class:`~tb_activations.TopExamples` written.
        """
        self._drain()  # one writer: the worker's steps first
        from tb_activations.examples_log import log_examples

        return log_examples(self, step, pool)

    def log_feature_vis(
        self, step: int, *, channels: int = 4, steps: int = 256, **options: Any
    ) -> dict[str, Any]:
        """Write images optimised for the ``channels`` strongest channels of each layer at ``step``.

        Channels are ranked by their mean activation on the probes; options go
        to :func:`~tb_activations.visualize_channels`.

        Returns:
            ``{layer: FeatureVisualization}``.
        """
        from tb_activations.examples_log import log_feature_vis

        self._drain()  # one writer: the worker's steps first
        return log_feature_vis(self, step, channels=channels, steps=steps, **options)

    def pin_reference(self) -> None:
        """Pin the probes' activations now as the reference of ``L/cka_reference``.

        Runs one forward pass. From the next :meth:`log` on, every layer also
        gets its CKA against this reference; with ``normalize="first"`` the
        images use this state's colour scale. Pinning again replaces it.
        """
        if self._closed:
            raise RuntimeError("This ActivationLogger is closed; create a new one to log again.")
        self._drain()  # the drift state belongs to the worker until it is idle
        # The same traced pass as log(): no second trace, Grams and scales reduced on the device.
        result = self.extractor.run_with_summaries(self.probes.inputs)
        self._diagnostics.pin(result.activations, result.grams)
        if self.normalize == "first":
            self._fixed_scales = {
                i.path: self._scale_of(i, result.activations[i.path], result.stats[i.path])
                for i in self.layers
            }

    def close(self) -> None:
        """Finish the steps in flight, flush and close the event file; the logger cannot log
        afterwards.

        Raises:
            Exception: with ``blocking=False``, the error of a step that failed on
                the worker and was not reported yet (everything else is closed first).
        """
        self._closed = True
        errors = self._release()
        if errors:
            raise errors[0]

    def _release(self) -> list[BaseException]:
        """Finish the steps in flight, close the event file and stop the worker and encoder
        threads; the next log() starts them again.

        Returns:
            The errors of background steps not reported yet, oldest first.
        """
        errors: list[BaseException] = []
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.flush(raise_errors=False)
            errors = worker.take_errors()
            worker.close()
        self._writer.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        return errors

    def __enter__(self) -> ActivationLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- rendering ------------------------------------------------------------

    def _render_all(
        self,
        acts: dict[str, np.ndarray],
        step: int,
        reduced: dict[str, np.ndarray] | None = None,
        mean_maps: dict[str, np.ndarray] | None = None,
        levels: dict[str, np.ndarray] | None = None,
    ) -> tuple[dict[str, LayerRecord], list]:
        if self._executor is None:
            self._executor = default_executor()
        records: dict[str, LayerRecord] = {}
        encoded: list = []  # futures, in slot order
        slots: list[tuple[str, str, int, int, str]] = []
        values: list = []
        pal = palette(self.colormap)
        for info in self.layers:
            a = acts[info.path]
            stats = (
                ChannelStats.from_reduced(reduced[info.path], a.shape[1] * a.shape[2])
                if reduced is not None
                and a.shape[-1] > 0
                # A float32 sum overflowed on the device (finite values near 3e38):
                # this layer's statistics are redone on the host in float64.
                and np.isfinite(reduced[info.path]).all()
                else None
            )
            means = None if mean_maps is None else mean_maps[info.path]
            # Device levels exist only where they match this layer's scale: the extractor
            # makes them for normalize="layer" alone, and drops a layer whose statistics
            # are not finite (then `stats` is None and the host redoes both).
            q = None if levels is None else levels.get(info.path)
            record, layer_jobs, layer_slots = self._render_layer(
                info, a, pal, step, stats, means, q
            )
            records[info.path] = record
            # Encoding starts now, in the pool, while the next layers are rendered.
            encoded.extend(self._executor.submit(fn, *args) for fn, *args in layer_jobs)
            slots.extend(layer_slots)
            values.extend(self._layer_values(record, a))
        pngs = [future.result() for future in encoded]
        # Group the PNGs of each (layer, view) into one image summary.
        start = 0
        for tag, desc, width, height, count in slots:
            values.append(
                image_value(
                    tag, pngs[start : start + count], width=width, height=height, description=desc
                )
            )
            start += count
        return records, values

    def _render_layer(
        self,
        info: LayerInfo,
        a: np.ndarray,
        pal: np.ndarray,
        step: int,
        stats: ChannelStats | None = None,
        mean_maps: np.ndarray | None = None,
        levels: np.ndarray | None = None,
    ):
        n, c = a.shape[0], a.shape[-1]
        if c == 0:
            raise ValueError(
                f"Layer {info.path!r} has an output with zero channels (shape {a.shape[1:]}); nothing to render."
            )
        if stats is None:
            stats = channel_stats(a)
        top = top_channels(stats.by(self.rank_by), self.top_k)
        lo, hi = self._scale(info, a, stats)
        rendered = render_views(
            a,
            self._overlay_display(),
            top,
            (lo, hi),
            views=self.views,
            colormap=self.colormap,
            alpha=self.alpha,
            max_size=self.max_image_size,
            mean_maps=mean_maps,
            all_finite=stats.nonfinite_count == 0,
            levels=levels,
        )
        grid = rendered.grid
        record = LayerRecord(info=info, stats=stats, top=top, grid=grid, scale=(lo, hi))
        jobs: list[tuple] = []
        slots: list[tuple] = []
        desc = self._description(info, a.shape[1:], stats)
        for view, images in (("mosaic", rendered.mosaic), ("topk", rendered.topk)):
            if images is not None:
                jobs += [(encode_palette_png, img, pal, self.compress_level) for img in images]
                tag = metadata.view_tag(info.path, view)
                slots.append((tag, desc, images.shape[2], images.shape[1], n))
        if rendered.overlay is not None:
            if self.overlay_format == "jpeg":
                jobs += [(encode_jpeg, p, self.overlay_quality) for p in rendered.overlay]
            else:
                jobs += [(encode_rgb_png, p, self.compress_level) for p in rendered.overlay]
            height, width = rendered.overlay.shape[1:3]
            slots.append((metadata.view_tag(info.path, "overlay"), desc, width, height, n))
        return record, jobs, slots

    def _scale(
        self, info: LayerInfo, a: np.ndarray, stats: ChannelStats | None = None
    ) -> tuple[Any, Any]:
        """The ``(lo, hi)`` colour scale of layer ``info`` for activations ``a`` at this step."""

        def scale(mode: str) -> tuple[Any, Any]:
            # From the reduced statistics when there are some: no pass over `a`.
            return value_range(a, mode) if stats is None else value_range_from_stats(stats, mode)

        if self.normalize not in FIXED_SCALES:
            return scale(self.normalize)
        lo, hi = scale("layer")
        fixed = self._fixed_scales.get(info.path)
        if fixed is None or self.normalize == "running_max":
            if fixed is not None:
                lo, hi = np.minimum(fixed[0], lo), np.maximum(fixed[1], hi)
            fixed = self._fixed_scales[info.path] = (lo, hi)
        return fixed

    @staticmethod
    def _scale_of(info: LayerInfo, a: np.ndarray, reduced: np.ndarray) -> tuple[Any, Any]:
        """The layer scale of ``a`` from its device-reduced statistics (host pass if they overflowed)."""
        if a.shape[-1] == 0 or not np.isfinite(reduced).all():
            return value_range(a, "layer")
        stats = ChannelStats.from_reduced(reduced, a.shape[1] * a.shape[2])
        return value_range_from_stats(stats, "layer")

    def _layer_values(self, record: LayerRecord, a: np.ndarray) -> list:
        info, stats = record.info, record.stats
        # float64: the float32 mean of huge (finite) channel means can overflow.
        finite_mean = float(np.mean(stats.mean, dtype=np.float64)) if stats.mean.size else 0.0
        content = self._layer_content(info, a.shape[1:], record.grid)
        return [
            scalar_value(
                metadata.scalar_tag(info.path, "mean_activation"),
                finite_mean,
                description=f"Mean activation of `{info.path}` over probes, positions and channels.",
            ),
            scalar_value(
                metadata.scalar_tag(info.path, "dead_fraction"),
                stats.dead_fraction,
                description=f"Fraction of channels of `{info.path}` that are zero on every probe.",
            ),
            scalar_value(
                metadata.scalar_tag(info.path, "nonfinite_count"),
                float(stats.nonfinite_count),
                description=f"NaN/Inf values in `{info.path}`.",
            ),
            float_tensor_value(
                metadata.stats_tag(info.path),
                stats.stacked(),
                content=content,
                description=f"Per-probe, per-channel mean/max/min/std of `{info.path}`.",
            ),
            # The colour scale of this step's views: the dashboard's colour bar.
            float_tensor_value(
                metadata.scale_tag(info.path),
                np.stack(np.broadcast_arrays(*record.scale)),
                content=metadata.create_scale_content(self.colormap),
                description=f"Colour scale [lo, hi] of the views of `{info.path}` at this step.",
            ),
        ]

    def _no_cka_note(self, shape: tuple) -> str | None:
        """Why a layer whose maps are ``shape`` ``(H, W, C)`` gets no CKA, or ``None``."""
        tracker = self._diagnostics.tracker
        full = (len(self.probes.names), *shape)
        if tracker is None or tracker.has_cka(full):
            return None
        from tb_activations.drift import MIN_CKA_SAMPLES

        n, samples = len(self.probes.names), tracker.samples(full)
        return (
            f"No CKA drift: {samples} samples ({n} probes x {samples // max(1, n)} positions), fewer than the {MIN_CKA_SAMPLES} CKA needs to "
            "mean anything. Log more probes."
        )

    def _layer_content(self, info: LayerInfo, shape: tuple, grid: Grid) -> dict[str, Any]:
        """The plugin content of a layer whose maps are ``shape`` ``(H, W, C)``."""
        content = metadata.create_layer_content(
            layer=info.path,
            index=info.index,
            class_name=info.class_name,
            shape=shape,
            probes=self.probes.names,
            labels=self.probes.labels,
            grid=grid.as_dict(),
            top_k=min(self.top_k, shape[-1]),
            rank_by=self.rank_by,
            colormap=self.colormap,
            normalize=self.normalize,
        )
        content["views"] = {
            v: t
            for v, t in content["views"].items()
            if v in self.views and (v != "overlay" or shape[0] > 1)
        }
        return content

    def _description(self, info: LayerInfo, shape: tuple, stats: ChannelStats) -> str:
        """The layer's description: what holds at every step only, since TensorBoard keeps
        a tag's first description (step values go to the scalars and the step's text)."""
        k = min(self.top_k, shape[-1])
        lines = [
            f"**`{info.path}`** ({info.class_name}), output {' x '.join(str(s) for s in shape)}, "
            f"{shape[-1]} channels.",
            "",
            f"Mosaic: every channel; top-k strip: the top {k} channels by {self.rank_by} of each "
            f"probe at that step (listed per step in `{metadata.CHANNEL_PROBES_TAG}`); dead "
            f"channels per step in `{metadata.scalar_tag(info.path, 'dead_fraction')}`.",
        ]
        note = self._no_cka_note(shape)
        if note:
            lines += ["", note]
        if shape[0] == 1 and "overlay" in self.views:
            lines += [
                "",
                "No overlay: the output is one pixel tall (a 1-D or dense output), with no "
                "spatial extent to lay over the probe image.",
            ]
        lines += [
            "",
            "NaN/Inf values, shown in magenta, are counted per step in "
            f"`{metadata.scalar_tag(info.path, 'nonfinite_count')}`.",
        ]
        return "\n".join(lines)


def check_probe_count(probes: Probes) -> None:
    """Raise a clear ``ValueError`` for more than :data:`MAX_PROBES` probes."""
    n = len(probes.names)
    if n > MAX_PROBES:
        raise ValueError(
            f"Invalid value for argument `probes`: {n} probes, more than the {MAX_PROBES} one "
            "logger takes. Every log() runs all probes through the model in one pass and writes "
            "each layer's images once per probe; probes are a few chosen images, not a "
            "dataset: pass a few, e.g. Probes(x[:16])."
        )


def _layer_contents(values: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """``{channel_stats tag: plugin content}`` of the summary values of one step."""
    out = {}
    for value in values:
        plugin = value.metadata.plugin_data
        if plugin.plugin_name == metadata.PLUGIN_NAME and metadata.layer_of_stats_tag(value.tag):
            out[value.tag] = json.loads(plugin.content.decode("utf-8"))
    return out


# (model id, layer paths, input shape, output, levels) -> extractor, while some logger holds it.
_EXTRACTORS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def shared_extractor(
    model: Any,
    layers: Sequence[LayerInfo],
    *,
    input_shape: tuple,
    include_output: bool = False,
    levels: bool = False,
    histogram_bins: int = 0,
):
    """An :class:`~tb_activations.ActivationExtractor`, shared by the loggers of one model.

    Several loggers on one model (an epoch and a batch callback, a notebook
    cell run again, a sweep) reuse one traced function instead of tracing
    their own: no trace time per logger, and none of TensorFlow's "triggered
    tf.function retracing" warnings.
    """
    from tb_activations.extraction import ActivationExtractor

    key = (
        id(model),
        tuple(i.path for i in layers),
        tuple(input_shape),
        bool(include_output),
        bool(levels),
        int(histogram_bins),
    )
    extractor = _EXTRACTORS.get(key)
    if extractor is None or extractor.model is not model:
        extractor = ActivationExtractor(
            model,
            layers,
            input_shape=input_shape,
            include_output=include_output,
            levels=levels,
            histogram_bins=histogram_bins,
        )
        _EXTRACTORS[key] = extractor
    return extractor


def _close_quietly(worker: StepWorker) -> None:
    """Finish and stop a worker whose logger was collected; say a failure, raise nothing."""
    import warnings

    try:
        worker.close()
    except Exception as err:
        warnings.warn(
            f"tb_activations: a step of a logger that was never closed failed: "
            f"{type(err).__name__}: {err}",
            RuntimeWarning,
            stacklevel=1,
        )


def _check_log_dir(run_dir: str) -> None:
    """Raise a clear ``ValueError`` now if ``run_dir`` can never be created or written.

    Local paths only (``gs://``, ``s3://``... are left to the writer); touches nothing on disk.
    """
    if "://" in run_dir:
        return
    path = os.path.abspath(run_dir)
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent
    if not os.path.isdir(path):
        what = "the run directory" if path == os.path.abspath(run_dir) else "a parent"
        raise ValueError(
            f"Invalid value for argument `log_dir`: cannot write events to {run_dir!r}, "
            f"because {what} {path!r} is a file, not a directory. Pass a directory path "
            "(it is created if missing)."
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(
            f"Invalid value for argument `log_dir`: cannot write events to {run_dir!r}: "
            f"directory {path!r} is not writable by this process."
        )


def _with_shape(info: LayerInfo, shape: tuple) -> LayerInfo:
    from dataclasses import replace

    if info.channels_first and len(shape) >= 2:
        shape = (shape[-1], *shape[:-1])  # the extractor already moved channels last
    return replace(info, shape=shape)
