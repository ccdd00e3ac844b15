"""ActivationLogger: activations of a model on fixed probes, written to TensorBoard on demand."""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tb_activations import backend as _backend
from tb_activations import metadata, run_session, step_render
from tb_activations.diagnostics import Diagnostics, prediction_head
from tb_activations.encode import DEFAULT_COMPRESS_LEVEL
from tb_activations.layer_selection import (
    LayerInfo,
    LayerSpec,
    is_functional,
    list_layers,
    select_layers,
    selects_by_shape,
    warn_if_costly,
)
from tb_activations.logger_options import (
    MAX_PROBES,
    check_images_every,
    check_options,
    check_probe_count,
)
from tb_activations.probes import Probes
from tb_activations.render import DEFAULT_MAX_SIZE, fit_overlay_display
from tb_activations.run_session import LAYOUT_FIELDS, RunLayoutError
from tb_activations.stats import ChannelStats
from tb_activations.step_render import LayerRecord
from tb_activations.step_worker import StepWorker
from tb_activations.summary import SummaryWriter, histogram_value, scalar_value

# Defined in the modules of each job, importable from here as before.
__all__ = [
    "LAYOUT_FIELDS",
    "MAX_PROBES",
    "ActivationLogger",
    "LayerRecord",
    "RunLayoutError",
    "check_probe_count",
    "shared_extractor",
]


