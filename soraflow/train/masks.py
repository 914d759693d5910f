"""Conditioning masks for DiT training: which latent frames are *given* (clean, t = 0).

Sora's prompting modes (image-to-video, extension forward and backward, loops, connecting two
clips) are one mechanism: per-frame timesteps where the given latent frames are clean and the rest
are noise (docs/generate.md). A model only learns that if it sees such inputs in training, so
every training sample draws a strategy:

    none          text-to-video: nothing given
    first_frame   image-to-video: latent frame 0 (the causal VAE encodes pixel frame 0 alone into it)
    first_frames  extension forward: the first k latent frames
    last_frames   extension backward: the last k latent frames
    both_ends     connecting two clips, loops: the first k1 and the last k2 frames
    random_spans  in-filling: 1-3 random spans anywhere

Given frames get t = 0 (so ``x_t`` equals the clean latent there exactly) and are excluded from
the loss (``flow.flow_loss(frame_mask=~given)``): the model would otherwise be rewarded for copying
its input. At least one frame is always generated; a one-frame sample (an image) is always "none".
"""

from __future__ import annotations

import torch

from .dit_config import STRATEGIES, MaskConfig

# Fewest latent frames each strategy needs to leave at least one frame generated.
_MIN_FRAMES = {"none": 1, "first_frame": 2, "first_frames": 2, "last_frames": 2, "both_ends": 3, "random_spans": 2}


def sample_strategies(
    batch: int, frames: int, cfg: MaskConfig, generator: torch.Generator | None = None
) -> list[str]:
    """One strategy per sample, drawn with the configured weights among those ``frames`` allows."""
    allowed = {k: w for k, w in cfg.weights().items() if w > 0 and frames >= _MIN_FRAMES[k]}
    if not allowed:
        return ["none"] * batch
    names = list(allowed)
    w = torch.tensor([allowed[k] for k in names], dtype=torch.float64)
    picks = torch.multinomial(w, batch, replacement=True, generator=generator)
    return [names[i] for i in picks.tolist()]


def _randint(lo: int, hi: int, generator) -> int:
    """Uniform integer in [lo, hi] inclusive."""
    return lo + int(torch.randint(0, hi - lo + 1, (1,), generator=generator).item())


def strategy_mask(strategy: str, frames: int, cfg: MaskConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """(frames,) bool, True where the latent frame is given, for one sample."""
    given = torch.zeros(frames, dtype=torch.bool)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown mask strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
    if frames < _MIN_FRAMES[strategy] or strategy == "none":
        return given
    kmax = max(1, min(frames - 1, int(cfg.max_given * frames)))
    if strategy == "first_frame":
        given[0] = True
    elif strategy == "first_frames":
        given[: _randint(1, kmax, generator)] = True
    elif strategy == "last_frames":
        given[frames - _randint(1, kmax, generator) :] = True
    elif strategy == "both_ends":
        # Both ends share the budget and leave at least one frame between them.
        budget = max(2, min(frames - 1, kmax))
        k1 = _randint(1, budget - 1, generator)
        k2 = _randint(1, budget - k1, generator)
        given[:k1] = True
        given[frames - k2 :] = True
    elif strategy == "random_spans":
        for _ in range(_randint(1, 3, generator)):
            length = _randint(1, kmax, generator)
            start = _randint(0, frames - length, generator)
            given[start : start + length] = True
        if given.all():  # spans may cover everything; keep one frame to generate
            given[_randint(0, frames - 1, generator)] = False
    return given


def sample_given_masks(
    batch: int, frames: int, cfg: MaskConfig, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, list[str]]:
    """Given-frame masks (B, T) bool for a batch of clips with ``frames`` latent frames, and the
    strategy each sample drew."""
    strategies = sample_strategies(batch, frames, cfg, generator)
    masks = torch.stack([strategy_mask(s, frames, cfg, generator) for s in strategies])  # (B, T)
    return masks, strategies


def frame_timesteps(t: torch.Tensor, given: torch.Tensor) -> torch.Tensor:
    """Per-sample timesteps (B,) -> per-frame timesteps (B, T) with given frames at t = 0."""
    return t[:, None].expand(given.shape).masked_fill(given.to(t.device), 0.0)
