"""Sharded training checkpoints with ``torch.distributed.checkpoint`` (DCP), loadable on any number of ranks.

Same folder layout and the same call signatures as :mod:`soraflow.train.checkpoint` (which hands a
multi-process save to :func:`save_dcp_checkpoint` and a DCP folder to :func:`load_dcp_checkpoint`),
so trainers do not know which one they use::

    RUN/checkpoints/step_00001000/
        state/                 one shard-<rank>-model-00001-of-00001.safetensors per rank (its shards; each
                               tensor's offsets in the file's JSON header), written through DCP
        state.json             every non-tensor leaf of the state (optimizer hyper-parameters), as JSON
        rng.rank00000.safetensors, rng.rank00000.json, ...   every rank's torch/numpy/python RNG
        config.json, extra.json
        checkpoint.json        {"backend": "dcp", "world_size": ..., ...}; written last: marks it complete

Resharding is DCP's: each tensor is stored as the shards that existed at save time plus their offsets,
and a load asks for the shards its own layout needs. The files are safetensors and JSON only, read
through DCP's safetensors reader: DCP's default format pickles its metadata (``.metadata``), and a run
folder someone sent you must be as safe to load as a safetensors file, so that format is refused
before anything in it is read. A run saved by 2 FSDP ranks resumes on 1 process
(plain tensors, no process group) or on 4, and a single-process (safetensors) checkpoint resumes on
several ranks (:func:`load_dcp_checkpoint` reads it whole and lets each rank keep its shard).

:func:`export_safetensors` turns one module of a DCP checkpoint into one safetensors file for inference.

Assumption: all ranks see the run folder (one node, or a shared filesystem across nodes).
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.distributed as dist
from torch import nn

from ..atomic import atomic_path
from ..errors import CheckpointError
from .checkpoint_files import (
    _TMP_PREFIX,
    FORMAT_VERSION,
    LoadedCheckpoint,
    _check_name,
    _dump_json,
    load_json,
    _load_tensors,
    _one_line,
    _remove_stale,
    _rng_state,
    _set_rng_state,
    checkpoint_dir,
    config_to_jsonable,
    prune_checkpoints,
    publish_checkpoint,
    resolve_checkpoint,
    unflatten_state,
)

BACKEND = "dcp"
STATE_DIR = "state"


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


NONTENSOR_FILE = "state.json"
PICKLED_METADATA = ".metadata"  # DCP's default (pickle) format: never read


def is_dcp_checkpoint(path: str | os.PathLike) -> bool:
    """True for a checkpoint folder written by :func:`save_dcp_checkpoint` (or in DCP's pickle format,
    which loading then refuses)."""
    return (Path(path) / STATE_DIR).is_dir()


def _refuse_pickled(path: Path) -> None:
    if (path / STATE_DIR / PICKLED_METADATA).exists():
        raise CheckpointError(
            f"{path}: {STATE_DIR}/{PICKLED_METADATA} is torch's pickle-based checkpoint metadata, which soraflow "
            f"does not read (unpickling a file can run code); only checkpoints in safetensors + JSON load"
        )


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists -> {"a/b/0": leaf}; keys are built the same way on save and load, so
    they are matched, never parsed ("/" keeps them apart from the dots inside parameter names)."""
    if isinstance(obj, Mapping):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return {prefix: obj}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(_flatten(value, f"{prefix}/{key}" if prefix else str(key)))
    return flat


