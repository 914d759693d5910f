"""Checks shared by the CLI, the Python API and the trainers: one place per kind of bound.

Every check raises :class:`InputError` with one line that names the value and the limit, so the
CLI (exit 2, no traceback), the API and a server all report the same thing for the same input.
"""

from __future__ import annotations

import math
import re
import unicodedata

from .errors import InputError

# C0 and C1 controls and DEL, but not tab and newline (a long prompt may be written over lines).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # what undecodable bytes in argv become (surrogateescape)
MAX_TEXT = 4000  # characters of a prompt: MiniLM reads 256 tokens, T5/UMT5 512; a longer one is a mistake


def safe_text(text: str) -> str:
    """``text`` fit to print on a terminal: control characters and undecodable bytes as escapes
    (an ESC sequence in a prompt must not clear the user's screen)."""
    text = _SURROGATE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}" if ord(m.group()) >= 0xDC80
                          else f"\\u{ord(m.group()):04x}", text)
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def check_text(name: str, value, *, empty_ok: bool = False, max_len: int = MAX_TEXT) -> str:
    """A prompt-like string: valid Unicode, no control characters, at most ``max_len`` characters."""
    if not isinstance(value, str):
        raise InputError(f"the {name} must be a string, got {type(value).__name__}")
    bad = _SURROGATE.search(value)
    if bad:
        raise InputError(f"the {name} is not valid UTF-8 (undecodable byte at position {bad.start()})")
    bad = _CONTROL.search(value)
    if bad:
        raise InputError(f"the {name} contains a control character (U+{ord(bad.group()):04X} at position "
                         f"{bad.start()}); remove it")
    value = unicodedata.normalize("NFC", value).strip()
    if not value and not empty_ok:
        raise InputError(f"the {name} is empty")
    if len(value) > max_len:
        raise InputError(f"the {name} has {len(value)} characters; the limit is {max_len}")
    return value


def number(name: str, value, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           integer: bool = False) -> float | int:
    """A finite real (or integer) within [lo, hi] (``lo_open``: (lo, hi]); NaN and infinities never pass."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name} must be {kind}, got {value!r}")
    if integer and not isinstance(value, int):
        if not (math.isfinite(value) and float(value).is_integer()):
            raise InputError(f"{name} must be {kind}, got {value!r}")
        value = int(value)
    if not integer and not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value}")
    if (lo is not None and (value <= lo if lo_open else value < lo)) or (hi is not None and value > hi):
        if lo is not None and hi is not None:
            bound = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
        else:
            bound = f"{'>' if lo_open else '>='} {lo:g}" if lo is not None else f"<= {hi:g}"
        raise InputError(f"{name} must be {bound}, got {value}")
    return value


def check_device(name):
    """A torch device this machine can run on (``meta`` and a CUDA device without CUDA are refused)."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {name!r}; use cpu, cuda, cuda:1, ...") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} asked for, but this torch build or machine has no CUDA")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InputError(f"device {name!r} asked for, but MPS is not available here")
    elif device.type != "cpu":
        raise InputError(f"device {name!r} cannot run soraflow; use cpu, cuda or mps")
    return device


OFFLOAD_HELP = ("for models larger than the GPU: keep the weights in CPU memory and move each model to --device "
                "only while it runs (model: one whole model at a time, little slower), or block by block "
                "(sequential: the least GPU memory, several times slower)")


def check_offload(offload: str | None, device) -> None:
    """--offload needs a device other than the CPU, where the weights already are."""
    if offload and str(device).split(":")[0] == "cpu":
        raise InputError(f"--offload {offload} moves weights from CPU memory to a GPU; with --device cpu they are "
                         "there already (drop --offload or give --device cuda)")


__all__ = ["MAX_TEXT", "OFFLOAD_HELP", "check_device", "check_offload", "check_text", "number", "safe_text"]
