"""`soraflow eval vae`: report VAE reconstruction quality (PSNR, SSIM)."""

from __future__ import annotations

from ..errors import SoraflowError


def register(subparsers) -> None:
    parser = subparsers.add_parser("vae", help="report VAE reconstruction quality (PSNR, SSIM)", description="report VAE reconstruction quality (PSNR, SSIM).")
    parser.set_defaults(func=run)


def run(args) -> int:
    raise SoraflowError("`soraflow eval vae` is not implemented yet")
