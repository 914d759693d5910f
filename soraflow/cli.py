"""The ``soraflow`` command line: a thin layer over the Python API.

Each command group lives in ``soraflow/commands/<group>.py`` with a ``register(subparsers)``
function; heavy imports (torch, models) happen inside the handlers so ``--help`` is instant.
A :class:`~soraflow.errors.SoraflowError` is printed as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .commands import eval as eval_cmd
from .commands import data as data_cmd
from .commands import generate as generate_cmd
from .commands import lora as lora_cmd
from .commands import serve as serve_cmd
from .commands import train as train_cmd
from .commands import world as world_cmd
from .errors import SoraflowError, UsageError
from .validate import safe_text

COMMAND_GROUPS = (generate_cmd, serve_cmd, world_cmd, data_cmd, train_cmd, eval_cmd, lora_cmd)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (a :class:`UsageError`, exit 2) instead of the usage
    block: the same shape as every other bad input. Subcommand parsers inherit the class."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="soraflow",
        description="Text (and image or video) to video with a rectified-flow diffusion transformer.",
        epilog="Run `soraflow COMMAND --help` for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"soraflow {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not hasattr(args, "func"):
            # A group given without its subcommand (`soraflow world`): show that group's help.
            (getattr(args, "group_parser", None) or parser).print_help()
            return 2
        return args.func(args) or 0
    except SoraflowError as err:
        print(f"soraflow: error: {safe_text(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("soraflow: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
