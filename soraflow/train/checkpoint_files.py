"""The files of a run's checkpoints: step folders, how they are named, listed, published and pruned,
and the JSON, tensor and RNG-state pieces that both checkpoint writers use (one process:
:mod:`soraflow.train.checkpoint`; many ranks: :mod:`soraflow.train.dcp`). The layout is described in
:mod:`soraflow.train.checkpoint`."""


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
from safetensors.torch import load_file

from ..errors import CheckpointError


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

def checkpoint_dir(run_dir: str | os.PathLike, step: int) -> Path:
    """Where the checkpoint of ``step`` lives (whether or not it exists)."""
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}"

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
