"""Exponential moving average of model weights (the weights one samples from after training).

The average lives in a full copy of the model (``ema.module``), so it can be saved as a module
named "ema" in a checkpoint, exported with ``save_pretrained`` and used for sampling as is.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import InputError


class EMA:
    """``ema = decay * ema + (1 - decay) * model`` after every optimizer step.

    ``warmup_steps`` > 0 ramps the decay up as ``min(decay, (1 + n) / (warmup_steps + n))`` so the
    average is not dominated by the random initialisation early in a run. Floating-point buffers
    are copied, not averaged (they are statistics or constants, not trained values).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, *, warmup_steps: int = 0):
        if not 0.0 <= decay <= 1.0:
            raise InputError(f"EMA decay {decay} must be in [0, 1]")
        if warmup_steps < 0:
            raise InputError(f"EMA warmup_steps {warmup_steps} must be >= 0")
        self.decay = decay
        self.warmup_steps = warmup_steps
        self.num_updates = 0  # saved by trainers in a checkpoint's extra.json (see state())
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        if self.warmup_steps <= 0:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1 + n) / (self.warmup_steps + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        ema_params = dict(self.module.named_parameters())
        for name, p in model.named_parameters():
            e = ema_params[name]
            # lerp_ is one fused pass: e += (1 - decay) * (p - e)
            e.lerp_(p.detach().to(e.dtype), 1.0 - decay)
        ema_buffers = dict(self.module.named_buffers())
        for name, b in model.named_buffers():
            ema_buffers[name].copy_(b)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (e.g. to evaluate with them)."""
        model.load_state_dict(self.module.state_dict())

    # A checkpoint treats an EMA like a module: its state_dict is the averaged model's.
    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state, strict: bool = True):
        return self.module.load_state_dict(state, strict=strict)

    def state(self) -> dict:
        """Counters to keep in a checkpoint's extra.json for an exact resume."""
        return {"num_updates": self.num_updates, "decay": self.decay, "warmup_steps": self.warmup_steps}

    def load_state(self, state: dict) -> None:
        self.num_updates = int(state.get("num_updates", 0))

    def to(self, *args, **kwargs) -> "EMA":
        self.module.to(*args, **kwargs)
        return self
