"""Memory estimates, checked before anything big is allocated.

A model config with 100,000 layers, a 14B preset on a laptop or a batch of 100,000 clips should be
refused with the estimate in the message, not by the kernel's OOM killer minutes later (or by a
machine that swaps itself unusable).
"""

from __future__ import annotations

import os

from .errors import InputError

GIB = 2**30
HEADROOM = 0.9  # leave the rest to the OS, the interpreter and what the estimate does not count


def available_bytes(device=None) -> int:
    """Memory this process may still take on ``device``: MemAvailable on the CPU, free memory on a GPU."""
    import torch

    device = torch.device(device or "cpu")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 1 << 62  # unknown: do not refuse


def check_fits(what: str, need: int, device=None) -> None:
    """Raise :class:`InputError` naming ``what``, the estimate and what is available when ``need``
    bytes do not fit."""
    have = available_bytes(device)
    if need > HEADROOM * have:
        raise InputError(f"{what} needs about {need / GIB:,.1f} GiB of memory; "
                         f"{have / GIB:,.1f} GiB are available here")


def count_parameters(build, num_layers: int, config) -> int:
    """Parameters of ``build(config)`` with ``num_layers`` blocks, without allocating them: one- and
    two-block models are built on the meta device and the per-block count is extrapolated (building
    100,000 blocks, even on meta, would itself take minutes and gigabytes of Python objects)."""
    import dataclasses

    import torch

    with torch.device("meta"):
        counts = [sum(p.numel() for p in build(dataclasses.replace(config, num_layers=n)).parameters()) for n in (1, 2)]
    return counts[0] + (num_layers - 1) * (counts[1] - counts[0])


# Bytes per parameter while training with AdamW: fp32 weights, gradients, two moments and the EMA copy.
TRAIN_BYTES_PER_PARAM = 4 + 4 + 8 + 4


__all__ = ["TRAIN_BYTES_PER_PARAM", "available_bytes", "check_fits", "count_parameters"]
