"""VAE decode peak memory vs clip length: a 5 s clip and a 60 s clip at the same frame size.

Each measurement runs in its own subprocess; peak RSS (ru_maxrss) above the RSS just before
decoding is reported. soraflow streams frames with ``decode_iter`` (each chunk is turned into uint8
frames and dropped, as a video writer would), so memory should not grow with length; diffusers'
``AutoencoderKLWan.decode`` (optional, --diffusers) returns the whole clip at once.

    python benchmarks/bench_vae_memory.py --preset small --size 64 --fps 8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


ALLOCATORS = {
    "default": "glibc default",
    # A fixed mmap threshold stops glibc from serving large tensors from its heap, whose
    # fragmentation otherwise grows resident memory over the first ~10 chunks of any clip.
    "mmap": "MALLOC_MMAP_THRESHOLD_=131072",
}


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from soraflow.models.vae import VideoVAE, vae_config

    torch.manual_seed(0)
    config = vae_config(args.preset)
    model = VideoVAE(config).eval()
    frames = args.seconds * args.fps + 1  # 1 + 4k for fps a multiple of 4
    t_lat = model.latent_frames(frames)
    z = torch.randn(1, config.z_dim, t_lat, args.size // 8, args.size // 8)
    if args.impl == "diffusers":
        from diffusers import AutoencoderKLWan

        ref = AutoencoderKLWan(**{k: v for k, v in config.to_diffusers().items() if not k.startswith("_")}).eval()
        ref.load_state_dict(model.state_dict())
        del model
    elif args.impl == "soraflow-fast":
        model.to_fast()
    n = 0
    with torch.inference_mode():
        base = _rss_mib()
        t0 = time.perf_counter()
        if args.impl == "diffusers":
            n = ref.decode(z).sample.shape[2]
        else:
            for chunk in model.decode_iter(z, chunk_latents=args.chunk):
                frames_u8 = ((chunk.float() + 1) * 127.5).round().to(torch.uint8)  # what a writer would take
                n += frames_u8.shape[2]
        dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    print(json.dumps({"impl": args.impl, "seconds": args.seconds, "frames": n, "latent_frames": t_lat, "time_s": dt, "peak_mib": peak}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--size", type=int, default=64, help="square frame side in pixels")
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--lengths", default="5,60", help="clip lengths in seconds")
    p.add_argument("--chunk", type=int, default=4, help="latent frames per decode chunk")
    p.add_argument("--impls", default="soraflow-fp32,soraflow-fast", help="soraflow-fp32, soraflow-fast, diffusers")
    p.add_argument("--allocators", default="default,mmap", help="glibc malloc settings: default, mmap (MALLOC_MMAP_THRESHOLD_=131072)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in each subprocess (default: torch's choice)")
    p.add_argument("--impl", help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.impl:
        return worker(args)
    rows = []
    for impl, alloc in ((i, a) for a in args.allocators.split(",") for i in args.impls.split(",")):
        env = dict(os.environ)
        if alloc == "mmap":
            env["MALLOC_MMAP_THRESHOLD_"] = "131072"
        for seconds in (int(s) for s in args.lengths.split(",")):
            cmd = [sys.executable, __file__, "--impl", impl, "--seconds", str(seconds), "--preset", args.preset,
                   "--size", str(args.size), "--fps", str(args.fps), "--chunk", str(args.chunk)]  # fmt: skip
            cmd += ["--threads", str(args.threads)] if args.threads else []
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1])
            r["allocator"] = alloc
            rows.append(r)
            print(f"{impl:14s} {alloc:8s} {seconds:3d} s ({r['frames']} frames) {r['time_s']:7.1f} s  peak +{r['peak_mib']:.0f} MiB", flush=True)
    print(f"\npreset {args.preset}, {args.size}x{args.size}, {args.fps} fps, chunk {args.chunk} latents, threads {args.threads or 'default'}")
    print("| implementation | allocator | clip | frames | decode time (s) | peak RSS above baseline (MiB) | vs shortest clip |")
    print("|---|---|---|---|---|---|---|")
    for alloc in args.allocators.split(","):
        for impl in args.impls.split(","):
            mine = [r for r in rows if r["impl"] == impl and r["allocator"] == alloc]
            for r in mine:
                ratio = r["peak_mib"] / mine[0]["peak_mib"]
                print(f"| {impl} | {ALLOCATORS[alloc]} | {r['seconds']} s | {r['frames']} | {r['time_s']:.1f} | {r['peak_mib']:.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
