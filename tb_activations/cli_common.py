"""What the ``tb-activations`` sub-commands share: models by name or file, images, errors, output.

Each sub-command lives in its own module (``cli_log``, ``cli_layers``,
``cli_demo``, ``cli_explain``) with an ``add_parser(sub)`` and a ``cmd_*``
function; :mod:`tb_activations.cli` assembles them. Nothing here imports
TensorFlow at import time, so ``--help`` and argument errors stay instant.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
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


def quiet_tensorflow() -> None:
    """Import TensorFlow with its C++ start-up banner (oneDNN, CUDA, CPU features) silenced.

    The banner is written by absl before any log level applies, so the process'
    stderr is pointed at the null device for the import only. Python errors are
    unaffected (they are raised, and printed after stderr is restored).
    """
    from tb_activations import backend

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if (
        "tensorflow" in sys.modules
        or os.environ.get("TB_ACTIVATIONS_TF_BANNER")
        or backend.configured() != "tensorflow"  # JAX / PyTorch: no TensorFlow at all
    ):
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
    quiet_tensorflow()
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
            reason = first_line(err)
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
                    f"cannot download the ImageNet weights of {spec.name} ({first_line(err)}). "
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
        raise UserError(f"cannot load weights from {path}: {first_line(err)}") from None


def _is_download_error(err: BaseException) -> bool:
    import urllib.error

    text = str(err)
    return (
        isinstance(err, (urllib.error.URLError, ConnectionError, TimeoutError))
        or "URL fetch failure" in text
        or "Incomplete or corrupted file" in text
    )


def first_line(err: BaseException, limit: int = 300) -> str:
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
            raise UserError(f"cannot read image {f}: {first_line(err)}") from None
    return files


def preprocess_option(value: str, default: Any) -> Any:
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


def load_probes(net: Any, files: list[str], *, preprocess: Any, image_size: Any) -> Any:
    """The probes of ``files`` at the model's input size (or ``--image-size``), grey for 1 channel.

    Raises:
        UserError: for a model without a usable input shape, or images that need a size.
    """
    from tb_activations.extraction import model_input_shape
    from tb_activations.probes import Probes

    try:
        expected = model_input_shape(net)
    except ValueError as err:
        raise UserError(str(err)) from None
    target = None
    color_mode = "rgb"
    if image_size is not None:
        target = tuple(image_size)
    elif expected is not None and len(expected) == 3 and None not in expected[:2]:
        target = (int(expected[0]), int(expected[1]))
    if expected is not None and len(expected) == 3 and expected[-1] == 1:
        color_mode = "grayscale"
    try:
        return Probes.from_files(
            files, target_size=target, preprocess=preprocess, color_mode=color_mode
        )
    except ValueError as err:
        raise UserError(
            str(err).replace("pass `target_size=(H, W)`", "pass --image-size H W")
        ) from None


def shape_text(shape: Any) -> str:
    """``(224, 224, 3)``, with ``None`` for unknown dimensions and ``?`` for no shape."""
    if shape is None:
        return "?"
    return "(" + ", ".join("None" if s is None else str(int(s)) for s in shape) + ")"


def no_match_message(err: ValueError) -> str:
    """A layer-selection error worded for the command line (``--layers``, not `layers`)."""
    text = str(err)
    return text.replace("Invalid value for argument `layers`: ", "--layers ")


# -- parser pieces ------------------------------------------------------------------


def add_quiet_option(p: argparse.ArgumentParser) -> None:
    """``-q/--quiet``, which every sub-command has."""
    p.add_argument("-q", "--quiet", action="store_true", help="hide progress lines")


def models_epilog() -> str:
    """Every ``keras.applications`` name MODEL accepts, wrapped for the terminal."""
    return fill("models by name: " + ", ".join(APPLICATIONS) + ".")


def add_model_options(p: argparse.ArgumentParser, weights_help: str) -> None:
    """MODEL, ``--weights`` (its help is the sub-command's) and ``--include-top``."""
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


def fill(text: str) -> str:
    """``text`` wrapped to the terminal (40 to 98 columns), for descriptions and epilogs."""
    import textwrap

    width = min(100, shutil.get_terminal_size().columns) - 2
    return textwrap.fill(text, width=max(40, width))
