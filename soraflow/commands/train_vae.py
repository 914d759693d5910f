"""`soraflow train vae`: train the causal 3D VAE."""

from __future__ import annotations

from ..errors import SoraflowError


def register(subparsers) -> None:
    parser = subparsers.add_parser("vae", help="train the causal 3D VAE", description="train the causal 3D VAE.")
    parser.set_defaults(func=run)


def run(args) -> int:
    raise SoraflowError("`soraflow train vae` is not implemented yet")
