"""`soraflow eval bench`: score a model on the SoraWorld bench, beside the simulator and a null model."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from ..errors import InputError
from ..validate import check_device, number
from . import finite_float, positive_int

EXAMPLES = """\
examples:
  soraflow eval bench --model model/ --out bench/                    (model + simulator, its VAE + null, full suite)
  soraflow eval bench --model model/ --limit 20 --steps 10           (a quick subset, spread over categories)
  soraflow eval bench --reference simulator --out bench-upper/       (the upper bound alone, no model)
  soraflow eval bench --model model/ --category gravity occlusion    (some categories)
  soraflow eval bench --vae runs/vae/model --reference simulator     (a VAE's ceiling: the simulator through it)
Writes OUT/bench.json, bench.md, categories.png, metrics.png, trajectories.png, contact_sheet.png;
see docs/bench.md.
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="score a model on the SoraWorld bench (prompt fidelity, motion, physics, permanence)",
        description="Generate a video for every prompt of the SoraWorld bench suite and score it with a "
                    "detector that needs no learned weights: object colour, shape, size and count, motion "
                    "direction, gravity and bounces, collisions, object permanence, temporal consistency, "
                    "camera motion, first-frame fidelity, seam continuity and a Fréchet distance. The same "
                    "scorers run on the simulator's own renders (upper bound) and on a null model (floor).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", type=Path, default=None,
                        help="model folder (config.json, vae/, dit/); without it only the references are scored")
    parser.add_argument("--vae", type=Path, default=None,
                        help="a VAE folder whose ceiling is scored (the simulator's renders through it, in float32) "
                             "instead of the model's VAE; without --model, a VAE is judged before any DiT is trained "
                             "on it")
    parser.add_argument("--suite", default="default",
                        help="bench suite: default (246 prompts), or concept (32: lava, a backdrop the default "
                             "training data never shows, against the four known grounds; docs/finetune.md)")
    parser.add_argument("--limit", type=positive_int, default=None,
                        help="score only N prompts, spread evenly over the categories")
    parser.add_argument("--category", nargs="+", default=None, metavar="NAME",
                        help="only these categories (color, shape, size, count, direction, gravity, collision, "
                             "hit, camera, occlusion, trail, multishot, t2i, i2v, extend, loop, connect, edit)")
    parser.add_argument("--out", type=Path, default=Path("bench"), help="output folder (default: ./bench)")
    parser.add_argument("--reference", choices=("both", "simulator", "null", "none"), default="both",
                        help="calibration scored beside the model: the simulator's renders (upper bound; with "
                             "--model also through its VAE, the most that model can score), the null models (floor: "
                             "an unrelated simulated scene, and with --model random latents through its VAE), both "
                             "(default) or none")
    parser.add_argument("--steps", type=positive_int, default=None, help="sampler steps (default: the model's)")
    parser.add_argument("--cfg", type=finite_float, default=None, dest="guidance_scale",
                        help="classifier-free guidance scale (default: the model's)")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "int8"), default="auto",
                        help="model precision: auto (default) picks the fastest per model for the device, as "
                             "`soraflow generate` does; bfloat16 is several times faster on AMX CPUs and GPUs")
    parser.add_argument("--device", default="cpu", help="torch device of the model (default: cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def _command_line(args) -> str:
    """The command that reproduces this run (stored in bench.json and bench.md)."""
    parts = ["soraflow", "eval", "bench"]
    if args.model is not None:
        parts += ["--model", str(args.model)]
    if args.vae is not None:
        parts += ["--vae", str(args.vae)]
    for flag, value, default in (("--suite", args.suite, "default"), ("--limit", args.limit, None),
                                 ("--out", args.out, None), ("--reference", args.reference, "both"),
                                 ("--steps", args.steps, None), ("--cfg", args.guidance_scale, None),
                                 ("--dtype", args.dtype, "auto"), ("--device", args.device, "cpu")):
        if value != default:
            parts += [flag, str(value)]
    if args.category:
        parts += ["--category", *args.category]
    return " ".join(shlex.quote(p) for p in parts)


def run(args) -> int:
    from ..atomic import check_output_dir, check_writable
    from ..eval.bench import NullSource, PipelineSource, SimulatorSource, VAESource, add_frechet, run_bench
    from ..eval.report import write_report
    from ..eval.suite import SUITES, build_suite

    if args.guidance_scale is not None:  # the pipeline's bound, checked before any model loads
        number("--cfg", args.guidance_scale, lo=0, hi=50)
    if args.suite not in SUITES:
        raise InputError(f"unknown bench suite {args.suite!r}; available: {', '.join(SUITES)}")
    if args.model is None and args.reference == "none":
        raise InputError("nothing to score: give --model, or a --reference other than none")
    if args.vae is not None and args.reference not in ("both", "simulator"):
        raise InputError("--vae scores the simulator's renders through that VAE: use it with --reference both or simulator")
    check_output_dir(args.out, "--out")
    entries = build_suite(args.suite, limit=args.limit, categories=args.category)
    sources = []
    pipe = None
    if args.model is not None:
        from ..pipeline import SoraPipeline

        pipe = SoraPipeline.from_pretrained(args.model, device=check_device(args.device), dtype=args.dtype)
        sources.append(PipelineSource(pipe, steps=args.steps, guidance_scale=args.guidance_scale,
                                      name=args.model.name or "model"))
    vae = None
    if args.vae is not None:
        from ..models.vae import VideoVAE

        vae = VideoVAE.from_pretrained(args.vae).eval()  # a CheckpointError names a folder that is not a VAE
    if args.reference in ("both", "simulator"):
        sources.append(SimulatorSource())
        if vae is not None:
            sources.append(VAESource.of_vae(vae))
        elif pipe is not None:
            sources.append(VAESource(pipe))  # the simulator's renders through the model's VAE: its ceiling
    if args.reference in ("both", "null"):
        sources.append(NullSource())  # the prompt removed: an unrelated simulated scene
        if pipe is not None:
            sources.append(NullSource(pipe))  # random latents through the model's VAE
    args.out.mkdir(parents=True, exist_ok=True)  # once the model has loaded: a refused run leaves no folder
    check_writable(args.out / "bench.json")

    results = [run_bench(s, entries, progress=not args.no_progress) for s in sources]
    upper = next((r for r in results if r.name == "simulator"), None)
    if upper is not None:
        add_frechet(results, upper)

    # Contact sheet: the first video of a few categories, every source's rows together.
    samples = [(f"{e.id} {r.name}", e.sample) for i in range(len(entries)) for r in results
               for e in r.entries[i:i + 1] if e.sample is not None]
    command = _command_line(args)
    paths = write_report(args.out, results, samples=samples, command=command,
                         extra={"suite": args.suite, "entries": [e.to_dict() for e in entries]})
    for r in results:
        score = r.overall.get("score")
        print(f"{r.name}: score {score:.3f} over {len(r.entries)} videos" if score is not None else f"{r.name}: no scores")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
