"""``train_dit``: the one entry point of DiT training, on one process or on the ranks torchrun started.

It sits apart from :mod:`soraflow.train.dit` (the trainer) and :mod:`soraflow.train.dit_parallel`
(its subclass for many ranks) so that neither of those imports the other's importer.
"""

from __future__ import annotations

from .dit import DiTTrainer, TrainResult
from .dit_config import TrainDiTConfig
from .distributed import launched_by_torchrun


def train_dit(cfg: TrainDiTConfig, *, progress: bool = True, on_step=None, on_checkpoint=None) -> TrainResult:
    """Train (or resume training) a DiT as configured; see :class:`TrainDiTConfig`. Under torchrun the
    same call runs on every rank (:mod:`soraflow.train.dit_parallel`)."""
    if launched_by_torchrun():
        from .dit_parallel import train_dit_distributed

        return train_dit_distributed(cfg, progress=progress, on_step=on_step, on_checkpoint=on_checkpoint)
    return DiTTrainer(cfg, progress=progress, on_step=on_step, on_checkpoint=on_checkpoint).run()


__all__ = ["train_dit"]
