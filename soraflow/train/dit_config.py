"""The typed configs of DiT training (no torch import here, so the CLI builds its options instantly).

Every field is a command-line option of ``soraflow train dit`` (``--field-name``; nested
``mask.none`` is ``--mask-none``), documented by its comment; see :mod:`soraflow.train.config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .config import option
from .parallel_config import ParallelConfig

# The linears a LoRA trains by default (module-name suffixes): both attentions and the feed-forward.
LORA_TARGETS = "to_q,to_k,to_v,to_out.0,ffn.net.0.proj,ffn.net.2"

# Conditioning mask strategies, see soraflow.train.masks.
STRATEGIES = ("none", "first_frame", "first_frames", "last_frames", "both_ends", "random_spans")


@dataclass
class MaskConfig:
    """Relative weights of the strategies (normalized over those a sample's length allows)."""

    none: float = option(0.5, ge=0)  # weight of text-to-video (no frame given)
    first_frame: float = option(0.2, ge=0)  # weight of image-to-video (latent frame 0 given)
    first_frames: float = option(0.1, ge=0)  # weight of forward extension (first k frames given)
    last_frames: float = option(0.05, ge=0)  # weight of backward extension (last k frames given)
    both_ends: float = option(0.1, ge=0)  # weight of connecting / looping (first k1 and last k2 given)
    random_spans: float = option(0.05, ge=0)  # weight of in-filling (1-3 random spans given)
    max_given: float = option(0.5, gt=0, lt=1)  # most of a clip's latent frames the k-frame strategies give

    def weights(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in STRATEGIES}

    def validate(self) -> None:
        if sum(self.weights().values()) <= 0:
            raise InputError("mask strategy weights (--mask-none, --mask-first-frame, ...) are all zero")


@dataclass
class TrainDiTConfig:
    """Everything that defines a DiT training run; saved resolved with every checkpoint."""

    # -- data and run folder
    data: Path | None = None  # latent cache folder (made by `soraflow train cache-latents`)
    out: Path = Path("runs/dit")  # run folder: checkpoints/, tensorboard/, samples/
    resume: bool = True  # continue from the run folder's latest checkpoint when there is one
    init: Path | None = None  # DiT weights folder to start from (ours or diffusers' WanTransformer3DModel)
    # -- model (in/out channels and text_dim come from the cache)
    preset: str = "small"  # DiT size preset: tiny, small, wan-1.3b, wan2.2-5b, wan-14b
    num_layers: int | None = option(None, ge=1)  # override the preset's number of blocks
    num_attention_heads: int | None = option(None, ge=1)  # override the preset's attention heads
    attention_head_dim: int | None = option(None, ge=6)  # override the preset's head width
    ffn_dim: int | None = option(None, ge=1)  # override the preset's feed-forward width
    lora: int = option(0, ge=0)  # train a LoRA adapter of this rank on --init's weights instead of the whole DiT (0: full training); the adapter goes to OUT/lora/
    lora_alpha: float | None = option(None, gt=0)  # LoRA scaling numerator (update = B A x alpha / rank); default: the rank
    lora_targets: str = LORA_TARGETS  # comma-separated linear-name suffixes the LoRA adapts (attn1.to_q, to_v, ffn.net.2, ...)
    gradient_checkpointing: bool = False  # recompute each block's activations in the backward pass: less memory, ~30% more time
    patch_size: int | None = option(None, ge=1)  # spatial patch side: a token is 1 x P x P latent cells (default: the preset's, 2); 4 over a VAE of 4x spatial compression gives the tokens of 2 over an 8x one
    pooled_text: bool | None = None  # add the pooled prompt to the timestep embedding (soraflow extension; not Wan-loadable)
    # -- optimisation
    steps: int = option(10000, ge=1)  # optimizer steps of the whole run (the LR schedule spans them)
    batch_tokens: int = option(4096, ge=1)  # DiT tokens per batch; batch size = this // tokens per sample
    max_batch_size: int | None = option(None, ge=1)  # cap on samples per batch (small images)
    lr: float = option(2e-4, gt=0)  # peak learning rate
    warmup_steps: int = option(500, ge=0)  # linear warmup steps, then cosine decay
    min_lr_ratio: float = option(0.1, ge=0, le=1)  # final learning rate as a fraction of the peak
    weight_decay: float = option(0.01, ge=0)  # AdamW weight decay (matrices only)
    beta1: float = option(0.9, ge=0, lt=1)  # AdamW beta1
    beta2: float = option(0.99, ge=0, lt=1)  # AdamW beta2
    grad_clip: float = option(1.0, ge=0)  # clip the gradient norm to this (0: off)
    ema_decay: float = option(0.999, ge=0, le=1)  # EMA of the weights (exported for sampling)
    ema_warmup_steps: int = option(0, ge=0)  # ramp the EMA decay up over about this many steps (0: off)
    precision: str = option("auto", choices=("auto", "bf16", "fp32"))  # autocast dtype of the forward pass; auto: bf16 where this device runs it faster than fp32 (measured once, soraflow.hardware)
    # -- rectified flow
    timestep_shift: float | None = option(None, gt=0)  # fixed shift; default: flow.shift_for(tokens) per batch
    logit_mean: float = 0.0  # logit-normal timestep sampling: mean
    logit_std: float = option(1.0, gt=0)  # logit-normal timestep sampling: std
    terminal_prob: float = option(0.0, ge=0, le=1)  # train this fraction of samples at t = 1, pure noise (flow.sample_timesteps)
    object_weight: float = option(0.0, ge=0)  # extra loss weight on latent cells that stand out from their surroundings (objects; train.dit.latent_salience); 0: plain loss
    caption_dropout: float = option(0.1, ge=0, le=1)  # probability of training on the null caption (for CFG)
    caption: str = option("long", choices=("long", "short"))  # caption kind to train on
    short_caption_prob: float = option(0.0, ge=0, le=1)  # train on the short caption this often instead
    still_views: int = option(0, ge=0)  # also train on every video's first latent frame as a still image, this many times an epoch (1/T of the tokens: T times the captions and objects a batch)
    mask: MaskConfig = field(default_factory=MaskConfig)  # conditioning mask strategies (--mask-*)
    # -- bookkeeping
    seed: int = 0  # seed of weights init, data order, timesteps, noise, masks
    checkpoint_every: int = option(500, ge=1)  # save a checkpoint every N steps (and at the end)
    keep_last: int = option(3, ge=1)  # checkpoints kept
    log_every: int = option(10, ge=1)  # TensorBoard scalars every N steps
    stop_at_step: int | None = option(None, ge=1)  # save and stop after this step (the schedule still spans --steps)
    vae: Path | None = None  # VAE folder: decode periodic sample videos with it (no samples without it)
    sample_every: int = option(0, ge=0)  # write sample videos every N steps (0: off)
    sample_count: int = option(2, ge=1)  # sample videos per round (captions and shapes of the first cache entries)
    sample_steps: int = option(20, ge=1)  # sampler steps for sample videos
    sample_guidance: float = option(4.0, ge=0)  # classifier-free guidance scale of sample videos
    num_workers: int = option(0, ge=0)  # DataLoader worker processes (0: load in the training process)
    threads: int | None = option(None, ge=1)  # torch CPU threads (default: torch's choice)
    device: str = "cpu"  # torch device
    tensorboard: bool = True  # write TensorBoard scalars to OUT/tensorboard
    parallel: ParallelConfig = field(default_factory=ParallelConfig)  # several processes under torchrun (--parallel-*, see docs/distributed.md)

    def validate(self) -> None:
        from ..models.dit import DIT_PRESETS  # here, not at import: `soraflow --help` stays instant

        if self.preset not in DIT_PRESETS:
            raise InputError(f"--preset {self.preset!r}: choose one of {', '.join(DIT_PRESETS)}")
        if self.data is None:
            raise InputError("--data is required: a latent cache folder (see `soraflow train cache-latents`)")
        if self.lora and self.init is None:
            raise InputError("--lora trains an adapter on trained weights: give them with --init DIR")
        if self.stop_at_step is not None and self.stop_at_step > self.steps:
            raise InputError(f"--stop-at-step {self.stop_at_step} is beyond --steps {self.steps}")

    def model_overrides(self) -> dict:
        names = ("num_layers", "num_attention_heads", "attention_head_dim", "ffn_dim", "pooled_text")
        out = {n: getattr(self, n) for n in names if getattr(self, n) is not None}
        if self.patch_size is not None:
            out["patch_size"] = (1, self.patch_size, self.patch_size)
        return out
