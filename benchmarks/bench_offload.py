"""CPU offload of a Wan folder: the weight bytes on the device at once, and on a GPU its peak memory and time.

    python benchmarks/bench_offload.py                          # the 1.3B layout, counted on the CPU
    python benchmarks/bench_offload.py --device cuda --size 480x832 --frames 17 --steps 4   # on a GPU

Builds the folder of benchmarks/bench_wan_pipeline.py (random weights: the Wan2.1 T2V 1.3B transformer,
the Wan2.1 VAE, a small UMT5) and generates with no offload, ``offload="model"`` and
``offload="sequential"``, in bf16. On the CPU the "device" is the CPU itself: what is measured is the
offload's own count of the weight bytes it had placed at once (``pipe.offload.peak_bytes``) and how
far the frames move (offload keeps the VAE in its plain layout, where bf16 on the CPU otherwise takes
channels-last kernels that round differently; model and sequential offload must agree exactly). On a GPU it adds ``torch.cuda.max_memory_allocated`` and the time. Nothing is
downloaded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=30, help="transformer blocks of the 1.3B layout's 30 [30]")
    p.add_argument("--size", default="64x64", help="HxW [64x64: the weights, not the activations, are counted]")
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--folder", type=Path, default=None, help="reuse this built folder")
    args = p.parse_args(argv)
    import numpy as np
    import torch

    from bench_wan_pipeline import build_folder
    from soraflow.pipeline import SoraPipeline

    tmp = None
    if args.folder is None:
        tmp = tempfile.TemporaryDirectory()
        args.folder = Path(tmp.name) / "wan"
        build_folder(args.folder, args.layers)
    h, w = (int(v) for v in args.size.split("x"))
    cuda = args.device.startswith("cuda")
    print(f"Wan2.1 1.3B layout, {args.layers} of 30 blocks, bf16, {w}x{h}, {args.frames} frames, {args.steps} step(s), "
          f"{args.device}")
    print("| offload | weights on the device at once, MiB | peak CUDA MiB | generate s | max uint8 diff from none | from model |\n"
          "|---|---:|---:|---:|---:|---:|")
    made = {}
    for mode in (None, "model", "sequential"):
        pipe = SoraPipeline.from_pretrained(args.folder, device=args.device, dtype=torch.bfloat16, offload=mode)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        frames = pipe("a red ball bouncing on grass", size=(h, w), num_frames=args.frames, steps=args.steps,
                      guidance_scale=1.0, seed=0, progress=False).frames
        took = time.perf_counter() - start
        if mode is None:
            placed = sum(t.numel() * t.element_size() for m in (pipe.text_encoder.model, pipe.dit, pipe.vae)
                         for t in [*m.parameters(), *m.buffers()])
        else:
            placed = pipe.offload.peak_bytes
        peak = f"{torch.cuda.max_memory_allocated() / 2**20:.0f}" if cuda else ""
        made[mode] = frames.astype(np.int16)
        diffs = [f"{np.abs(frames - made[m]).max()}" if m in made else "" for m in (None, "model")]
        print(f"| {mode or 'none'} | {placed / 2**20:.0f} | {peak} | {took:.1f} | {diffs[0]} | {diffs[1]} |", flush=True)
        del pipe
    return 0


if __name__ == "__main__":
    sys.exit(main())
