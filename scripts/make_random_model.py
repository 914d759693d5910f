"""Save a tiny random soraflow model folder (config.json, vae/, dit/) for docs, tests and smoke runs.

The weights are random, so the videos are coloured noise; every mode, size and length still runs
end to end through the real pipeline, which is what docs and tests need.

    python scripts/make_random_model.py /tmp/random-model
    soraflow generate "a red ball bouncing" --model /tmp/random-model --steps 2 -o ball.mp4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def randomize_(module: torch.nn.Module, std: float = 0.05, generator: torch.Generator | None = None) -> None:
    """Perturb every parameter: a fresh DiT is adaLN-zero (it predicts exactly zero velocity), which would
    make every output independent of the prompt, the timestep and the given frames."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * std)


def make_random_pipeline(*, height: int = 32, width: int = 48, fps: int = 8, seconds: float = 1.0, steps: int = 2,
                         guidance_scale: float = 3.0, window: int = 5, overlap: int = 2, expander: str = "none",
                         vae: str = "tiny", dit: str = "tiny", text_encoder: str = "minilm", seed: int = 0):
    """A :class:`~soraflow.pipeline.SoraPipeline` with random weights (in memory)."""
    from soraflow.models.dit import DiT, dit_config
    from soraflow.models.text import load_text_encoder
    from soraflow.models.vae import VideoVAE, vae_config
    from soraflow.pipeline import PipelineConfig, SoraPipeline

    torch.manual_seed(seed)
    encoder = load_text_encoder(text_encoder)
    vae_model = VideoVAE(vae_config(vae))
    dit_model = DiT(dit_config(dit, text_dim=encoder.dim, in_channels=vae_model.config.z_dim,
                               out_channels=vae_model.config.z_dim))
    randomize_(dit_model, generator=torch.Generator().manual_seed(seed))
    config = PipelineConfig(
        fps=fps, height=height, width=width, seconds=seconds, latent_channels=vae_model.config.z_dim,
        size_multiple=vae_model.spatial_factor * dit_model.config.patch_size[1], text_encoder=text_encoder,
        expander=expander, steps=steps, guidance_scale=guidance_scale, window_latent_frames=window,
        overlap_latent_frames=overlap,
    )
    return SoraPipeline(vae_model, dit_model, encoder, config)


def main(argv: list[str] | None = None) -> int:
    from soraflow.commands import parse_size

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="folder to write (created)")
    parser.add_argument("--size", type=parse_size, default=(32, 48), metavar="WxH", help="default size (48x32)")
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.0, help="default duration")
    parser.add_argument("--steps", type=int, default=2, help="default sampler steps")
    parser.add_argument("--cfg", type=float, default=3.0, help="default guidance scale")
    parser.add_argument("--window", type=int, default=5, help="latent frames per DiT pass")
    parser.add_argument("--overlap", type=int, default=2, help="latent frames of context per pass")
    parser.add_argument("--expander", default="none", help="prompt expander kind stored in the config")
    parser.add_argument("--vae", default="tiny", help="VAE preset (tiny, small, wan2.1)")
    parser.add_argument("--dit", default="tiny", help="DiT preset (tiny, small, ...)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    pipe = make_random_pipeline(height=args.size[0], width=args.size[1], fps=args.fps, seconds=args.seconds,
                                steps=args.steps, guidance_scale=args.cfg, window=args.window, overlap=args.overlap,
                                expander=args.expander, vae=args.vae, dit=args.dit, seed=args.seed)
    pipe.save_pretrained(args.directory)
    print(f"wrote a random model to {args.directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
