"""Build soraflow's default model with one resumable command: data -> VAE -> latent cache -> DiT -> export -> bench.

    python scripts/build_default_model.py --device cuda            # the real run (GPU box), into runs/default-model
    python scripts/build_default_model.py --scale smoke            # a tiny end-to-end check (a few CPU minutes)
    python scripts/build_default_model.py --plan                   # print the stages and what is done, run nothing

Stages (each runs the public ``soraflow`` command in its own process and is skipped when its output is
complete, so running the same command again resumes where it stopped, mid-stage included: the
dataset writer, the VAE and DiT trainers and the latent cache all resume themselves):

1. ``data``   SoraWorld training set: 128x128, 160x96 and 96x160; single frames to 6 s at 8 fps; every
   dynamic and world-model property the spec sampler draws; short and long captions.
2. ``vae``    the causal 3D VAE ("small" preset), exported with latent statistics to WORK/vae/model.
3. ``cache``  every clip encoded once with the VAE and its captions with MiniLM (WORK/cache).
4. ``dit``    the DiT (8-block "small" width: 20 M parameters) with rectified flow and the prompting-mode
   masks (text-to-video, image-to-video, extension both ways, connect/loop, in-filling).
   ``dit-pooled-text`` (``dit_tune_steps`` > 0) trains on from the ``dit`` stage's EMA weights with the
   pooled-prompt path added (``--pooled-text``, zero-initialised). ``dit-high-shift`` (``dit_reshift_steps``
   > 0) trains on from the previous phase's EMA weights at timestep shift ``dit_reshift`` with a fraction of
   the samples at t = 1 (without them the model ignores the prompt: docs/default_model.md). Both are for
   the ``cpu`` recipe, whose first phase had neither; the ``gpu`` recipe has them from the start.
5. ``vae-decoder`` the VAE's decoder trained on whole clips as long as a DiT window (encoder frozen, so the
   latents the DiT learned stay valid): the VAE trains on 9-frame crops, and its decoder falls apart
   after frame 9 of longer clips until this stage. ``vae-objects`` (``objects_steps`` > 0) trains the
   decoder on with an L1 that weights the pixels standing out from their surroundings ``1 + object_weight``
   times, in ``objects_rounds`` rounds (WORK/vae-objects, vae-objects-2, ...), each from the last.
   ``vae-whole``, ``cache-again`` and ``dit-new-latents`` (``vae_long_steps`` > 0): the whole VAE, encoder
   too, trains on whole clips from the decoder stages' weights, every clip is encoded again with it, and
   one more DiT phase trains on those latents; that VAE and that phase ship (a VAE trained briefly on
   short crops loses small objects after the first latent frame, the cpu build's case).
   ``dit-objects`` (``dit_objects_steps`` > 0): the last DiT phases, on the shipped VAE's latents, with
   the latent cells that stand out weighted ``1 + dit_object_weight`` times, in ``dit_objects_rounds`` rounds.
6. ``export`` the EMA weights in bf16 (or fp16) with the default generation settings into
   soraflow/assets/default/ (checked <= --max-mb), with build.json (provenance and compute).
7. ``bench``  the SoraWorld bench on the exported model (skipped with a note if the bench is missing).
8. ``speed``  benchmarks/bench_generate.py on the exported model (the 4 s clip, median of 5).
9. ``curves`` the VAE and DiT loss curves as PNG (WORK/curves/), always redrawn.

Run folders keep the names of the stages' earlier names (dit-tune, dit-shift, vae-long, cache-long,
dit-long), so an old work folder resumes; OLD_NAMES maps those names for --only and --force.

Everything is seeded (``--seed``); the resolved plan and per-stage wall times go to WORK/build.json.
``--deadline MIN`` stops cleanly (exit 3) when the time is up, so a machine that allows ten-minute
commands builds the model over several calls of the same command.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_EXPORT = REPO / "soraflow" / "assets" / "default"
EXIT_DEADLINE = 3  # the deadline passed: run the same command again to resume


@dataclass
class Scale:
    """Sizes of every stage. ``gpu`` is the real build; ``cpu`` the same recipe shrunk for a CPU
    (hours in the background); ``smoke`` checks the glue end to end in minutes."""

    # data
    clips: int = 20000  # SoraWorld clips (10% single frames)
    seconds: str = "1-6"  # clip length range (single frames come from --image-fraction)
    image_fraction: float = 0.1
    sizes: str = "128x128,160x96,96x160"  # WIDTHxHEIGHT, drawn uniformly
    fps: int = 8
    # VAE
    vae_preset: str = "small"
    vae_steps: int = 8000
    vae_batch: int = 16
    vae_crop: int = 64  # random square crops of the 128-px frames
    vae_frames: int = 9
    vae_lr: float = 1e-4  # 3e-4 and above stall on SoraWorld frames (docs/vae.md)
    vae_save_every: int = 500
    vae_precision: str = "bf16"  # autocast dtype; fp32 on CPUs without AMX, where bf16 is slower
    vae_cache_mb: int = 32000  # decoded clips kept in RAM (all 20,000 at 128x128 fit in ~27 GB): read each file once
    # latent cache
    max_frames: int = 49  # 6 s at 8 fps (1 + 4k)
    cache_clips: int | None = None  # clips encoded (None: all); a short DiT run sees fewer than the dataset holds
    # DiT
    dit_layers: int = 8  # "small" width (384, 6 heads, FFN 1536) at 8 blocks: 20 M parameters
    dit_steps: int = 20000
    dit_batch_tokens: int = 16384
    dit_lr: float = 3e-4
    dit_warmup: int = 1000
    dit_checkpoint_every: int = 1000
    dit_precision: str = "bf16"
    dit_pooled_text: bool = True  # the pooled prompt also drives every block's modulation (docs/dit.md)
    # Timestep shift of training (and of sampling, in config.json); None: flow.shift_for's size-based one
    # (~1.3 at 4 s of 128x128); and the fraction of samples trained at t = 1, where sampling starts. Tiny
    # latents give away their colours at almost any noise level, so a model that rarely trains at t ~ 1,
    # where only the prompt can set them, learns to ignore the prompt (docs/default_model.md).
    dit_shift: float | None = 4.0
    dit_terminal: float = 0.1
    # second DiT phase from the first one's EMA weights, with the pooled-prompt path added; 0 skips it
    dit_tune_steps: int = 0
    dit_tune_lr: float = 2e-4
    # third DiT phase from the previous one's EMA weights, training at timestep shift dit_reshift with
    # dit_reshift_terminal of the samples at t = 1: for phases that ran without them (the cpu recipe); 0 skips it
    dit_reshift_steps: int = 0
    dit_reshift: float = 4.0
    dit_reshift_terminal: float = 0.1
    dit_reshift_lr: float = 2e-4
    # decoder fine-tuning (encoder frozen) on whole clips: the VAE trains on short crops, so its decoder
    # never sees the steady state of long clips; 0 skips the stage and ships the VAE as trained
    decoder_steps: int = 4000
    decoder_lr: float = 5e-5
    decoder_frames: int | None = None  # frames per training clip (1 + 4k) of the whole-clip stages; None: max_frames
    decoder_batch: int | None = None  # clips per step of the whole-clip stages; None: vae_batch
    # decoder fine-tuning on objects (encoder frozen, like the decoder stage): the L1 weights pixels that
    # stand out from their surroundings 1 + object_weight times (soraflow.train.vae.salience), since
    # SoraWorld's objects cover a few percent of a frame and a plain L1 mostly trains the background.
    # From the decoder stage's weights, on the same whole clips; 0 skips it. objects_rounds > 1 trains on in
    # more rounds of objects_steps, each from the previous round's weights with the next seed (other clips)
    # and its own warmup and cosine schedule: how the cpu build went on in later sessions without changing
    # what the earlier rounds had done
    objects_steps: int = 0
    objects_rounds: int = 1
    objects_lr: float = 1e-4
    object_weight: float = 10.0
    # a second round for a build whose VAE trained briefly on short crops (the cpu recipe): the whole VAE
    # (encoder too) trained on from the VAE so far on whole clips, every clip encoded again with it, and one
    # more DiT phase on those latents from the last phase's EMA weights. Such a VAE loses small objects'
    # colour and shape after the first latent frame, which caps the DiT (docs/default_model.md). With the
    # objects stage on it keeps that stage's object_weight. 0 skips it.
    vae_long_steps: int = 0
    vae_long_lr: float = 1e-4
    vae_long_image_prob: float = 0.25  # single-frame steps: cheap, and the first frame (image-to-video) gains most
    dit_long_steps: int = 0
    dit_long_lr: float = 2e-4
    # one more DiT phase from the last one's EMA weights, on the shipped VAE's latents, with the latent cells
    # that stand out from their surroundings (objects) weighted 1 + dit_object_weight times in the loss; 0 skips it.
    # dit_objects_rounds > 1 trains on in more rounds of dit_objects_steps, each from the last one's EMA weights
    # with the next seed and its own warmup and cosine schedule
    dit_objects_steps: int = 0
    dit_objects_rounds: int = 1
    dit_objects_lr: float = 2e-4
    dit_object_weight: float = 10.0
    ema_decay: float = 0.9995
    # export: the default generation settings written into config.json (see BENCHMARKS.md, speed)
    steps: int = 8
    guidance_scale: float = 4.0
    sampler: str = "euler"
    # steps at noise level t below this run unguided: at shift 4 the last 3 of 8 steps, 3 of the 16 DiT
    # passes saved (7-9% less CPU a clip) at the same bench score (BENCHMARKS.md, sessions 11-12); 0 guides every step
    guidance_min_t: float = 0.75
    # bench
    bench_limit: int | None = None  # prompts of the default suite (None: all)
    bench_steps: int | None = None  # sampler steps for the bench (None: the model's)
    speed_repeats: int = 5
    log_every: int = 10  # steps between logged losses (the curves' resolution)


SCALES = {
    # gpu: the objects' weighting from the cpu build's lessons (docs/default_model.md: the plain losses train the
    # backgrounds and leave SoraWorld's small objects out) as one decoder round and a last DiT phase; unmeasured on a GPU
    "gpu": Scale(objects_steps=1000, dit_objects_steps=2000),
    # cpu: what two cores do in under two hours (fp32: this recipe's dev machine has no AMX, so bf16 is
    # slower). Clips are cut to 4 s (9 latent frames); a DiT step of 2048 tokens takes ~1.5 s there.
    "cpu": Scale(clips=4000, vae_steps=1000, vae_batch=4, vae_precision="fp32", max_frames=33, cache_clips=1600, dit_steps=2000,
                 dit_batch_tokens=2048, dit_warmup=50, dit_precision="fp32", dit_checkpoint_every=100, ema_decay=0.995,
                 vae_save_every=250, vae_cache_mb=4096, decoder_steps=600, decoder_lr=1e-4, decoder_batch=2, bench_limit=30,
                 dit_pooled_text=False, dit_shift=None, dit_terminal=0.0, dit_tune_steps=2400, dit_reshift_steps=1200,
                 objects_steps=800, objects_rounds=3, vae_long_steps=800, vae_long_lr=5e-5, dit_long_steps=600,
                 dit_objects_steps=600),
    "smoke": Scale(clips=12, seconds="1-2", vae_steps=3, vae_batch=2, vae_crop=32, vae_frames=5, max_frames=17,
                   vae_save_every=2, vae_cache_mb=256, dit_steps=3, dit_batch_tokens=384, dit_warmup=1, dit_checkpoint_every=2, decoder_steps=2,
                   ema_decay=0.9, bench_limit=2, bench_steps=2, speed_repeats=1, log_every=1, dit_pooled_text=False,
                   dit_shift=None, dit_terminal=0.0, dit_tune_steps=2, dit_reshift_steps=2,
                   objects_steps=2, objects_rounds=2, vae_long_steps=2, dit_long_steps=2, dit_objects_steps=2,
                   dit_objects_rounds=2),
}


# the optional stages and the recipe field that turns each on (0: off)
OPTIONAL = {"dit-pooled-text": "dit_tune_steps", "dit-high-shift": "dit_reshift_steps", "vae-decoder": "decoder_steps",
            "vae-objects": "objects_steps", "vae-whole": "vae_long_steps", "cache-again": "vae_long_steps",
            "dit-new-latents": "vae_long_steps", "dit-objects": "dit_objects_steps"}


class Deadline(Exception):
    pass


def _round_runs(first: Path, rounds: int) -> list[Path]:
    """A stage's run folders, one per round: ``first``, then ``first-2``, ``first-3``, ... beside it."""
    return [first] + [first.with_name(f"{first.name}-{k}") for k in range(2, rounds + 1)]


