"""`soraflow train dit`: train the diffusion transformer."""

from __future__ import annotations

from ..errors import SoraflowError


def register(subparsers) -> None:
    parser = subparsers.add_parser("dit", help="train the diffusion transformer", description="train the diffusion transformer.")
    parser.set_defaults(func=run)


def run(args) -> int:
    raise SoraflowError("`soraflow train dit` is not implemented yet")
