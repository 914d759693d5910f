"""Where a Wan2.1 VAE decode holds its memory, soraflow's against diffusers', chunk by chunk.

    python benchmarks/bench_vae_decode_memory.py --size 416x240 --frames 9 --threads 1

Both libraries' models are built in each worker (soraflow's with fixed-seed random weights, diffusers'
``AutoencoderKLWan`` loading the same state dict) and the unused one is deleted, so both start from the
same process state. A thread samples resident memory every 2 ms while the decoder runs in 1-latent
chunks (diffusers' granularity); forward hooks on the decoder's modules (three levels deep) give the
peak inside each module in each chunk, and at each chunk's start the causal caches' size. Each
library runs in its own subprocess, one after the other.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import threading
import time


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _cache_mib(args, kwargs) -> float:
    """Bytes of the causal state handed to the decoder: soraflow's CausalCache or diffusers' feat_cache list."""
    import torch

    total = 0
    for obj in [*args, *kwargs.values()]:
        tensors = obj if isinstance(obj, list) else list(getattr(obj, "_state", {}).values())
        total += sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
    return total / 2**20


def worker(lib: str, height: int, width: int, frames: int, threads: int) -> dict:
    import torch
    from diffusers import AutoencoderKLWan

    from soraflow.models.vae import VideoVAE, vae_config

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ours = VideoVAE(vae_config("wan2.1")).eval()
    theirs = AutoencoderKLWan(**{k: v for k, v in ours.config.to_diffusers().items() if not k.startswith("_")}).eval()
    theirs.load_state_dict(ours.state_dict())
    z = torch.randn(1, 16, ours.latent_frames(frames), height // 8, width // 8, generator=torch.Generator().manual_seed(1))
    if lib == "diffusers":
        del ours
        model, run = theirs, lambda: theirs.decode(z).sample
    else:
        del theirs
        model, run = ours, lambda: ours.decode(z, chunk_latents=1)
    import gc

    gc.collect()
    samples, calls, starts, chunks = [], [], collections.defaultdict(list), []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append((time.perf_counter(), _rss_mib()))
            time.sleep(0.002)

    def pre(name):
        def hook(module, args, kwargs):
            if not name:
                chunks.append({"rss_mib": _rss_mib() - base, "cache_mib": _cache_mib(args, kwargs)})
            starts[name].append(time.perf_counter())
        return hook

    def post(name):
        def hook(module, args, kwargs, out):
            calls.append((len(chunks), name or "decoder", starts[name].pop(), time.perf_counter()))
        return hook

    for name, module in model.decoder.named_modules():
        if name.count(".") <= 2:
            module.register_forward_pre_hook(pre(name), with_kwargs=True)
            module.register_forward_hook(post(name), with_kwargs=True)
    thread = threading.Thread(target=sample, daemon=True)
    with torch.inference_mode():
        base = _rss_mib()
        thread.start()
        t0 = time.perf_counter()
        run()
        seconds = time.perf_counter() - t0
        stop.set()
        thread.join()
    peaks: dict[str, float] = {}
    for chunk, name, a, b in calls:
        inside = [r for t, r in samples if a <= t <= b]
        if inside:
            key = f"{chunk}:{name}"
            peaks[key] = max(peaks.get(key, 0.0), max(inside) - base)
    return {"lib": lib, "baseline_mib": base, "peak_mib": max(r for _, r in samples) - base, "seconds": seconds,
            "chunks": chunks, "module_peaks": peaks}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="416x240", help="WIDTHxHEIGHT of the decoded frames [416x240]")
    p.add_argument("--frames", type=int, default=9, help="decoded frames (1 + 4k) [9]")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--libs", default="soraflow,diffusers")
    p.add_argument("--top", type=int, default=8, help="modules listed per chunk [8]")
    p.add_argument("--json", default=None, help="write every worker's result here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.worker:
        print(json.dumps(worker(args.worker, height, width, args.frames, args.threads)))
        return
    results = {}
    for lib in args.libs.split(","):
        out = subprocess.run([sys.executable, __file__, "--worker", lib, "--size", args.size, "--frames", str(args.frames),
                              "--threads", str(args.threads)], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{lib} worker failed:\n{out.stderr[-3000:]}")
        results[lib] = json.loads(out.stdout.strip().splitlines()[-1])
    libs = list(results)
    print(f"Wan2.1 VAE decode, {width}x{height}, {args.frames} frames, 1-latent chunks, {args.threads} thread(s); MiB above each worker's baseline")
    print("| | " + " | ".join(libs) + " |\n|---|" + "---:|" * len(libs))
    print("| baseline RSS | " + " | ".join(f"{results[k]['baseline_mib']:,.0f}" for k in libs) + " |")
    for i in range(max(len(r["chunks"]) for r in results.values())):
        print(f"| chunk {i + 1} start: RSS / causal caches | " + " | ".join(
            f"{r['chunks'][i]['rss_mib']:,.0f} / {r['chunks'][i]['cache_mib']:,.0f}" if i < len(r["chunks"]) else "" for r in results.values()) + " |")
    print("| peak | " + " | ".join(f"**{results[k]['peak_mib']:,.0f}**" for k in libs) + " |")
    print("| decode s | " + " | ".join(f"{results[k]['seconds']:.1f}" for k in libs) + " |")
    keys = sorted({k for r in results.values() for k in r["module_peaks"]}, key=lambda k: -max(r["module_peaks"].get(k, 0) for r in results.values()))
    print("\nmodule peaks (chunk:module)\n| module | " + " | ".join(libs) + " |\n|---|" + "---:|" * len(libs))
    for key in keys[: args.top * 2]:
        print(f"| {key} | " + " | ".join(f"{r['module_peaks'].get(key, 0):,.0f}" for r in results.values()) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