@dataclass
class Build:
    """The resolved build: work dir, scale, device and where each stage writes."""

    work: Path
    scale: Scale
    scale_name: str
    device: str
    seed: int
    export: Path
    export_dtype: str
    max_mb: float
    threads: int | None
    workers: int
    deadline: float | None  # time.monotonic() to stop at
    log: dict = field(default_factory=dict)

    data = property(lambda self: self.work / "data")
    vae_run = property(lambda self: self.work / "vae")
    vae_model = property(lambda self: self.work / "vae" / "model")
    decoder_run = property(lambda self: self.work / "vae-decoder")
    objects_run = property(lambda self: self.work / "vae-objects")  # the first round's
    vae_long_run = property(lambda self: self.work / "vae-long")
    cache = property(lambda self: self.work / "cache")
    cache_long = property(lambda self: self.work / "cache-long")
    dit_run = property(lambda self: self.work / "dit")
    dit_tune_run = property(lambda self: self.work / "dit-tune")
    dit_reshift_run = property(lambda self: self.work / "dit-shift")
    dit_long_run = property(lambda self: self.work / "dit-long")
    dit_objects_run = property(lambda self: self.work / "dit-objects")  # the first round's

    def on(self, stage: str) -> bool:
        """Whether ``stage`` runs in this recipe (every stage not in OPTIONAL does)."""
        return stage not in OPTIONAL or bool(getattr(self.scale, OPTIONAL[stage]))

    @property
    def decoder_only_vae(self) -> Path:
        """The VAE after the decoder stage: the decoder-tuned one when that stage is on."""
        return self.decoder_run / "model" if self.scale.decoder_steps else self.vae_model

    @property
    def objects_runs(self) -> list[Path]:
        """The objects stage's run folders, one per round (vae-objects, vae-objects-2, ...); none when it is off."""
        return _round_runs(self.objects_run, max(self.scale.objects_rounds, 1)) if self.scale.objects_steps else []

    @property
    def dit_objects_runs(self) -> list[Path]:
        """The dit-objects stage's run folders, one per round (dit-objects, dit-objects-2, ...), on or off."""
        return _round_runs(self.dit_objects_run, self.scale.dit_objects_rounds)

    @property
    def decoder_vae(self) -> Path:
        """The VAE after the decoder stages (decoder, objects' last round): the encoder the DiT learned, a tuned decoder."""
        return self.objects_runs[-1] / "model" if self.objects_runs else self.decoder_only_vae

    @property
    def final_vae(self) -> Path:
        """The VAE that ships: the second round's when it is on."""
        return self.vae_long_run / "model" if self.scale.vae_long_steps else self.decoder_vae

    @property
    def dit_phases(self) -> list[tuple[str, Path, int]]:
        """(stage, run folder, steps) of the DiT phases that are on, in training order."""
        return [p for p in self.all_dit_phases if self.on(p[0])]

    @property
    def all_dit_phases(self) -> list[tuple[str, Path, int]]:
        """Every DiT phase of the build, on or off."""
        s = self.scale
        return [("dit", self.dit_run, s.dit_steps), ("dit-pooled-text", self.dit_tune_run, s.dit_tune_steps),
                ("dit-high-shift", self.dit_reshift_run, s.dit_reshift_steps), ("dit-new-latents", self.dit_long_run, s.dit_long_steps),
                *(("dit-objects", run, s.dit_objects_steps) for run in self.dit_objects_runs)]

    # the DiT run that ships: the last phase
    final_dit = property(lambda self: self.dit_phases[-1][1])
    # the timestep shift the shipped DiT last trained with: its sampling default
    @property
    def late_timesteps(self) -> tuple[float | None, float]:
        """(shift, fraction at t = 1) of the last DiT phase, which the ``dit-long`` phase keeps."""
        s = self.scale
        return (s.dit_reshift, s.dit_reshift_terminal) if s.dit_reshift_steps else (s.dit_shift, s.dit_terminal)

    final_shift = property(lambda self: self.late_timesteps[0])
    # the latents of the VAE that ships: what the last DiT phases train on
    final_cache = property(lambda self: self.cache_long if self.scale.vae_long_steps else self.cache)
    bench = property(lambda self: self.work / "bench")
    curves = property(lambda self: self.work / "curves")
    speed = property(lambda self: self.work / "speed.json")

    # ------------------------------------------------------------------ what is done

    def manifest_count(self) -> int:
        path = self.data / "manifest.jsonl"
        if not path.is_file():
            return 0
        return sum(1 for line in path.read_text().splitlines() if line.strip())

    def cache_count(self, cache: Path | None = None) -> int:
        path = (cache or self.cache) / "index.json"
        if not path.is_file():
            return 0
        index = json.loads(path.read_text())
        return len(index.get("entries", [])) + len(index.get("skipped", {}) or {})

    def cache_target(self) -> int:
        return min(self.scale.clips, self.scale.cache_clips or self.scale.clips)

    def dit_step(self, run: Path | None = None) -> int:
        folder = (run or self.dit_run) / "checkpoints"
        ckpts = sorted(folder.glob("step_*")) if folder.is_dir() else []
        return int(ckpts[-1].name.split("_")[1]) if ckpts else 0

    def objects_done(self) -> int:
        return sum((run / "model" / "config.json").is_file() for run in self.objects_runs)

    def exported_step(self) -> int | None:
        path = self.export / "build.json"
        if not (self.export / "config.json").is_file() or not path.is_file():
            return None
        info = json.loads(path.read_text())
        same = (info.get("work") == str(self.work.resolve()) and info.get("vae") == str(self.final_vae.resolve())
                and info.get("dit") == str(self.final_dit.resolve()))
        return info.get("dit_step") if same else None  # another build's, an earlier VAE's or DiT phase's: export again

    def measured(self, result: Path) -> bool:
        """A bench or speed result counts only if it is newer than the exported model it measured."""
        exported = self.export / "build.json"
        return result.is_file() and (not exported.is_file() or result.stat().st_mtime >= exported.stat().st_mtime)

    def status(self) -> dict[str, tuple[bool, str]]:
        s = self.scale
        have = self.manifest_count()
        at = {run: self.dit_step(run) for _, run, _ in self.all_dit_phases}
        dstep, tstep, rstep, lstep = (at[run] for run in (self.dit_run, self.dit_tune_run, self.dit_reshift_run, self.dit_long_run))
        ostep = [at[run] for run in self.dit_objects_runs]
        oround = next((k for k, step in enumerate(ostep) if step < s.dit_objects_steps), len(ostep) - 1)
        final_done = all(at[run] >= steps for _, run, steps in self.dit_phases)
        cached, cached_long = self.cache_count(), self.cache_count(self.cache_long)
        long_on = bool(s.vae_long_steps)
        exported = self.exported_step()
        return {
            "data": (have >= s.clips, f"{have}/{s.clips} clips in {self.data}"),
            "vae": ((self.vae_model / "config.json").is_file(), f"{s.vae_preset} VAE, {s.vae_steps} steps -> {self.vae_model}"),
            "cache": (cached >= self.cache_target() and cached > 0, f"{cached}/{self.cache_target()} clips encoded in {self.cache}"),
            "dit": (dstep >= s.dit_steps, f"step {dstep}/{s.dit_steps} in {self.dit_run}"),
            "dit-pooled-text": (tstep >= s.dit_tune_steps, f"step {tstep}/{s.dit_tune_steps} in {self.dit_tune_run}, pooled prompt added"
                         if s.dit_tune_steps else "off (dit_tune_steps=0)"),
            "dit-high-shift": (rstep >= s.dit_reshift_steps, f"step {rstep}/{s.dit_reshift_steps} in {self.dit_reshift_run}, "
                          f"timestep shift {s.dit_reshift}, {s.dit_reshift_terminal:.0%} at t = 1" if s.dit_reshift_steps else "off (dit_reshift_steps=0)"),
            "vae-decoder": ((self.decoder_only_vae / "config.json").is_file(),
                        f"decoder fine-tuning, {s.decoder_steps} steps of {s.decoder_frames or s.max_frames}-frame clips -> "
                        f"{self.decoder_run / 'model'}" if s.decoder_steps
                        else "off (decoder_steps=0)"),
            "vae-objects": ((self.decoder_vae / "config.json").is_file(),
                        f"decoder fine-tuning on objects (weight {s.object_weight}), "
                        f"{self.objects_done()}/{len(self.objects_runs)} rounds of {s.objects_steps} steps -> "
                        f"{self.decoder_vae}" if s.objects_steps else "off (objects_steps=0)"),
            "vae-whole": (not long_on or (self.final_vae / "config.json").is_file(),
                         f"whole VAE, {s.vae_long_steps} steps of {s.decoder_frames or s.max_frames}-frame clips -> "
                         f"{self.vae_long_run / 'model'}" if long_on else "off (vae_long_steps=0)"),
            "cache-again": (not long_on or cached_long >= self.cache_target() and cached_long > 0,
                           f"{cached_long}/{self.cache_target()} clips encoded with it in {self.cache_long}" if long_on
                           else "off (vae_long_steps=0)"),
            "dit-new-latents": (not long_on or lstep >= s.dit_long_steps,
                         f"step {lstep}/{s.dit_long_steps} in {self.dit_long_run}, on {self.cache_long.name}" if long_on
                         else "off (vae_long_steps=0)"),
            "dit-objects": (min(ostep) >= s.dit_objects_steps,
                            (f"round {oround + 1}/{len(ostep)} at " if len(ostep) > 1 else "")
                            + f"step {ostep[oround]}/{s.dit_objects_steps} in "
                            f"{self.dit_objects_runs[oround]}, objects weighted {1 + s.dit_object_weight:g}x, on {self.final_cache.name}"
                            if s.dit_objects_steps else "off (dit_objects_steps=0)"),
            "export": (exported is not None and exported == at[self.final_dit] and final_done,
                       f"EMA weights in {self.export_dtype} -> {self.export}"),
            "bench": (self.measured(self.bench / "bench.json"), f"SoraWorld bench -> {self.bench}"),
            "speed": (self.measured(self.speed), f"4 s 128x128 clip, median of {s.speed_repeats} -> {self.speed}"),
            "curves": (False, f"loss curves -> {self.curves}"),
        }

    # ------------------------------------------------------------------ running one command

    def run(self, stage: str, args: list[str]) -> None:
        """Run ``args`` as a child process (its own process group), honouring the deadline."""
        print(f"[{stage}] $ {' '.join(str(a) for a in args)}", flush=True)
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        proc = subprocess.Popen([str(a) for a in args], cwd=REPO, env=env, start_new_session=True)
        try:
            while True:
                try:
                    code = proc.wait(timeout=1)
                    break
                except subprocess.TimeoutExpired:
                    if self.deadline is not None and time.monotonic() > self.deadline:
                        os.killpg(proc.pid, signal.SIGTERM)
                        try:
                            proc.wait(timeout=30)
                        except subprocess.TimeoutExpired:
                            os.killpg(proc.pid, signal.SIGKILL)
                        raise Deadline(stage)
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGTERM)
            raise
        if code:
            raise SystemExit(f"stage {stage} failed (exit {code}); fix the cause and run the same command again to resume")


