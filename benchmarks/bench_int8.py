"""What the DiT's int8 blocks cost in output and gain in time, against the float32 DiT, on a real model.

Three DiTs sample the same prompts and seeds behind one pipeline (the VAE at its auto dtype in all):
``fp32``; ``int8``, soraflow's :meth:`DiT.quantize_int8` (the blocks' linears in dynamic int8 but the
self-attention output projection and the text-side key/value, kept in float32); and ``int8-all``, every block
linear in int8 (the baseline the kept layers are judged against). Reported: the frames' PSNR to the fp32 DiT's (mean and
worst prompt) and the median sampling time per clip, the variants interleaved over ``--rounds`` because
the machine is shared and noisy (the ratio is the measurement).

    python benchmarks/bench_int8.py --model soraflow/assets/default --threads 2 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PROMPTS = ("a red ball bouncing on grass", "a blue square moving left over a desert", "a green triangle falling",
           "two yellow circles sliding right against a night sky", "a purple star spinning", "an orange cube moving up")


def int8_all(dit):
    """Every block linear in dynamic int8 (per-channel weights): the comparison scheme."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(dit.blocks, {torch.nn.Linear: per_channel_dynamic_qconfig}, inplace=True)
    return dit


def psnr(a, b) -> float:
    import numpy as np

    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 10 * np.log10(255**2 / max(mse, 1e-10))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="soraflow/assets/default", help="model folder [default: the shipped model]")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads [default: 2]")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the variants [default: 3]")
    p.add_argument("--seed", type=int, default=0, help="seed of every clip [default: 0]")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from bench_generate import machine_line
    from soraflow.models.dit import DiT
    from soraflow.pipeline import SoraPipeline

    torch.set_num_threads(args.threads)
    pipe = SoraPipeline.from_pretrained(args.model, dtype="int8")  # the VAE and text encoder as `generate` runs them
    dits = {"fp32": DiT.from_pretrained(Path(args.model) / "dit").float().eval()}
    dits["int8"] = DiT.from_pretrained(Path(args.model) / "dit").float().eval()
    dits["int8"].quantize_int8()
    dits["int8-all"] = int8_all(DiT.from_pretrained(Path(args.model) / "dit").float().eval())

    pipe("warm up", seed=args.seed + 1, progress=False)
    frames, times = {}, {k: [] for k in dits}
    for _ in range(args.rounds):
        for name, dit in dits.items():
            pipe.dit = dit
            results = [pipe(prompt, seed=args.seed, progress=False) for prompt in PROMPTS]
            frames[name] = [r.frames for r in results]
            times[name] += [r.timings["denoise"] for r in results]

    base = statistics.median(times["fp32"])
    print(f"machine: {machine_line()}; {args.threads} threads, {args.rounds} rounds x {len(PROMPTS)} prompts, seed {args.seed}")
    print("\n| DiT | frames' PSNR to fp32, mean | worst prompt | sampling s (median) | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name in dits:
        t = statistics.median(times[name])
        if name == "fp32":
            print(f"| {name} | - | - | {t:.2f} | 1.00 |")
            continue
        ps = [psnr(a, b) for a, b in zip(frames[name], frames["fp32"])]
        print(f"| {name} | {np.mean(ps):.1f} dB | {min(ps):.1f} dB | {t:.2f} | {t / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
