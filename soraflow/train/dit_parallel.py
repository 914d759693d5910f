"""``soraflow train dit`` under torchrun: the DiT trainer on several processes.

:func:`~soraflow.train.launch.train_dit` comes here when torchrun started the process. The loop, the
loss, the schedule, EMA and the checkpoint contents are the single-process trainer's
(:class:`~soraflow.train.dit.DiTTrainer`); this subclass only changes what differs on many ranks:

- the model is parallelized in place (:func:`~soraflow.train.parallelize.parallelize`: DDP or FSDP2,
  activation checkpointing, compile, Ulysses sequence parallelism) and the optimizer rebuilt over
  the (possibly sharded) parameters; under FSDP the EMA copy is sharded the same way;
- data: each data-parallel group takes every ``dp``-th batch of the same global BucketSampler order
  (the ranks of one sequence-parallel group share a batch);
- randomness: data-parallel group ``g > 0`` draws timesteps, noise and masks from its own stream
  (seeded from (seed, g, step of the last checkpoint)); group 0 continues the single-process stream;
- checkpoints are sharded DCP folders (written by every rank, :mod:`soraflow.train.dcp`); a run
  resumes on another number of ranks (the data position is converted: batches consumed are counted
  globally);
- the logged loss is the mean over all ranks; progress bar and TensorBoard on rank 0 only.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
from pathlib import Path


from ..errors import DataError, InputError
from .dit import DiTTrainer, TrainResult
from .distributed import World, all_reduce_mean, distributed_session
from .optim import param_groups
from .parallelize import parallelize, resolve_mode, shard_model

log = logging.getLogger(__name__)


def _stream_seed(seed: int, group: int, step: int) -> int:
    # A different, reproducible stream per data-parallel group and checkpoint interval.
    return (seed * 1_000_003 + group * 7_919 + step * 104_729) % (2**63)


class DistributedDiTTrainer(DiTTrainer):
    """:class:`DiTTrainer` on the ranks of ``world`` (see the module docstring)."""

    def __init__(self, cfg, *, world: World, progress: bool = True, on_step=None, on_checkpoint=None):
        self.world = world
        if cfg.lora:
            raise InputError("--lora trains on one process; run it without torchrun")
        if world.device.type == "cuda":  # every rank on its own GPU, whatever --device said
            cfg = dataclasses.replace(cfg, device=str(world.device))
        super().__init__(cfg, progress=progress and world.is_main, on_step=on_step, on_checkpoint=on_checkpoint)
        pcfg = cfg.parallel

        # Data: every dp-th batch of the global order; the sp ranks of a group read the same ones.
        self.sampler.num_replicas, self.sampler.rank = world.dp_size, world.dp_rank
        if world.dp_size > 1 and len(self.sampler) == 0:
            raise DataError(
                f"{cfg.data} gives fewer batches per epoch than the {world.dp_size} data-parallel ranks; "
                "lower --batch-tokens or add data"
            )
        self._reseed(0)

        # Model: parallelize in place, then an optimizer over the (sharded) parameters.
        self.mode = resolve_mode(pcfg, self.model, world)
        parallelize(self.model, pcfg, world)
        if self.mode == "fsdp":
            shard_model(self.ema.module, pcfg, world, mixed_precision=False)
        old = self.optimizer  # same class and hyperparameters as the trainer built, over the new parameters
        accepted = inspect.signature(type(old)).parameters
        self.optimizer = type(old)(param_groups(self.model, cfg.weight_decay), **{k: v for k, v in old.defaults.items() if k in accepted})

    def _reseed(self, step: int) -> None:
        if self.world.dp_rank > 0:
            self.generator.manual_seed(_stream_seed(self.cfg.seed, self.world.dp_rank, step))

    # ------------------------------------------------------------------------------------------

    def train_step(self, batch):
        loss, grad_norm = super().train_step(batch)
        return all_reduce_mean(loss), grad_norm

    def save(self) -> Path:
        path = super().save()  # every rank: a collective DCP save
        self._reseed(self.step)
        return path

    def resume(self) -> bool:
        if not super().resume():
            return False
        import json

        meta = json.loads((self.last_checkpoint / "checkpoint.json").read_text())
        saved_cfg = json.loads((self.last_checkpoint / "config.json").read_text())
        saved_sp = int(saved_cfg.get("parallel", {}).get("sequence", 1)) if isinstance(saved_cfg.get("parallel"), dict) else 1
        saved_dp = max(1, int(meta.get("world_size", 1)) // max(1, saved_sp))
        if saved_dp != self.world.dp_size:
            # Batches consumed are counted per rank; convert through the global position.
            consumed = self.consumed * saved_dp
            self.consumed = consumed // self.world.dp_size
            if consumed % self.world.dp_size:
                log.warning(
                    "resuming %d data-parallel rank(s) from %d: %d batch(es) of this epoch are seen again",
                    self.world.dp_size, saved_dp, consumed - self.consumed * self.world.dp_size,
                )
        self._reseed(self.step)
        return True

    def _salience_path(self) -> Path:
        # each rank sees its own batches, so each keeps its own maps; a resumed run reads them all
        return self.run_dir / f"salience.rank{self.world.rank}.safetensors"

    def _tensorboard(self):
        return super()._tensorboard() if self.world.is_main else None

    def write_samples(self, writer=None):
        # FSDP: every rank takes part in the EMA model's forward (weights are gathered); others skip.
        if self.world.is_main or self.mode == "fsdp":
            return super().write_samples(writer if self.world.is_main else None)
        return []


def train_dit_distributed(cfg, *, progress: bool = True, on_step=None, on_checkpoint=None) -> TrainResult:
    """Join torchrun's process group, train, leave it (also on errors; see :func:`distributed_session`)."""
    pcfg = cfg.parallel
    with distributed_session(sp_size=pcfg.sequence, backend=pcfg.backend, timeout=pcfg.timeout, device=cfg.device) as world:
        trainer = DistributedDiTTrainer(cfg, world=world, progress=progress, on_step=on_step, on_checkpoint=on_checkpoint)
        result = trainer.run()
        if not math.isfinite(result.loss):
            log.warning("rank %d ran no step", world.rank)
        return result


__all__ = ["DistributedDiTTrainer", "train_dit_distributed"]
