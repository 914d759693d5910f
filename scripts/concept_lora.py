"""Teach a model a concept its training data never showed, with a LoRA, and measure it on the bench.

    python scripts/concept_lora.py --work runs/concept                  # the shipped default model, lava
    python scripts/concept_lora.py --work runs/concept --steps 600 --rank 32

The concept is SoraWorld's ``lava`` ground (`spec.CONCEPT_BACKGROUNDS`): the simulator renders it and
prompts can name it, but random scenes never draw it, so no default training set has it. The
``concept`` bench suite scores 16 prompts on lava and 16 on the four known grounds (whether the
backdrop is the one asked for, and the objects), before and after.

Stages, each a ``soraflow`` command, each skipped when its output is complete (so a rerun resumes;
the trainer resumes itself):

1. ``world dataset --background lava``: the fine-tuning clips;
2. ``train cache-latents``: through the model's own VAE and text encoder;
3. ``eval bench --suite concept`` on the base model;
4. ``train dit --lora RANK --init MODEL``;
5. ``lora merge``: base + adapter as a model folder;
6. ``eval bench --suite concept`` on it.

Writes WORK/concept.json: the bench before and after (per category), the steps and the CPU minutes of
every stage (user + system time of its process).
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cached(cache: Path) -> int:
    """Clips a latent cache holds or has skipped as unreadable (0 when there is none yet)."""
    index = cache / "index.json"
    if not index.is_file():
        return 0
    d = json.loads(index.read_text())
    return len(d.get("entries", [])) + len(d.get("skipped", []))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="work folder (created; rerun to resume)")
    p.add_argument("--model", type=Path, default=REPO / "soraflow" / "assets" / "default", help="base model folder [the shipped one]")
    p.add_argument("--background", default="lava", help="the concept backdrop [lava]")
    p.add_argument("--clips", type=int, default=400, help="fine-tuning clips [400]")
    p.add_argument("--rank", type=int, default=16, help="LoRA rank [16]")
    p.add_argument("--steps", type=int, default=400, help="LoRA optimizer steps [400]")
    p.add_argument("--lr", type=float, default=1e-3, help="LoRA peak learning rate [1e-3]")
    p.add_argument("--threads", type=int, default=None, help="torch threads of every stage [torch's choice]")
    args = p.parse_args(argv)

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    record_path = work / "concept.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {"stages": {}}
    record["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    threads = ["--threads", str(args.threads)] if args.threads else []

    def save():
        from soraflow.atomic import write_json

        write_json(record_path, record)

    def stage(name: str, cmd: list[str], done) -> None:
        if done():
            print(f"{name}: done", flush=True)
            return
        print(f"{name}: {shlex.join(cmd)}", flush=True)
        cpu, wall = cpu_seconds(), time.perf_counter()
        subprocess.run([sys.executable, "-m", "soraflow.cli", *cmd], check=True)
        entry = record["stages"].setdefault(name, {"cpu_min": 0.0, "wall_min": 0.0})
        entry["command"] = "soraflow " + shlex.join(cmd)
        entry["cpu_min"] += (cpu_seconds() - cpu) / 60  # a resumed stage adds its new time
        entry["wall_min"] += (time.perf_counter() - wall) / 60
        save()

    data, latents, lora_run, merged = work / "data", work / "latents", work / "lora", work / "merged"
    stage("data", ["world", "dataset", "--n", str(args.clips), "--out", str(data), "--background", args.background,
                   "--sizes", "128x128,160x96,96x160", "--seconds", "1-5", "--fps", "8", "--no-progress"],
          lambda: (data / "manifest.jsonl").is_file() and len((data / "manifest.jsonl").read_text().splitlines()) >= args.clips)
    stage("cache", ["train", "cache-latents", "--data", str(data), "--vae", str(args.model / "vae"), "--out", str(latents),
                    "--max-frames", "33", *threads],
          lambda: cached(latents) >= args.clips)
    for name, model in (("before", args.model), ("after", merged)):
        if name == "after":
            stage("lora", ["train", "dit", "--data", str(latents), "--out", str(lora_run), "--init", str(args.model),
                           "--lora", str(args.rank), "--steps", str(args.steps), "--lr", str(args.lr), "--warmup-steps", "20",
                           "--checkpoint-every", "50", "--quiet", *threads],
                  lambda: (lora_run / "lora" / "pytorch_lora_weights.safetensors").is_file())
            record["stages"]["lora"]["steps"] = args.steps
            stage("merge", ["lora", "merge", str(args.model), str(lora_run / "lora"), "-o", str(merged)],
                  lambda: (merged / "config.json").is_file())
        out = work / f"bench-{name}"
        stage(f"bench-{name}", ["eval", "bench", "--suite", "concept", "--model", str(model), "--out", str(out),
                                "--reference", "none"],
              lambda out=out: (out / "bench.json").is_file())
        result = json.loads((out / "bench.json").read_text())
        record[name] = {r["name"]: {"overall": r["overall"], "per_category": r["per_category"]} for r in result["results"]}
        save()

    print(f"{record_path}:")
    for name in ("before", "after"):
        for source, r in record[name].items():
            cats = r["per_category"]
            print(f"  {name:6s} {source}: " + ", ".join(
                f"{c} background {cats[c].get('background', 0):.2f} colour {cats[c].get('color', 0):.2f}" for c in cats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
