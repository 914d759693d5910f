"""`soraflow data prepare`: a folder of real videos and images -> a training set."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from . import add_group, finite_float, parse_size


def register(subparsers) -> None:
    data = add_group(subparsers, "data", help="datasets from your own footage")
    p = data.add_parser(
        "prepare",
        help="turn a folder of videos and images into a captioned training set",
        description=(
            "Split every video at its scene cuts (PySceneDetect), cut the scenes into clips at --fps of at most "
            "--max-seconds, scale each to an aspect bucket near the source's own (no square crops unless "
            "--square), drop clips that are too short, static or black, and caption them: a NAME.txt or "
            "NAME.json beside the file, a captions.jsonl in IN_DIR ({\"file\": ..., \"caption\": ...} per line), "
            "or an OpenAI-compatible vision endpoint (--caption-url). Images become one-frame clips. Writes "
            "OUT_DIR/clips/, OUT_DIR/manifest.jsonl (what `soraflow train vae` and `train cache-latents` read), "
            "OUT_DIR/contact_sheet.png and OUT_DIR/prepare.json. Resumable: run it again to continue; an "
            "unreadable file is reported and skipped."
        ),
        epilog=(
            "examples:\n"
            "  soraflow data prepare ~/footage data/mine\n"
            "  soraflow data prepare ~/footage data/mine --fps 12 --area 256x256 --max-seconds 4\n"
            "  soraflow data prepare ~/footage data/mine --caption-url http://localhost:8080/v1 --recaption\n"
            "then: soraflow train cache-latents --data data/mine ...; soraflow train dit --lora 16 ..."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("in_dir", type=Path, metavar="IN_DIR", help="folder of videos (mp4/mov/webm/mkv/...) and images (png/jpg/...), searched recursively")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="dataset folder to write (resumed if it exists)")
    p.add_argument("--fps", type=finite_float, default=8.0, help="frame rate of the clips [8]")
    p.add_argument("--max-seconds", type=finite_float, default=5.0, help="longest clip; longer scenes are cut into pieces [5]")
    p.add_argument("--min-seconds", type=finite_float, default=1.0, help="shorter clips and scenes are dropped [1]")
    p.add_argument("--area", type=parse_size, default=(128, 128), metavar="WxH",
                   help="pixels per frame of the aspect buckets, as WxH [128x128]: each clip gets the size with sides in "
                        "multiples of 16 nearest its own aspect ratio within this area (never above its native size)")
    p.add_argument("--buckets", default=None, metavar="WxH,...", help="choose among these sizes instead (nearest aspect wins)")
    p.add_argument("--square", action="store_true", help="centre-crop every clip to a square")
    p.add_argument("--detector", choices=("adaptive", "content"), default="adaptive",
                   help="PySceneDetect detector: adaptive follows camera motion; content is the plain frame difference [adaptive]")
    p.add_argument("--cut-threshold", type=finite_float, default=None, help="the detector's threshold [adaptive 2.0, content 27]")
    p.add_argument("--min-motion", type=finite_float, default=0.5,
                   help="mean absolute change between frames (0-255) below which a clip counts as static and is dropped [0.5]")
    p.add_argument("--black-level", type=finite_float, default=16.0, help="mean brightness (0-255) below which a clip is black [16]")
    p.add_argument("--keep-uncaptioned", action="store_true", help="keep clips with no caption (enough for VAE training)")
    p.add_argument("--caption-url", default=None, metavar="URL", help="OpenAI-compatible endpoint that captions clips shown three frames")
    p.add_argument("--caption-model", default=None, help="model name on that endpoint [SORAFLOW_CAPTION_MODEL or 'default']")
    p.add_argument("--recaption", action="store_true", help="caption every clip with the endpoint, the file's own caption as a hint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_prepare)


def run_prepare(args) -> int:
    from ..prepare import PrepareConfig, prepare_dataset

    buckets = ()
    if args.buckets:
        try:
            buckets = tuple(parse_size(b.strip()) for b in args.buckets.split(",") if b.strip())  # (height, width)
        except argparse.ArgumentTypeError as err:
            raise InputError(f"--buckets: {err}") from None
    h, w = args.area
    cfg = PrepareConfig(fps=args.fps, max_seconds=args.max_seconds, min_seconds=args.min_seconds, area=w * h, buckets=buckets,
                        square=args.square, detector=args.detector, cut_threshold=args.cut_threshold, min_motion=args.min_motion,
                        black_level=args.black_level, keep_uncaptioned=args.keep_uncaptioned, caption_url=args.caption_url,
                        caption_model=args.caption_model, recaption=args.recaption)
    summary = prepare_dataset(args.in_dir, args.out_dir, cfg, progress=not args.no_progress)
    for line in summary.lines():
        print(line)
    return 0
