"""Build the default model: a recipe (the settings of each stage, as data) run stage by stage.

    python scripts/build_default_model.py                       # the v2 build into runs/default-model
    nohup python scripts/build_default_model.py > build.log 2>&1 &     # the same, in the background
    python scripts/build_default_model.py --recipe smoke        # the glue end to end, in about a minute
    python scripts/build_default_model.py --plan                # each stage's command and whether it is done
    python scripts/build_default_model.py --set dit.steps=60000 # one setting changed (the DiT trains on)
    python scripts/build_default_model.py --snapshot 54000      # the model at a kept DiT checkpoint, benched

Each stage is one ``soraflow`` command (or a short function here, for the package export and the
curves). Every command resumes itself, so the build resumes too: a stage whose command finished is
skipped while its command stays the same; a changed setting runs that stage again (a trainer then
continues from its last checkpoint) and every stage after it. The DiT trains in chunks of
``dit.snapshot_every`` steps; after each one a snapshot (an export, a short bench, the loss curves)
lands in WORK/snapshots/STEP, so progress can be looked at while it runs. ``--deadline MIN`` stops
cleanly (exit 3) for machines that cut long commands. Stage times are summed in WORK/build.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXIT_DEADLINE = 3

# The v2 recipe. The VAE's shape is the one scripts/vae_study.py chose at equal CPU time (BENCHMARKS.md).
V2 = {
    "data": {"n": 3000, "sizes": "128x128,160x96,96x160", "seconds": "1-5", "fps": 8, "image_fraction": 0.1},
    # frame-wise (frame_pack 4: every frame encoded alone, four stacked per latent frame): at equal CPU time the
    # causal temporal path lost moving objects (boxes of frames 1+ 11.7 dB against 21.3), so it trains on frames
    # "use": a finished VAE folder taken as this stage's output instead of training one: the study's long run of
    # this very configuration for these 6,000 steps (state/vae-v2f-6000, 157 CPU minutes), its encoder frozen and a
    # width-32 decoder trained on it in two cosines, 4,000 + 2,000 steps (208 CPU minutes; scripts/vae_study.py
    # --long-set decoder_base_dim=32 --long-set freeze_encoder=true): 38.2 dB, 28.3 dB in the objects' boxes, the
    # bench's vae ceiling within 0.05 of the simulator on every gated metric. The encoder, and so the latent cache,
    # are the same. With use=null the build trains the width-16 VAE only.
    "vae": {"preset": "small", "spatial_factor": 4, "residual": True, "frame_pack": 4, "steps": 6000, "batch_size": 16,
            "crop": 64, "frames": 9, "image_prob": 1.0, "lr": 1e-4, "object_weight": 4.0, "save_every": 500,
            "use": "state/vae-v2f-dec32-6000"},
    "cache": {"max_frames": 33},
    # the size scripts/dit_scaling.py found best at every budget it measured ("xs": 4 blocks, width 256, 5.6 M
    # parameters; BENCHMARKS.md), and the steps that about 35 core-hours buy it at 0.43 CPU s a step.
    # object_weight: the latent cells that stand out from their surroundings weigh 11x in the loss; with a plain
    # loss the first 50,000 steps drew the prompt's background and none of its objects (bench colour 0.067 at
    # 25,000 and at 50,000 steps; BENCHMARKS.md, "Default model v2: the long DiT run").
    # batch_tokens 512: the model's 1x4x4 tokens. The trainer used to count tokens with the preset's 1x2x2 patches
    # whatever --patch-size said, so the 2,048 written here were 512 real ones; 512 now makes the same batches.
    "dit": {"preset": "small", "num_layers": 4, "num_attention_heads": 4, "ffn_dim": 1024, "patch_size": 4,
            "steps": 250000, "batch_tokens": 512, "lr": 3e-4, "warmup_steps": 1000, "timestep_shift": 4.0,
            "terminal_prob": 0.1, "ema_decay": 0.9995, "pooled_text": True, "object_weight": 10.0,
            "checkpoint_every": 2000, "snapshot_every": 25000},
    "export": {"steps": 8, "guidance_scale": 4.0, "guidance_min_t": 0.75, "sampler": "euler", "dtype": "bfloat16",
               "max_mb": 60, "size": [128, 128], "seconds": 4.0},
    "bench": {"limit": None, "snapshot_limit": 30},
    "speed": {"repeats": 5},
}
SMOKE = {"data": {"n": 12, "seconds": "1-2"}, "vae": {"steps": 3, "batch_size": 2, "crop": 32, "frames": 5,
         "save_every": 2, "use": None}, "cache": {"max_frames": 9}, "dit": {"preset": "tiny", "num_layers": 2, "steps": 4,
         "batch_tokens": 256, "warmup_steps": 1, "checkpoint_every": 2, "snapshot_every": 2},
         "export": {"max_mb": 60}, "bench": {"limit": 2, "snapshot_limit": 1}, "speed": {"repeats": 1}}


def merged(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for stage, values in changes.items():
        out[stage].update(values)
    return out


RECIPES = {"v2": V2, "smoke": merged(V2, SMOKE)}


def options(values: dict, skip=()) -> list:
    """A settings dict as command-line options (``--name value``; True: a flag; None: left out)."""
    out = []
    for key, value in values.items():
        if key in skip or value is None or value is False:
            continue
        out += [f"--{key.replace('_', '-')}"] + ([] if value is True else [value])
    return out


def stages(r: dict, work: Path, device: str, threads: int | None) -> list[dict]:
    """The recipe as stages: name, command (argv for ``soraflow``, or a function here), and chunks."""
    data, vae, cache, dit = work / "data", work / "vae", work / "cache", work / "dit"
    run = ["--threads", threads] if threads else []
    d = r["dit"]
    dit_cmd = ["train", "dit", "--data", cache, "--out", dit, "--device", device, *run,
               *options(d, skip=("snapshot_every",))]
    chunks = list(range(d["snapshot_every"], d["steps"], d["snapshot_every"])) + [d["steps"]]
    # "made": what the stage leaves behind; a stage recorded as done whose output is gone (a work folder
    # restored from its build.json and checkpoints on a new machine) runs again
    return [
        {"name": "data", "cmd": ["world", "dataset", "--out", data, "--no-progress", *options(r["data"])],
         "made": lambda chunk: (data / "manifest.jsonl").is_file()},
        {"name": "vae", "made": lambda chunk: (vae / "model" / "config.json").is_file(),
         **({"cmd": use_vae, "key": r["vae"]["use"]} if r["vae"]["use"] else
            {"cmd": ["train", "vae", "--data", data, "--run-dir", vae, "--device", device, *run, *options(r["vae"], skip=("use",))]})},
        {"name": "cache", "cmd": ["train", "cache-latents", "--data", data, "--vae", vae / "model", "--out", cache,
                                  "--device", device, *run, *options(r["cache"])],
         "made": lambda chunk: (cache / "index.json").is_file()},
        {"name": "dit", "cmd": dit_cmd, "chunks": chunks, "made": lambda chunk: _last_step(dit) >= chunk},
        {"name": "export", "cmd": export_package},
        {"name": "bench", "cmd": ["eval", "bench", "--model", work / "model", "--out", work / "bench", "--device", device,
                                  "--dtype", "float32", "--no-progress", *options({"limit": r["bench"]["limit"]})]},
        {"name": "speed", "cmd": [sys.executable, REPO / "benchmarks" / "bench_generate.py", "--model", work / "model",
                                  "--repeats", r["speed"]["repeats"], "--json", work / "speed.json"], "python": True},
        {"name": "curves", "cmd": draw_curves},
    ]


# ---------------------------------------------------------------------------------------------- function stages


def use_vae(b: "Build") -> None:
    """vae.use: a finished VAE model folder becomes WORK/vae/model (checked: it loads, its weights are finite)."""
    from soraflow.models.vae import VideoVAE

    src = Path(b.recipe["vae"]["use"])
    src = src if src.is_absolute() else REPO / src
    VideoVAE.from_pretrained(src)  # a folder that does not load stops the build here, not in the cache stage
    out = b.work / "vae" / "model"
    staged = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(src, staged)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staged, out)
    print(f"[vae] {out}: copied from {src}", flush=True)


def export_package(b: "Build", out: Path | None = None, checkpoint: Path | None = None) -> None:
    """The DiT's EMA weights (of its newest checkpoint, or ``checkpoint``) + the VAE -> a model folder in
    the export dtype, size-checked, with build.json."""
    import torch

    from soraflow.atomic import write_json
    from soraflow.pipeline import SoraPipeline
    from soraflow.train.dit import export_pipeline

    e, out = b.recipe["export"], out or b.work / "model"
    h, w = e["size"]
    fp32 = b.work / "export-fp32"
    export_pipeline(checkpoint or b.work / "dit", fp32, vae=b.work / "vae" / "model", steps=e["steps"], guidance_scale=e["guidance_scale"],
                    guidance_min_t=e["guidance_min_t"], sampler=e["sampler"], shift=b.recipe["dit"]["timestep_shift"],
                    expander="world", height=h, width=w, fps=b.recipe["data"]["fps"], seconds=e["seconds"])
    pipe = SoraPipeline.from_pretrained(fp32)
    for model in (pipe.vae, pipe.dit):
        model.to(dtype=getattr(torch, e["dtype"]))
    staged = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(staged, ignore_errors=True)
    pipe.save_pretrained(staged)
    size_mb = sum(p.stat().st_size for p in staged.rglob("*") if p.is_file()) / 2**20
    if size_mb > e["max_mb"]:
        shutil.rmtree(staged)
        raise SystemExit(f"[export] the model is {size_mb:.1f} MB, over export.max_mb = {e['max_mb']}")
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in (("dit", pipe.dit), ("vae", pipe.vae))}
    write_json(staged / "build.json", {"recipe": b.recipe, "recipe_name": b.recipe_name, "parameters": params,
                                       "size_mb": round(size_mb, 2), "seconds": b.log.get("seconds", {}),
                                       "dit_step": _step(checkpoint) if checkpoint else _last_step(b.work / "dit")})
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staged, out)
    shutil.rmtree(fp32, ignore_errors=True)
    print(f"[export] {out}: {size_mb:.1f} MB, DiT {params['dit'] / 1e6:.1f} M, VAE {params['vae'] / 1e6:.1f} M parameters", flush=True)


def _last_step(run: Path) -> int:
    steps = sorted((run / "checkpoints").glob("step_*")) if (run / "checkpoints").is_dir() else []
    return _step(steps[-1]) if steps else 0


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.split("_")[1])


def draw_curves(b: "Build", out: Path | None = None) -> None:
    """WORK/curves/{vae,dit}_loss.png from the trainers' TensorBoard logs, and bench.png: the snapshots'
    bench scores against the DiT's step."""
    from soraflow.train.curves import plot_benches, plot_curve, read_scalars, read_snapshot_benches

    out = out or b.work / "curves"
    for name, sub, tag in (("vae", "tb", "loss/total"), ("dit", "tensorboard", "train/loss")):
        points = read_scalars(b.work / name / sub, tag)
        if points:
            print(f"[curves] {plot_curve(points, out / f'{name}_loss.png', title=f'{name.upper()} loss ({tag})')}")
    benches = read_snapshot_benches(b.work / "snapshots")
    if benches:
        limit = b.recipe["bench"]["snapshot_limit"]
        print(f"[curves] {plot_benches(benches, out / 'bench.png', title=f'bench of the snapshots ({limit} prompts)')}")


