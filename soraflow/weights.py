"""Reading safetensors weights and loading them into modules, with errors a person can act on.

One place for what every model and checkpoint loader needs: a missing or corrupt file, and
missing, unexpected or mis-shaped keys, each become one :class:`CheckpointError` line that names
the file and the keys. Weights are never unpickled.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch

from .errors import CheckpointError


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of one safetensors file, on the CPU."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        msg = " ".join(str(err).split())[:200]
        raise CheckpointError(f"{path} is not a readable safetensors file (corrupt or truncated?): {msg}") from None


def load_state_dict_checked(module, state: Mapping[str, torch.Tensor], *, strict: bool = True, source: str = "weights",
                            assign: bool = False, finite_checked: bool = False):
    """``module.load_state_dict`` with a one-line :class:`CheckpointError` on any mismatch.

    Missing keys, unexpected keys and shape mismatches are reported together. ``strict=False``
    tolerates missing and unexpected keys (not shape mismatches) and loads what matches.
    ``assign=True`` (strict only: a module on the meta device has nothing to fall back on) makes the
    state's tensors the module's parameters instead of copying them. ``finite_checked``: the caller
    has run :func:`check_finite_file` on the file the state came from.
    """
    if assign and not strict:
        raise ValueError("load_state_dict_checked: assign=True needs strict=True")
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s) ({_some(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) ({_some(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es) (file vs model: {_some(shapes)})")
    if shapes or (strict and problems):
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(problems))
    if not finite_checked:
        check_finite(state, source)
    kept = {k: v for k, v in state.items() if k in own}
    if assign:
        module.load_state_dict(kept, strict=False, assign=True)
    else:  # also objects with a load_state_dict of their own (an EMA)
        module.load_state_dict(kept, strict=False)


def read_json_object(path: str | os.PathLike) -> dict:
    """A config file's JSON object; a :class:`CheckpointError` naming the file when it cannot be read,
    is not JSON, or holds something else (``null``, a list)."""
    import json

    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    return raw


_FLOAT_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
_SCAN_BYTES = 1 << 24  # 16 MiB read at a time by check_finite_file


def check_finite_file(path: str | os.PathLike, source: str | None = None) -> None:
    """:func:`check_finite` over a safetensors file, read in pieces with ``read()`` instead of through
    the memory map the tensors come from. Checking the mapped tensors would fault every page of them
    into the process; read this way, a weight the model never uses (a text-to-video run's VAE
    encoder) never becomes resident, as when diffusers loads the same file."""
    import json
    import struct

    path = Path(path)
    bad: list[str] = []
    buf = bytearray(_SCAN_BYTES)
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))  # already checked by safetensors when the tensors were read
        entries = sorted(((k, v) for k, v in header.items() if k != "__metadata__" and v["dtype"] in _FLOAT_DTYPES),
                         key=lambda kv: kv[1]["data_offsets"][0])
        for name, info in entries:
            dtype = _FLOAT_DTYPES[info["dtype"]]
            start, end = info["data_offsets"]
            f.seek(8 + size + start)
            left = end - start
            while left > 0:
                view = memoryview(buf)[: min(left, _SCAN_BYTES)]
                got = f.readinto(view)
                if not got:
                    raise CheckpointError(f"{path} is truncated: {name} ends past the end of the file")
                if not bool(torch.isfinite(torch.frombuffer(view[:got], dtype=dtype)).all()):
                    bad.append(name)
                    break
                left -= got
    if bad:
        raise CheckpointError(f"{source or path} holds non-finite values (NaN or inf) in {len(bad)} tensor(s) ({_some(bad)}); "
                              f"the file is broken")


def check_finite(state: Mapping[str, torch.Tensor], source: str = "weights") -> None:
    """A :class:`CheckpointError` naming the first floating-point tensor with a NaN or infinity: such
    weights make every output NaN (or crash int8 quantization), so they are refused at load time."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{source} holds non-finite values (NaN or inf) in {len(bad)} tensor(s) ({_some(bad)}); "
                              f"the file is broken")


def _some(items: list[str], n: int = 4) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... {len(items) - n} more" if len(items) > n else "")
