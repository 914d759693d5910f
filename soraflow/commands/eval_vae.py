"""`soraflow eval vae`: report VAE reconstruction quality (PSNR, SSIM) on one or more datasets."""

from __future__ import annotations

from pathlib import Path

from . import parse_size, positive_int


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "vae",
        help="report VAE reconstruction quality (PSNR, SSIM)",
        description=(
            "Encode and decode every clip of each --data (a SoraWorld dataset folder, a folder of clips, or "
            "one file) and report PSNR (dB) and SSIM of the uint8 reconstruction against the input, as a "
            "table and optionally JSON. Unreadable clips are reported and skipped."
        ),
        epilog="example: soraflow eval vae --model runs/vae/model --data data/world_heldout ../shared/data/real_videos --json vae_eval.json",
    )
    parser.add_argument("--model", type=Path, required=True, help="VAE folder (config.json + safetensors; a training run folder uses RUN/model)")
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="one or more datasets: SoraWorld folder, folder of clips, or a file")
    parser.add_argument("--size", type=parse_size, default=None, help="WIDTHxHEIGHT to resize (cover + centre crop) every clip to [default: own size, long side scaled to --max-side]")
    parser.add_argument("--max-side", type=positive_int, default=256, help="long side of a clip's frames when --size is not given [default: 256]")
    parser.add_argument("--frames", type=positive_int, default=17, help="frames per clip at most (trimmed to 1 + 4k) [default: 17]")
    parser.add_argument("--limit", type=positive_int, default=None, help="clips per dataset at most")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16", help="autocast dtype [default: bf16]")
    parser.add_argument("--json", type=Path, default=None, help="write the results (with per-clip numbers) here")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..atomic import check_writable, write_json
    from ..eval.recon import evaluate_vae
    from ..models.vae import VideoVAE

    if args.json is not None:
        check_writable(args.json)  # fail before the expensive part
    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = args.model / "model" if (args.model / "model" / "config.json").is_file() else args.model
    vae = VideoVAE.from_pretrained(model_dir).eval()
    results = [
        evaluate_vae(vae, data, size=args.size, max_side=args.max_side, frames=args.frames, limit=args.limit,
                     precision=args.precision, progress=not args.no_progress)  # fmt: skip
        for data in args.data
    ]
    print(f"\nVAE {model_dir} ({args.precision})")
    print(f"{'dataset':48s} {'clips':>5s} {'PSNR dB':>8s} {'(min)':>7s} {'SSIM':>6s} {'(min)':>6s}")
    for r in results:
        name = r["data"] if len(r["data"]) <= 48 else "..." + r["data"][-45:]
        print(f"{name:48s} {r['clips']:5d} {r['psnr']['mean']:8.2f} {r['psnr']['min']:7.2f} {r['ssim']['mean']:6.3f} {r['ssim']['min']:6.3f}")
        if r["skipped"]:
            print(f"  skipped {len(r['skipped'])} unreadable clip(s)")
    if args.json is not None:
        write_json(args.json, {"model": str(model_dir), "precision": args.precision, "datasets": results})
        print(f"wrote {args.json}")
    return 0
