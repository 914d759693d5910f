"""VAE encode/decode: soraflow's VideoVAE vs diffusers' AutoencoderKLWan, same config, same weights, same input.

Each (implementation, operation) runs in its own subprocess so its peak RSS is its own; the
subprocesses alternate in one run so machine noise hits all of them alike. Outputs are compared
with diffusers in fp32 (max abs error).

    python benchmarks/bench_vae.py --preset small --frames 33 --size 128
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMPLS = {
    # name: (library, dtype, description)
    "diffusers-fp32": ("diffusers", "fp32", "diffusers AutoencoderKLWan, fp32 (its default)"),
    "diffusers-bf16": ("diffusers", "bf16", "diffusers AutoencoderKLWan, model.to(bfloat16)"),
    "soraflow-fp32": ("soraflow", "fp32", "soraflow VideoVAE, fp32, its defaults (chunks by pixel budget, whole frames to 720p)"),
    "soraflow-fp32-c1": ("soraflow", "fp32", "soraflow VideoVAE, fp32, 1-latent decode chunks (diffusers' size)"),
    "soraflow-fp32-c4": ("soraflow", "fp32", "soraflow VideoVAE, fp32, 4-latent decode chunks"),
    "soraflow-fp32-c1-tiled": ("soraflow", "fp32", "soraflow VideoVAE, fp32, 1-latent chunks, 256-px tiles"),
    "soraflow-fp32-c4-tiled": ("soraflow", "fp32", "soraflow VideoVAE, fp32, 4-latent chunks, 256-px tiles"),
    "soraflow-fast": ("soraflow", "bf16", "soraflow VideoVAE.to_fast(): bf16 + channels_last_3d"),
}


def _size(text: str) -> tuple[int, int]:
    """'128' (square) or 'WxH' -> (height, width)."""
    if "x" in str(text):
        w, h = (int(v) for v in str(text).lower().split("x"))
        return h, w
    return int(text), int(text)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(args) -> None:
    """One implementation, one operation: time it and report peak RSS above the pre-op baseline."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from safetensors.torch import save_file

    from soraflow.models.vae import VideoVAE, vae_config

    torch.manual_seed(0)
    lib, dtype, _ = IMPLS[args.impl]
    # fixed-seed random weights of a preset, or a trained model; shared by both libraries
    ours = (VideoVAE.from_pretrained(args.model) if args.model else VideoVAE(vae_config(args.preset))).eval()
    config = ours.config
    frames, (height, width) = args.frames, _size(args.size)
    sf = ours.spatial_factor
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, frames, height, width, generator=g) * 2 - 1
    z = torch.randn(1, config.z_dim, ours.latent_frames(frames), height // sf, width // sf, generator=g)
    if lib == "diffusers":
        from diffusers import AutoencoderKLWan

        model = AutoencoderKLWan(**{k: v for k, v in config.to_diffusers().items() if not k.startswith("_")}).eval()
        model.load_state_dict(ours.state_dict())
        del ours
        if dtype == "bf16":
            model.to(torch.bfloat16)
        cast = torch.bfloat16 if dtype == "bf16" else torch.float32
        run = {
            "encode": lambda: model.encode(x.to(cast)).latent_dist.mean,
            "decode": lambda: model.decode(z.to(cast)).sample,
        }[args.op]
    else:
        model = ours.to_fast() if dtype == "bf16" else ours
        chunk = {"soraflow-fp32-c1": {"chunk_latents": 1}, "soraflow-fp32-c4": {"chunk_latents": 4},
                 "soraflow-fp32-c1-tiled": {"chunk_latents": 1, "tiled": True},
                 "soraflow-fp32-c4-tiled": {"chunk_latents": 4, "tiled": True}}.get(args.impl, {})
        run = {"encode": lambda: model.encode(x).mean, "decode": lambda: model.decode(z, **chunk)}[args.op]
    times, cpu = [], []
    with torch.inference_mode():
        base = _rss_mib()
        for _ in range(args.repeats + 1):  # the first run warms up (oneDNN kernels, allocator)
            c0, t0 = _cpu_s(), time.perf_counter()
            out = run()
            times.append(time.perf_counter() - t0)
            cpu.append(_cpu_s() - c0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    save_file({"out": out.float().contiguous()}, args.out)
    timed = slice(1, None) if args.repeats else slice(None)  # --repeats 0: the one cold run
    print(json.dumps({"impl": args.impl, "op": args.op, "time_s": min(times[timed]), "cpu_s": min(cpu[timed]), "times": times,
                      "peak_mib": peak}))


def _cpu_s() -> float:
    """CPU seconds of this process: on a shared machine, what the work costs, whatever the wait."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", help="VAE preset (same config for both libraries)")
    p.add_argument("--model", default=None, help="a trained VAE folder to use instead of random --preset weights")
    p.add_argument("--frames", type=int, default=33, help="pixel frames (1 + 4k)")
    p.add_argument("--size", default="128", help="frame size: a square side (128) or WIDTHxHEIGHT (832x480)")
    p.add_argument("--repeats", type=int, default=2,
                   help="timed runs per measurement (after one warm-up); the best is reported (0: one cold run, no warm-up)")
    p.add_argument("--ops", default="encode,decode")
    p.add_argument("--impls", default=",".join(IMPLS))
    p.add_argument("--json", help="also write the results here")
    # internal: worker mode
    p.add_argument("--threads", type=int, default=None, help="torch threads in each subprocess (default: torch's choice)")
    p.add_argument("--impl", help=argparse.SUPPRESS)
    p.add_argument("--op", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.impl:
        return worker(args)

    import torch
    from safetensors.torch import load_file

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for op in args.ops.split(","):
            for impl in args.impls.split(","):
                out = str(Path(tmp) / f"{impl}-{op}.safetensors")
                cmd = [sys.executable, __file__, "--impl", impl, "--op", op, "--out", out, "--preset", args.preset,
                       "--frames", str(args.frames), "--size", str(args.size), "--repeats", str(args.repeats)]  # fmt: skip
                cmd += ["--threads", str(args.threads)] if args.threads else []
                cmd += ["--model", args.model] if args.model else []
                res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
                res["output"] = load_file(out)["out"]
                results.append(res)
                print(f"{op:6s} {impl:15s} {res['time_s']:7.2f} s wall {res['cpu_s']:7.2f} s CPU  peak +{res['peak_mib']:7.0f} MiB", flush=True)
    threads = args.threads or torch.get_num_threads()
    print(f"\n{args.model or 'preset ' + args.preset}, input 1x3x{args.frames}x{_size(args.size)[0]}x{_size(args.size)[1]}, torch {torch.__version__}, {threads} thread(s), {os.cpu_count()} CPUs")
    print("| op | implementation | wall (s) | CPU (s) | speed-up vs diffusers fp32 (wall / CPU) | peak RSS above baseline (MiB) | max abs err vs diffusers fp32 |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for op in args.ops.split(","):
        ref = next((r for r in results if r["op"] == op and r["impl"] == "diffusers-fp32"), None)
        for r in (r for r in results if r["op"] == op):
            speed = ref["time_s"] / r["time_s"] if ref else float("nan")
            speed_cpu = ref["cpu_s"] / r["cpu_s"] if ref else float("nan")
            err = (r["output"] - ref["output"]).abs().max().item() if ref else float("nan")
            print(f"| {op} | {IMPLS[r['impl']][2]} | {r['time_s']:.2f} | {r['cpu_s']:.2f} | {speed:.2f}x / {speed_cpu:.2f}x | {r['peak_mib']:.0f} | {err:.2e} |")
            rows.append({k: v for k, v in r.items() if k != "output"} | {"speedup": speed, "speedup_cpu": speed_cpu, "max_abs_err": err})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
