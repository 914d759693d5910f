"""Apply parallelism to a DiT from outside the model, per transformer block (torchtitan's recipe).

The model file is single-device code; this module turns it into a multi-process one in place,
keeping every parameter name (checkpoints, EMA and optimizer groups see the same keys):

1. activation checkpointing per block (``torch.distributed._composable.checkpoint``: recompute the
   block in backward; the hooks API keeps names, unlike wrapper modules);
2. Ulysses sequence parallelism (:mod:`soraflow.parallel.ulysses`) when ``sp > 1``;
3. ``torch.compile`` per block (``Module.compile``: in place, names kept; a block is the unit that
   repeats, so it compiles once and every block reuses the graph);
4. data parallelism over all ranks: FSDP2 ``fully_shard`` on each block, then on the root (params,
   grads and optimizer state sharded, one block's weights gathered at a time, with a
   ``MixedPrecisionPolicy``), or DDP (``torch.distributed._composable.replicate``: whole replicas,
   gradients all-reduced in buckets during backward).

Order matters: checkpointing before sequence parallelism so a recomputed block re-runs the shard
hook on the original inputs; FSDP last so it wraps the final block modules.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..errors import InputError
from .distributed import World
from .parallel_config import ParallelConfig

log = logging.getLogger(__name__)

# Below this many parameters whole replicas (DDP) are cheaper than sharding; above it FSDP's memory wins.
AUTO_FSDP_PARAMS = 500_000_000


def resolve_mode(cfg: ParallelConfig, model: nn.Module, world: World) -> str:
    """"none", "ddp" or "fsdp" for this model and world ("auto" decided by model size)."""
    if not world.distributed:
        return "none"
    if cfg.mode != "auto":
        return cfg.mode
    n = sum(p.numel() for p in model.parameters())
    return "fsdp" if n >= AUTO_FSDP_PARAMS else "ddp"


def parallelize(model: nn.Module, cfg: ParallelConfig, world: World, *, training: bool = True) -> nn.Module:
    """Apply ``cfg`` to ``model`` (a DiT) in place and return it (the same object, same parameter names).

    Build the optimizer after this call: FSDP replaces the parameters with sharded ones. With
    ``training=False`` no gradient machinery is added (sampling: sequence parallelism and compile only).
    """
    mode = resolve_mode(cfg, model, world) if training else "none"
    if world.sp_size > 1 and training and mode == "none":
        raise InputError("sequence-parallel training needs gradient sync: use --parallel-mode ddp or fsdp")
    blocks = list(model.blocks)
    if cfg.activation_checkpointing and training:
        from torch.distributed._composable import checkpoint

        for block in blocks:
            checkpoint(block)
    if world.sp_size > 1:
        from ..parallel.ulysses import apply_sequence_parallel

        model._sequence_parallel = apply_sequence_parallel(model, world.sp_group)
    if cfg.compile:
        for block in blocks:
            block.compile()
    if mode == "fsdp":
        shard_model(model, cfg, world)
    elif mode == "ddp":
        from torch.distributed._composable import replicate

        kwargs = {"device_ids": [world.device.index]} if world.device.type == "cuda" else {}
        replicate(model, **kwargs)
    model._parallel_mode = mode
    log.info(
        "parallelize: %s over %d rank(s), sequence parallel %d, activation checkpointing %s, compile %s",
        mode, world.world_size, world.sp_size, cfg.activation_checkpointing and training, cfg.compile,
    )
    return model


def shard_model(model: nn.Module, cfg: ParallelConfig, world: World, *, mixed_precision: bool = True) -> nn.Module:
    """FSDP2: ``fully_shard`` each block, then the root (patch embedding, condition embedder, output layer).

    Also used for the EMA copy (``mixed_precision=False``) so its parameters have the same shards as
    the model's and the EMA update stays local.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(
        param_dtype=torch.bfloat16 if (cfg.param_dtype == "bf16" and mixed_precision) else None,
        reduce_dtype=torch.float32,
    )
    blocks = list(model.blocks)
    for i, block in enumerate(blocks):
        # The last block's weights are needed again first in backward: keep them gathered.
        reshard = cfg.reshard_after_forward and i < len(blocks) - 1
        fully_shard(block, mesh=world.mesh, mp_policy=mp, reshard_after_forward=reshard)
    fully_shard(model, mesh=world.mesh, mp_policy=mp, reshard_after_forward=cfg.reshard_after_forward)
    return model


def parallel_mode(model: nn.Module) -> str:
    """What :func:`parallelize` applied: "none", "ddp" or "fsdp"."""
    return getattr(model, "_parallel_mode", "none")


def grad_norm_value(norm) -> float:
    """A clip_grad_norm_ result as a float (FSDP returns a DTensor)."""
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


__all__ = ["AUTO_FSDP_PARAMS", "grad_norm_value", "parallel_mode", "parallelize", "resolve_mode", "shard_model"]
