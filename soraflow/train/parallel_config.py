"""How a training run is spread over processes (no torch import: the CLI builds its options instantly).

A nested field of the trainers' configs, so every field is a ``--parallel-*`` option of
``soraflow train dit``. Nothing here matters when the run is a single process; under ``torchrun``
(``WORLD_SIZE`` > 1) see :mod:`soraflow.train.parallelize` and docs/distributed.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from .config import option

MODES = ("auto", "ddp", "fsdp")


@dataclass
class ParallelConfig:
    """Data parallelism, sharding, sequence parallelism, activation checkpointing, compile."""

    mode: str = option("auto", choices=MODES)  # auto: fsdp for models of 500M parameters or more, ddp below (only used under torchrun)
    sequence: int = option(1, ge=1)  # Ulysses sequence-parallel degree: ranks that split the tokens of one video (divides the world size and the attention heads)
    param_dtype: str = option("fp32", choices=("fp32", "bf16"))  # fsdp: dtype parameters are all-gathered and computed in (gradients are reduced in fp32)
    reshard_after_forward: bool = True  # fsdp: free gathered block weights after forward (ZeRO-3); false keeps them until backward (ZeRO-2, more memory, less traffic)
    activation_checkpointing: bool = False  # recompute each transformer block in backward instead of keeping its activations
    compile: bool = False  # torch.compile each transformer block (the first steps are slow while it compiles)
    timeout: float = option(600.0, gt=0)  # seconds a collective may wait for the other ranks before the job fails
    backend: str = option("auto", choices=("auto", "nccl", "gloo"))  # process-group backend: auto = nccl on CUDA, gloo on CPU

    def validate(self) -> None:
        if self.compile and self.sequence > 1:
            raise InputError("--parallel-compile with --parallel-sequence > 1 is not supported (the all-to-all hooks break the graph)")
