"""`soraflow generate PROMPT`: text (and image or video) to video."""

from __future__ import annotations

from ..errors import SoraflowError


def register(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="generate a video from a prompt",
                                   description="Generate a video from a text prompt.")
    parser.add_argument("prompt")
    parser.set_defaults(func=run)


def run(args) -> int:
    raise SoraflowError("no default model is installed yet; generation arrives with the pipeline issue")
