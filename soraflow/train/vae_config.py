"""The typed config of VAE training (no torch import here, so `soraflow train vae --help` is instant).

Every field is an option of ``soraflow train vae`` (``--field-name``), documented by its comment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import option


@dataclass
class TrainVAEConfig:
    data: Path | None = None  # (required) SoraWorld dataset folder (manifest.jsonl) or a folder of clips/images
    run_dir: Path = option(Path("runs/vae"))  # where checkpoints, TensorBoard logs, samples and the final model go
    preset: str = option("small", choices=("tiny", "small", "wan2.1"))  # VAE size (see soraflow.models.vae.VAE_PRESETS)
    base_dim: int = option(0, ge=0)  # channels of the first stage (every stage scales with it); 0: the preset's
    temporal_factor: int = option(0, choices=(0, 1, 2, 4))  # pixel frames per latent frame after the first (4: Wan's); 0: the preset's
    spatial_factor: int = option(0, choices=(0, 4, 8, 16))  # pixels per latent pixel along each side (8: Wan's); 4 drops the preset's deepest stage; 0: the preset's
    z_dim: int = option(0, ge=0)  # latent channels; 0: the preset's
    residual: bool = False  # Wan2.2's residual blocks: space/time folded into channels on a shortcut around each down/up stage, so every frame reaches the latents directly (the last stage keeps the width of the one before)
    frame_pack: int = option(0, ge=0)  # frame-wise latents: every frame encoded alone (as an image), this many stacked per latent frame (4 keeps the system's temporal factor); 0: a video VAE. Works with --init (the weights are the same; latent statistics are re-measured)
    init: Path | None = None  # start from this VAE folder (config.json + safetensors) instead of random weights
    decoder_base_dim: int = option(0, ge=0)  # decoder width if not the encoder's; with --init, another width starts a new decoder on the loaded encoder (with --freeze-encoder its latents stay valid); 0: the preset's (or --init's)
    freeze_encoder: bool = False  # train the decoder only (needs --init): latents, their statistics and any latent cache stay valid
    steps: int = option(2000, ge=1)  # optimizer steps to train for (in total, across resumes)
    batch_size: int = option(4, ge=1)  # clips per step
    size: int = option(128, ge=8)  # frames are resized (cover + centre crop) to size x size when read
    crop: int = option(64, ge=0)  # random square crop side for training (0: the whole size x size frame)
    frames: int = option(9, ge=1)  # frames of a video crop (1 + 4k)
    image_prob: float = option(0.25, ge=0, le=1)  # fraction of steps that train on single frames (images)
    long_frames: int = option(0, ge=0)  # frames of the long-clip steps (1 + 4k); 0: none. The causal convs meet their zero padding only in a clip's first frames: a model trained on short clips alone never learns the steady state, and its frames past the training length fall apart
    long_crop: int = option(32, ge=8)  # crop side of the long-clip steps (smaller, so a long step costs about what a short one does)
    long_prob: float = option(0.0, ge=0, le=1)  # fraction of steps that train on long clips (--long-frames x --long-crop)
    lr: float = option(1e-4, gt=0)  # peak learning rate (AdamW); 3e-4 and 1e-3 end short runs at a worse L1 (docs/vae.md)
    warmup_steps: int = option(50, ge=0)  # linear warmup steps
    weight_decay: float = option(0.0, ge=0)  # AdamW weight decay on conv kernels
    grad_clip: float = option(1.0, ge=0)  # gradient norm clip (0: off)
    l1_weight: float = option(1.0, ge=0)  # weight of the L1 pixel loss
    ssim_weight: float = option(0.2, ge=0)  # weight of the (1 - SSIM) structural loss
    object_weight: float = option(0.0, ge=0)  # extra L1 weight on pixels that stand out from their surroundings (objects, edges); 0: plain L1
    motion_weight: float = option(0.0, ge=0)  # extra L1 weight on pixels that change from the frame before (a moving object's new place and the one it left); 0: off
    kl_weight: float = option(1e-4, ge=0)  # weight of the KL term (per latent element); small: a near-deterministic AE
    adv_weight: float = option(0.0, ge=0)  # weight of the adversarial (hinge) loss; 0 keeps the discriminator off
    adv_start: int = option(1000, ge=0)  # step at which the adversarial term switches on (when adv_weight > 0)
    disc_lr: float = option(1e-4, gt=0)  # discriminator learning rate
    precision: str = option("auto", choices=("auto", "bf16", "fp32"))  # autocast dtype for forward/backward; auto: bf16 where this device runs it faster than fp32 (measured once, soraflow.hardware)
    seed: int = 0  # seeds the model init, data order, crops and posterior samples
    log_every: int = option(10, ge=1)  # steps between TensorBoard scalars
    save_every: int = option(250, ge=1)  # steps between checkpoints (and one at the end)
    sample_every: int = option(250, ge=1)  # steps between reconstruction side-by-side PNGs
    keep_last: int = option(3, ge=1)  # checkpoints kept
    cache_mb: int = option(2048, ge=0)  # decoded clips kept in memory (MiB); longer clips are read per sample
    stats_batches: int = option(8, ge=0)  # batches used to measure latent mean/std for the exported model
    threads: int | None = option(None, ge=1)  # torch CPU threads (default: torch's choice)
    device: str = "cpu"  # torch device of the model and batches (cpu, cuda, cuda:1, ...)
    progress: bool = True  # show a progress bar
