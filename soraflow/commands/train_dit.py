"""`soraflow train dit`, `train cache-latents`, `train export-dit`: the DiT's data and training loop."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from . import finite_float, parse_size, positive_int


def register(subparsers) -> None:
    _register_cache(subparsers)
    _register_train(subparsers)
    _register_export(subparsers)


# ----------------------------------------------------------------------------------------------


def _register_cache(subparsers) -> None:
    p = subparsers.add_parser(
        "cache-latents",
        help="encode a dataset with the VAE once into a latent cache for DiT training",
        description=(
            "Encode every clip of a SoraWorld dataset (manifest.jsonl) or a folder of videos/images with "
            "the VAE, and its captions with the text encoder, into safetensors shards + index.json. "
            "Resumable: run it again to add what is missing. Unreadable clips are skipped with a warning."
        ),
        epilog="example: soraflow train cache-latents --data world/ --vae models/vae --out cache/",
    )
    p.add_argument("--data", type=Path, required=True, help="SoraWorld dataset folder or a folder of clips")
    p.add_argument("--vae", type=Path, required=True, help="VAE model folder (config.json + safetensors)")
    p.add_argument("--out", type=Path, required=True, help="cache folder to create or complete")
    p.add_argument("--text-encoder", default="minilm", help="text encoder: 'minilm' or a local folder [default: minilm]")
    p.add_argument("--size", type=parse_size, default=None, help="WIDTHxHEIGHT to resize+centre-crop to [default: native size, cropped to multiples of 16]")
    p.add_argument("--fps", type=finite_float, default=None, help="resample clips to this frame rate [default: native]")
    p.add_argument("--max-frames", type=positive_int, default=33, help="frames per clip at most (trimmed to 1+4k) [default: 33]")
    p.add_argument("--shard-size", type=positive_int, default=64, help="clips per shard file [default: 64]")
    p.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16", help="storage dtype of latents [default: float16]")
    p.add_argument("--limit", type=positive_int, default=None, help="encode at most this many new clips")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="encode under bf16 autocast or in fp32; auto: bf16 where this device runs it faster (measured once) [auto]")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="torch device of the VAE and text encoder (cpu, cuda) [default: cpu]")
    p.set_defaults(func=run_cache)


def run_cache(args) -> int:
    import torch

    from ..data import build_latent_cache

    if args.threads:
        torch.set_num_threads(args.threads)
    summary = build_latent_cache(
        args.data, args.vae, args.out, text_reference=args.text_encoder, size=args.size, fps=args.fps,
        max_frames=args.max_frames, shard_size=args.shard_size, dtype=getattr(torch, args.dtype),
        precision=args.precision, limit=args.limit, device=args.device,
    )
    shapes = ", ".join(f"{k} ({n})" for k, n in sorted(summary.shapes.items()))
    print(f"{summary.out}: {summary.total} clips cached ({summary.added} new, {summary.skipped} skipped); latent shapes: {shapes}")
    return 0


# ----------------------------------------------------------------------------------------------


def _register_train(subparsers) -> None:
    from ..train.config import add_config_arguments
    from ..train.dit_config import TrainDiTConfig

    p = subparsers.add_parser(
        "dit",
        help="train the diffusion transformer on a latent cache",
        description=(
            "Train the DiT with rectified flow on a latent cache (mixed sizes, bucketed batches, "
            "conditioning masks for every prompting mode). Checkpoints go to OUT/checkpoints; running the "
            "same command again resumes exactly from the latest one, with the saved config as the base "
            "and the options given on the command line on top."
        ),
        epilog=(
            "examples:\n  soraflow train dit --data cache/ --out runs/dit --preset small --steps 20000\n"
            "  # a rank-16 LoRA on the shipped model (only the adapter trains; it goes to runs/lora/lora/):\n"
            "  soraflow train dit --data cache/ --out runs/lora --init soraflow/assets/default --lora 16 --steps 300 --lr 1e-3"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, default=None, help="JSON config file to start from (options override it)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_arguments(p, TrainDiTConfig)
    p.set_defaults(func=run_train)


def resolve_train_config(args):
    """Defaults < the resumed run's saved config < --config FILE < command-line options."""
    from ..train.config import config_from_args, config_to_dict, load_config
    from ..train.dit import checkpoint_config
    from ..train.dit_config import TrainDiTConfig

    base = {}
    out = getattr(args, "cfg__out", None)
    if out is not None and getattr(args, "cfg__resume", True):
        saved = checkpoint_config(out)
        if saved is not None:
            base = config_to_dict(saved)
    if args.config is not None:
        base.update(config_to_dict(load_config(TrainDiTConfig, args.config, strict=True)))
    return config_from_args(TrainDiTConfig, args, base=base)


def run_train(args) -> int:
    import json

    from ..train.config import config_to_dict
    from ..train.launch import train_dit

    cfg = resolve_train_config(args)
    if args.print_config:
        print(json.dumps(config_to_dict(cfg), indent=2))
        return 0
    result = train_dit(cfg, progress=not args.quiet)
    from ..train.distributed import launched_rank

    if launched_rank() == 0:  # under torchrun: one summary line, not one per rank
        print(f"trained to step {result.step} (last loss {result.loss:.4f}); checkpoint: {result.checkpoint}")
        if cfg.lora:
            print(f"LoRA adapter: {result.run_dir / 'lora'} (soraflow generate --lora {result.run_dir / 'lora'} ...)")
    if result.stopped:  # not finished: a script that waits for this command must not take it as done
        print(f"stopped by SIGTERM at step {result.step}; the same command resumes from {result.checkpoint}", file=sys.stderr)
        return 128 + signal.SIGTERM
    return 0


# ----------------------------------------------------------------------------------------------


def _register_export(subparsers) -> None:
    p = subparsers.add_parser(
        "export-dit",
        help="write a training run's EMA weights as a standalone DiT model folder",
        description="Write the EMA (or raw) weights of a DiT training checkpoint as config.json + safetensors for inference. "
                    "For a --lora run it writes the adapter (pytorch_lora_weights.safetensors, diffusers' Wan keys) instead.",
        epilog="examples:\n  soraflow train export-dit runs/dit -o models/dit\n"
               "  soraflow train export-dit runs/lora -o models/my-lora    # then: soraflow generate --lora models/my-lora ...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", type=Path, help="run folder (its latest checkpoint) or a checkpoint folder")
    p.add_argument("-o", "--out", type=Path, required=True, help="model folder to write")
    p.add_argument("--raw", action="store_true", help="export the raw trained weights instead of the EMA")
    p.add_argument(
        "--pipeline", action="store_true",
        help="write a complete model folder for `soraflow generate --model` (config.json, vae/, dit/) instead of the DiT alone",
    )
    p.add_argument("--vae", type=Path, default=None, help="with --pipeline: VAE folder [default: the one the latent cache was built with]")
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    from ..train.dit import export_dit, export_pipeline

    if args.pipeline:
        out = export_pipeline(args.run, args.out, vae=args.vae, ema=not args.raw)
    else:
        out = export_dit(args.run, args.out, ema=not args.raw)
    print(f"wrote {out}")
    return 0
