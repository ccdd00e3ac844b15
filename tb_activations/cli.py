"""The ``tb-activations`` command: ``log``, ``demo`` and ``layers``.

Examples::

    tb-activations layers vgg16
    tb-activations log vgg16 bird.jpg --layers 'block*_pool' --png-dir out
    tb-activations log model.keras images/ --log-dir logs/run1 --top-k 8
    tb-activations demo --serve

TensorFlow is imported only once a subcommand needs it, so ``--help`` and
argument errors are instant. A user mistake (unknown model, unreadable image,
no layer matched, weights that cannot be downloaded) ends with one line on
stderr and exit code 2, never a traceback. Progress lines go to stderr
(``--quiet`` hides them); the summary of what was written goes to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PROG = "tb-activations"

#: Exit code of a user mistake (as argparse uses for bad arguments).
EXIT_USAGE = 2

MODEL_FILE_EXTENSIONS = (".keras", ".h5", ".hdf5")


class UserError(Exception):
    """A mistake in the command line or its inputs: reported as one line, exit code 2."""


@dataclass(frozen=True)
class AppSpec:
    """A ``keras.applications`` model: constructor, preprocessing module and default input size."""

    name: str
    constructor: str
    module: str
    size: int

    def build(self, **kwargs: Any) -> Any:
        import keras

        return getattr(keras.applications, self.constructor)(**kwargs)

    def preprocess(self) -> Any:
        import keras

        return getattr(keras.applications, self.module).preprocess_input


def _apps() -> dict[str, AppSpec]:
    table = [
        ("vgg16", "VGG16", "vgg16", 224),
        ("vgg19", "VGG19", "vgg19", 224),
        ("resnet50", "ResNet50", "resnet", 224),
        ("resnet101", "ResNet101", "resnet", 224),
        ("resnet152", "ResNet152", "resnet", 224),
        ("resnet50_v2", "ResNet50V2", "resnet_v2", 224),
        ("resnet101_v2", "ResNet101V2", "resnet_v2", 224),
        ("resnet152_v2", "ResNet152V2", "resnet_v2", 224),
        ("mobilenet", "MobileNet", "mobilenet", 224),
        ("mobilenet_v2", "MobileNetV2", "mobilenet_v2", 224),
        ("mobilenet_v3_small", "MobileNetV3Small", "mobilenet_v3", 224),
        ("mobilenet_v3_large", "MobileNetV3Large", "mobilenet_v3", 224),
        *[
            (f"efficientnet_b{i}", f"EfficientNetB{i}", "efficientnet", size)
            for i, size in enumerate((224, 240, 260, 300, 380, 456, 528, 600))
        ],
        ("efficientnet_v2_b0", "EfficientNetV2B0", "efficientnet_v2", 224),
        ("efficientnet_v2_b1", "EfficientNetV2B1", "efficientnet_v2", 240),
        ("efficientnet_v2_b2", "EfficientNetV2B2", "efficientnet_v2", 260),
        ("efficientnet_v2_b3", "EfficientNetV2B3", "efficientnet_v2", 300),
        ("efficientnet_v2_s", "EfficientNetV2S", "efficientnet_v2", 384),
        ("efficientnet_v2_m", "EfficientNetV2M", "efficientnet_v2", 480),
        ("efficientnet_v2_l", "EfficientNetV2L", "efficientnet_v2", 480),
        ("densenet121", "DenseNet121", "densenet", 224),
        ("densenet169", "DenseNet169", "densenet", 224),
        ("densenet201", "DenseNet201", "densenet", 224),
        ("inception_v3", "InceptionV3", "inception_v3", 299),
        ("inception_resnet_v2", "InceptionResNetV2", "inception_resnet_v2", 299),
        ("xception", "Xception", "xception", 299),
        ("nasnet_mobile", "NASNetMobile", "nasnet", 224),
        ("nasnet_large", "NASNetLarge", "nasnet", 331),
        ("convnext_tiny", "ConvNeXtTiny", "convnext", 224),
        ("convnext_small", "ConvNeXtSmall", "convnext", 224),
        ("convnext_base", "ConvNeXtBase", "convnext", 224),
        ("convnext_large", "ConvNeXtLarge", "convnext", 224),
        ("convnext_xlarge", "ConvNeXtXLarge", "convnext", 224),
    ]
    return {name: AppSpec(name, cls, module, size) for name, cls, module, size in table}


APPLICATIONS = _apps()


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_KEY = {_key(name): spec for name, spec in APPLICATIONS.items()}


def find_application(name: str) -> AppSpec | None:
    """The :class:`AppSpec` of a model name, ignoring case, ``-`` and ``_`` (``MobileNetV2``)."""
    return _BY_KEY.get(_key(name))


# -- output -------------------------------------------------------------------


class Reporter:
    """Progress lines on stderr (hidden by ``--quiet``), results on stdout."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def progress(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def result(self, message: str) -> None:
        print(message, flush=True)


