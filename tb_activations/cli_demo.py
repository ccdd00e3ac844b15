"""``tb-activations demo``: train a small CNN on the bundled digits, logging activations.

Registered by :func:`tb_activations.cli.build_parser`.
"""

from __future__ import annotations

import argparse
from typing import Any

from tb_activations.cli_common import Reporter, UserError, add_quiet_option, quiet_tensorflow


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``demo`` sub-command to ``sub`` (an argparse sub-parsers object)."""
    # The demo module's defaults, not TensorFlow: it imports Keras only when it runs.
    from tb_activations import demo

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
    add_quiet_option(p)
    p.set_defaults(func=cmd_demo)
    return p


def cmd_demo(args: argparse.Namespace) -> int:
    """Run ``tb-activations demo``; returns the exit code (TensorBoard's with ``--serve``)."""
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
    quiet_tensorflow()
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