def _fill(obj: Any, values: Mapping[str, Any], prefix: str = "") -> Any:
    """``obj``'s structure with every non-tensor leaf replaced by ``values[key]`` (tuples stay tuples).
    A leaf the checkpoint lacks keeps the loader's value: an option a newer torch added to its
    optimizers' groups takes its default, as it would on a fresh run."""
    if isinstance(obj, Mapping):
        return {k: _fill(v, values, f"{prefix}/{k}" if prefix else str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        out = [_fill(v, values, f"{prefix}/{i}" if prefix else str(i)) for i, v in enumerate(obj)]
        return tuple(out) if isinstance(obj, tuple) else out
    if isinstance(obj, torch.Tensor):
        return obj
    return values.get(prefix, obj)


def _split(state: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    flat = _flatten(state)
    tensors = {k: v for k, v in flat.items() if isinstance(v, torch.Tensor)}
    plain = {k: v for k, v in flat.items() if not isinstance(v, torch.Tensor)}
    for key, value in plain.items():
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise CheckpointError(f"cannot store {key!r} ({type(value).__name__}) in a checkpoint: tensors and JSON values only")
    return tensors, plain


def _module(obj: Any) -> nn.Module:
    """An nn.Module, or the module behind a wrapper that keeps one (an EMA)."""
    if isinstance(obj, nn.Module):
        return obj
    inner = getattr(obj, "module", None)
    if isinstance(inner, nn.Module):
        return inner
    raise CheckpointError(f"cannot checkpoint a {type(obj).__name__} with DCP (not an nn.Module, no .module)")


def _owner(opt: torch.optim.Optimizer, modules: Mapping[str, nn.Module], name: str) -> nn.Module:
    """The module whose parameters ``opt`` updates (DCP keys optimizer state by parameter name)."""
    first = next((p for g in opt.param_groups for p in g["params"]), None)
    for m in modules.values():
        if first is None or any(p is first for p in m.parameters()):
            return m
    raise CheckpointError(f"optimizer {name!r} updates no parameter of the checkpointed modules")


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(**kw)


# ----------------------------------------------------------------------------------------------
# Save


def save_dcp_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    *,
    modules: Mapping[str, Any],
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    config: Any = None,
    extra: dict | None = None,
    keep_last: int | None = 3,
) -> Path:
    """Collective: every rank calls it with its (sharded or replicated) modules; returns the folder.

    Written to a hidden temporary folder and renamed by rank 0 once every rank's shards are on disk.
    """
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    if step < 0:
        raise CheckpointError(f"checkpoint step must be >= 0, got {step}")
    names = list(modules) + list(optimizers or {})
    for name in names:
        _check_name(name)
    rank, world = _dist()
    mods = {name: _module(m) for name, m in modules.items()}
    root = Path(run_dir) / "checkpoints"
    final = checkpoint_dir(run_dir, step)
    tmp = root / f"{_TMP_PREFIX}{step:08d}.{BACKEND}"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale(root)
        tmp.mkdir()
    _barrier()
    try:
        state: dict[str, Any] = {name: get_model_state_dict(m) for name, m in mods.items()}
        for name, opt in (optimizers or {}).items():
            state[f"optim.{name}"] = get_optimizer_state_dict(_owner(opt, mods, name), opt)
        tensors, plain = _split(state)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*assuming the intent is to", category=UserWarning)
            dcp.save(tensors, storage_writer=dcp.HuggingFaceStorageWriter(str(tmp / STATE_DIR), save_distributed=True),
                     no_dist=world == 1)
        if rank == 0:
            _dump_json(tmp / NONTENSOR_FILE, plain)
        rng_tensors, rng_json = _rng_state()
        save_file(rng_tensors, str(tmp / f"rng.rank{rank:05d}.safetensors"))
        _dump_json(tmp / f"rng.rank{rank:05d}.json", rng_json)
        _barrier()
        if rank == 0:
            _dump_json(tmp / "config.json", config_to_jsonable(config))
            _dump_json(tmp / "extra.json", extra or {})
            _dump_json(
                tmp / "checkpoint.json",
                {"format": FORMAT_VERSION, "backend": BACKEND, "step": step, "world_size": world,
                 "modules": list(modules), "optimizers": list(optimizers or {})},
            )
            publish_checkpoint(tmp, final)
            if keep_last:
                prune_checkpoints(run_dir, keep_last)
    except BaseException:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    _barrier()
    return final


# ----------------------------------------------------------------------------------------------
# Load


def load_dcp_checkpoint(
    path: str | os.PathLike,
    *,
    modules: Mapping[str, Any],
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    restore_rng: bool = True,
    strict: bool = True,
) -> LoadedCheckpoint:
    """Restore modules and optimizers in place from a checkpoint, whatever world size wrote it.

    Collective when a process group is up (every rank calls it). A DCP folder is resharded to the
    caller's layout; a single-process safetensors checkpoint is read whole by every rank and each
    keeps its shard. Each rank gets its own saved RNG state back (rank 0's when it had none).
    """
    path = resolve_checkpoint(path)
    meta = load_json(path / "checkpoint.json")
    mods = {name: _module(m) for name, m in modules.items()}
    saved = set(meta.get("modules", [])) | {f"optim.{n}" for n in meta.get("optimizers", [])}
    wanted = set(modules) | {f"optim.{n}" for n in optimizers or {}}
    missing = sorted(wanted - saved)
    if missing:
        raise CheckpointError(f"{path} has no {', '.join(missing)} (it holds {', '.join(sorted(saved)) or 'nothing'})")
    if is_dcp_checkpoint(path):
        _refuse_pickled(path)
        _load_dcp_state(path, mods, optimizers or {}, strict)
    else:
        _load_full_state(path, mods, optimizers or {}, strict)
    if restore_rng:
        rank, _ = _dist()
        stem = f"rng.rank{rank:05d}"
        if not (path / f"{stem}.safetensors").is_file():  # saved on fewer ranks, or by one process
            stem = "rng.rank00000" if is_dcp_checkpoint(path) else "rng"
        _set_rng_state(_load_tensors(path / f"{stem}.safetensors", what="RNG state"), load_json(path / f"{stem}.json"))
    config = load_json(path / "config.json") if (path / "config.json").is_file() else {}
    extra = load_json(path / "extra.json") if (path / "extra.json").is_file() else {}
    return LoadedCheckpoint(step=int(meta["step"]), config=config or {}, extra=extra or {}, path=path)


def _load_dcp_state(path: Path, mods: dict[str, nn.Module], optimizers, strict: bool) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    state: dict[str, Any] = {name: get_model_state_dict(m) for name, m in mods.items()}
    owners = {name: _owner(opt, mods, name) for name, opt in optimizers.items()}
    for name, opt in optimizers.items():
        state[f"optim.{name}"] = get_optimizer_state_dict(owners[name], opt)
    tensors, _ = _split(state)
    try:
        # Keys are read into the tensors (or DTensor shards) this process holds: that is the resharding.
        with warnings.catch_warnings():  # DCP warns that it assumes one process when there is no group: we mean it
            warnings.filterwarnings("ignore", message=".*assuming the intent is to", category=UserWarning)
            # Pickle-free: the safetensors reader builds DCP's metadata from the files' JSON headers, and
            # every entry is a tensor (read with safe_open), so DCP's byte items (torch.load) never occur.
            dcp.load(tensors, storage_reader=dcp.HuggingFaceStorageReader(str(path / STATE_DIR)),
                     no_dist=_dist()[1] == 1)
    except Exception as err:  # DCP wraps per-rank failures in CheckpointException
        raise CheckpointError(f"{path}: cannot load the sharded checkpoint: {_one_line(err)}") from None
    plain = load_json(path / NONTENSOR_FILE)
    if not isinstance(plain, dict):
        raise CheckpointError(f"{path / NONTENSOR_FILE} is not a JSON object")
    state = _fill(state, plain)  # the tensors were filled in place; the rest comes from the JSON
    for name, m in mods.items():
        set_model_state_dict(m, state[name], options=_options(strict=strict))
    for name, opt in optimizers.items():
        set_optimizer_state_dict(owners[name], opt, state[f"optim.{name}"])


def _load_full_state(path: Path, mods: dict[str, nn.Module], optimizers, strict: bool) -> None:
    """A single-process checkpoint (safetensors) into possibly sharded modules."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    for name, m in mods.items():
        full = _load_tensors(path / f"{name}.safetensors", what=f"module {name!r}")
        own = set(m.state_dict())
        missing, unexpected = sorted(own - set(full)), sorted(set(full) - own)
        if strict and (missing or unexpected):
            raise CheckpointError(f"{path} module {name!r} does not match the model: missing {missing[:4]}, unexpected {unexpected[:4]}")
        set_model_state_dict(m, full, options=_options(full_state_dict=True, strict=strict))
    for name, opt in optimizers.items():
        owner = _owner(opt, mods, name)
        tensors = _load_tensors(path / f"optim.{name}.safetensors", what=f"optimizer {name!r}")
        by_index = unflatten_state(load_json(path / f"optim.{name}.json"), tensors)
        set_optimizer_state_dict(owner, opt, _keyed_by_name(by_index, opt, owner), options=_options(full_state_dict=True))


def _keyed_by_name(state: dict, opt: torch.optim.Optimizer, model: nn.Module) -> dict:
    """``Optimizer.state_dict()`` (parameters numbered in group order) -> keyed by parameter name, as DCP wants."""
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in opt.param_groups for p in g["params"]]
    saved_groups = state["param_groups"]
    if sum(len(g["params"]) for g in saved_groups) != len(order):
        raise CheckpointError("the saved optimizer state has a different number of parameters than this model")
    index_to_name = {}
    for g in saved_groups:
        for i in g["params"]:
            index_to_name[i] = order[len(index_to_name)]
    return {
        "state": {index_to_name[i]: v for i, v in state["state"].items()},
        "param_groups": [{**g, "params": [index_to_name[i] for i in g["params"]]} for g in saved_groups],
    }


# ----------------------------------------------------------------------------------------------
# Export


def export_safetensors(
    checkpoint: str | os.PathLike,
    out_file: str | os.PathLike,
    *,
    module: str = "ema",
    dtype: torch.dtype | None = None,
) -> Path:
    """Write one module of a checkpoint (DCP or not) as a single safetensors file of full tensors.

    Needs no model class and no process group: shapes and dtypes come from DCP's metadata. Keys are
    the module's own parameter names (``blocks.0.attn1.to_q.weight``), so the file loads with
    ``load_state_dict`` (and, next to a config.json, with ``DiT.from_pretrained``).
    """
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    path = resolve_checkpoint(checkpoint)
    if not is_dcp_checkpoint(path):
        state = _load_tensors(path / f"{module}.safetensors", what=f"module {module!r}")
    else:
        _refuse_pickled(path)
        reader = dcp.HuggingFaceStorageReader(str(path / STATE_DIR))  # pickle-free, as in _load_dcp_state
        try:
            md = reader.read_metadata().state_dict_metadata
        except Exception as err:
            raise CheckpointError(f"{path}: cannot read the sharded checkpoint: {_one_line(err)}") from None
        prefix = module + "/"
        state = {
            k: torch.empty(m.size, dtype=m.properties.dtype)
            for k, m in md.items()
            if k.startswith(prefix) and isinstance(m, TensorStorageMetadata)
        }
        if not state:
            mods = sorted({k.split("/")[0] for k in md if not k.startswith("optim.")})
            raise CheckpointError(f"{path} has no module {module!r} (modules: {', '.join(mods)})")
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*assuming the intent is to", category=UserWarning)
                dcp.load(state, storage_reader=reader, no_dist=True)
        except Exception as err:
            raise CheckpointError(f"{path}: cannot read module {module!r}: {_one_line(err)}") from None
        state = {k[len(prefix):]: v for k, v in state.items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    out_file = Path(out_file)
    with atomic_path(out_file) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
    return out_file


__all__ = ["export_safetensors", "is_dcp_checkpoint", "load_dcp_checkpoint", "save_dcp_checkpoint"]
