"""Reconstruction PSNR of a VAE per frame index on long SoraWorld clips: shows whether a VAE trained on
short crops holds up past them.

    python scripts/vae_frame_psnr.py runs/default-model/vae/model runs/default-model/vae-decoder/model

Clips are the build's dataset clips with at least ``--frames`` frames (native size), the first
``--clips`` of them; every VAE sees the same frames, in float32 (posterior mean, no autocast).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("vaes", nargs="+", type=Path, help="VAE folders (config.json + safetensors)")
    p.add_argument("--data", type=Path, default=REPO / "runs" / "default-model" / "data", help="SoraWorld dataset folder")
    p.add_argument("--frames", type=int, default=33, help="frames per clip (1 + 4k) [33]")
    p.add_argument("--clips", type=int, default=6, help="clips [6]")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from soraflow.data import discover_clips, encode_frames, read_clip
    from soraflow.models.vae import VideoVAE

    clips = []
    for item in discover_clips(args.data):
        frames, _ = read_clip(item, max_frames=args.frames)
        if len(frames) >= args.frames:
            clips.append(frames[: args.frames])
        if len(clips) == args.clips:
            break
    if not clips:
        print(f"vae_frame_psnr: no clip of {args.frames} frames in {args.data}", file=sys.stderr)
        return 2
    split = 9 if args.frames > 9 else args.frames
    for path in args.vaes:
        vae = VideoVAE.from_pretrained(path).float().eval()
        psnr = []
        for frames in clips:
            with torch.no_grad():
                x = vae.decode(vae.denormalize(encode_frames(vae, frames, autocast=False)[None]))
            rec = ((getattr(x, "sample", x)[0].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 3, 0).numpy()
            mse = ((rec - frames.astype(np.float32)) ** 2).mean(axis=(1, 2, 3))
            psnr.append(10 * np.log10(255**2 / mse))
        per_frame = np.mean(psnr, axis=0)
        tail = f", frames {split}-{args.frames - 1} {per_frame[split:].mean():.2f} dB" if split < args.frames else ""
        print(f"{path}: frames 0-{split - 1} {per_frame[:split].mean():.2f} dB{tail} ({len(clips)} clips); per frame: "
              + " ".join(f"{v:.1f}" for v in per_frame), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
