"""SoraWorld dataset writer throughput: two-second 128x128 clips at 8 fps, lossless, end to end.

Target: 20,000 clips in under 15 minutes on a 2-core machine, i.e. >= 22.2 clips/s.

    python benchmarks/bench_world_dataset.py --n 1000 --workers 2

Prints a markdown table: the stages of one clip measured in this process one after the other
(spec + captions, simulate + render, lossless encode, ground-truth JSON) in CPU time, then the whole writer
(`write_dataset`, multi-process, fsynced manifest) and the projected time for 20,000 clips.
The machine's load average is printed with it: on a shared machine the rate is a lower bound.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from soraflow.video import write_video
from soraflow.world import render_clip
from soraflow.world.captions import long_caption, short_prompt
from soraflow.world.dataset import DatasetConfig, plan_clip, write_dataset
from soraflow.world.spec import random_spec

TARGET_CLIPS, TARGET_SECONDS = 20_000, 15 * 60


def stage_times(config: DatasetConfig, n: int, tmp: Path) -> dict[str, float]:
    """Median CPU milliseconds per clip of each stage, in this process (CPU time, not wall time:
    the machine is shared, and waiting for a core is not the stage's cost)."""
    times: dict[str, list[float]] = {"spec + captions": [], "simulate + render": [], "lossless encode": [],
                                     "ground truth JSON": []}
    for i in range(n):
        t0 = time.process_time()
        plan, rng = plan_clip(config, i)
        spec = random_spec(rng)
        short_prompt(spec, rng), long_caption(spec, rng)
        t1 = time.process_time()
        clip = render_clip(spec, plan.size, config.fps, num_frames=plan.num_frames, seed=plan.seed)
        t2 = time.process_time()
        write_video(tmp / "clip.mp4", clip.frames, config.fps, lossless=True)
        t3 = time.process_time()
        (tmp / "clip.json").write_text(json.dumps(clip.truth.to_dict()))
        t4 = time.process_time()
        for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[key].append(1000 * dt)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="clips to write (default 1000; the target is 20000)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--stage-clips", type=int, default=100, help="clips for the per-stage timing")
    ap.add_argument("--out", default=None, help="dataset folder (default: a temporary one, deleted)")
    args = ap.parse_args()

    config = DatasetConfig(n=args.n, sizes=[(128, 128)], seconds=(2.0, 2.0), fps=8, seed=0, image_fraction=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        stages = stage_times(config, args.stage_clips, Path(tmp))
        out = Path(args.out) if args.out else Path(tmp) / "dataset"
        load_before = os.getloadavg()[0]
        cpu0 = os.times()
        summary = write_dataset(out, config, workers=args.workers, progress=False)
        cpu1 = os.times()
        load_after = os.getloadavg()[0]
        # CPU seconds of this process and its (finished) worker processes: on a shared machine the
        # wall-clock rate depends on the neighbours, CPU time per clip much less.
        cpu = sum(getattr(cpu1, k) - getattr(cpu0, k) for k in ("user", "system", "children_user", "children_system"))
        size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20

    rate = summary.clips_per_second
    projected = TARGET_CLIPS / rate if rate else float("inf")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load average {load_before:.1f} before / {load_after:.1f} after the writer run")
    print()
    print("| stage (one process, median of %d clips) | CPU ms per clip |" % args.stage_clips)
    print("|---|---:|")
    for k, v in stages.items():
        print(f"| {k} | {v:.1f} |")
    print(f"| sum | {sum(stages.values()):.1f} |")
    print()
    print("| writer run | value |")
    print("|---|---:|")
    print(f"| clips written (2 s, 128x128, 8 fps, 16 frames) | {summary.written} |")
    print(f"| workers | {args.workers} |")
    print(f"| wall time | {summary.seconds:.1f} s |")
    print(f"| throughput (wall clock) | {rate:.1f} clips/s |")
    cpu_per_clip = cpu / max(summary.written, 1)
    print(f"| CPU time per clip (writer + workers) | {1000 * cpu_per_clip:.1f} ms |")
    print(f"| rate on {args.workers} idle cores (= workers / CPU time per clip) | {args.workers / cpu_per_clip:.1f} clips/s |")
    print(f"| projected time for {TARGET_CLIPS:,} clips | {projected / 60:.1f} min "
          f"(target {TARGET_SECONDS / 60:.0f} min: {'met' if projected <= TARGET_SECONDS else 'NOT met'}) |")
    print(f"| disk per clip (video + truth JSON) | {1024 * size_mb / max(summary.total, 1):.0f} KiB |")


if __name__ == "__main__":
    main()
