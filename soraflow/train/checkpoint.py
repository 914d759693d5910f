"""Training checkpoints: one directory per step, written atomically, weights in safetensors.

Layout of ``RUN/checkpoints/step_00001000/``::

    <module>.safetensors     one per module (model, "ema", ...): the state_dict, never pickle
    optim.<name>.safetensors optimizer tensors (exp_avg, exp_avg_sq, step, ...)
    optim.<name>.json        the rest of the optimizer state (param_groups, scalars), tensors by key
    rng.safetensors          torch CPU (and CUDA) generator states
    rng.json                 python ``random`` and numpy generator states
    config.json              the resolved config of the run
    extra.json               the caller's extra state (data position, EMA counters, ...)
    checkpoint.json          step, module and optimizer names; written last, marks a complete checkpoint

A checkpoint is first written to a hidden temporary directory, every file and the directory are
fsynced, and only then is it renamed to ``step_XXXXXXXX``. A crash mid-write leaves a hidden
temporary directory that :func:`latest_checkpoint` never picks (and the next save removes), so the
previous checkpoint stays the latest.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import save_file

from ..errors import CheckpointError
from ..weights import check_finite, load_state_dict_checked  # noqa: F401  (load_state_dict_checked: re-exported, part of this module's API)

from .checkpoint_files import (  # noqa: F401  (the layout's names are part of this module's API)
    FORMAT_VERSION,
    _TMP_PREFIX,
    LoadedCheckpoint,
    checkpoint_dir,
    publish_checkpoint,
    prune_checkpoints,
    list_checkpoints,
    latest_checkpoint,
    resolve_checkpoint,
    flatten_state,
    unflatten_state,
    _rng_state,
    _set_rng_state,
    config_to_jsonable,
    _load_tensors,
    load_json,
    _dump_json,
    _remove_stale,
    _check_name,
    _one_line,
)


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    *,
    modules: Mapping[str, Any],
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    config: Any = None,
    extra: dict | None = None,
    keep_last: int | None = 3,
) -> Path:
    """Write ``run_dir/checkpoints/step_{step:08d}/`` atomically and return its path.

    ``modules`` maps names to anything with ``state_dict()`` (an ``nn.Module``, an :class:`EMA`).
    ``config`` is a dataclass or a dict (saved resolved, as JSON). ``extra`` must be JSON-serialisable.
    ``keep_last`` keeps that many newest checkpoints and removes older ones (None or 0: keep all).
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        from .dcp import save_dcp_checkpoint  # several ranks: each writes its own shards (torch.distributed.checkpoint)

        return save_dcp_checkpoint(run_dir, step, modules=modules, optimizers=optimizers, config=config, extra=extra, keep_last=keep_last)
    if step < 0:
        raise CheckpointError(f"checkpoint step must be >= 0, got {step}")
    for name in modules:
        _check_name(name)
    optimizers = dict(optimizers or {})
    for name in optimizers:
        _check_name(name)
    # Weights that went NaN or infinite would make this the "latest" checkpoint and every resume
    # and export after it useless: refuse to write it, so the last good one stays the latest.
    for name, module in modules.items():
        check_finite(module.state_dict(), f"module {name!r} at step {step} (not saved; the last good checkpoint is kept)")

    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale(root)
    final = checkpoint_dir(run_dir, step)
    tmp = root / f"{_TMP_PREFIX}{step:08d}.{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        for name, module in modules.items():
            state = _unshare(module.state_dict())
            save_file(state, str(tmp / f"{name}.safetensors"), metadata={"format": "pt", "soraflow_step": str(step)})
        for name, opt in optimizers.items():
            tensors, meta = flatten_state(opt.state_dict(), prefix="")
            save_file(_unshare(tensors), str(tmp / f"optim.{name}.safetensors"))
            _dump_json(tmp / f"optim.{name}.json", meta)
        rng_tensors, rng_json = _rng_state()
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        _dump_json(tmp / "rng.json", rng_json)
        _dump_json(tmp / "config.json", config_to_jsonable(config))
        _dump_json(tmp / "extra.json", extra or {})
        # Written last: its presence marks a checkpoint whose every file is complete.
        _dump_json(
            tmp / "checkpoint.json",
            {"format": FORMAT_VERSION, "step": step, "modules": list(modules), "optimizers": list(optimizers)},
        )
        publish_checkpoint(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep_last:
        prune_checkpoints(run_dir, keep_last)
    return final

def load_checkpoint(
    path: str | os.PathLike,
    *,
    modules: Mapping[str, Any],
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    restore_rng: bool = True,
    strict: bool = True,
) -> LoadedCheckpoint:
    """Restore ``modules`` and ``optimizers`` in place (and the RNG states) from a checkpoint.

    ``path`` is a checkpoint directory or a run directory (then its latest checkpoint). A module
    whose keys do not match raises :class:`CheckpointError` listing missing and unexpected keys in
    one line (``strict=False``: load what matches and ignore the rest).
    """
    path = resolve_checkpoint(path)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
    from .dcp import is_dcp_checkpoint, load_dcp_checkpoint

    if distributed or is_dcp_checkpoint(path):  # a sharded checkpoint, or sharded modules: resharded by DCP

        return load_dcp_checkpoint(path, modules=modules, optimizers=optimizers, restore_rng=restore_rng, strict=strict)
    meta = load_json(path / "checkpoint.json")
    for name, module in modules.items():
        state = _load_tensors(path / f"{name}.safetensors", what=f"module {name!r}")
        load_state_dict_checked(module, state, strict=strict, source=f"{path} module {name!r}")
    for name, opt in (optimizers or {}).items():
        tensors = _load_tensors(path / f"optim.{name}.safetensors", what=f"optimizer {name!r}")
        state = unflatten_state(load_json(path / f"optim.{name}.json"), tensors)
        try:
            opt.load_state_dict(state)
        except (ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(f"{path}: optimizer {name!r} does not match: {_one_line(err)}") from None
    if restore_rng:
        _set_rng_state(
            _load_tensors(path / "rng.safetensors", what="RNG state"), load_json(path / "rng.json")
        )
    config = load_json(path / "config.json") if (path / "config.json").is_file() else {}
    extra = load_json(path / "extra.json") if (path / "extra.json").is_file() else {}
    return LoadedCheckpoint(step=int(meta["step"]), config=config or {}, extra=extra or {}, path=path)

def _unshare(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights): copy the repeats."""
    out, seen = {}, set()
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"state entry {k!r} is a {type(v).__name__}, not a tensor")
        v = v.detach()
        if v.device.type != "cpu":
            v = v.cpu()
        if v.numel():
            storage = v.untyped_storage()
            whole = storage.nbytes() == v.numel() * v.element_size()
            if storage.data_ptr() in seen or not whole or not v.is_contiguous():
                v = v.clone(memory_format=torch.contiguous_format)
            seen.add(v.untyped_storage().data_ptr())
        out[k] = v
    return out


__all__ = ["save_checkpoint", "load_checkpoint", "load_state_dict_checked", "LoadedCheckpoint", "checkpoint_dir",
           "list_checkpoints", "latest_checkpoint", "resolve_checkpoint", "prune_checkpoints", "publish_checkpoint",
           "flatten_state", "unflatten_state", "config_to_jsonable", "load_json", "FORMAT_VERSION"]