def soraflow(*args) -> list:
    return [sys.executable, "-m", "soraflow.cli", *args]


# ----------------------------------------------------------------------------------------------
# The stages


def stage_data(b: Build) -> None:
    s = b.scale
    b.run("data", soraflow("world", "dataset", "--n", s.clips, "--out", b.data, "--sizes", s.sizes, "--seconds", s.seconds,
                           "--fps", s.fps, "--image-fraction", s.image_fraction, "--seed", b.seed, "--workers", b.workers))


def stage_vae(b: Build, *, stage: str = "vae", round: int = 1) -> None:
    s = b.scale
    whole = (s.decoder_batch or s.vae_batch, s.decoder_frames or s.max_frames)  # clips as long as one DiT window
    objects_run = b.objects_runs[round - 1] if stage == "vae-objects" else None
    run, steps, lr, batch, frames = {
        "vae": (b.vae_run, s.vae_steps, s.vae_lr, s.vae_batch, s.vae_frames),
        "vae-decoder": (b.decoder_run, s.decoder_steps, s.decoder_lr, *whole),
        "vae-objects": (objects_run, s.objects_steps, s.objects_lr, *whole),
        "vae-whole": (b.vae_long_run, s.vae_long_steps, s.vae_long_lr, *whole),
    }[stage]
    args = ["train", "vae", "--data", b.data, "--run-dir", run, "--preset", s.vae_preset, "--steps", steps,
            "--batch-size", batch, "--size", 128, "--crop", s.vae_crop, "--frames", frames, "--lr", lr,
            "--precision", s.vae_precision, "--seed", b.seed + round - 1, "--save-every", s.vae_save_every,
            "--sample-every", max(s.vae_save_every, 2),
            "--cache-mb", s.vae_cache_mb, "--log-every", s.log_every]
    if stage != "vae":  # the later stages train on from an earlier stage's VAE
        args += ["--warmup-steps", min(50, steps)]
    if stage == "vae-decoder":  # single frames only as the clips' first frames
        args += ["--init", b.vae_model, "--freeze-encoder", "--image-prob", 0]
    elif stage == "vae-objects":  # the decoder stage's setting, with the object-weighted L1; from the previous round
        init = b.objects_runs[round - 2] / "model" if round > 1 else b.decoder_only_vae
        args += ["--init", init, "--freeze-encoder", "--image-prob", 0, "--object-weight", s.object_weight]
    elif stage == "vae-whole":
        args += ["--init", b.decoder_vae, "--image-prob", s.vae_long_image_prob]
        if s.objects_steps:  # keep the objects stage's weighting: a plain L1 would train the objects away again
            args += ["--object-weight", s.object_weight]
    args += ["--device", b.device]
    if b.threads:
        args += ["--threads", b.threads]
    b.run(stage if round == 1 else f"{stage} {round}", soraflow(*args))


