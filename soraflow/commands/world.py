"""`soraflow world ...`: SoraWorld, the procedural simulator (sample a clip, write a dataset)."""

from __future__ import annotations

from . import add_group


def register(subparsers) -> None:
    add_group(subparsers, "world", help="SoraWorld simulator: render clips and datasets from prompts")
