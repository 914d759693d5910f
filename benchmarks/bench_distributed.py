"""One process vs two on this CPU: DDP, FSDP2 and Ulysses sequence parallelism, side by side in one run.

The same cores either run one process with 2 threads (or 1), or two torchrun ranks (gloo) with 1
thread each, on the same global work:

  data parallel   a training step (bf16 autocast forward + backward + AdamW) of a global batch of
                  --batch clips of --grid latents; each rank takes half the batch (DDP or FSDP2)
  sequence par.   one long clip (--long-grid) split over 2 ranks by tokens (Ulysses, DDP for the
                  gradients): a sampling forward and a training step; every rank holds half the
                  tokens' activations

Configurations are run in alternating rounds (A B C ... A B C) so the machine's load hits all
alike; medians per configuration, ratios against the one-process row. "Saved activations" is what
autograd keeps for backward in one training step on the busiest rank (counted with
saved_tensors_hooks): the memory that sequence parallelism divides. Peak RSS is per process
(``ru_maxrss``, torch itself included).

    python benchmarks/bench_distributed.py                      # small preset, 4 layers (a few minutes)
    python benchmarks/bench_distributed.py --layers 2 --rounds 1 --steps 2  # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def parse_grid(text: str) -> tuple[int, int, int]:
    t, h, w = (int(v) for v in text.lower().split("x"))
    return t, h, w


# ----------------------------------------------------------------------------------------------
# Worker: one configuration, in this process (and its torchrun peer)


def worker(args) -> None:
    import torch

    from soraflow.models.dit import DiT, dit_config
    from soraflow.train.distributed import init_distributed
    from soraflow.train.optim import build_adamw
    from soraflow.train.parallel_config import ParallelConfig
    from soraflow.train.parallelize import parallelize

    torch.set_num_threads(args.threads)
    sp = 2 if args.config.startswith("sp") else 1
    world = init_distributed(sp_size=sp, timeout=300)
    torch.manual_seed(0)
    model = DiT(dit_config(args.preset, num_layers=args.layers, in_channels=16, out_channels=16, text_dim=384))
    long = "long" in args.config
    grid = parse_grid(args.long_grid if long else args.grid)
    batch = 1 if long else args.batch
    rows = batch // world.dp_size if not long else 1
    mode = {"ddp": "ddp", "fsdp": "fsdp", "sp_long": "ddp"}.get(args.config, "ddp")
    if world.distributed:
        parallelize(model, ParallelConfig(mode=mode, sequence=sp), world)
    opt = build_adamw(model, lr=1e-4, weight_decay=0.01)
    g = torch.Generator().manual_seed(world.dp_rank)
    x = torch.randn(rows, 16, *grid, generator=g)
    t = torch.rand(rows, generator=g)
    ctx = torch.randn(rows, args.text_len, 384, generator=g)

    def train_step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred = model(x, t, ctx)
        loss = (pred.float() - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    @torch.no_grad()
    def forward():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x, t, ctx)

    def saved_mib() -> float:
        """MiB of tensors autograd keeps for backward during one forward (the activation memory)."""
        seen: set = set()
        total = [0]

        def pack(x):
            try:
                storage = x.untyped_storage()
                if storage.data_ptr() not in seen:
                    seen.add(storage.data_ptr())
                    total[0] += storage.nbytes()
            except (RuntimeError, NotImplementedError):
                pass
            return x

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            train_step()
        return total[0] / 2**20

    out = {"config": args.config, "world": world.world_size, "threads": args.threads, "saved_mib": saved_mib()}
    for name, fn in (("forward", forward), ("train", train_step)) if long else (("train", train_step),):
        for _ in range(args.warmup):
            fn()
        times = []
        for _ in range(args.steps):
            if world.distributed:
                torch.distributed.barrier()
            t0 = time.perf_counter()
            fn()
            if world.distributed:
                torch.distributed.barrier()
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
    out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if world.distributed:
        gathered = [None] * world.world_size
        torch.distributed.all_gather_object(gathered, out["rss_mib"])
        out["rss_mib"] = max(gathered)
        torch.distributed.all_gather_object(gathered, out["saved_mib"])
        out["saved_mib"] = max(gathered)
        torch.distributed.destroy_process_group()
    if world.rank == 0:
        Path(args.result).write_text(json.dumps(out))


# ----------------------------------------------------------------------------------------------
# Driver


CONFIGS = {
    # name: (processes, threads per process, description)
    "single": (1, 2, "1 process x 2 threads"),
    "single_1t": (1, 1, "1 process x 1 thread"),
    "ddp": (2, 1, "DDP, 2 ranks x 1 thread"),
    "fsdp": (2, 1, "FSDP2, 2 ranks x 1 thread"),
    "single_long": (1, 2, "1 process x 2 threads"),
    "single_long_1t": (1, 1, "1 process x 1 thread"),
    "sp_long": (2, 1, "Ulysses SP=2, 2 ranks x 1 thread"),
}


def run_config(name: str, args, result: Path) -> dict:
    procs, threads, _ = CONFIGS[name]
    common = [
        str(HERE), "--worker", "--config", name, "--threads", str(threads), "--result", str(result),
        "--preset", args.preset, "--layers", str(args.layers), "--grid", args.grid, "--long-grid", args.long_grid,
        "--batch", str(args.batch), "--text-len", str(args.text_len), "--steps", str(args.steps), "--warmup", str(args.warmup),
    ]
    if procs == 1:
        cmd = [sys.executable, *common]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs), *common]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(result.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small", help="DiT preset [small]")
    p.add_argument("--layers", type=int, default=4, help="transformer blocks [4]")
    p.add_argument("--grid", default="3x16x16", help="latent grid TxHxW of the data-parallel clips [3x16x16: 192 tokens]")
    p.add_argument("--batch", type=int, default=4, help="global batch of the data-parallel step [4]")
    p.add_argument("--long-grid", default="9x32x32", help="latent grid of the sequence-parallel clip [9x32x32: 2304 tokens]")
    p.add_argument("--text-len", type=int, default=32, help="text tokens [32]")
    p.add_argument("--steps", type=int, default=3, help="timed steps per configuration and round [3]")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first [1]")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds over the configurations [2]")
    p.add_argument("--json", default=None, help="also write the results here")
    # worker mode (the script runs itself under torchrun)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", default="single", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    import torch

    runs: dict[str, list[dict]] = {k: [] for k in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in CONFIGS:
                res = run_config(name, args, Path(tmp) / f"{name}_{r}.json")
                runs[name].append(res)
                print(f"# round {r + 1}: {name} {res}", file=sys.stderr)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    print(f"# {machine}; load average {os.getloadavg()[0]:.1f}; preset {args.preset} with {args.layers} layers")
    print()
    print(f"Data parallel: training step, global batch {args.batch} x latent grid {args.grid}")
    print()
    print("| configuration | s/step | samples/s | vs 1 process (2 threads) | saved activations per rank (MiB) | peak RSS per process (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    base = statistics.median(r["train"] for r in runs["single"])
    for name in ("single", "single_1t", "ddp", "fsdp"):
        s = statistics.median(r["train"] for r in runs[name])
        rss = max(r["rss_mib"] for r in runs[name])
        act = max(r["saved_mib"] for r in runs[name])
        print(f"| {CONFIGS[name][2]} | {s:.3f} | {args.batch / s:.2f} | {base / s:.2f}x | {act:.1f} | {rss:.0f} |")
    print()
    print(f"Sequence parallel: one clip of latent grid {args.long_grid}")
    print()
    print("| configuration | forward s | train step s | forward vs 1 process (2 threads) | train vs 1 process (2 threads) | saved activations per rank (MiB) | peak RSS per process (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    f0 = statistics.median(r["forward"] for r in runs["single_long"])
    t0 = statistics.median(r["train"] for r in runs["single_long"])
    for name in ("single_long", "single_long_1t", "sp_long"):
        f = statistics.median(r["forward"] for r in runs[name])
        t = statistics.median(r["train"] for r in runs[name])
        rss = max(r["rss_mib"] for r in runs[name])
        act = max(r["saved_mib"] for r in runs[name])
        print(f"| {CONFIGS[name][2]} | {f:.3f} | {t:.3f} | {f0 / f:.2f}x | {t0 / t:.2f}x | {act:.1f} | {rss:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "args": vars(args), "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
