"""VAE training step on the CPU: memory layout (contiguous vs channels_last_3d) x precision (fp32, bf16 autocast).

One model, one batch; the variants alternate round by round in one process, so machine noise hits
them alike; the report is the median step time of each and its ratio to contiguous fp32. A step is
what `soraflow train vae` does: forward (sampled posterior), L1 + KL, backward, AdamW. Each step's
FLOPs (torch's FlopCounterMode, forward + backward) over its time is its GFLOP/s; a 2048^3 GEMM of
each dtype, timed between the rounds, is the rate the step is measured against.

    python benchmarks/bench_vae_train.py --preset small --batch 4 --frames 9 --crop 64 --threads 2
    python benchmarks/bench_vae_train.py --spatial-factor 4 --threads 1     # the v2 shape
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small", help="VAE preset [default: small]")
    p.add_argument("--batch", type=int, default=4, help="clips per step [default: 4]")
    p.add_argument("--frames", type=int, default=9, help="frames per clip (1 + 4k) [default: 9]")
    p.add_argument("--crop", type=int, default=64, help="square crop side [default: 64]")
    p.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's choice]")
    p.add_argument("--rounds", type=int, default=4, help="timed steps per variant (after one warm-up) [default: 4]")
    p.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16 (autocast) [both]; bf16 runs "
                   "tens of times slower on CPUs without AVX-512 BF16 or AMX")
    p.add_argument("--spatial-factor", type=int, default=0, help="train vae's --spatial-factor (0: the preset's)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)

    import torch

    from torch.utils.flop_counter import FlopCounterMode

    from soraflow.models.vae import VideoVAE
    from soraflow.train.vae import TrainVAEConfig, model_config

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, args.frames, args.crop, args.crop) * 2 - 1
    variants = {}
    for layout in ("contiguous", "channels_last_3d"):
        for precision in args.precisions.split(","):
            vae = VideoVAE(model_config(TrainVAEConfig(preset=args.preset, spatial_factor=args.spatial_factor))).train()
            if layout == "channels_last_3d":
                vae.to_channels_last()
            opt = torch.optim.AdamW(vae.parameters(), lr=1e-4, foreach=True)
            variants[f"{layout} {precision}"] = (vae, opt, precision)

    def step(vae, opt, precision) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            recon, posterior = vae(x, sample=True, generator=torch.Generator().manual_seed(0))
        loss = (recon.float() - x).abs().mean() + 1e-4 * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    flops = {}
    for name, (vae, _, precision) in variants.items():
        with FlopCounterMode(display=False) as counter, torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            recon, posterior = vae(x, sample=True, generator=torch.Generator().manual_seed(0))
            ((recon.float() - x).abs().mean() + 1e-4 * posterior.kl().mean()).backward()
        flops[name] = counter.get_total_flops()
        vae.zero_grad(set_to_none=True)

    def gemm(dtype) -> float:
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        start = time.perf_counter()
        a @ b
        return 2 * 2048**3 / (time.perf_counter() - start)

    times = {name: [] for name in variants}
    peaks = {"fp32": [], "bf16": []}
    for r in range(args.rounds + 1):
        for name, (vae, opt, precision) in variants.items():
            t = step(vae, opt, precision)
            if r:  # round 0 warms up
                times[name].append(t)
        for dtype, key in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            if key in args.precisions.split(","):
                peaks[key].append(gemm(dtype))
    peak = {k: max(v) for k, v in peaks.items() if v}
    base = statistics.median(times[next(iter(times))])
    print(f"VAE {args.preset} (spatial factor {args.spatial_factor or 'of the preset'}), batch {args.batch} x {args.frames} "
          f"x {args.crop} x {args.crop}, {torch.get_num_threads()} threads, median of {args.rounds} steps; best 2048^3 GEMM "
          + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peak.items()))
    print("| layout | precision | step (s) | speed-up vs the first | GFLOP / step | GFLOP/s | of the best GEMM |\n"
          "|---|---|---:|---:|---:|---:|---:|")
    results = {"gemm_peak_gflops": {k: v / 1e9 for k, v in peak.items()}}
    best = max(peak.values())
    for name, ts in times.items():
        med = statistics.median(ts)
        layout, precision = name.split()
        rate = flops[name] / med
        results[name] = {"median_s": med, "steps_s": ts, "speedup": base / med, "gflop": flops[name] / 1e9, "gflops": rate / 1e9}
        print(f"| {layout} | {precision} | {med:.2f} | {base / med:.2f}x | {flops[name] / 1e9:.1f} | {rate / 1e9:.1f} | "
              f"{rate / best:.0%} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
