"""``tb-activations explain``: attribution maps of a model on image files, as PNGs and events.

Registered by :func:`tb_activations.cli.build_parser`; kept in its own module
so that the attribution command and the core commands change apart.
"""

from __future__ import annotations

import argparse
import os
import shlex
import time
from typing import Any

from tb_activations import metadata
from tb_activations.cli_common import (
    PROG,
    Reporter,
    UserError,
    add_quiet_option,
    check_model_arg,
    expand_images,
    fill,
    load_model,
    load_probes,
    preprocess_option,
)

#: ``--method`` values (canonical names and the "gradcam++" spelling).
METHOD_CHOICES = (*metadata.ATTRIBUTION_METHODS, "gradcam++")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``explain`` sub-command to ``sub`` (an argparse sub-parsers object)."""
    p = sub.add_parser(
        "explain",
        help="attribution maps (Grad-CAM, saliency, ...) of a classifier on images, as PNGs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=fill(
            "Explain the class scores of the classifier MODEL on the IMAGE files: for each "
            "image and --method, the map of the chosen class (the predicted one by default) "
            "laid over the image, written to <png-dir>/<image>/<method>_class<N>.png, and "
            "with --log-dir as TensorBoard summaries (attribution/<method>/...). "
            "keras.applications models are built with their classifier (include_top)."
        ),
        epilog="examples:\n"
        f"  {PROG} explain vgg16 cat.jpg --method gradcam --class predicted\n"
        f"  {PROG} explain model.keras digits/ --method gradcam saliency --class 3 "
        "--log-dir logs/explain",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="a .keras/.h5 classifier file, or a keras.applications name (vgg16, resnet50, ...)",
    )
    p.add_argument(
        "images", metavar="IMAGE", nargs="+", help="image files or directories of images"
    )
    p.add_argument(
        "--weights",
        metavar="imagenet|none|PATH",
        default=None,
        help="weights of a keras.applications model: imagenet (default), none (random) or a "
        "file; for a model file, an optional weights file to load on top",
    )
    p.add_argument(
        "--method",
        nargs="+",
        default=["gradcam"],
        choices=METHOD_CHOICES,
        metavar="METHOD",
        help=f"one or more of {', '.join(METHOD_CHOICES)} (default: gradcam)",
    )
    p.add_argument(
        "--class",
        dest="class_",
        default="predicted",
        metavar="N|predicted",
        help="the class to explain: an index, or 'predicted' (default) for each image's own",
    )
    p.add_argument(
        "--layer",
        metavar="NAME",
        help="layer of gradcam/gradcam++ (default: the last layer with a spatial output)",
    )
    p.add_argument(
        "--png-dir", metavar="DIR", default="explain", help="PNG folder (default: explain)"
    )
    p.add_argument("--log-dir", metavar="DIR", help="also write TensorBoard summaries here")
    p.add_argument(
        "--run-name",
        default="attribution",
        metavar="NAME",
        help="run sub-folder of --log-dir (default: attribution)",
    )
    p.add_argument("--step", type=int, default=0, metavar="N", help="TensorBoard step (default: 0)")
    p.add_argument(
        "--colormap", default="magma", metavar="NAME", help="matplotlib colormap (default: magma)"
    )
    p.add_argument(
        "--alpha", type=float, default=0.5, help="opacity of the map over the image (default: 0.5)"
    )
    p.add_argument(
        "--preprocess",
        default="auto",
        metavar="auto|none|unit|MODEL_NAME",
        help="input preprocessing, as for 'log' (default: auto)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="resize images to H x W (default: the model's input size, if fixed)",
    )
    add_quiet_option(p)
    p.set_defaults(func=cmd_explain)
    return p


def _class_arg(value: str) -> Any:
    if value == "predicted":
        return "predicted"
    try:
        index = int(value)
    except ValueError:
        raise UserError(f"--class must be a class index or 'predicted', got {value!r}") from None
    if index < 0:
        raise UserError(f"--class must be >= 0 or 'predicted', got {value}")
    return index


def cmd_explain(args: argparse.Namespace) -> int:
    """Run ``tb-activations explain``; returns the exit code."""
    report = Reporter(args.quiet)
    start = time.perf_counter()
    classes = _class_arg(args.class_)
    if args.step < 0:
        raise UserError(f"--step must be >= 0, got {args.step}")
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must be in [0, 1], got {args.alpha}")
    check_model_arg(args.model)
    files = expand_images(args.images)
    net, preprocess, desc = load_model(
        args.model, weights=args.weights, include_top=True, report=report
    )
    preprocess = preprocess_option(args.preprocess, preprocess)
    probes = load_probes(net, files, preprocess=preprocess, image_size=args.image_size)

    from tb_activations.attribution.step import AttributionStep, overlay_map, resolve_methods
    from tb_activations.colormaps import palette
    from tb_activations.encode import encode_rgb_png

    try:
        palette(args.colormap)
        methods = resolve_methods(net, args.method)
        step = AttributionStep(
            net,
            probes,
            methods,
            layer=args.layer,
            colormap=args.colormap,
            alpha=args.alpha,
            overlay_format="png",
        )
        per_probe = step.target.resolve_classes(classes, len(probes))
    except ValueError as err:
        raise UserError(str(err)) from None
    writer = None
    if args.log_dir is not None:
        from tb_activations.summary import SummaryWriter

        writer = SummaryWriter(os.path.join(args.log_dir, args.run_name))
    written = 0
    try:
        for method in methods:
            where = f" at {step.layer}" if step.layer and method.startswith("gradcam") else ""
            report.progress(f"{method}{where} ...")
            try:
                result = step.compute(method, classes=per_probe)
            except ValueError as err:
                raise UserError(str(err)) from None
            maps, chosen, drop = result.maps, result.classes, result.drop
            for i, name in enumerate(probes.names):
                folder = os.path.join(args.png_dir, _safe(name))
                os.makedirs(folder, exist_ok=True)
                path = os.path.join(folder, f"{method}_class{int(chosen[i])}.png")
                image = overlay_map(
                    probes.display[i], maps[i], colormap=args.colormap, alpha=args.alpha
                )
                _write_atomic(path, encode_rgb_png(image))
                written += 1
                report.progress(f"  {name}: class {int(chosen[i])}, average drop {drop[i]:.3f}")
            if writer is not None:
                writer.write(args.step, step.method_values(method, probes.display, None, result))
    finally:
        if writer is not None:
            writer.close()
    report.progress(f"done in {time.perf_counter() - start:.1f} s ({desc})")
    report.result(f"PNG files: {written} in {args.png_dir}")
    if args.log_dir is not None:
        report.result(f"TensorBoard summaries: {os.path.join(args.log_dir, args.run_name)}")
        report.result(f"view them with: tensorboard --logdir {shlex.quote(args.log_dir)}")
    return 0


def _safe(name: str) -> str:
    return name.replace("/", "__").replace(os.sep, "__") or "_"


def _write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file: no half-written PNG on disk."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
