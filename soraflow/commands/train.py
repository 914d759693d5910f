"""`soraflow train ...`: train the VAE and the diffusion transformer (one module per subcommand)."""

from __future__ import annotations

from . import add_group, train_dit, train_vae


def register(subparsers) -> None:
    sub = add_group(subparsers, "train", help="train the VAE or the diffusion transformer")
    train_vae.register(sub)
    train_dit.register(sub)
