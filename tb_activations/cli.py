"""The ``tb-activations`` command: ``log``, ``demo``, ``layers`` and ``explain``.

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

Each sub-command is a module with an ``add_parser(sub)`` and its ``cmd_*``
function (:mod:`~tb_activations.cli_log`, :mod:`~tb_activations.cli_demo`,
:mod:`~tb_activations.cli_layers`, :mod:`~tb_activations.cli_explain`); what
they share is in :mod:`~tb_activations.cli_common`. This module assembles them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tb_activations.cli_common import (
    APPLICATIONS,
    EXIT_USAGE,
    MODEL_FILE_EXTENSIONS,
    PROG,
    AppSpec,
    Reporter,
    UserError,
    check_model_arg,
    expand_images,
    find_application,
    load_model,
)

# Public names of this module from when it held every sub-command, still importable from here.
__all__ = [
    "APPLICATIONS",
    "EXIT_USAGE",
    "MODEL_FILE_EXTENSIONS",
    "PROG",
    "AppSpec",
    "Reporter",
    "UserError",
    "build_parser",
    "check_model_arg",
    "expand_images",
    "find_application",
    "load_model",
    "main",
]


def build_parser() -> argparse.ArgumentParser:
    """The ``tb-activations`` parser with every sub-command (in the order ``--help`` lists them)."""
    from tb_activations import __version__, cli_demo, cli_explain, cli_layers, cli_log

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Render a CNN's intermediate activations (mosaics of all channels, top-k "
        "channels, heatmap overlays) for probe images, as TensorBoard summaries or PNG files.",
        epilog="Run '%(prog)s COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in (cli_log, cli_demo, cli_layers, cli_explain):
        command.add_parser(sub)
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