def stage_decoder(b: Build) -> None:
    if b.on("vae-decoder"):
        stage_vae(b, stage="vae-decoder")


def stage_objects(b: Build) -> None:
    for round, run in enumerate(b.objects_runs, 1):  # a finished round is skipped; an unfinished one resumes
        if not (run / "model" / "config.json").is_file():
            stage_vae(b, stage="vae-objects", round=round)


def stage_vae_long(b: Build) -> None:
    if b.on("vae-whole"):
        stage_vae(b, stage="vae-whole")


def stage_cache_long(b: Build) -> None:
    if b.on("cache-again"):
        stage_cache(b, vae=b.final_vae, cache=b.cache_long, stage="cache-again")


def stage_cache(b: Build, *, vae: Path | None = None, cache: Path | None = None, stage: str = "cache") -> None:
    # Resumable: encoded clips are not encoded again. Encoding 20,000 clips is minutes on a GPU, hours on a CPU.
    s = b.scale
    args = ["train", "cache-latents", "--data", b.data, "--vae", vae or b.vae_model, "--out", cache or b.cache,
            "--max-frames", s.max_frames, "--fps", s.fps, "--device", b.device]
    if s.cache_clips:
        args += ["--limit", s.cache_clips]
    if b.threads:
        args += ["--threads", b.threads]
    b.run(stage, soraflow(*args))


