"""Held-out reconstruction PSNR per frame index: where along a clip a VAE loses it.

    python scripts/vae_frame_profile.py --heldout runs/v2/heldout soraflow/assets/default/vae runs/vae-study/long-small/run

Each VAE is a model folder or a ``train vae`` run folder (its latest checkpoint; ``--init`` shape
taken from the run's config). ``--picture PNG`` also draws frames 0, 1, 4, 8, 16 and 32 of the first
clips, the truth (objects' boxes underlined) above each VAE's reconstruction. A VAE trained only on short clips keeps the frames its training clips
covered and loses the later ones: its causal convolutions never met a clip's steady state.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_vae(path: Path):
    from soraflow.models.vae import VideoVAE
    from soraflow.train.checkpoint import latest_checkpoint, load_checkpoint, load_json
    from soraflow.train.config import config_from_dict
    from soraflow.train.vae import TrainVAEConfig, model_config

    if (path / "config.json").is_file():
        return VideoVAE.from_pretrained(path)
    ckpt = latest_checkpoint(path)
    if ckpt is None:
        raise SystemExit(f"vae_frame_profile: {path} is neither a VAE folder nor a run with checkpoints")
    cfg = config_from_dict(TrainVAEConfig, load_json(ckpt / "config.json"), strict=False, where=str(ckpt))
    vae = VideoVAE(VideoVAE.config_from_pretrained(cfg.init) if cfg.init else model_config(cfg))
    load_checkpoint(ckpt, modules={"vae": vae}, restore_rng=False)
    return vae


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("vaes", nargs="+", type=Path, help="VAE model folders or train-vae run folders")
    p.add_argument("--heldout", type=Path, required=True, help="SoraWorld clips never trained on (with truth files)")
    p.add_argument("--frames", type=int, default=33, help="frames per clip [33]")
    p.add_argument("--clips", type=int, default=4, help="held-out clips [4]")
    p.add_argument("--groups", default="0,1-4,5-8,9-12,13-20,21-32", help="frame ranges to report [0,1-4,5-8,...]")
    p.add_argument("--picture", type=Path, default=None, metavar="PNG", help="also draw truth and reconstructions here")
    p.add_argument("--picture-clips", type=int, default=3, help="clips in the picture [3]")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    sys.path.insert(0, str(REPO / "scripts"))
    from vae_study import heldout_clips

    from soraflow.latents import decode_latents, encode_frames

    clips = heldout_clips(args.heldout, args.frames, args.clips)
    groups = [tuple(int(v) for v in g.split("-")) if "-" in g else (int(g), int(g)) for g in args.groups.split(",")]
    print("| VAE | " + " | ".join(f"frames {a}-{b}" if a != b else f"frame {a}" for a, b in groups) + " |")
    print("|---|" + "---:|" * len(groups))
    shown = [i for i in (0, 1, 4, 8, 16, 32) if i < args.frames]
    rows = [[_underline(frames, box, shown)] for frames, box in clips[: args.picture_clips]]
    for path in args.vaes:
        vae = load_vae(path).eval()
        errors = []
        with torch.no_grad():
            for k, (frames, _) in enumerate(clips):
                rec = decode_latents(vae, encode_frames(vae, frames))[: len(frames)]
                if k < len(rows):
                    rows[k].append(np.concatenate([rec[i] for i in shown], axis=1))
                rec = rec.astype(np.float32)
                errors.append(((rec - frames.astype(np.float32)) ** 2).mean(axis=(1, 2, 3)))
        mse = np.mean(errors, axis=0)
        db = [10 * np.log10(255**2 / mse[a: b + 1].mean()) for a, b in groups]
        print(f"| {path} | " + " | ".join(f"{v:.1f}" for v in db) + " |", flush=True)
    if args.picture:
        from PIL import Image

        from soraflow.atomic import atomic_path

        with atomic_path(args.picture) as tmp:
            Image.fromarray(np.concatenate([np.concatenate(r, axis=0) for r in rows], axis=0)).save(tmp, format="PNG")
        print(f"wrote {args.picture} (per clip: the truth, then " + ", ".join(str(v) for v in args.vaes) + ")")
    return 0


def _underline(frames, box, shown):
    """Truth frames side by side, each object's box marked by a white line under it."""
    import numpy as np

    out = []
    for i in shown:
        f = frames[i].copy()
        edge = box[i] & ~np.pad(box[i], ((0, 1), (0, 0)))[1:]  # the box's bottom row
        f[edge] = 255
        out.append(f)
    return np.concatenate(out, axis=1)


if __name__ == "__main__":
    sys.exit(main())
