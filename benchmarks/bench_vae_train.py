"""VAE training step on the CPU: memory layout (contiguous vs channels_last_3d) x precision (fp32, bf16 autocast).

One model, one batch; the variants alternate round by round in one process, so machine noise hits
them alike; the report is the median step time of each and its ratio to contiguous fp32. A step is
what `soraflow train vae` does: forward (sampled posterior), L1 + KL, backward, AdamW.

    python benchmarks/bench_vae_train.py --preset small --batch 4 --frames 9 --crop 64 --threads 2
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
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)

    import torch

    from soraflow.models.vae import VideoVAE, vae_config

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, args.frames, args.crop, args.crop) * 2 - 1
    variants = {}
    for layout in ("contiguous", "channels_last_3d"):
        for precision in ("fp32", "bf16"):
            vae = VideoVAE(vae_config(args.preset)).train()
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

    times = {name: [] for name in variants}
    for r in range(args.rounds + 1):
        for name, (vae, opt, precision) in variants.items():
            t = step(vae, opt, precision)
            if r:  # round 0 warms up
                times[name].append(t)
    base = statistics.median(times["contiguous fp32"])
    print(f"VAE {args.preset}, batch {args.batch} x {args.frames} x {args.crop} x {args.crop}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} steps")
    print("| layout | precision | step (s) | speed-up vs contiguous fp32 |\n|---|---|---:|---:|")
    results = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        layout, precision = name.split()
        results[name] = {"median_s": med, "steps_s": ts, "speedup": base / med}
        print(f"| {layout} | {precision} | {med:.2f} | {base / med:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