def _train_dit(b: Build, stage: str, run: Path, steps: int, lr: float, seed: int, extra: list, *,
               cache: Path | None = None) -> None:
    s = b.scale
    args = ["train", "dit", "--data", cache or b.cache, "--out", run, "--preset", "small", "--num-layers", s.dit_layers,
            "--steps", steps, "--batch-tokens", s.dit_batch_tokens, "--lr", lr, "--warmup-steps", s.dit_warmup,
            "--ema-decay", s.ema_decay, "--precision", s.dit_precision, "--checkpoint-every", s.dit_checkpoint_every,
            "--seed", seed, "--device", b.device, "--caption", "long", "--short-caption-prob", 0.3,
            "--log-every", s.log_every, *extra]
    if b.threads:
        args += ["--threads", b.threads]
    b.run(stage, soraflow(*args))


def _timesteps(shift: float | None, terminal: float) -> list:
    return ([] if shift is None else ["--timestep-shift", shift]) + (["--terminal-prob", terminal] if terminal else [])


def stage_dit(b: Build) -> None:
    s = b.scale
    _train_dit(b, "dit", b.dit_run, s.dit_steps, s.dit_lr, b.seed,
               (["--pooled-text"] if s.dit_pooled_text else []) + _timesteps(s.dit_shift, s.dit_terminal))


