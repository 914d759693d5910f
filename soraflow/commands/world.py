"""`soraflow world ...`: SoraWorld, the procedural simulator (sample a clip, write a dataset)."""

from __future__ import annotations

import argparse
import os

from ..errors import InputError
from . import add_group, finite_float, parse_size, positive_int


def register(subparsers) -> None:
    world = add_group(subparsers, "world", help="SoraWorld simulator: render clips and datasets from prompts")

    sample = world.add_parser(
        "sample", help="render one clip from a prompt",
        description="Render one SoraWorld clip from a prompt in its scene language "
                    "(shapes, colours, sizes, motions, backgrounds, camera moves, shots).",
        epilog='example: soraflow world sample "a red ball bouncing on grass" -o ball.mp4 '
               "--size 128x128 --seconds 4 --fps 8")
    sample.add_argument("prompt", nargs="?", default=None, help='e.g. "a red ball bouncing on grass"')
    sample.add_argument("-o", "--output", required=True,
                        help="output file: .mp4, .webm, .gif, or .png (a single frame with --frames 1)")
    sample.add_argument("--size", type=parse_size, default=(128, 128),
                        help="WIDTHxHEIGHT, multiples of 16 in 64..512 (default 128x128)")
    length = sample.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=finite_float, default=4.0, help="clip length, 0 < s <= 60 (default 4)")
    length.add_argument("--frames", type=positive_int, default=None, help="number of frames instead (1 = an image)")
    sample.add_argument("--fps", type=finite_float, default=8, help="frames per second, 4..30 (default 8)")
    sample.add_argument("--seed", type=int, default=0,
                        help="render seed: positions, speeds, and whatever the prompt leaves open (default 0)")
    sample.add_argument("--truth", default=None, help="also write the spec and per-frame ground truth as JSON here")
    sample.add_argument("--lossless", action="store_true", help="lossless encoding (bigger files)")
    sample.add_argument("--spec", default=None, help=argparse.SUPPRESS)  # a scene spec JSON instead of a prompt
    sample.set_defaults(func=run_sample)

    dataset = world.add_parser(
        "dataset", help="write a captioned training dataset (clips + manifest.jsonl)",
        description="Write N random SoraWorld clips with short prompts, long captions and ground truth: "
                    "DIR/clips/ (lossless MP4, PNG for single images, JSON ground truth) and "
                    "DIR/manifest.jsonl. Resumable: rerun the same command to finish an interrupted run.",
        epilog="example: soraflow world dataset --n 20000 --out data/soraworld "
               "--sizes 128x128,160x96,96x160 --seconds 1-6 --fps 8 --workers 2")
    dataset.add_argument("--n", type=positive_int, default=20000, help="number of clips (default 20000)")
    dataset.add_argument("--out", required=True, help="dataset folder (created if missing)")
    dataset.add_argument("--sizes", default="128x128",
                         help="comma-separated WIDTHxHEIGHT sizes drawn uniformly (default 128x128)")
    dataset.add_argument("--seconds", default="1-6", help="clip length in seconds, a range LO-HI or one value (default 1-6)")
    dataset.add_argument("--fps", type=finite_float, default=8, help="frames per second, 4..30 (default 8)")
    dataset.add_argument("--workers", type=positive_int, default=min(2, os.cpu_count() or 1),
                         help="worker processes (default: min(2, CPUs))")
    dataset.add_argument("--seed", type=int, default=0, help="base seed; clip i uses seed*10^7+i (default 0)")
    dataset.add_argument("--image-fraction", type=finite_float, default=0.1,
                         help="share of single images (1-frame clips) in the mix (default 0.1)")
    dataset.add_argument("--background", default=None, metavar="NAME",
                         help="every clip on this backdrop, e.g. snow, or lava: a concept random scenes never "
                              "draw, for fine-tuning (docs/finetune.md); default: drawn like everything else")
    dataset.add_argument("--no-progress", action="store_true", help="no progress bar")
    dataset.set_defaults(func=run_dataset)


def _load_spec(args):
    from ..validate import check_text
    from ..world import spec as spec_mod

    if args.spec is not None:
        import json

        try:
            with open(args.spec) as f:
                data = json.load(f)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read scene spec {args.spec}: {err}") from None
        return spec_mod.validate(spec_mod.SceneSpec.from_dict(data))
    if args.prompt is None or not args.prompt.strip():
        raise InputError("the prompt is empty; describe a scene, e.g. \"a red ball bouncing on grass\"")
    import sys

    from ..world import parser

    result = parser.parse_prompt(check_text("prompt", args.prompt))  # InputError listing the vocabulary when no object is understood
    if result.message:
        print(f"soraflow: warning: {result.message}", file=sys.stderr)
    return result.spec


def run_sample(args) -> int:
    from ..atomic import check_writable
    from ..world import clip as clip_mod

    # 1. check every input before any work, so a mistake costs nothing and leaves no file
    height, width = args.size
    num_frames = args.frames if args.frames is not None else clip_mod.frames_for(args.seconds, args.fps)
    clip_mod.check_render_args((height, width), args.fps, num_frames)
    out = check_writable(args.output)
    suffix = out.suffix.lower()
    if suffix not in (".mp4", ".webm", ".gif", ".png"):
        raise InputError(f"output {out}: unknown format {suffix or '(none)'}; use .mp4, .webm, .gif or .png")
    if suffix == ".png" and num_frames != 1:
        raise InputError(f"output {out}: PNG holds one frame; use --frames 1 or a video suffix")
    if args.truth is not None:
        check_writable(args.truth)
    if args.lossless and suffix == ".gif":
        raise InputError(f"output {out}: GIF cannot be lossless; use .mp4, .webm or .png")

    # 2. prompt -> partial spec -> complete spec (open world: the seed fills what the prompt leaves open)
    import random

    from ..world import complete, render_clip
    from ..world.dataset import captions_for

    rng = random.Random(args.seed)
    spec = complete(_load_spec(args), rng)

    # 3. simulate and render, 4. write
    clip = render_clip(spec, (height, width), args.fps, num_frames=num_frames, seed=args.seed)
    from ..video import write_image, write_video

    if num_frames == 1 and suffix == ".png":
        write_image(out, clip.frames[0])
    else:
        write_video(out, clip.frames, args.fps, lossless=args.lossless)
    if args.truth is not None:
        from ..atomic import write_json

        write_json(args.truth, clip.to_dict())
    _, long = captions_for(spec, rng)
    print(out)
    print(long)
    return 0


def _parse_seconds(text: str) -> tuple[float, float]:
    try:
        parts = [float(v) for v in text.split("-")] if "-" in text.strip("-") else [float(text)] * 2
        lo, hi = parts
    except ValueError:
        raise InputError(f"--seconds {text!r} is not a length or a range like 1-6") from None
    return lo, hi


def run_dataset(args) -> int:
    from ..world.dataset import DatasetConfig, write_dataset

    try:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    except argparse.ArgumentTypeError as err:
        raise InputError(f"--sizes: {err}") from None
    config = DatasetConfig(n=args.n, sizes=sizes, seconds=_parse_seconds(args.seconds), fps=args.fps,
                           seed=args.seed, image_fraction=args.image_fraction, background=args.background)
    summary = write_dataset(args.out, config, workers=args.workers, progress=not args.no_progress)
    print(f"{args.out}: {summary.total} clips ({summary.written} written in {summary.seconds:.1f} s, "
          f"{summary.clips_per_second:.1f} clips/s; {summary.skipped} already there)")
    return 0
