"""What this CPU computes fastest, measured once and cached.

CPUs in the wild differ in what they do natively: AMX tiles run bf16 GEMMs several times faster than
fp32, AVX-512 BF16 runs them about as fast as fp32 or a little faster, and a CPU with AVX2 only
emulates bf16 and is several times slower in it. The flags in ``/proc/cpuinfo`` say what exists, not
what wins at a given shape and thread count, so :func:`cpu_rates` times the operations the models
spend their time in (a DiT-sized GEMM in fp32, bf16 and dynamic int8; a VAE-sized conv3d in fp32 and
in bf16 channels_last_3d) and :func:`cpu_choice` picks the fastest of each. The figures are cached in
a JSON file keyed by the CPU model, its flags, the torch version and the thread count, so the
measurement (about a second) runs once per machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

CACHE_ENV = "SORAFLOW_CACHE_DIR"  # where cpu_rates.json goes (default ~/.cache/soraflow)
FORMAT = 2  # bump when the measurement changes: old figures are then measured again

# Shapes like those the default model spends its time in, kept small so an emulated dtype costs
# little to time: 1,024 tokens through a 384-wide block's feed-forward (384 -> 1536), and a
# 64-channel 3x3x3 conv over a 3x16x16 grid.
GEMM_SHAPE = (1024, 384, 1536)  # (tokens, in, out)
CONV_SHAPE = (1, 64, 3, 16, 16)  # (B, C, T, H, W), kernel 3, C -> C


@dataclass(frozen=True)
class CPURates:
    """Measured throughput in GFLOP/s at :data:`GEMM_SHAPE` and :data:`CONV_SHAPE`."""

    gemm_float32: float
    gemm_bfloat16: float
    gemm_int8: float  # dynamic int8 linear (torch.ao); 0 where the kernels are missing
    conv_float32: float  # the default layout
    conv_float32_cl: float  # channels_last_3d
    conv_bfloat16_cl: float  # channels_last_3d, the layout bf16 convs are fast in
    threads: int
    features: tuple[str, ...]  # the CPU's bf16-relevant flags, for reports


@dataclass(frozen=True)
class CPUChoice:
    """What ``dtype="auto"`` runs on this CPU."""

    dit: str  # "float32", "bfloat16" or "int8" (int8: fp32 weights, dynamic int8 block linears)
    vae: str  # "float32" or "bfloat16"
    train_dit: str  # autocast dtype of a DiT training step (GEMM-bound): "float32" or "bfloat16"
    train_vae: str  # autocast dtype of a VAE training step (conv-bound, channels_last_3d)


def _cpuinfo(field: str) -> str | None:
    """The first ``field`` line of /proc/cpuinfo (None where there is none, e.g. not Linux)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_features() -> tuple[str, ...]:
    """The flags that decide bf16 and int8 speed, from /proc/cpuinfo (empty where it is missing)."""
    wanted = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx512_vnni", "avx_vnni", "avx2", "fma")
    flags = set((_cpuinfo("flags") or "").split())
    return tuple(f for f in wanted if f in flags)


def _cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def _cache_file() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "soraflow")
    return Path(root) / "cpu_rates.json"


def _key(threads: int) -> str:
    ident = json.dumps([FORMAT, _cpu_model(), cpu_features(), torch.__version__, threads,
                        os.environ.get("ATEN_CPU_CAPABILITY", "")])
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def _best_seconds(ops: dict, *, rounds: int = 4, slow: float = 0.1) -> dict[str, float]:
    """The fastest time of each of ``ops`` (name -> callable) over interleaved rounds, after a
    warm-up call each (the first int8 or oneDNN call packs weights and creates primitives).

    Interleaving spreads a neighbour's load over every op instead of penalising whichever ran while it
    lasted; a shared machine otherwise makes one op look 2-3x slower than it is. An op slower than
    ``slow`` seconds a call (an emulated dtype) is timed once: it has lost whatever the noise.
    """
    best = {}
    for name, fn in ops.items():
        start = time.perf_counter()
        fn()
        if time.perf_counter() - start < slow:  # a slow op's first call is warm-up enough
            start = time.perf_counter()
            fn()
        best[name] = time.perf_counter() - start
    for _ in range(rounds):
        for name, fn in ops.items():
            if best[name] > slow:
                continue
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _int8_linear(weight: torch.Tensor):
    """A dynamic int8 linear with per-channel weights, as :meth:`DiT.quantize_int8` makes; None if
    torch has no such kernels here."""
    import importlib.util
    import warnings

    if importlib.util.find_spec("torch.ao.quantization") is None:
        return None
    engines = getattr(torch.backends.quantized, "supported_engines", [])
    if "x86" not in engines and "fbgemm" not in engines:
        return None
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    layer = torch.nn.Sequential(torch.nn.Linear(weight.shape[1], weight.shape[0]))
    layer[0].weight.data.copy_(weight)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(layer, {"0": per_channel_dynamic_qconfig}, inplace=True)


