"""`soraflow eval ...`: evaluate models (one module per subcommand)."""

from __future__ import annotations

from . import add_group, eval_bench, eval_vae


def register(subparsers) -> None:
    sub = add_group(subparsers, "eval", help="evaluate models (VAE reconstruction, SoraWorld bench)")
    eval_vae.register(sub)
    eval_bench.register(sub)
