"""Command groups of the CLI, one module each; see :mod:`soraflow.cli`."""

from __future__ import annotations

import argparse
import math

from ..errors import InputError


def add_group(subparsers, name: str, help: str, description: str | None = None):
    """Add a command group (`soraflow NAME ...`) and return the subparsers for its subcommands."""
    group = subparsers.add_parser(name, help=help, description=description or help)
    group.set_defaults(group_parser=group)
    return group.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND")


def parse_size(text: str) -> tuple[int, int]:
    """'128x96' -> (height, width). Sizes are written WIDTHxHEIGHT like video players show them."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 128x128") from None
    return h, w


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def finite_float(text: str) -> float:
    """A float option: NaN and infinities are refused where they are typed (no limit compares false)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


__all__ = ["add_group", "finite_float", "parse_size", "positive_int", "InputError"]