@torch.inference_mode()
def measure_cpu_rates() -> CPURates:
    """Time the operations (no cache); one to two seconds on two cores."""
    g = torch.Generator().manual_seed(0)
    n, k, m = GEMM_SHAPE
    a = torch.randn(n, k, generator=g)
    w = torch.randn(m, k, generator=g) / k**0.5
    a16, w16 = a.bfloat16(), w.bfloat16()
    b, c, t, h, wd = CONV_SHAPE
    x = torch.randn(b, c, t, h, wd, generator=g)
    kern = torch.randn(c, c, 3, 3, 3, generator=g) / (27 * c) ** 0.5
    cl = torch.channels_last_3d
    x_cl, kern_cl = x.contiguous(memory_format=cl), kern.contiguous(memory_format=cl)
    x16, kern16 = x.bfloat16().contiguous(memory_format=cl), kern.bfloat16().contiguous(memory_format=cl)
    conv3d, linear = torch.nn.functional.conv3d, torch.nn.functional.linear
    ops = {
        "gemm_float32": lambda: linear(a, w),
        "gemm_bfloat16": lambda: linear(a16, w16),
        "conv_float32": lambda: conv3d(x, kern, padding=1),
        "conv_float32_cl": lambda: conv3d(x_cl, kern_cl, padding=1),
        "conv_bfloat16_cl": lambda: conv3d(x16, kern16, padding=1),
    }
    q = _int8_linear(w)
    if q is not None:
        ops["gemm_int8"] = lambda: q(a)
    seconds = _best_seconds(ops)
    gemm_flops, conv_flops = 2 * n * k * m, 2 * b * c * c * 27 * t * h * wd
    rates = {name: (gemm_flops if name.startswith("gemm") else conv_flops) / s / 1e9 for name, s in seconds.items()}
    rates.setdefault("gemm_int8", 0.0)
    return CPURates(**{k: round(v, 2) for k, v in rates.items()}, threads=torch.get_num_threads(),
                    features=cpu_features())


_MEMO: dict[str, CPURates] = {}


def _parse(entry) -> CPURates | None:
    """A cached entry as :class:`CPURates`, or None when it is missing or damaged (then measured again)."""
    names = [f.name for f in fields(CPURates)]
    if not isinstance(entry, dict) or any(n not in entry for n in names):
        return None
    numbers = [entry[n] for n in names if n != "features"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        return None
    if not isinstance(entry["features"], list):
        return None
    return CPURates(**{**{n: entry[n] for n in names}, "features": tuple(entry["features"])})


def cpu_rates(*, refresh: bool = False) -> CPURates:
    """:func:`measure_cpu_rates`, cached in memory and in ``$SORAFLOW_CACHE_DIR/cpu_rates.json``.

    A cache file that cannot be read or parsed is measured over (and rewritten when it can be)."""
    threads = torch.get_num_threads()
    key = _key(threads)
    if not refresh and key in _MEMO:
        return _MEMO[key]
    path = _cache_file()
    entries: dict = {}
    try:
        entries = json.loads(path.read_text())
        if not isinstance(entries, dict):
            entries = {}
    except (OSError, ValueError):
        entries = {}
    rates = None if refresh else _parse(entries.get(key))
    if rates is None:
        rates = measure_cpu_rates()
        entries[key] = {**asdict(rates), "cpu": _cpu_model(), "torch": torch.__version__}
        from .atomic import write_json
        from .errors import SoraflowError

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, entries)
        except (OSError, SoraflowError):  # a read-only home: the figures still hold for this process
            pass
    _MEMO[key] = rates
    return rates


# A precision must beat fp32 by this factor to be chosen: the GEMM figure is one shape, and a
# model's other ops (norms, softmax, casts) gain nothing, so a near-tie goes to the exact dtype.
MARGIN = 1.15


def choose(rates: CPURates) -> CPUChoice:
    """The fastest precision per model for these figures (pure, so it tests without timing)."""
    dit = "float32"
    best = rates.gemm_float32 * MARGIN
    if rates.gemm_bfloat16 > best:
        dit, best = "bfloat16", rates.gemm_bfloat16
    if rates.gemm_int8 > best * MARGIN:  # int8 also loses a little accuracy: it has to win clearly
        dit = "int8"
    fp32_conv = max(rates.conv_float32, rates.conv_float32_cl)
    vae = "bfloat16" if rates.conv_bfloat16_cl > fp32_conv * MARGIN else "float32"
    train_dit = "bfloat16" if rates.gemm_bfloat16 > rates.gemm_float32 * MARGIN else "float32"
    train_vae = "bfloat16" if rates.conv_bfloat16_cl > rates.conv_float32_cl * MARGIN else "float32"
    return CPUChoice(dit=dit, vae=vae, train_dit=train_dit, train_vae=train_vae)


def cpu_choice() -> CPUChoice:
    """:func:`choose` on this CPU's cached figures."""
    return choose(cpu_rates())


PRECISIONS = ("auto", "bf16", "fp32")  # the trainers' --precision


def autocast_dtype(precision: str, device: str | torch.device, *, model: str) -> torch.dtype:
    """The autocast dtype of a training step: ``precision`` "bf16" or "fp32" as given, "auto" measured
    (a GPU with bf16: bf16; a CPU: :func:`cpu_choice` for ``model`` "dit" or "vae")."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp32":
        return torch.float32
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type != "cpu":
        return torch.float32
    choice = cpu_choice()
    return getattr(torch, choice.train_dit if model == "dit" else choice.train_vae)


__all__ = ["PRECISIONS", "autocast_dtype", "CPUChoice", "CPURates", "choose", "cpu_choice", "cpu_features", "cpu_rates", "measure_cpu_rates"]
