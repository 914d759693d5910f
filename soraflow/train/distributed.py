"""Process groups for training and sampling on several processes (``torchrun``), and the helpers around them.

The same program runs alone or under ``torchrun``: :func:`init_distributed` reads torchrun's
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and returns a
:class:`World`; without it, a one-process :class:`World` and no process group.

Ranks form a (data, sequence) grid: ``world = dp * sp``. The ``sp`` ranks of one data-parallel group
hold the tokens of the same videos (Ulysses, :mod:`soraflow.parallel.ulysses`); data is sharded over
the ``dp`` groups only. Rank ``r`` is ``dp_rank * sp + sp_rank``, so a sequence-parallel group is a
block of consecutive ranks (on one node when ``sp`` divides the GPUs per node: all-to-all wants NVLink).

Failure handling: every collective has a timeout (``ParallelConfig.timeout``), a rank that raises
logs its error once and leaves the process group, and a lost peer becomes a one-line
:class:`DistributedError` (the CLI prints it and exits 2) instead of a stack of C++ frames.
Under torchrun a rank that exits non-zero makes the agent stop the other ranks within seconds.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.distributed as dist

from ..errors import SoraflowError

log = logging.getLogger(__name__)

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(SoraflowError):
    """A multi-process job that cannot go on: a rank died or stopped answering, a bad layout."""


@dataclass
class World:
    """Where this process sits: its rank, the grid of (data, sequence) parallel ranks, its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    sp_size: int = 1  # ranks that split one video's tokens (Ulysses)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None  # None: no process group (one process)
    sp_group: Any = None  # process group of this rank's sequence-parallel ranks (None when sp_size == 1)
    mesh: Any = None  # 1-D DeviceMesh over all ranks (FSDP shards over it); None for one process

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def dp_size(self) -> int:
        return self.world_size // self.sp_size

    @property
    def dp_rank(self) -> int:
        return self.rank // self.sp_size

    @property
    def sp_rank(self) -> int:
        return self.rank % self.sp_size

    def describe(self) -> str:
        return f"rank {self.rank}/{self.world_size} (dp {self.dp_rank}/{self.dp_size}, sp {self.sp_rank}/{self.sp_size}) on {self.device}, {self.backend or 'no process group'}"


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher setting its variables) started this process."""
    return all(v in os.environ for v in ("RANK", "WORLD_SIZE")) and int(os.environ["WORLD_SIZE"]) >= 1 and "LOCAL_RANK" in os.environ


def launched_rank() -> int:
    """This process's global rank as torchrun set it (0 without torchrun); valid before and after the group exists."""
    return int(os.environ["RANK"]) if launched_by_torchrun() else 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1")) if launched_by_torchrun() else 1


def init_distributed(
    *,
    sp_size: int = 1,
    backend: str = "auto",
    timeout: float = 600.0,
    device: str | torch.device | None = None,
) -> World:
    """Join the process group torchrun set up (idempotent) and return this process's :class:`World`.

    ``backend`` "auto" is nccl when CUDA is available, else gloo. ``device`` defaults to
    ``cuda:LOCAL_RANK`` with CUDA, else the CPU. Without torchrun's variables: a one-process World.
    """
    if not launched_by_torchrun() and not dist.is_initialized():
        if sp_size != 1:
            raise DistributedError(f"sequence parallelism over {sp_size} ranks needs torchrun --nproc-per-node {sp_size} (or more)")
        return World(device=torch.device(device) if device is not None else torch.device("cpu"))
    rank = int(os.environ.get("RANK", dist.get_rank() if dist.is_initialized() else 0))
    world_size = int(os.environ.get("WORLD_SIZE", dist.get_world_size() if dist.is_initialized() else 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if world_size % sp_size:
        raise DistributedError(f"--parallel-sequence {sp_size} does not divide the world size {world_size}")
    cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
    if device is None:
        device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda":  # one GPU per local rank, whatever index a saved config names
        device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        try:
            dist.init_process_group(
                backend=backend, rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=timeout),
                device_id=device if device.type == "cuda" else None,
            )
        except (RuntimeError, ValueError, TimeoutError) as err:
            raise DistributedError(f"rank {rank}: cannot join the process group ({_one_line(err)})") from None
    backend = dist.get_backend()
    # Every rank must create every subgroup, in the same order, even those it is not in.
    sp_group = None
    if sp_size > 1:
        for start in range(0, world_size, sp_size):
            g = dist.new_group(list(range(start, start + sp_size)))
            if start <= rank < start + sp_size:
                sp_group = g
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (world_size,), mesh_dim_names=("world",))
    world = World(rank, world_size, local_rank, sp_size, device, backend, sp_group, mesh)
    log.debug("joined: %s", world.describe())
    return world