# ---------------------------------------------------------------------------------------------- the runner


class Deadline(Exception):
    pass


class Stopped(Exception):
    """SIGTERM to the build (a session ending, `kill`): raised in the main thread so the running stage
    is stopped cleanly and its time is recorded."""


def _on_sigterm(signum, frame):
    raise Stopped()


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


class Build:
    def __init__(self, recipe_name: str, recipe: dict, work: Path, device: str, threads: int | None, deadline: float | None):
        self.recipe_name, self.recipe, self.work, self.deadline = recipe_name, recipe, work, deadline
        self.stages = stages(recipe, work, device, threads)
        self.log_path = work / "build.json"
        self.log = json.loads(self.log_path.read_text()) if self.log_path.is_file() else {}

    def argv(self, stage: dict, chunk: int | None = None) -> list[str] | None:
        cmd = stage["cmd"]
        if callable(cmd):
            return None
        argv = [str(a) for a in cmd] if stage.get("python") else [sys.executable, "-m", "soraflow.cli", *map(str, cmd)]
        return argv + (["--stop-at-step", str(chunk)] if chunk is not None else [])

    def key(self, stage: dict, chunk: int | None = None) -> str:
        """What a finished stage (or chunk) is recorded as: its command, or its function and what it reads
        (its own ``key``, else the whole recipe)."""
        argv = self.argv(stage, chunk)
        return json.dumps(argv if argv is not None else [stage["cmd"].__name__, stage.get("key", self.recipe)])

    def done(self, stage: dict, chunk: int | None = None) -> bool:
        recorded = self.log.get("done", {}).get(f"{stage['name']}@{chunk}" if chunk else stage["name"]) == self.key(stage, chunk)
        return recorded and stage.get("made", lambda chunk: True)(chunk)

    def save(self) -> None:
        from soraflow.atomic import write_json

        write_json(self.log_path, self.log)

    def run(self, stage: dict, chunk: int | None = None) -> None:
        start, argv = time.perf_counter(), self.argv(stage, chunk)
        print(f"\n== {stage['name']}{f' to step {chunk}' if chunk else ''} ==", flush=True)
        try:
            if argv is None:
                stage["cmd"](self)
            else:
                self._subprocess(stage["name"], argv)
        finally:  # compute used, summed over resumes
            seconds = self.log.setdefault("seconds", {})
            seconds[stage["name"]] = round(seconds.get(stage["name"], 0.0) + time.perf_counter() - start, 1)
            self.save()
        self.log.setdefault("done", {})[f"{stage['name']}@{chunk}" if chunk else stage["name"]] = self.key(stage, chunk)
        self.save()

    def _subprocess(self, name: str, argv: list[str]) -> None:
        proc = subprocess.Popen(argv, start_new_session=True)  # its own group: a deadline stops its workers too
        try:
            proc.wait(timeout=None if self.deadline is None else max(self.deadline - time.monotonic(), 0.1))
        except (subprocess.TimeoutExpired, Stopped):  # SIGTERM stops the stage as a deadline does (a trainer saves its step)
            _stop(proc)
            raise Deadline(name) from None
        if proc.returncode:
            raise SystemExit(f"stage {name} failed (exit {proc.returncode}): {' '.join(argv)}")

    def snapshot(self, step: int) -> None:
        """After a DiT chunk (or for ``--snapshot STEP``): the model at that step's checkpoint, a short
        bench and the curves in WORK/snapshots/STEP."""
        out = self.work / "snapshots" / f"{step:08d}"
        if (out / "bench").is_dir() and any((out / "bench").iterdir()):
            return  # taken before (a resumed build passes this chunk again)
        checkpoint = self.work / "dit" / "checkpoints" / f"step_{step:08d}"
        if not checkpoint.is_dir():
            kept = ", ".join(str(_step(c)) for c in sorted((self.work / "dit" / "checkpoints").glob("step_*"))) or "none"
            raise SystemExit(f"no DiT checkpoint at step {step} in {checkpoint.parent} (kept: {kept})")
        export_package(self, out / "model", checkpoint)
        limit = self.recipe["bench"]["snapshot_limit"]
        self._subprocess("snapshot", [sys.executable, "-m", "soraflow.cli", "eval", "bench", "--model", str(out / "model"),
                                      "--out", str(out / "bench"), "--limit", str(limit), "--reference", "none",
                                      "--dtype", "float32", "--no-progress"])
        draw_curves(self, out)  # after the bench: its plot of the snapshots' scores includes this one
        shutil.rmtree(out / "model")  # the bench and curves are the record; the weights are in the DiT's checkpoints


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=list(RECIPES), default="v2", help="v2 (the shipped model's) or smoke [v2]")
    p.add_argument("--work", type=Path, default=None, help="work folder [runs/default-model, smoke: runs/default-model-smoke]")
    p.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE", help="change one setting (JSON value)")
    p.add_argument("--device", default="cpu", help="torch device of every stage [cpu]")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the training stages")
    p.add_argument("--deadline", type=float, default=None, metavar="MIN", help="stop cleanly (exit 3) after this many minutes")
    p.add_argument("--plan", action="store_true", help="print each stage's command and whether it is done; run nothing")
    p.add_argument("--snapshot", type=int, default=None, metavar="STEP",
                   help="only take a snapshot (export, short bench, curves) of the DiT checkpoint at STEP, "
                        "for example while the build runs on")
    p.add_argument("--install", action="store_true", help="copy the exported model into soraflow/assets/default/")
    return p.parse_args(argv)