def _init_from_previous(b: Build, stage: str, this: Path) -> Path:
    """A later DiT phase (run folder ``this``) starts from the EMA weights of the phase before it (exported once)."""
    from soraflow.train.dit import export_dit

    i = [run for _, run, _ in b.dit_phases].index(this)
    run, init = b.dit_phases[i - 1][1], this / "init"
    if not (init / "config.json").is_file():
        export_dit(run, init, ema=True)
        print(f"[{stage}] EMA weights of {run.name} (step {b.dit_step(run)}) -> {init}", flush=True)
    return init


def stage_dit_tune(b: Build) -> None:
    """Second DiT phase: the first phase's EMA weights plus the (zero-initialised) pooled-prompt path."""
    s = b.scale
    if b.on("dit-pooled-text"):
        init = _init_from_previous(b, "dit-pooled-text", b.dit_tune_run)
        _train_dit(b, "dit-pooled-text", b.dit_tune_run, s.dit_tune_steps, s.dit_tune_lr, b.seed + 1,
                   ["--init", init, "--pooled-text"] + _timesteps(s.dit_shift, s.dit_terminal))


def _train_later_phase(b: Build, stage: str, run: Path, steps: int, lr: float, seed: int, timesteps: tuple,
                       extra: list = (), cache: Path | None = None) -> None:
    """A DiT phase after the second: from the previous phase's EMA weights, with the pooled-prompt path
    when an earlier phase has it, at ``timesteps`` (shift, fraction at t = 1)."""
    s = b.scale
    pooled = ["--pooled-text"] if s.dit_pooled_text or s.dit_tune_steps else []
    _train_dit(b, stage, run, steps, lr, seed,
               ["--init", _init_from_previous(b, stage, run), *pooled, *_timesteps(*timesteps), *extra], cache=cache)


def stage_dit_reshift(b: Build) -> None:
    """Third DiT phase: the previous phase's EMA weights, trained on at timestep shift ``dit_reshift`` with
    ``dit_reshift_terminal`` of the samples at t = 1."""
    s = b.scale
    if b.on("dit-high-shift"):
        _train_later_phase(b, "dit-high-shift", b.dit_reshift_run, s.dit_reshift_steps, s.dit_reshift_lr, b.seed + 2,
                           (s.dit_reshift, s.dit_reshift_terminal))


def stage_dit_long(b: Build) -> None:
    """The second round's DiT phase: the last phase's EMA weights, trained on at its timestep settings on the
    latents of the whole-clip VAE (``cache-long``)."""
    s = b.scale
    if b.on("dit-new-latents"):
        _train_later_phase(b, "dit-new-latents", b.dit_long_run, s.dit_long_steps, s.dit_long_lr, b.seed + 3,
                           b.late_timesteps, cache=b.cache_long)


def stage_dit_objects(b: Build) -> None:
    """The last DiT phases: the previous phase's EMA weights, trained on at its timestep settings on the
    shipped VAE's latents with the objects' cells weighted ``1 + dit_object_weight`` times, in
    ``dit_objects_rounds`` rounds (the rounds already done are skipped)."""
    s = b.scale
    if b.on("dit-objects"):
        for k, run in enumerate(b.dit_objects_runs):
            if b.dit_step(run) < s.dit_objects_steps:
                _train_later_phase(b, "dit-objects", run, s.dit_objects_steps, s.dit_objects_lr, b.seed + 4 + k,
                                   b.late_timesteps, ["--object-weight", s.dit_object_weight], cache=b.final_cache)


def stage_export(b: Build) -> None:
    """EMA weights -> a pipeline folder in fp32 (export_pipeline), cast to bf16/fp16, size-checked, moved into place."""
    import torch

    from soraflow.pipeline import SoraPipeline
    from soraflow.train.dit import export_pipeline

    s = b.scale
    stage_tmp = b.work / "export-fp32"
    print(f"[export] {b.final_dit} (EMA) + {b.final_vae} -> {b.export} in {b.export_dtype}", flush=True)
    export_pipeline(b.final_dit, stage_tmp, vae=b.final_vae, ema=True, steps=s.steps, guidance_scale=s.guidance_scale,
                    guidance_min_t=s.guidance_min_t, sampler=s.sampler, shift=b.final_shift, expander="world",
                    height=128, width=128, fps=s.fps, seconds=4.0)
    pipe = SoraPipeline.from_pretrained(stage_tmp)
    dtype = getattr(torch, b.export_dtype)
    pipe.vae.to(dtype=dtype)
    pipe.dit.to(dtype=dtype)
    staged = b.export.parent / f".{b.export.name}.tmp-{os.getpid()}"
    shutil.rmtree(staged, ignore_errors=True)
    pipe.save_pretrained(staged)
    size_mb = sum(p.stat().st_size for p in staged.rglob("*") if p.is_file()) / 2**20
    if size_mb > b.max_mb:
        shutil.rmtree(staged, ignore_errors=True)
        raise SystemExit(f"exported model is {size_mb:.1f} MB, over the --max-mb {b.max_mb} limit; use fewer DiT layers")
    params = {"dit": sum(p.numel() for p in pipe.dit.parameters()), "vae": sum(p.numel() for p in pipe.vae.parameters())}
    info = {
        "work": str(b.work.resolve()), "scale": b.scale_name, "seed": b.seed, "device": b.device,
        "dit": str(b.final_dit.resolve()), "dit_step": b.dit_step(b.final_dit), "vae": str(b.final_vae.resolve()), "dit_phases": [b.dit_step(run) for _, run, _ in b.dit_phases],
        "weights": "EMA", "dtype": b.export_dtype, "size_mb": round(size_mb, 2),
        "parameters": params, "recipe": dataclasses.asdict(s), "stage_seconds": b.log.get("seconds", {}),
    }
    from soraflow.atomic import write_json

    write_json(staged / "build.json", info)
    if b.export.exists():
        shutil.rmtree(b.export)
    b.export.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, b.export)
    shutil.rmtree(stage_tmp, ignore_errors=True)
    print(f"[export] wrote {b.export} ({size_mb:.1f} MB; DiT {params['dit'] / 1e6:.1f} M, VAE {params['vae'] / 1e6:.1f} M "
          f"parameters)", flush=True)


