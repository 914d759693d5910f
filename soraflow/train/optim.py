"""Optimizer and learning-rate schedule shared by the trainers: AdamW, linear warmup + cosine decay.

The schedule is a pure function of the step (no scheduler object with its own state), so resuming
from a checkpoint needs nothing but the step number.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import InputError


def lr_multiplier(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> float:
    """Multiplier of the peak learning rate for optimizer step ``step`` (0-based).

    Linear warmup from ``1 / warmup_steps`` to 1 over the first ``warmup_steps`` steps, then a
    half cosine from 1 down to ``min_ratio`` at ``total_steps``; ``min_ratio`` after that.
    """
    if total_steps < 1:
        raise InputError(f"total_steps must be >= 1, got {total_steps}")
    if not 0.0 <= min_ratio <= 1.0:
        raise InputError(f"min_ratio must be in [0, 1], got {min_ratio}")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices and conv kernels only; biases, norm gains, modulation
    tables and other 1-D parameters are not decayed (decaying them towards 0 only hurts)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "scale_shift_table" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_adamw(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    # foreach: one fused kernel over all tensors; fine on CPU and deterministic.
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, foreach=True)