# -- models and images ----------------------------------------------------------


def _quiet_tensorflow() -> None:
    """Import TensorFlow with its C++ start-up banner (oneDNN, CUDA, CPU features) silenced.

    The banner is written by absl before any log level applies, so the process'
    stderr is pointed at the null device for the import only. Python errors are
    unaffected (they are raised, and printed after stderr is restored).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules or os.environ.get("TB_ACTIVATIONS_TF_BANNER"):
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded, captured): nothing to hide
        import tensorflow  # noqa: F401

        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()  # CUDA probing logs here, on machines without a GPU
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _is_model_file(model: str) -> bool:
    return model.lower().endswith(MODEL_FILE_EXTENSIONS) or os.sep in model or os.path.exists(model)


def _check_model_container(model: str) -> None:
    """A ``.keras`` file must be a zip archive: say so, rather than Keras' "File not found"."""
    import zipfile

    if model.lower().endswith(".keras") and not zipfile.is_zipfile(model):
        raise UserError(
            f"cannot load model file {model}: it exists ({os.path.getsize(model)} bytes) but is "
            "not a .keras archive (a zip file): truncated by an interrupted save or copy, or "
            "not a Keras model"
        )


def check_model_arg(model: str) -> AppSpec | None:
    """Resolve MODEL without importing TensorFlow; ``None`` means a model file.

    Raises:
        UserError: for a missing file or an unknown model name.
    """
    if _is_model_file(model):
        if not os.path.exists(model):
            raise UserError(f"model file not found: {model}")
        if os.path.isdir(model):
            raise UserError(
                f"{model} is a directory; MODEL must be a .keras or .h5 file "
                "(TensorFlow SavedModel folders cannot be loaded by Keras 3)."
            )
        _check_model_container(model)
        return None
    spec = find_application(model)
    if spec is None:
        raise UserError(
            f"unknown model {model!r}: expected a .keras/.h5 file or one of "
            f"{', '.join(APPLICATIONS)}"
        )
    return spec


def load_model(
    model: str,
    *,
    weights: str | None,
    include_top: bool = False,
    report: Reporter,
) -> tuple[Any, Any, str]:
    """Load MODEL. Returns ``(keras_model, preprocess_or_None, description)``.

    Args:
        model: A ``.keras``/``.h5`` path or a ``keras.applications`` name.
        weights: ``"imagenet"``, ``"none"`` or a weights file; ``None`` means
            the default (ImageNet for names, the file's own weights for files).
        include_top: Keep the classifier of a ``keras.applications`` model.

    Raises:
        UserError: for anything the user can fix.
    """
    spec = check_model_arg(model)
    custom = weights is not None and weights.lower() not in ("imagenet", "none")
    if custom and not os.path.isfile(weights):
        raise UserError(f"weights file not found: {weights}")
    _quiet_tensorflow()
    import keras

    if spec is None:
        if weights is not None and weights.lower() == "imagenet":
            raise UserError(
                "--weights imagenet applies to keras.applications model names, not to model files"
            )
        report.progress(f"loading model file {model} ...")
        try:
            net = keras.models.load_model(model, compile=False)
        except Exception as err:
            reason = _first_line(err)
            if reason.startswith("File not found") and os.path.isfile(model):
                # Keras says this of any .keras file it cannot open as an archive.
                reason = "Keras cannot read it as a .keras archive (truncated or corrupt?)"
            raise UserError(f"cannot load model file {model}: {reason}") from None
        if weights is not None and weights.lower() != "none":
            _load_weights(net, weights)
        return net, None, os.path.basename(model)

    wanted = "imagenet" if weights is None else weights
    report.progress(
        f"building {spec.constructor} (weights: {wanted}, include_top={include_top}) ..."
    )
    kwargs: dict[str, Any] = {"include_top": include_top}
    if not include_top:
        kwargs["input_shape"] = (spec.size, spec.size, 3)
    if wanted.lower() == "imagenet":
        try:
            # Keras prints its download progress on stdout: keep stdout for results.
            with contextlib.redirect_stdout(sys.stderr):
                net = spec.build(weights="imagenet", **kwargs)
        except Exception as err:
            if _is_download_error(err):
                raise UserError(
                    f"cannot download the ImageNet weights of {spec.name} ({_first_line(err)}). "
                    "Offline? Pass --weights PATH (a weights file, e.g. from ~/.keras/models on "
                    "another machine) or --weights none (random weights)."
                ) from None
            raise
        return net, spec.preprocess(), f"{spec.name} (ImageNet weights)"
    net = spec.build(weights=None, **kwargs)
    if wanted.lower() == "none":
        return net, spec.preprocess(), f"{spec.name} (random weights)"
    _load_weights(net, wanted)
    return net, spec.preprocess(), f"{spec.name} (weights {os.path.basename(wanted)})"


