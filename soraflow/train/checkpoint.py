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

import dataclasses
import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError
from ..weights import check_finite, load_state_dict_checked  # noqa: F401  (load_state_dict_checked: re-exported, part of this module's API)

FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step_(\d{8,})$")
_TMP_PREFIX = ".tmp_step_"
_TRASH_PREFIX = ".trash_step_"


@dataclass
class LoadedCheckpoint:
    """What :func:`load_checkpoint` returns besides restoring modules, optimizers and RNG in place."""

    step: int
    config: dict = field(default_factory=dict)  # the resolved config saved with the checkpoint
    extra: dict = field(default_factory=dict)  # the caller's extra state (data position, ...)
    path: Path | None = None  # the checkpoint directory that was loaded


# ----------------------------------------------------------------------------------------------
# Saving


def checkpoint_dir(run_dir: str | os.PathLike, step: int) -> Path:
    """Where the checkpoint of ``step`` lives (whether or not it exists)."""
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}"


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


def publish_checkpoint(tmp: Path, final: Path) -> None:
    """Make the fully written folder ``tmp`` the checkpoint ``final``: fsync every file and folder,
    then rename, so a crash at any moment leaves either the old checkpoint or the new one."""
    for f in tmp.rglob("*"):
        if f.is_file():
            _fsync_file(f)
    for d in [*(d for d in tmp.rglob("*") if d.is_dir()), tmp]:
        _fsync_dir(d)
    root = final.parent
    if final.exists():
        # Re-saving a step (e.g. after a resume): move the old one aside first; rename over a
        # non-empty directory is not allowed.
        trash = root / f"{_TRASH_PREFIX}{final.name[5:]}.{os.getpid()}"
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(root)


def prune_checkpoints(run_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Remove all but the ``keep_last`` newest checkpoints; returns what was removed."""
    steps = list_checkpoints(run_dir)
    removed = []
    for _, path in steps[: max(0, len(steps) - keep_last)]:
        # Rename first so a crash mid-delete never leaves a half-deleted step_* directory behind.
        trash = path.parent / f"{_TRASH_PREFIX}{path.name[5:]}.{os.getpid()}"
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        removed.append(path)
    return removed


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as (step, path), oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / "checkpoint.json").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run, or None. Temporary (crashed) writes are ignored."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


# ----------------------------------------------------------------------------------------------
# Loading


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """Accept a checkpoint directory or a run directory (its latest checkpoint)."""
    path = Path(path)
    if (path / "checkpoint.json").is_file():
        return path
    if (path / "checkpoints").is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"run directory {path} has no complete checkpoint")
        return latest
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    raise CheckpointError(f"{path} is not a checkpoint (no checkpoint.json) nor a run directory (no checkpoints/)")


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


# ----------------------------------------------------------------------------------------------
# Optimizer state <-> (tensors, JSON)


def flatten_state(obj: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested structure into a flat {key: tensor} dict and a JSON-able skeleton.

    Tensors become ``{"__tensor__": key}``; tuples ``{"__tuple__": [...]}``; dict keys that are not
    strings (optimizer state is keyed by int) are kept as ``{"__dict__": [[key, value], ...]}``.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(x, key):
        if isinstance(x, torch.Tensor):
            tensors[key] = x.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x):
                return {k: walk(v, f"{key}.{k}" if key else k) for k, v in x.items()}
            return {"__dict__": [[k, walk(v, f"{key}.{k}" if key else str(k))] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v, f"{key}.{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{key}.{i}") for i, v in enumerate(x)]
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise CheckpointError(f"cannot save optimizer state value of type {type(x).__name__} at {key!r}")

    return tensors, walk(obj, prefix)


def unflatten_state(skeleton: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            key = skeleton["__tensor__"]
            if key not in tensors:
                raise CheckpointError(f"optimizer state tensor {key!r} is missing from the checkpoint")
            return tensors[key]
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
        if "__dict__" in skeleton:
            return {k: unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
        return {k: unflatten_state(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


# ----------------------------------------------------------------------------------------------
# RNG


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return tensors, {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss},
        "numpy": {
            "name": np_name,
            "keys": np_keys.tolist(),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
    }


def _set_rng_state(tensors: Mapping[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    py = meta["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    n = meta["numpy"]
    np.random.set_state(
        (n["name"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )


# ----------------------------------------------------------------------------------------------
# Helpers


def config_to_jsonable(config: Any) -> Any:
    """A dataclass, dict, Path, tuple ... as plain JSON values."""
    if config is None:
        return {}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    if isinstance(config, dict):
        return {str(k): config_to_jsonable(v) if v is not None else None for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [config_to_jsonable(v) for v in config]
    if isinstance(config, os.PathLike):
        return os.fspath(config)
    if isinstance(config, torch.dtype):
        return str(config).removeprefix("torch.")
    if isinstance(config, (bool, int, float, str)):
        return config
    if hasattr(config, "value") and isinstance(getattr(config, "value"), (int, str)):  # Enum
        return config.value
    return str(config)


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


def _load_tensors(path: Path, *, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path.parent} has no {what} ({path.name} missing)")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"cannot read {what} from {path}: {_one_line(err)}") from None


def load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path.parent} has no {path.name}") from None
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {path}: {_one_line(err)}") from None


def _dump_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale(root: Path) -> None:
    """Remove temporary directories left by a crashed save or prune (single writer per run)."""
    for p in root.iterdir():
        if p.name.startswith((_TMP_PREFIX, _TRASH_PREFIX)) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def _check_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name) or name in {"rng", "config", "extra", "checkpoint"}:
        raise CheckpointError(f"invalid checkpoint entry name {name!r} (letters, digits, _ and -; not a reserved name)")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]
