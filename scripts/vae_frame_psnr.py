"""Reconstruction PSNR of a VAE per frame index on long SoraWorld clips: shows whether a VAE trained on
short crops holds up past them.

    python scripts/vae_frame_psnr.py runs/default-model/vae/model runs/default-model/vae-decoder/model

Clips are the build's dataset clips with at least ``--frames`` frames (native size), the first
``--clips`` of them; every VAE sees the same frames, in float32 (posterior mean, no autocast).
``--objects`` also measures the PSNR inside the objects' boxes (from each SoraWorld clip's truth file):
the objects are a few percent of a frame, so the whole-frame number mostly measures the background.

    python scripts/vae_frame_psnr.py runs/default-model/vae-decoder/model --frames 17 --clips 10 --objects

``--invert N`` splits the loss between the two halves of a VAE: it also decodes latents optimised
through the frozen decoder (N Adam steps from the encoder's latents on the squared error, the objects'
boxes weighted 11x), the best this decoder can draw each clip. What the optimised latents gain over the
encoder's is lost by the encoder; what they still miss, by the decoder.

    python scripts/vae_frame_psnr.py runs/default-model/vae-objects-3/model --clips 2 --frames 17 --objects --invert 60

(2-2.5 s a step for a 17-frame 128x128 clip on two cores; a 33-frame clip takes about twice that.)
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
    p.add_argument("--objects", action="store_true", help="also the PSNR inside the objects' boxes (SoraWorld truth)")
    p.add_argument("--invert", type=int, default=0, metavar="N",
                   help="also decode latents optimised through the frozen decoder for N steps (needs --objects) [0: off]")
    p.add_argument("--invert-lr", type=float, default=0.05, help="Adam learning rate of --invert on the normalized latents [0.05]")
    args = p.parse_args(argv)
    if args.invert and not args.objects:
        p.error("--invert needs --objects (it weights the objects' boxes)")

    import numpy as np

    from soraflow.data import discover_clips, read_clip
    from soraflow.models.vae import VideoVAE

    clips, boxes = [], []
    for item in discover_clips(args.data):
        truth = item.path.with_suffix(".json")
        if args.objects and not truth.is_file():
            continue
        frames, _ = read_clip(item, max_frames=args.frames)
        if len(frames) >= args.frames:
            clips.append(frames[: args.frames])
            if args.objects:
                boxes.append(object_mask(truth, frames.shape[:3], args.frames))
        if len(clips) == args.clips:
            break
    if not clips:
        print(f"vae_frame_psnr: no clip of {args.frames} frames in {args.data}", file=sys.stderr)
        return 2
    split = 9 if args.frames > 9 else args.frames
    for path in args.vaes:
        vae = VideoVAE.from_pretrained(path).float().eval().requires_grad_(False)
        for label, steps in [("", 0)] + ([(f" (latents optimised, {args.invert} steps)", args.invert)] if args.invert else []):
            psnr, inside = [], np.zeros((2, 2))  # [frame 0, later frames] x [squared error, pixels]
            for k, frames in enumerate(clips):
                rec = reconstruct(vae, frames, boxes[k] if boxes else None, steps, args.invert_lr)
                sq = (rec - frames.astype(np.float32)) ** 2
                psnr.append(10 * np.log10(255**2 / sq.mean(axis=(1, 2, 3))))
                if boxes:
                    err, box = sq.mean(-1), boxes[k]
                    for row, part in enumerate((slice(0, 1), slice(1, None))):
                        inside[row] += err[part][box[part]].sum(), box[part].sum()
            per_frame = np.mean(psnr, axis=0)
            tail = f", frames {split}-{args.frames - 1} {per_frame[split:].mean():.2f} dB" if split < args.frames else ""
            print(f"{path}{label}: frames 0-{split - 1} {per_frame[:split].mean():.2f} dB{tail} ({len(clips)} clips); "
                  "per frame: " + " ".join(f"{v:.1f}" for v in per_frame), flush=True)
            if boxes:
                obj = 10 * np.log10(255**2 * inside[:, 1] / np.maximum(inside[:, 0], 1e-9))
                print(f"  inside the objects' boxes: frame 0 {obj[0]:.2f} dB, frames 1-{args.frames - 1} {obj[1]:.2f} dB",
                      flush=True)
    return 0


def reconstruct(vae, frames, box, steps: int, lr: float):
    """(T, H, W, 3) uint8 -> the VAE's float reconstruction in [0, 255]; with ``steps``, from latents optimised
    through the frozen decoder (squared error, the pixels in ``box`` weighted 11x) instead of the encoder's."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from soraflow.latents import encode_frames

    def decode(z):
        x = vae.decode(vae.denormalize(z))
        return getattr(x, "sample", x)[0]  # (3, T, H, W) in about [-1, 1]

    with torch.no_grad():
        z = encode_frames(vae, frames)
    if steps:
        target = torch.from_numpy(frames).float().permute(3, 0, 1, 2) / 127.5 - 1.0
        weight = 1.0 + 10.0 * torch.from_numpy(box).float()[None]
        z = z.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        for _ in tqdm(range(steps), desc="invert", unit="step", leave=False):
            opt.zero_grad()
            loss = (weight * (decode(z) - target) ** 2).mean()
            loss.backward()
            opt.step()
    with torch.no_grad():
        x = decode(z.detach())
    return ((x.clamp(-1, 1) + 1) * 127.5).permute(1, 2, 3, 0).numpy().astype(np.float32)


def object_mask(truth_path: Path, shape: tuple[int, int, int], frames: int):
    """(frames, H, W) bool: the union of the objects' boxes in each frame, from a SoraWorld truth file."""
    import json

    import numpy as np

    from soraflow.world.truth import ClipTruth

    truth = ClipTruth.from_dict(json.loads(truth_path.read_text())["truth"])
    mask = np.zeros((frames, *shape[1:3]), bool)
    for t, frame in enumerate(truth.frames[:frames]):
        for obj in frame.objects:
            if obj.bbox is not None:
                x0, y0, x1, y1 = (max(int(round(v)), 0) for v in obj.bbox)
                mask[t, y0:y1, x0:x1] = True
    return mask


if __name__ == "__main__":
    sys.exit(main())