def stage_bench(b: Build) -> None:
    import importlib.util

    if importlib.util.find_spec("soraflow.eval.bench") is None:
        print("[bench] skipped: the bench (soraflow.eval.bench) is not available in this checkout", flush=True)
        return
    s = b.scale
    # float32: the model's own quality (the CPU default without AMX runs int8 blocks, within ~35 dB of it)
    args = ["eval", "bench", "--model", b.export, "--out", b.bench, "--device", b.device, "--dtype", "float32", "--no-progress"]
    if s.bench_limit:
        args += ["--limit", s.bench_limit]
    if s.bench_steps:
        args += ["--steps", s.bench_steps]
    if b.scale_name == "smoke":
        args += ["--reference", "none"]
    b.run("bench", soraflow(*args))


def stage_speed(b: Build) -> None:
    args = [sys.executable, REPO / "benchmarks" / "bench_generate.py", "--model", b.export,
            "--repeats", b.scale.speed_repeats, "--warmup", 0 if b.scale_name == "smoke" else 1, "--json", b.speed]
    b.run("speed", args)


def stage_curves(b: Build) -> None:
    """Loss curves from the TensorBoard logs of both trainers (stages that are off are left out, whatever
    an earlier recipe left in their folders)."""
    written = []
    # (stage, its run folders, the log folder in each, the scalar, steps per round): a stage trained in
    # rounds (objects, dit-objects) is drawn end to end, each round after the steps of the ones before
    vae, dit = ("tb", "loss/total"), ("tensorboard", "train/loss")
    for name, runs, (sub, tag), per_round in (
            ("vae", [b.vae_run], vae, 0), ("vae-decoder", [b.decoder_run], vae, 0),
            ("vae-objects", b.objects_runs, vae, b.scale.objects_steps), ("vae-whole", [b.vae_long_run], vae, 0),
            ("dit", [b.dit_run], dit, 0), ("dit-pooled-text", [b.dit_tune_run], dit, 0), ("dit-high-shift", [b.dit_reshift_run], dit, 0),
            ("dit-new-latents", [b.dit_long_run], dit, 0), ("dit-objects", b.dit_objects_runs, dit, b.scale.dit_objects_steps)):
        if not b.on(name):
            continue
        png = CURVE_FILES.get(name, name)  # the file names the model card (scripts/write_model_card.py) copies
        points = [(step + k * per_round, v) for k, run in enumerate(runs) for step, v in read_scalars(run / sub, tag)]
        if not points:
            print(f"[curves] no {tag} scalars in {runs[0] / sub}", flush=True)
            continue
        written.append(plot_curve(points, b.curves / f"{png}_loss.png", title=f"{name.upper()} training loss ({tag})"))
    for path in written:
        print(f"[curves] wrote {path}", flush=True)


def read_scalars(logdir: Path, tag: str) -> list[tuple[int, float]]:
    if not logdir.is_dir():
        return []
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[int, float] = {}
    for events in sorted(logdir.rglob("events.out.tfevents.*")):  # several files after resumes
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags().get("scalars", []):
            points.update({e.step: e.value for e in acc.Scalars(tag)})
    return sorted(points.items())


