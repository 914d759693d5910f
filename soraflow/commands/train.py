"""`soraflow train ...`: train the VAE and the diffusion transformer."""

from __future__ import annotations

from . import add_group


def register(subparsers) -> None:
    add_group(subparsers, "train", help="train the VAE or the diffusion transformer")
