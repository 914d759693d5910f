"""`soraflow eval ...`: evaluate the VAE and run the SoraWorld bench."""

from __future__ import annotations

from . import add_group


def register(subparsers) -> None:
    add_group(subparsers, "eval", help="evaluate models (VAE reconstruction, SoraWorld bench)")
