"""``tb-activations log``: a model's activations on image files, to TensorBoard and/or PNGs.

Registered by :func:`tb_activations.cli.build_parser`.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from tb_activations.cli_common import (
    PROG,
    Reporter,
    UserError,
    add_model_options,
    add_quiet_option,
    check_model_arg,
    expand_images,
    fill,
    load_model,
    load_probes,
    models_epilog,
    no_match_message,
    preprocess_option,
    shape_text,
)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``log`` sub-command to ``sub`` (an argparse sub-parsers object)."""
    from tb_activations.render import DEFAULT_MAX_SIZE

    p = sub.add_parser(
        "log",
        help="activations of a model on images, to TensorBoard and/or PNG files",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=fill(
            "Compute the activations of MODEL on the IMAGE files and write them as "
            "TensorBoard summaries (to --log-dir) and/or PNG files (to --png-dir): per layer, "
            "one mosaic of all channels, the top-k channels and an overlay of the strongest "
            "channel on the image. TensorBoard summaries are written unless only --png-dir "
            "is given. PNG files are named <png-dir>/<probe>/<layer>_<view>.png, with '/' "
            "in nested layer paths written '__'."
        ),
        epilog=models_epilog()
        + "\n\nexamples:\n"
        + f"  {PROG} log vgg16 bird.jpg --layers 'block*_pool' --png-dir out   # the article\n"
        + f"  {PROG} log vgg16 photos/ --weights none --log-dir logs/vgg\n"
        + f"  {PROG} log model.keras probes/ --layers conv1 'block_*' --top-k 8 --step 10",
    )
    add_model_options(
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
    p.add_argument(
        "--attribution",
        metavar="METHOD",
        nargs="+",
        help="attribution methods written per image (gradcam, gradcam++, saliency, smoothgrad, "
        "integrated_gradients, occlusion), or 'none' (default: gradcam for a classifier, an "
        "output out of a softmax or sigmoid; none otherwise)",
    )
    p.add_argument(
        "--attribution-class",
        metavar="N",
        type=int,
        action="append",
        help="also write the attribution maps of class N for every image, beside the "
        "predicted class's (repeat for several classes); the dashboard's Explain panel "
        "offers them",
    )
    p.add_argument(
        "--attribution-top-k",
        metavar="K",
        type=int,
        default=1,
        help="also write the attribution maps of each image's 2nd to K-th highest scoring "
        "classes (default: 1, the predicted class only)",
    )
    add_quiet_option(p)
    p.set_defaults(func=cmd_log)
    return p


def cmd_log(args: argparse.Namespace) -> int:
    """Run ``tb-activations log``; returns the exit code."""
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
    preprocess = preprocess_option(args.preprocess, preprocess)
    probes = load_probes(net, files, preprocess=preprocess, image_size=args.image_size)
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
            attribution=_attribution_option(args.attribution),
            attribution_classes=args.attribution_class,
            attribution_top_k=args.attribution_top_k,
            # One step per call, in any order: a call at step 5 must not hide step 10.
            session_start=False,
        )
    except ValueError as err:
        text = no_match_message(err).replace(
            "argument `attribution_classes`", "--attribution-class"
        )
        text = text.replace("argument `attribution_top_k`", "--attribution-top-k")
        raise UserError(text.replace("argument `attribution`", "--attribution")) from None
    report.progress(f"{len(logger.layers)} layer(s): {', '.join(i.path for i in logger.layers)}")

    records = None
    try:
        if write_events:
            report.progress(f"computing activations and writing step {args.step} ...")
            from tb_activations import drift_state
            from tb_activations.logger import RunLayoutError

            # Drift against the run's earlier calls, not against this call alone.
            first = drift_state.load(logger, args.step)
            try:
                records = logger.log(args.step)
            except RunLayoutError as err:
                raise UserError(
                    f"{err.reason} Pass --run-name {err.fresh_run_name} (a new run) or another "
                    "--log-dir."
                ) from None
            drift_state.save(logger, args.step if first is None else first)
            for path, rec in records.items():
                chans = ", ".join(f"#{int(c)}" for c in rec.top[0])
                shape = shape_text(rec.info.channels_last_shape or ())
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


def _attribution_option(methods: list[str] | None) -> tuple[str, ...] | None:
    """``--attribution`` as the logger's ``attribution=`` (``none``: ``()``)."""
    if methods is None:
        return None
    return tuple(m for m in methods if m != "none")