def resolve(args) -> Build:
    recipe = copy.deepcopy(RECIPES[args.recipe])
    for item in args.set:
        key, _, value = item.partition("=")
        stage, _, name = key.partition(".")
        if stage not in recipe or name not in recipe[stage]:
            raise SystemExit(f"--set {item}: no setting {key!r} (stages: {', '.join(recipe)})")
        try:
            recipe[stage][name] = json.loads(value)
        except ValueError:
            recipe[stage][name] = value
    work = (args.work or REPO / "runs" / ("default-model-smoke" if args.recipe == "smoke" else "default-model")).resolve()
    deadline = time.monotonic() + args.deadline * 60 if args.deadline else None
    return Build(args.recipe, recipe, work, args.device, args.threads, deadline)


def main(argv=None) -> int:
    args = parse_args(argv)
    b = resolve(args)
    rerun = False  # once a stage runs again, every later one does: it reads what that stage wrote
    if not args.plan:
        b.work.mkdir(parents=True, exist_ok=True)
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if args.snapshot is not None:
            b.snapshot(args.snapshot)
            print(f"snapshot: {b.work / 'snapshots' / f'{args.snapshot:08d}'}")
            return 0
        for stage in b.stages:
            for chunk in stage.get("chunks") or [None]:
                rerun = rerun or not b.done(stage, chunk)
                if args.plan:
                    cmd = b.argv(stage, chunk)
                    print(f"[{'todo' if rerun else 'done'}] {stage['name']}{f'@{chunk}' if chunk else ''}: "
                          + (" ".join(cmd[3:] if cmd[1:3] == ['-m', 'soraflow.cli'] else cmd) if cmd else stage['cmd'].__name__))
                elif rerun:
                    b.run(stage, chunk)
                    if chunk and chunk != stage["chunks"][-1]:
                        b.snapshot(chunk)
    except Deadline as stop:
        print(f"\nstopped in stage {stop} (deadline or SIGTERM); run the same command again to resume", flush=True)
        return EXIT_DEADLINE
    except Stopped:  # between stages or in a function stage: nothing is half done
        print("\nstopped by SIGTERM; run the same command again to resume", flush=True)
        return EXIT_DEADLINE
    finally:
        if not args.plan:
            signal.signal(signal.SIGTERM, previous)
    if args.install and not args.plan:
        target = REPO / "soraflow" / "assets" / "default"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(b.work / "model", target)
        print(f"installed {target}")
    if not args.plan:
        print(f"\ndone: {b.work / 'model'}; build log {b.log_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
