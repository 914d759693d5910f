"""Held-out reconstruction PSNR per frame index: where along a clip a VAE loses it.

    python scripts/vae_frame_profile.py --heldout runs/v2/heldout soraflow/assets/default/vae runs/vae-study/long-small/run

Each VAE is a model folder or a ``train vae`` run folder (its latest checkpoint; ``--init`` shape
taken from the run's config). A VAE trained only on short clips keeps the frames its training clips
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
    for path in args.vaes:
        vae = load_vae(path).eval()
        errors = []
        with torch.no_grad():
            for frames, _ in clips:
                rec = decode_latents(vae, encode_frames(vae, frames))[: len(frames)].astype(np.float32)
                errors.append(((rec - frames.astype(np.float32)) ** 2).mean(axis=(1, 2, 3)))
        mse = np.mean(errors, axis=0)
        db = [10 * np.log10(255**2 / mse[a: b + 1].mean()) for a, b in groups]
        print(f"| {path} | " + " | ".join(f"{v:.1f}" for v in db) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
