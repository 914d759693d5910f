"""DiT speed: soraflow's DiT against diffusers' WanTransformer3DModel, side by side in one run.

Both models hold the same weights (diffusers' random init copied into ours) and get the same input.
Each timing alternates the two models (A B B A ...), so load on a shared machine hits both alike;
the ratio column is what to read. Precisions:
  fp32            weights and math in fp32
  bf16 autocast   fp32 weights, torch.autocast(bf16) (how training runs)
  bf16 weights    model.to(bfloat16) (inference); ours keeps the residual stream and modulation fp32
  fp32-compiled   both models under torch.compile (inductor, dynamic=False), fp32, forward only:
                  the equal-footing comparison for compiled inference (compile time not counted)
"max |diff|" is each output against diffusers in fp32 (the reference).

Then one training step of our model alone (forward + backward + AdamW) in samples/s and MFU:
FLOPs from DiT.flops_per_step (matmuls, backward = 2x forward), divided by the fp32 and bf16 matmul
peaks measured in the same run (the best 2048^3 GEMM, timed between the training steps).

    python benchmarks/bench_dit.py                                  # small preset, 9x16x16 latents, 32 tokens
    python benchmarks/bench_dit.py --preset tiny --repeats 2        # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time


GEMM_N = 2048  # the peak is the best of an n^3 GEMM


def gemm(dtype):
    """A callable running one GEMM_N^3 matmul in ``dtype`` (2 * GEMM_N^3 FLOPs)."""
    import torch

    a, b = torch.randn(GEMM_N, GEMM_N).to(dtype), torch.randn(GEMM_N, GEMM_N).to(dtype)
    return lambda: a @ b


def interleaved(fns: dict, repeats: int, stat=statistics.median) -> dict[str, float]:
    """``stat`` (median) of the seconds of each callable, run in alternating order (one warm-up each)."""
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for k in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: stat(v) for k, v in times.items()}


def parse_grid(s: str) -> tuple[int, int, int]:
    t, h, w = (int(v) for v in s.lower().split("x"))
    return t, h, w


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", help="DiT preset [small]")
    p.add_argument("--layers", type=int, default=None, help="blocks of the preset to keep (time per block is what compares) [all]")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change one DiTConfig field (JSON value), e.g. the default model's: --set dim=256 "
                        "--set num_attention_heads=4 --set ffn_dim=1024 --set 'patch_size=[1,4,4]' "
                        "--set in_channels=64 --set out_channels=64")
    p.add_argument("--grid", default="9x16x16", help="latent grid TxHxW [9x16x16 = 33 frames of 128x128]")
    p.add_argument("--text-len", type=int, default=32, help="text tokens [32]")
    p.add_argument("--batch", type=int, default=1, help="batch for the forward / backward comparison [1]")
    p.add_argument("--repeats", type=int, default=8, help="timed runs per model and case [8]")
    p.add_argument("--precisions", default="fp32,bf16-autocast,bf16-weights",
                   help="comma list of fp32, bf16-autocast, bf16-weights, fp32-compiled [the first three]")
    p.add_argument("--train-batch", type=int, default=4, help="batch of the training-step measurement [4]")
    p.add_argument("--train-steps", type=int, default=5, help="timed training steps per precision [5]")
    p.add_argument("--no-train", action="store_true", help="skip the training-step measurement")
    p.add_argument("--threads", type=int, default=None, help="torch threads [torch default]")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()

    import torch
    from diffusers import WanTransformer3DModel

    from soraflow.models.dit import DiT, dit_config

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    overrides = {"num_layers": args.layers} if args.layers else {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except ValueError:
            raise SystemExit(f"--set {item}: the value is not JSON") from None
    cfg = dit_config(args.preset, **overrides)
    grid = parse_grid(args.grid)
    ref32 = WanTransformer3DModel(**{k: v for k, v in cfg.to_diffusers_dict().items() if not k.startswith("_")})
    ours32 = DiT(cfg)
    ours32.load_state_dict(ref32.state_dict())
    ref32.eval(), ours32.eval()
    n_params = ours32.num_parameters()

    B, L = args.batch, args.text_len
    x = torch.randn(B, cfg.in_channels, *grid)
    ctx = torch.randn(B, L, cfg.text_dim)
    pt, ph, pw = cfg.patch_size
    tokens_per_frame = (grid[1] // ph) * (grid[2] // pw)
    n_tokens = (grid[0] // pt) * tokens_per_frame
    t_cases = {
        "t per sample": torch.full((B,), 0.6),
        # Image-to-video: the first latent frame is given (t = 0); diffusers takes it per token (TI2V layout).
        "t per frame": torch.tensor([[0.0] + [0.6] * (grid[0] - 1)] * B),
    }

    def ref_t(t):
        return (t.repeat_interleave(tokens_per_frame * pt, dim=1) if t.ndim == 2 else t) * 1000

    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"
    best = interleaved({"fp32": gemm(torch.float32), "bf16": gemm(torch.bfloat16)}, 4, stat=min)
    peak32, peak16 = 2 * GEMM_N**3 / best["fp32"], 2 * GEMM_N**3 / best["bf16"]
    print(f"# DiT benchmark: preset {args.preset} ({n_params / 1e6:.1f}M parameters), latent grid {args.grid} "
          f"({n_tokens} tokens), {L} text tokens, batch {B}")
    print(f"# {machine}; load average {os.getloadavg()[0]:.1f}; GEMM peak fp32 {peak32 / 1e9:.0f} GFLOP/s, "
          f"bf16 {peak16 / 1e9:.0f} GFLOP/s")
    results: dict = {"preset": args.preset, "params": n_params, "grid": grid, "text_len": L, "batch": B,
                     "machine": machine, "peak_fp32": peak32, "peak_bf16": peak16, "forward": [], "train": []}

    precisions = args.precisions.split(",")
    models = {}
    for prec in precisions:
        if prec == "bf16-weights":
            r16 = WanTransformer3DModel(**{k: v for k, v in cfg.to_diffusers_dict().items() if not k.startswith("_")})
            r16.load_state_dict(ref32.state_dict())
            o16 = DiT(cfg)
            o16.load_state_dict(ours32.state_dict())
            models[prec] = (r16.eval().to(torch.bfloat16), o16.eval().to(torch.bfloat16))
        elif prec in ("fp32", "bf16-autocast"):
            models[prec] = (ref32, ours32)
        elif prec == "fp32-compiled":
            models[prec] = (torch.compile(ref32, dynamic=False), torch.compile(ours32, dynamic=False))
        else:
            raise SystemExit(f"unknown precision {prec!r}")

    def autocast(prec):
        return torch.autocast("cpu", torch.bfloat16, enabled=prec == "bf16-autocast")

    # 1. Forward (inference).
    print("\n| precision | timesteps | diffusers fwd (ms) | ours fwd (ms) | speed-up | max abs diff ours vs diffusers fp32 | diffusers vs its fp32 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for case, t in t_cases.items():
        with torch.inference_mode():
            reference = ref32(x, ref_t(t), ctx, return_dict=False)[0].float()
        for prec in precisions:
            ref, ours = models[prec]
            xin = x.to(torch.bfloat16) if prec == "bf16-weights" else x
            cin = ctx.to(torch.bfloat16) if prec == "bf16-weights" else ctx
            with torch.inference_mode(), autocast(prec):
                med = interleaved({
                    "diffusers": lambda: ref(xin, ref_t(t), cin, return_dict=False),
                    "ours": lambda: ours(x, t, ctx),
                }, args.repeats)
                diff_ours = (ours(x, t, ctx).float() - reference).abs().max().item()
                diff_ref = (ref(xin, ref_t(t), cin, return_dict=False)[0].float() - reference).abs().max().item()
            row = dict(precision=prec, timesteps=case, diffusers_ms=med["diffusers"] * 1e3, ours_ms=med["ours"] * 1e3,
                       speedup=med["diffusers"] / med["ours"], max_abs_diff=diff_ours, diffusers_diff=diff_ref)
            results["forward"].append(row)
            print(f"| {prec} | {case} | {row['diffusers_ms']:.0f} | {row['ours_ms']:.0f} | {row['speedup']:.2f}x "
                  f"| {diff_ours:.1e} | {diff_ref:.1e} |", flush=True)

    # 2. Forward + backward (gradients of every parameter).
    print("\n| precision | timesteps | diffusers fwd+bwd (ms) | ours fwd+bwd (ms) | speed-up |")
    print("|---|---|---:|---:|---:|")
    ref32.train(), ours32.train()
    for prec in [p for p in precisions if p in ("fp32", "bf16-autocast")]:
        for case, t in t_cases.items():
            def step(model, is_ref):
                with autocast(prec):
                    out = model(x, ref_t(t), ctx, return_dict=False)[0] if is_ref else model(x, t, ctx)
                out.float().square().mean().backward()
                model.zero_grad(set_to_none=True)

            med = interleaved({"diffusers": lambda: step(ref32, True), "ours": lambda: step(ours32, False)},
                              max(2, args.repeats // 2))
            row = dict(precision=prec, timesteps=case, diffusers_ms=med["diffusers"] * 1e3, ours_ms=med["ours"] * 1e3,
                       speedup=med["diffusers"] / med["ours"])
            results["forward"].append({**row, "backward": True})
            print(f"| {prec} | {case} | {row['diffusers_ms']:.0f} | {row['ours_ms']:.0f} | {row['speedup']:.2f}x |",
                  flush=True)

    # 3. Training step of our model: forward + backward + AdamW.
    if not args.no_train:
        Bt = args.train_batch
        xt, ct = torch.randn(Bt, cfg.in_channels, *grid), torch.randn(Bt, L, cfg.text_dim)
        target = torch.randn_like(xt)
        flops = ours32.flops_per_step(grid, L, batch_size=Bt)
        print(f"\nTraining step (ours, batch {Bt}, {flops / 1e9:.1f} GFLOP per step):\n")
        model = DiT(cfg)
        model.load_state_dict(ours32.state_dict())
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        train_steps = {}
        for prec in [p for p in precisions if p in ("fp32", "bf16-autocast")]:
            def train_step(prec=prec):
                t = torch.rand(Bt)
                with autocast(prec):
                    loss = (model(xt, t, ct).float() - target).square().mean()
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            train_steps[prec] = train_step
        # The GEMM peaks are measured again between the steps: on a shared machine the load when the
        # peak is taken must be the load the steps see. The peak is the best GEMM, the step the median.
        gemms = {"gemm fp32": gemm(torch.float32), "gemm bf16": gemm(torch.bfloat16)}
        times = interleaved({**train_steps, **gemms}, args.train_steps, stat=lambda v: v)
        peak32 = max(peak32, 2 * GEMM_N**3 / min(times["gemm fp32"]))
        peak16 = max(peak16, 2 * GEMM_N**3 / min(times["gemm bf16"]))
        print(f"(GEMM peak over the whole run: fp32 {peak32 / 1e9:.0f} GFLOP/s, bf16 {peak16 / 1e9:.0f} GFLOP/s)\n")
        results.update(peak_fp32=peak32, peak_bf16=peak16)
        print("| precision | step (ms) | samples/s | TFLOP/s | MFU vs bf16 peak | MFU vs fp32 peak |")
        print("|---|---:|---:|---:|---:|---:|")
        for prec in train_steps:
            sec = statistics.median(times[prec])
            row = dict(precision=prec, step_ms=sec * 1e3, samples_per_s=Bt / sec, tflops=flops / sec / 1e12,
                       mfu_bf16=flops / sec / peak16, mfu_fp32=flops / sec / peak32)
            results["train"].append(row)
            print(f"| {prec} | {row['step_ms']:.0f} | {row['samples_per_s']:.2f} | {row['tflops']:.3f} "
                  f"| {row['mfu_bf16']:.1%} | {row['mfu_fp32']:.1%} |")
    print(f"\n# load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