@dataclass(frozen=True)
class _Captured:
    """What the training thread hands the worker for one step.

    Blocking: ``result``, the whole pass on the host. Background: ``maps``, the
    forward pass's outputs left on the device (the worker reduces them there).
    """

    result: Any  # extraction.ExtractionResult, or None
    attribution: list  # AttributionStep.capture(): host arrays, rendered by the worker
    maps: Any = None  # list of backend tensors, or None


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
        attribution_classes: Classes whose maps are written for every probe at
            every step, beside the predicted class's, in the same batched pass
            (for every method of ``attribution``): class indices, or names of
            ``class_names``, e.g. ``[3, "cat"]``. The dashboard's Explain panel
            offers them in its class chooser. Each class adds one map per probe
            to the pass (the costly methods' passes included). Defaults to
            ``None``: the predicted and label classes only.
        attribution_top_k: Also write, in the same pass, the maps of each
            probe's 2nd to ``attribution_top_k``-th highest scoring classes (the
            runners-up, which differ per probe and step). Defaults to 1: the
            predicted class only.
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
        images_every: Which logs write the pictures (mosaic, top-k strip and
            overlay views); every log writes the rest (statistics, colour
            scale, scalars, drift, histograms, predictions, attribution).
            ``"auto"`` (default): the first 10 logs of this logger, then every
            10th: log number ``i`` (0-based) when ``i < 10 or i % 10 == 0``,
            19 of 100. An int ``k``: every ``k``-th log (``i % k == 0``);
            ``1``: every log. The first log of a logger always writes them.
            Logs are counted per logger, written ones only (a failed step
            does not count).

    A run keeps one layout per layer: TensorBoard keeps only the first
    metadata of a tag, which holds the mosaic grid, shape, probe names and
    ``top_k``. :meth:`log` refuses (``ValueError``) to add data of another
    layout (other probes, ``max_image_size``, ``top_k``, model...) to a run
    that holds some, and names a fresh ``run_name``.

    Raises:
        TypeError: ``model`` is not a Keras 3 model (e.g. a ``torch.nn.Module``).
        ValueError: for an unknown layer (the message lists the selectable
            ones), probes that do not fit the model, more than
            :data:`MAX_PROBES` probes, a bad option value, a Keras backend
            other than TensorFlow, JAX or PyTorch, or a model built on another
            backend than the one Keras runs on now.

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
        attribution_classes: Sequence[int | str] | None = None,
        attribution_top_k: int = 1,
        histogram_bins: int = 30,
        blocking: bool = True,
        images_every: int | str = "auto",
    ) -> None:
        # First: an unsupported backend or a model of another framework (or of another
        # backend) is named here, before anything is built or written.
        _backend.check_model(model)
        check_images_every(images_every)
        views = check_options(
            log_dir=log_dir,
            run_name=run_name,
            histogram_bins=histogram_bins,
            top_k=top_k,
            rank_by=rank_by,
            normalize=normalize,
            views=views,
            alpha=alpha,
            max_image_size=max_image_size,
            overlay_format=overlay_format,
            overlay_quality=overlay_quality,
            compress_level=compress_level,
            colormap=colormap,
        )
        self.histogram_bins = histogram_bins
        self.images_every = images_every
        self._written_logs = 0  # logs this logger wrote: the images schedule counts them

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
            self,
            attribution,
            attribution_layer,
            attribution_every,
            class_names,
            attribution_classes,
            attribution_top_k,
        )
        self.blocking = bool(blocking)
        self._worker: StepWorker | None = None  # blocking=False: started at the first log()

    # -- set-up ---------------------------------------------------------------

    def _overlay_display(self) -> np.ndarray:
        """The probes' display images shrunk to fit overlays in ``max_image_size`` (once)."""
        if self._fitted_display is None:
            fitted = fit_overlay_display(self.probes.display, self.max_image_size).view()
            # Read-only, and the same object at every call: the renderer keeps what it
            # computed from it for the next layer (render._image_terms).
            fitted.setflags(write=False)
            self._fitted_display = fitted
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
                # Grad-CAM's layer, not logged, from the same pass: Grad-CAM then runs only
                # the layers after it (a head-only pass), never a forward pass of its own.
                extra_layers=self._attribution_extra_layers(),
            )
        return self._extractor

    def _attribution_extra_layers(self) -> list[LayerInfo]:
        """The attribution layer where it is not among the logged layers, else ``[]``."""
        info = getattr(self._attribution, "layer_info", None)
        if info is None or any(i.path == info.path for i in self.layers):
            return []
        return [info]

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
                that failed on the worker (its note names the step); this step
                was handed over all the same.
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
            return self._finish(step, self._capture(step, background=False), start=start)
        worker = self._step_worker()
        captured = self._capture(step, background=True)
        worker.wait_for_slot()
        stall, waits = time.perf_counter() - start, worker.stats.waits
        # Raises an earlier step's failure (said here, on the caller's thread) only
        # after this step is queued: one failed step never costs the next.
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

    def _capture(self, step: int, *, background: bool) -> _Captured:
        """The device work of one step, on the calling thread: what training waits for.

        Blocking: one pass computes the activations, the model output (for
        predictions) and their reductions (statistics, Gram matrices, palette
        levels, histograms), all brought to the host. Background: only the
        forward pass runs here; its outputs stay on the device, where the
        worker reduces them (:meth:`ActivationExtractor.summarize
        <tb_activations.ActivationExtractor.summarize>`). Attribution needs
        this step's weights, so its device passes (the maps, classes and logits,
        and the average drop's masked pass when due) run here in both modes,
        from the attribution layer's output of this same pass (an extra output
        where the layer is not logged); its overlays, encoding and summaries are
        the worker's (:meth:`_finish_step`).
        """
        from tb_activations import backend

        extractor = self.extractor
        attribution = self._attribution
        layer = getattr(attribution, "layer", None)
        if not background:
            result = extractor.run_with_summaries(self.probes.inputs)
            output, maps = result.output, None
            acts = {**result.activations, **result.extras} if layer is not None else {}
        else:
            result, maps = None, extractor.tensors(self.probes.inputs)
            to_numpy = backend.module(extractor.backend).to_numpy
            output = to_numpy(maps[-1]) if extractor.include_output else None
            paths = [i.path for i in (*extractor.layers, *extractor.extra_layers)]
            # Grad-CAM reuses its layer's activations (logged, or an extra output of the pass).
            acts = {layer: to_numpy(maps[paths.index(layer)])} if layer in paths else {}
        captured = []
        if attribution is not None:
            # Only the passes that need this step's weights; the overlays are the worker's.
            captured = attribution.capture(step, output, acts)
        return _Captured(result=result, attribution=captured, maps=maps)

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
        if result is None:  # background: the reductions of the captured maps, here
            result = self.extractor.summarize(captured.maps)
        # A failed step leaves no trace: the drift and fixed-scale state go back
        # to the last written step, and a failed write gets a fresh event file.
        checkpoint = self._diagnostics.checkpoint(), dict(self._fixed_scales)
        try:
            acts, output = result.activations, result.output
            images = self._images_due()
            records, values = self._render_all(
                acts, step, result.stats, result.mean_maps, result.levels, images=images
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
            if captured.attribution:
                # The host part of attribution (overlays, encoding, protos), off the
                # training thread; a method failing here warns and is left out.
                values.extend(
                    self._attribution.summaries(step, self._overlay_display(), captured.attribution)
                )
            if not self._probes_written:
                values.append(step_render.probe_images(self))
                step_render.warn_no_cka(self, acts)
            now = time.perf_counter()
            values.extend(
                self._timing_values(
                    stall=now - start if stall is None else stall,
                    worker=now - begin,
                    waits=waits,
                )
            )
            values.append(
                scalar_value(
                    metadata.IMAGES_WRITTEN_TAG,
                    1.0 if images else 0.0,
                    description="1 where this step wrote the layers' pictures (mosaic, "
                    "top-k, overlay), 0 where `images_every` skipped them.",
                )
            )
        except BaseException:
            self._diagnostics.rollback(checkpoint[0])
            self._fixed_scales = checkpoint[1]
            raise
        if not self._layout_checked:
            try:
                run_session.check_layout(self, run_session.layer_contents(values))
            except BaseException:
                self._diagnostics.rollback(checkpoint[0])
                self._fixed_scales = checkpoint[1]
                raise
        try:
            session = run_session.session_start_step(self, step)
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
        self._written_logs += 1
        return records

    def _images_due(self) -> bool:
        """Whether the log being written now writes the pictures (see ``images_every``)."""
        return step_render.images_due(self.images_every, self._written_logs)

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

    # -- the run: sessions and layout (tb_activations.run_session) -------------

    def _begin_session(self, step: int) -> None:
        """Training (re)starts at ``step``: the next log() supersedes what this run holds from
        ``step`` on (a ``fit`` resumed from an older checkpoint)."""
        self._drain()  # the session state belongs to the worker until it is idle
        run_session.begin_session(self, step)

    def check_run(self) -> None:
        """Raise now if the run holds layers in another layout than this logger writes.

        :meth:`log` checks it anyway before its first write; this checks it
        ahead (one forward pass on one probe, only when the run holds events),
        as the callback does before training starts.

        Raises:
            RunLayoutError: a ``ValueError`` naming the layers, what differs, and a
                fresh ``run_name``.
        """
        run_session.check_run(self)

    def _abandon_event_file(self) -> None:
        """Close the event file after a failed write: later steps go to a new file, so a
        partial record at the end of this one hides nothing written after it."""
        run_session.abandon_event_file(self)

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
                i.path: step_render.scale_of(i, result.activations[i.path], result.stats[i.path])
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

    # -- rendering (tb_activations.step_render) -------------------------------

    def _render_all(
        self,
        acts: dict[str, np.ndarray],
        step: int,
        reduced: dict[str, np.ndarray] | None = None,
        mean_maps: dict[str, np.ndarray] | None = None,
        levels: dict[str, np.ndarray] | None = None,
        *,
        images: bool = True,
    ) -> tuple[dict[str, LayerRecord], list]:
        """Render one step's layers: see :func:`~tb_activations.step_render.render_step`."""
        return step_render.render_step(self, acts, step, reduced, mean_maps, levels, images=images)

    def _render_layer(
        self,
        info: LayerInfo,
        a: np.ndarray,
        pal: np.ndarray,
        step: int,
        stats: ChannelStats | None = None,
        mean_maps: np.ndarray | None = None,
        levels: np.ndarray | None = None,
        *,
        images: bool = True,
    ) -> tuple[LayerRecord, list[tuple], list[tuple]]:
        """Render one layer: see :func:`~tb_activations.step_render.render_layer`."""
        return step_render.render_layer(
            self, info, a, pal, step, stats, mean_maps, levels, images=images
        )


# (model id, layer paths, input shape, output, levels, bins, extra paths) -> extractor, while some logger holds it.
_EXTRACTORS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def shared_extractor(
    model: Any,
    layers: Sequence[LayerInfo],
    *,
    input_shape: tuple,
    include_output: bool = False,
    levels: bool = False,
    histogram_bins: int = 0,
    extra_layers: Sequence[LayerInfo] = (),
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
        tuple(i.path for i in extra_layers),
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
            extra_layers=extra_layers,
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


def _with_shape(info: LayerInfo, shape: tuple) -> LayerInfo:
    from dataclasses import replace

    if info.channels_first and len(shape) >= 2:
        shape = (shape[-1], *shape[:-1])  # the extractor already moved channels last
    return replace(info, shape=shape)