def _load_weights(net: Any, path: str) -> None:
    import warnings

    try:
        # A mismatched file makes Keras warn once per layer before it raises: keep the one line.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net.load_weights(path)
    except Exception as err:
        raise UserError(f"cannot load weights from {path}: {_first_line(err)}") from None


def _is_download_error(err: BaseException) -> bool:
    import urllib.error

    text = str(err)
    return (
        isinstance(err, (urllib.error.URLError, ConnectionError, TimeoutError))
        or "URL fetch failure" in text
        or "Incomplete or corrupted file" in text
    )


def _first_line(err: BaseException, limit: int = 300) -> str:
    """The error's message on one line (whitespace collapsed), at most ``limit`` characters."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def expand_images(paths: Sequence[str]) -> list[str]:
    """Image files of ``paths`` (directories expanded, sorted), each checked readable.

    Raises:
        UserError: for a missing path, an unreadable image or no image at all.
    """
    from PIL import Image, UnidentifiedImageError

    from tb_activations.probes import IMAGE_EXTENSIONS, expand_image_paths

    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            found = expand_image_paths([p])
            if not found:
                raise UserError(
                    f"no image files in directory {p} (extensions: {', '.join(IMAGE_EXTENSIONS)})"
                )
            files.extend(found)
        elif not os.path.exists(p):
            raise UserError(f"image not found: {p}")
        else:
            files.append(p)
    for f in files:
        try:
            with Image.open(f) as img:
                img.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise UserError(f"cannot read image {f}: {_first_line(err)}") from None
    return files


def _preprocess_option(value: str, default: Any) -> Any:
    """The preprocessing function named by ``--preprocess``."""
    if value == "auto":
        return default
    if value == "none":
        return None
    if value == "unit":
        return _unit
    spec = find_application(value)
    if spec is None:
        raise UserError(
            f"unknown --preprocess {value!r}: expected auto, none, unit or a model name "
            f"({', '.join(APPLICATIONS)})"
        )
    return spec.preprocess()


def _unit(x: Any) -> Any:
    return x / 255.0


# -- subcommands ----------------------------------------------------------------


def cmd_layers(args: argparse.Namespace) -> int:
    report = Reporter(args.quiet)
    # The architecture is all `layers` needs: no weights, so nothing to download.
    weights = args.weights if args.weights is not None else "none"
    net, _, desc = load_model(
        args.model, weights=weights, include_top=args.include_top, report=report
    )
    from tb_activations.layer_selection import list_layers, select_layers

    infos = list_layers(net)
    if args.layers:
        try:
            chosen = {i.path for i in select_layers(net, args.layers, available=infos)}
        except ValueError as err:
            raise UserError(_no_match_message(err)) from None
        mark = "matched by --layers"
    else:
        chosen = {i.path for i in select_layers(net, None, available=infos)}
        mark = "selected by default"
    input_shape = tuple(net.inputs[0].shape[1:]) if getattr(net, "inputs", None) else None
    report.result(
        f"{desc}: input {_shape_text(input_shape)}, {len(infos)} selectable layers "
        f"(* = {mark}, {len(chosen)}):"
    )
    width = max((len(i.path) for i in infos), default=0)
    cls_width = max((len(i.class_name) for i in infos), default=0)
    for info in infos:
        star = "*" if info.path in chosen else " "
        report.result(
            f"{star} {info.path:<{width}}  {info.class_name:<{cls_width}}  {_shape_text(info.shape)}"
        )
    return 0


def _shape_text(shape: Any) -> str:
    if shape is None:
        return "?"
    return "(" + ", ".join("None" if s is None else str(int(s)) for s in shape) + ")"


def _no_match_message(err: ValueError) -> str:
    text = str(err)
    return text.replace("Invalid value for argument `layers`: ", "--layers ")


def cmd_log(args: argparse.Namespace) -> int:
    report = Reporter(args.quiet)
    start = time.perf_counter()
    if args.top_k < 1:
        raise UserError(f"--top-k must be a positive int, got {args.top_k}")
    if args.step < 0:
        raise UserError(f"--step must be >= 0, got {args.step}")
    check_model_arg(args.model)
    files = expand_images(args.images)
    write_events = args.log_dir is not None or args.png_dir is None
    log_dir = args.log_dir if args.log_dir is not None else "logs/tb-activations"

    net, preprocess, desc = load_model(
        args.model, weights=args.weights, include_top=args.include_top, report=report
    )
    preprocess = _preprocess_option(args.preprocess, preprocess)

    from tb_activations.extraction import model_input_shape
    from tb_activations.probes import Probes

    try:
        expected = model_input_shape(net)
    except ValueError as err:
        raise UserError(str(err)) from None
    target = None
    color_mode = "rgb"
    if args.image_size is not None:
        target = tuple(args.image_size)
    elif expected is not None and len(expected) == 3 and None not in expected[:2]:
        target = (int(expected[0]), int(expected[1]))
    if expected is not None and len(expected) == 3 and expected[-1] == 1:
        color_mode = "grayscale"
    try:
        probes = Probes.from_files(
            files, target_size=target, preprocess=preprocess, color_mode=color_mode
        )
    except ValueError as err:
        raise UserError(
            str(err).replace("pass `target_size=(H, W)`", "pass --image-size H W")
        ) from None
    h, w = probes.image_size
    report.progress(f"{len(probes)} probe image(s), {h}x{w}: {', '.join(probes.names)}")

    from tb_activations.logger import ActivationLogger

    try:
        logger = ActivationLogger(
            net,
            probes,
            log_dir,
            layers=args.layers or None,
            top_k=args.top_k,
            rank_by=args.rank_by,
            colormap=args.colormap,
            normalize=args.normalize,
            run_name=args.run_name,
            max_image_size=args.max_image_size,
            overlay_quality=args.overlay_quality,
            # One step per call, in any order: a call at step 5 must not hide step 10.
            session_start=False,
        )
    except ValueError as err:
        raise UserError(_no_match_message(err)) from None
    report.progress(f"{len(logger.layers)} layer(s): {', '.join(i.path for i in logger.layers)}")

    records = None
    try:
        if write_events:
            report.progress(f"computing activations and writing step {args.step} ...")
            records = logger.log(args.step)
            for path, rec in records.items():
                chans = ", ".join(f"#{int(c)}" for c in rec.top[0])
                shape = _shape_text(rec.info.channels_last_shape or ())
                report.progress(
                    f"  {path} {shape}: top-{rec.top.shape[1]} of {probes.names[0]}: {chans}"
                )
        written: list[str] = []
        if args.png_dir is not None:
            from tb_activations.export import save_pngs

            report.progress(f"writing PNG files to {args.png_dir} ...")
            acts = logger.activations()

            def on_layer(path: str, paths: list[str]) -> None:
                report.progress(f"  {path}: {len(paths)} file(s)")

            written = save_pngs(
                acts,
                probes.display,
                probes.names,
                args.png_dir,
                top_k=args.top_k,
                rank_by=args.rank_by,
                colormap=args.colormap,
                normalize=args.normalize,
                max_image_size=args.max_image_size,
                records=records,
                on_layer=on_layer,
            )
    finally:
        logger.close()

    report.progress(f"done in {time.perf_counter() - start:.1f} s ({desc})")
    if write_events:
        report.result(f"TensorBoard summaries: {logger.run_dir}")
        from tb_activations.metadata import tensorboard_command

        report.result(f"view them with: {tensorboard_command(log_dir)}")
    if args.png_dir is not None:
        report.result(f"PNG files: {len(written)} in {args.png_dir}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    report = Reporter(args.quiet)
    if args.epochs < 1:
        raise UserError(f"--epochs must be a positive int, got {args.epochs}")
    if args.size < 8:
        raise UserError(f"--size must be at least 8 (three 2x2 poolings), got {args.size}")
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise UserError(
            "the demo needs scikit-learn (its bundled digits data set): "
            "pip install 'tb_activations[demo]'"
        ) from None
    _quiet_tensorflow()
    from tb_activations.demo import run_demo, serve

    result = run_demo(
        args.log_dir,
        epochs=args.epochs,
        size=args.size,
        png_dir=args.png_dir,
        progress=report.progress,
    )
    report.result(
        f"trained {args.epochs} epoch(s) in {result['seconds']:.1f} s, "
        f"validation accuracy {result['val_accuracy']:.3f}"
    )
    report.result(f"TensorBoard logs: {args.log_dir}")
    if args.png_dir is not None:
        report.result(f"PNG files of the last epoch: {args.png_dir}")
    if args.serve:
        report.result(f"serving TensorBoard at http://127.0.0.1:{args.port}/ (Ctrl-C to stop)")
        return serve(args.log_dir, port=args.port)
    from tb_activations.metadata import tensorboard_command

    report.result(f"view them with: {tensorboard_command(args.log_dir)}")
    return 0


# -- parser -------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="hide progress lines")


def _models_epilog() -> str:
    return _fill("models by name: " + ", ".join(APPLICATIONS) + ".")


def _model_options(p: argparse.ArgumentParser, weights_help: str) -> None:
    p.add_argument(
        "model",
        metavar="MODEL",
        help="a .keras/.h5 model file, or a keras.applications name "
        f"({', '.join(list(APPLICATIONS)[:6])}, ...; all are listed below)",
    )
    p.add_argument("--weights", metavar="imagenet|none|PATH", default=None, help=weights_help)
    p.add_argument(
        "--include-top",
        action="store_true",
        help="keep the classifier of a keras.applications model (default: convolutional base "
        "only, at the model's default input size)",
    )


def _fill(text: str) -> str:
    import textwrap

    width = min(100, shutil.get_terminal_size().columns) - 2
    return textwrap.fill(text, width=max(40, width))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Render a CNN's intermediate activations (mosaics of all channels, top-k "
        "channels, heatmap overlays) for probe images, as TensorBoard summaries or PNG files.",
        epilog="Run '%(prog)s COMMAND --help' for the options of a command.",
    )
    from tb_activations import __version__, demo
    from tb_activations.render import DEFAULT_MAX_SIZE

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "log",
        help="activations of a model on images, to TensorBoard and/or PNG files",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_fill(
            "Compute the activations of MODEL on the IMAGE files and write them as "
            "TensorBoard summaries (to --log-dir) and/or PNG files (to --png-dir): per layer, "
            "one mosaic of all channels, the top-k channels and an overlay of the strongest "
            "channel on the image. TensorBoard summaries are written unless only --png-dir "
            "is given. PNG files are named <png-dir>/<probe>/<layer>_<view>.png, with '/' "
            "in nested layer paths written '__'."
        ),
        epilog=_models_epilog()
        + "\n\nexamples:\n"
        + f"  {PROG} log vgg16 bird.jpg --layers 'block*_pool' --png-dir out   # the article\n"
        + f"  {PROG} log vgg16 photos/ --weights none --log-dir logs/vgg\n"
        + f"  {PROG} log model.keras probes/ --layers conv1 'block_*' --top-k 8 --step 10",
    )
    _model_options(
        p,
        "weights of a keras.applications model: imagenet (default, downloaded once into "
        "~/.keras/models), none (random) or a weights file; for a model file, an optional "
        "weights file to load on top",
    )
    p.add_argument(
        "images", metavar="IMAGE", nargs="+", help="image files or directories of images"
    )
    p.add_argument(
        "--layers",
        metavar="PATTERN",
        nargs="+",
        action="extend",
        help="layer names, paths (outer/inner), globs such as 'block*_pool', or 'default', "
        "'stages', 'all' (every spatial output) (default: every computing layer of a small "
        "model, the stage outputs and pooling layers of a large one; see '%(prog)s layers "
        "MODEL')".replace("%(prog)s", PROG),
    )
    p.add_argument(
        "--log-dir", metavar="DIR", help="TensorBoard log directory (default: logs/tb-activations)"
    )
    p.add_argument("--png-dir", metavar="DIR", help="also (or only) write PNG files here")
    p.add_argument(
        "--top-k", type=int, default=5, metavar="K", help="channels in the top-k view (default: 5)"
    )
    p.add_argument(
        "--rank-by",
        choices=("mean", "max", "std"),
        default="mean",
        help="statistic ranking the channels (default: mean)",
    )
    p.add_argument(
        "--colormap", default="magma", metavar="NAME", help="matplotlib colormap (default: magma)"
    )
    p.add_argument(
        "--normalize",
        choices=("layer", "channel"),
        default="layer",
        help="one colour scale per layer or per channel (default: layer)",
    )
    p.add_argument(
        "--max-image-size",
        type=int,
        default=DEFAULT_MAX_SIZE,
        metavar="PX",
        help="cap on the long side of every image; larger ones are shrunk to fit: the knob "
        "that trades resolution for file size (default: %(default)s)",
    )
    p.add_argument(
        "--overlay-quality",
        type=int,
        default=90,
        metavar="Q",
        help="JPEG quality of the overlays in TensorBoard, 1-95 (default: %(default)s)",
    )
    p.add_argument("--step", type=int, default=0, metavar="N", help="TensorBoard step (default: 0)")
    p.add_argument(
        "--run-name",
        default="activations",
        metavar="NAME",
        help="run sub-folder of --log-dir (default: activations)",
    )
    p.add_argument(
        "--preprocess",
        default="auto",
        metavar="auto|none|unit|MODEL_NAME",
        help="input preprocessing: auto (default: the named model's own preprocess_input; "
        "none for model files), none (pixels 0-255), unit (pixels / 255), or a model name "
        "whose preprocess_input to use",
    )
    p.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="resize images to H x W (default: the model's input size, if fixed)",
    )
    _common(p)
    p.set_defaults(func=cmd_log)

    p = sub.add_parser(
        "demo",
        help="train a small CNN on the bundled digits, logging activations every epoch",
        description="Train a small CNN on scikit-learn's bundled 8x8 handwritten digits "
        "(offline; upsampled), with ActivationCallback logging every epoch next to "
        "keras.callbacks.TensorBoard. About a minute on two CPU cores. Needs scikit-learn "
        "(pip install 'tb_activations[demo]').",
    )
    p.add_argument(
        "--log-dir", default="logs/demo", metavar="DIR", help="log directory (default: logs/demo)"
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=demo.DEFAULT_EPOCHS,
        metavar="N",
        help="training epochs (default: %(default)s)",
    )
    p.add_argument(
        "--size",
        type=int,
        default=demo.DEFAULT_SIZE,
        metavar="PX",
        help="image size the 8x8 digits are upsampled to (default: %(default)s)",
    )
    p.add_argument(
        "--png-dir", metavar="DIR", help="also write the last epoch's views as PNG files"
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="then start TensorBoard on 127.0.0.1 and wait (Ctrl-C stops)",
    )
    p.add_argument(
        "--port", type=int, default=6006, help="TensorBoard port with --serve (default: 6006)"
    )
    _common(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "layers",
        help="list the selectable layers of a model and their output shapes",
        description=_fill(
            "List the layers of MODEL that can be selected with --layers (nested "
            "models' layers as outer/inner paths) with their classes and output shapes. Layers "
            "marked * are selected by default, or by the given --layers patterns."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_models_epilog(),
    )
    _model_options(
        p,
        "weights to load (default: none; the architecture is all that is needed to list layers)",
    )
    p.add_argument(
        "--layers",
        metavar="PATTERN",
        nargs="+",
        action="extend",
        help="mark the layers these patterns select",
    )
    _common(p)
    p.set_defaults(func=cmd_layers)

    from tb_activations import cli_explain

    cli_explain.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 user error, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version or an argparse error (already printed)
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
