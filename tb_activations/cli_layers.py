"""``tb-activations layers``: the selectable layers of a model, their shapes, the default ones.

Registered by :func:`tb_activations.cli.build_parser`.
"""

from __future__ import annotations

import argparse
from typing import Any

from tb_activations.cli_common import (
    Reporter,
    UserError,
    add_model_options,
    add_quiet_option,
    fill,
    load_model,
    models_epilog,
    no_match_message,
    shape_text,
)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``layers`` sub-command to ``sub`` (an argparse sub-parsers object)."""
    p = sub.add_parser(
        "layers",
        help="list the selectable layers of a model and their output shapes",
        description=fill(
            "List the layers of MODEL that can be selected with --layers (nested "
            "models' layers as outer/inner paths) with their classes and output shapes. Layers "
            "marked * are selected by default, or by the given --layers patterns."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=models_epilog(),
    )
    add_model_options(
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
    add_quiet_option(p)
    p.set_defaults(func=cmd_layers)
    return p


def cmd_layers(args: argparse.Namespace) -> int:
    """Run ``tb-activations layers``; returns the exit code."""
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
            raise UserError(no_match_message(err)) from None
        mark = "matched by --layers"
    else:
        chosen = {i.path for i in select_layers(net, None, available=infos)}
        mark = "selected by default"
    input_shape = tuple(net.inputs[0].shape[1:]) if getattr(net, "inputs", None) else None
    report.result(
        f"{desc}: input {shape_text(input_shape)}, {len(infos)} selectable layers "
        f"(* = {mark}, {len(chosen)}):"
    )
    width = max((len(i.path) for i in infos), default=0)
    cls_width = max((len(i.class_name) for i in infos), default=0)
    for info in infos:
        star = "*" if info.path in chosen else " "
        report.result(
            f"{star} {info.path:<{width}}  {info.class_name:<{cls_width}}  {shape_text(info.shape)}"
        )
    return 0
