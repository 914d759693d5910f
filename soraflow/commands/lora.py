"""`soraflow lora merge`: bake LoRA adapters into a model folder's DiT weights."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import add_group


def register(subparsers) -> None:
    sub = add_group(subparsers, "lora", help="LoRA adapters: merge them into a model")
    p = sub.add_parser(
        "merge",
        help="write a copy of a model with LoRA adapters merged into its DiT",
        description=(
            "Merge one or more LoRA adapters into a model's DiT and write the result as a new model folder "
            "(a soraflow folder, a diffusers Wan folder, or a DiT folder alone). The merged model runs at the "
            "speed of the base: use it where the same adapters are always wanted. Formats: diffusers/peft "
            "keys, the original Wan / ComfyUI layout (diffusion_model.*, lora_down/lora_up, alpha, diff/diff_b) "
            "and kohya/musubi (lora_unet_*)."
        ),
        epilog=(
            "examples:\n"
            "  soraflow lora merge soraflow/assets/default runs/lora/lora -o models/default-styled\n"
            "  soraflow lora merge Wan2.1-T2V-1.3B-Diffusers distill.safetensors:1.0 style.safetensors:0.6 -o wan-merged"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", type=Path, help="model folder whose DiT gets the adapters")
    p.add_argument("loras", nargs="+", metavar="LORA[:SCALE]", help="adapter file or folder, with an optional scale [1]")
    p.add_argument("-o", "--out", type=Path, required=True, help="new folder to write (must not exist)")
    p.set_defaults(func=run_merge)


def run_merge(args) -> int:
    from ..lora import merge_into_folder, parse_lora_arg

    out = merge_into_folder(args.model, [parse_lora_arg(t) for t in args.loras], args.out)
    print(f"wrote {out}")
    return 0
