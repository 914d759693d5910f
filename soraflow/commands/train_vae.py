"""`soraflow train vae`: train the causal 3D VAE on a SoraWorld dataset or a folder of clips."""

from __future__ import annotations

from ..errors import InputError


def register(subparsers) -> None:
    from ..train.config import add_config_arguments
    from ..train.vae_config import TrainVAEConfig

    parser = subparsers.add_parser(
        "vae",
        help="train the causal 3D VAE",
        description=(
            "Train the causal 3D VAE on a SoraWorld dataset (DIR/manifest.jsonl) or a folder of videos and "
            "images: L1 + SSIM + small KL loss (+ an optional adversarial term from --adv-start), images and "
            "videos in the same run, bf16 autocast. Checkpoints go to RUN/checkpoints (running the same "
            "command again resumes exactly), TensorBoard logs to RUN/tb, reconstruction side-by-sides to "
            "RUN/samples, and the final model (config.json + safetensors, diffusers AutoencoderKLWan layout) "
            "to RUN/model. Unreadable clips are reported and skipped."
        ),
        epilog="example: soraflow train vae --data data/world --run-dir runs/vae --preset small --steps 2000",
    )
    add_config_arguments(parser, TrainVAEConfig)
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..train.config import config_from_args
    from ..train.vae import train_vae
    from ..train.vae_config import TrainVAEConfig

    cfg = config_from_args(TrainVAEConfig, args)
    if cfg.data is None:
        raise InputError("--data is required: a SoraWorld dataset folder or a folder of clips")
    result = train_vae(cfg)
    last = f"{result.losses[-1]:.4f}" if result.losses else "n/a"
    print(f"{result.run_dir}: step {result.step}, last loss {last}; model: {result.model_dir or 'not exported (run not finished)'}")
    if result.skipped:
        print(f"skipped {len(result.skipped)} unreadable clip(s): {', '.join(result.skipped[:5])}")
    return 0