def destroy_distributed() -> None:
    """Leave the process group (safe to call twice, or without one)."""
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


@contextlib.contextmanager
def distributed_session(**kwargs) -> Iterator[World]:
    """``with distributed_session(sp_size=2) as world: ...``: init, rank-0 logging, clean exit.

    On an error a rank logs one line naming itself, leaves the process group and re-raises; a
    collective that failed because a peer vanished is re-raised as :class:`DistributedError`.
    """
    world = init_distributed(**kwargs)
    restore = rank_zero_logging(world)
    try:
        yield world
    except SoraflowError as err:
        if world.distributed and not str(err).startswith("rank "):
            try:  # the CLI prints the one line; say which rank it came from
                renamed = type(err)(f"rank {world.rank}: {err}")
            except TypeError:
                raise err from None
            raise renamed from None
        raise
    except (RuntimeError, dist.DistError) as err:  # gloo/NCCL report a lost peer as RuntimeError
        if world.distributed and _is_comm_failure(err):
            raise DistributedError(
                f"rank {world.rank}: lost contact with the other ranks ({_one_line(err)[:160]}); "
                "the job stops, run the same command again to resume from the latest checkpoint"
            ) from None
        raise
    finally:
        restore()
        destroy_distributed()


def _is_comm_failure(err: BaseException) -> bool:
    text = str(err).lower()
    words = ("connection", "peer", "timed out", "timeout", "gloo", "nccl", "socket", "broken pipe", "closed", "aborted")
    return isinstance(err, dist.DistError) or any(w in text for w in words)


# ----------------------------------------------------------------------------------------------
# Small collectives (no-ops on one process)


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_reduce_mean(value: float | torch.Tensor, group=None, weight: float = 1.0) -> float:
    """Mean of ``value`` over the ranks of ``group`` (weighted by ``weight``; e.g. the local batch size)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return float(value)
    t = torch.tensor([float(value) * weight, weight], dtype=torch.float64)
    if dist.get_backend(group) == "nccl":
        t = t.cuda()
    dist.all_reduce(t, group=group)
    return float(t[0] / t[1])


def all_reduce_max(value: float, group=None) -> float:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64)
    if dist.get_backend(group) == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return float(t[0])


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank (pickled; small things only: paths, flags)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


# ----------------------------------------------------------------------------------------------
# Logging


class _RankFilter(logging.Filter):
    """On ranks > 0: drop records below WARNING and prefix the rest with the rank."""

    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        if self.rank == 0:
            return True
        if record.levelno < logging.WARNING:
            return False
        if not getattr(record, "_soraflow_rank", False):
            record.msg = f"[rank {self.rank}] {record.msg}"
            record._soraflow_rank = True
        return True


def rank_zero_logging(world: World):
    """Log INFO from rank 0 only (warnings from every rank, tagged); returns a function that undoes it."""
    if not world.distributed or world.rank == 0:
        return lambda: None
    filt = _RankFilter(world.rank)
    logger = logging.getLogger("soraflow")
    logger.addFilter(filt)
    handlers = list(logging.getLogger().handlers)
    for h in handlers:
        h.addFilter(filt)

    def undo():
        logger.removeFilter(filt)
        for h in handlers:
            h.removeFilter(filt)

    return undo


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]


__all__ = [
    "DistributedError", "World", "all_reduce_max", "all_reduce_mean", "barrier", "broadcast_object",
    "destroy_distributed", "distributed_session", "env_world_size", "init_distributed", "is_main_process",
    "launched_by_torchrun", "launched_rank", "rank_zero_logging",
]