def plot_curve(points: list[tuple[int, float]], path: Path, *, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from soraflow.atomic import atomic_path

    steps, values = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, values, lw=0.8, alpha=0.4, label="logged", marker="o" if len(values) <= 50 else None, ms=3)
    if len(values) >= 10:
        k = max(len(values) // 50, 5)
        smooth = np.convolve(values, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, lw=1.6, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


# The names the stages had before they were named by what they do: an old build.json's stage times and
# --only/--force with an old name still work. The run folders kept their names, so old run folders resume.
OLD_NAMES = {"dit-tune": "dit-pooled-text", "dit-shift": "dit-high-shift", "decoder": "vae-decoder", "objects": "vae-objects",
             "vae-long": "vae-whole", "cache-long": "cache-again", "dit-long": "dit-new-latents"}
# the loss curves keep their file names (scripts/write_model_card.py copies them by name)
CURVE_FILES = {new: old for old, new in OLD_NAMES.items()}

MEASURES_EXPORT = ("bench", "speed")  # stages whose results describe the exported model
STAGES = {"data": stage_data, "vae": stage_vae, "cache": stage_cache, "dit": stage_dit, "dit-pooled-text": stage_dit_tune,
          "dit-high-shift": stage_dit_reshift, "vae-decoder": stage_decoder, "vae-objects": stage_objects,
          "vae-whole": stage_vae_long,
          "cache-again": stage_cache_long, "dit-new-latents": stage_dit_long, "dit-objects": stage_dit_objects,
          "export": stage_export,
          "bench": stage_bench, "speed": stage_speed, "curves": stage_curves}


# ----------------------------------------------------------------------------------------------


def _stage_name(name: str) -> str:
    return OLD_NAMES.get(name, name)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=None, help="work folder [default: runs/default-model (smoke: runs/default-model-smoke)]")
    p.add_argument("--scale", choices=list(SCALES), default="gpu", help="stage sizes: gpu (the real build), cpu, smoke [default: gpu]")
    p.add_argument("--device", default="cpu", help="torch device of training and the bench (cpu, cuda) [default: cpu]")
    p.add_argument("--export", type=Path, default=None,
                   help="model folder to write [default: soraflow/assets/default; smoke: WORK/export]")
    p.add_argument("--export-dtype", choices=("bfloat16", "float16"), default="bfloat16", help="weights dtype on disk")
    p.add_argument("--max-mb", type=float, default=60.0, help="largest exported model accepted (MB) [default: 60]")
    p.add_argument("--seed", type=int, default=0, help="seed of every stage [default: 0]")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads of the training stages")
    p.add_argument("--workers", type=int, default=None, help="dataset writer processes [default: CPU count, at most 16]")
    p.add_argument("--only", nargs="+", type=_stage_name, choices=list(STAGES), default=None, help="run only these stages (in order)")
    p.add_argument("--force", nargs="+", type=_stage_name, choices=list(STAGES), default=(), help="rerun these stages even if complete")
    p.add_argument("--deadline", type=float, default=None, metavar="MIN",
                   help="stop (exit 3, resumable) after this many minutes; for machines that limit command time")
    p.add_argument("--plan", action="store_true", help="print the plan and the state of every stage, run nothing")
    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="override stage sizes, e.g. --set dit_steps=20000 clips=5000 (fields: "
                        + ", ".join(f.name for f in dataclasses.fields(Scale)) + ")")
    return p.parse_args(argv)


def resolve(args: argparse.Namespace) -> Build:
    scale = SCALES[args.scale]
    types = {f.name: f.type for f in dataclasses.fields(Scale)}
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in types or not value:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(types)}")
        kind = types[key]
        if value.lower() == "none":
            overrides[key] = None
        elif "bool" in kind:
            if value.lower() not in ("true", "false", "1", "0"):
                raise SystemExit(f"--set {item!r}: {key} takes true or false")
            overrides[key] = value.lower() in ("true", "1")
        else:
            overrides[key] = int(value) if "int" in kind else float(value) if "float" in kind else value
    scale = dataclasses.replace(scale, **overrides)
    if scale.vae_long_steps and not scale.dit_long_steps:
        raise SystemExit("vae_long_steps needs dit_long_steps > 0: the shipped DiT must learn the new VAE's latents")
    suffix = "-smoke" if args.scale == "smoke" else ""
    work = (args.work or REPO / "runs" / f"default-model{suffix}").resolve()
    export = args.export or (work / "export" if args.scale == "smoke" else DEFAULT_EXPORT)
    workers = args.workers or max(1, min(16, os.cpu_count() or 1))
    deadline = time.monotonic() + args.deadline * 60 if args.deadline else None
    return Build(work=work, scale=scale, scale_name=args.scale, device=args.device, seed=args.seed,
                 export=Path(export).resolve(), export_dtype=args.export_dtype, max_mb=args.max_mb,
                 threads=args.threads, workers=workers, deadline=deadline)


def plan(b: Build, stages: list[str], force) -> list[str]:
    """Print the plan; return the stages that will run."""
    status = b.status()
    print(f"default model build: scale {b.scale_name}, device {b.device}, seed {b.seed}, work {b.work}")
    todo = []
    for i, name in enumerate(STAGES, 1):
        done, what = status[name]
        if name in MEASURES_EXPORT and "export" in todo:
            done = False  # a new export is measured again (the old results predate it)
        if name not in stages:
            mark = "skip (not selected)"
        elif done and name not in force:
            mark = "done"
        else:
            mark = "run"
            todo.append(name)
        print(f"  {i:>2}. {name:<15} {mark:<20} {what}")
    return todo


def main(argv=None) -> int:
    args = parse_args(argv)
    b = resolve(args)
    stages = args.only or list(STAGES)
    todo = plan(b, stages, set(args.force))
    if args.plan:
        return 0
    if b.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(f"--device {b.device}: this torch build or machine has no CUDA (use --device cpu)")
    b.work.mkdir(parents=True, exist_ok=True)
    log_path = b.work / "build.json"
    if log_path.is_file():
        b.log = json.loads(log_path.read_text())
    b.log.setdefault("invocations", []).append(sys.argv[1:])  # every run of the build, restricted ones too
    b.log.update(command=[sys.executable, *sys.argv], scale=b.scale_name, recipe=dataclasses.asdict(b.scale),
                 device=b.device, seed=b.seed, export=str(b.export))
    seconds = b.log.setdefault("seconds", {})
    for old, new in OLD_NAMES.items():  # a build log of the old stage names: its times carry over
        if old in seconds:
            seconds[new] = round(seconds.pop(old) + seconds.get(new, 0.0), 1)
    from soraflow.atomic import write_json

    write_json(log_path, b.log)

    try:
        for name in todo:
            start = time.perf_counter()
            print(f"\n== {name} ==", flush=True)
            try:
                STAGES[name](b)
            finally:  # compute used, summed over resumes (the model card reports it)
                seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - start, 1)
                write_json(log_path, b.log)
    except Deadline as stop:
        print(f"\ndeadline reached during stage {stop}; run the same command again to resume", flush=True)
        return EXIT_DEADLINE
    print(f"\ndone: model in {b.export}; build log {log_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
