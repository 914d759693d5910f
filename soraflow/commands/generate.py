"""`soraflow generate PROMPT`: text (and an image or clips) to video, every prompting mode.

A thin layer over :class:`soraflow.pipeline.SoraPipeline`: the request is checked (prompt, size,
duration, input files) before any weights load, frames are streamed into the output file window by
window, and the prompt, expanded prompt, seed and settings are stored beside it in ``OUT.json``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ..default_model import require_default_model
from ..errors import InputError
from ..validate import OFFLOAD_HELP, check_device, check_offload, safe_text
from . import finite_float, parse_size, positive_int

EXAMPLES = """\
examples:
  soraflow generate "a red ball bouncing on grass" -o ball.mp4 --seconds 4 --seed 1
  soraflow generate "a red ball" --frames 1 -o still.png                       (text-to-image)
  soraflow generate "the ball rolls away" --image first.png -o rolls.mp4          (image-to-video)
  soraflow generate "the ball keeps bouncing" --extend ball.mp4 --seconds 2       (what happens next)
  soraflow generate "the ball falls in" --extend ball.mp4 --direction backward    (what came before)
  soraflow generate "a blue cube spinning" --loop -o spin.gif                     (seamless loop)
  soraflow generate "the ball turns into a cube" --connect ball.mp4 cube.mp4      (transition A -> B)
  soraflow generate "a green ball bouncing on snow" --edit ball.mp4 --strength 0.6
  soraflow generate "a red ball" --seconds 60 -o long.mp4                         (windows, bounded memory)
Sizes are WIDTHxHEIGHT, multiples of 16. Frame counts snap to the VAE's lengths (1 + 4k for text-to-video);
see docs/generate.md.
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate", help="generate a video from a prompt (and an image or clips)",
        description="Generate a video from a text prompt: text-to-video, text-to-image, image-to-video, "
                    "extending a clip forward or backward, seamless loops, connecting two clips, editing a clip.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prompt", help="what to generate (for --edit: what the clip should become)")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="output file: .mp4, .webm, .gif or .png (default: a name from the prompt, .mp4)")
    parser.add_argument("--model", type=Path, default=None,
                        help="model folder (config.json, vae/, dit/); default: the model shipped in the package")
    parser.add_argument("--size", type=parse_size, default=None, metavar="WxH",
                        help="output size WIDTHxHEIGHT, multiples of 16 (default: the model's)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=finite_float, default=None,
                        help="duration; for --extend the time added, for --connect the transition "
                             "(default: the model's)")
    length.add_argument("--frames", type=positive_int, default=None,
                        help="number of frames instead of --seconds (1: an image)")
    parser.add_argument("--fps", type=positive_int, default=None, help="frames per second (default: the model's)")
    parser.add_argument("--steps", type=positive_int, default=None, help="sampler steps (default: the model's)")
    parser.add_argument("--cfg", type=finite_float, default=None, dest="guidance_scale",
                        help="classifier-free guidance scale; 1 turns it off and halves the cost")
    parser.add_argument("--shift", type=finite_float, default=None, help="timestep shift (default: size-dependent)")
    parser.add_argument("--sampler", choices=("euler", "heun"), default=None, help="ODE sampler (default: the model's)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: drawn and printed)")
    parser.add_argument("--negative", default=None, metavar="TEXT", help="negative prompt for guidance")

    inputs = parser.add_argument_group("prompting with images and videos (one of)")
    only = inputs.add_mutually_exclusive_group()
    only.add_argument("--image", type=Path, default=None,
                      help="image-to-video: the image is the first frame (with --loop: also what it returns to)")
    only.add_argument("--extend", type=Path, default=None, metavar="CLIP", help="extend a clip (see --direction)")
    only.add_argument("--connect", type=Path, nargs=2, default=None, metavar=("A", "B"),
                      help="generate a transition from the end of clip A to the start of clip B")
    only.add_argument("--edit", type=Path, default=None, metavar="CLIP",
                      help="re-generate a clip with the new prompt (SDEdit; see --strength)")
    inputs.add_argument("--direction", choices=("forward", "backward"), default=None,
                        help="with --extend: add what happens next (forward, default) or what came before")
    inputs.add_argument("--strength", type=finite_float, default=None,
                        help="with --edit: how much of the clip is re-noised, in (0, 1] (default: 0.6)")
    inputs.add_argument("--loop", action="store_true", help="make a seamless loop (the end leads into the start)")

    prompts = parser.add_argument_group("prompt expansion")
    prompts.add_argument("--no-expand", action="store_true",
                         help="use the prompt as written (default: expand it into a detailed caption)")
    prompts.add_argument("--expander", default=None,
                         help="expander kind: world, none or openai (default: the model's)")
    prompts.add_argument("--expander-url", default=None, help="openai: base URL of an OpenAI-compatible server")
    prompts.add_argument("--expander-model", default=None, help="openai: model name on that server")

    run_opts = parser.add_argument_group("running")
    run_opts.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    run_opts.add_argument("--lora", action="append", default=[], metavar="PATH[:SCALE]",
                          help="merge a LoRA adapter into the DiT (a .safetensors file or a folder with "
                               "pytorch_lora_weights.safetensors; diffusers/peft, original Wan/ComfyUI or kohya keys) "
                               "at SCALE [1]; give it several times to stack adapters")
    run_opts.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "int8"), default="auto",
                          help="model precision; auto (default): the fastest for the device (GPU: bfloat16; "
                               "CPU: the VAE in bfloat16, the DiT in bfloat16 with AMX, else int8); int8: the "
                               "DiT's block matmuls in dynamic int8 (CPU only), the rest float32")
    run_opts.add_argument("--offload", choices=("model", "sequential"), default=None, help=OFFLOAD_HELP)
    run_opts.add_argument("--no-sidecar", action="store_true",
                          help="do not write OUT.json with the prompt and settings")
    run_opts.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _slug(prompt: str) -> str:
    words = re.findall(r"[a-z0-9]+", prompt.lower())[:6]
    return "-".join(words) or "video"


def _default_output(prompt: str) -> Path:
    """A name from the prompt that does not overwrite an earlier one: a-red-ball.mp4, a-red-ball-2.mp4, ..."""
    base = _slug(prompt)
    path, n = Path(f"{base}.mp4"), 1
    while path.exists():
        n += 1
        path = Path(f"{base}-{n}.mp4")
    return path


def _check_flags(args) -> None:
    if args.direction is not None and args.extend is None:
        raise InputError("--direction only applies with --extend CLIP")
    if args.strength is not None and args.edit is None:
        raise InputError("--strength only applies with --edit CLIP")
    if args.loop and (args.extend or args.connect or args.edit):
        raise InputError("--loop works alone or with --image, not with --extend, --connect or --edit")
    if args.edit is not None and (args.seconds is not None or args.frames is not None):
        raise InputError("--edit keeps the clip's length; drop --seconds / --frames")
    for path in [args.image, args.extend, args.edit, *(args.connect or [])]:
        if path is not None and not path.is_file():
            raise InputError(f"input file {path} does not exist")


def _mode_and_video(args):
    """(mode, video argument of the pipeline) from the flags; None lets the frame count decide t2v / t2i."""
    if args.extend is not None:
        return "extend", args.extend
    if args.edit is not None:
        return "edit", args.edit
    if args.connect is not None:
        return "connect", list(args.connect)
    if args.loop:
        return "loop", None
    if args.image is not None:
        return "i2v", None
    return None, None


def _warn_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"soraflow: warning: {message}", file=sys.stderr)


def run(args) -> int:
    import warnings

    from .. import modes
    from ..atomic import check_writable

    # Cheap checks first: a typo should not cost a model load (the negative prompt: prepare_request below).
    prompt = modes.check_prompt(args.prompt)
    _check_flags(args)
    output = args.output or _default_output(prompt)
    from ..video import WRITE_SUFFIXES

    if output.suffix.lower() not in WRITE_SUFFIXES:
        raise InputError(f"cannot write {output}: use one of {' '.join(WRITE_SUFFIXES)}")
    check_writable(output)
    if not args.no_sidecar:
        from ..pipeline import sidecar_path

        check_writable(sidecar_path(output))

    model_dir = args.model or require_default_model()

    with warnings.catch_warnings():
        warnings.showwarning = _warn_one_line
        warnings.simplefilter("default")
        from ..pipeline import SoraPipeline, prepare_request, read_config, sidecar_path

        # 1. Check the request against the model's config and read the inputs, before loading weights.
        config = read_config(model_dir)
        mode, video = _mode_and_video(args)
        request = prepare_request(
            config, prompt, args.negative, size=args.size, seconds=args.seconds, num_frames=args.frames,
            fps=args.fps, steps=args.steps, guidance_scale=args.guidance_scale, shift=args.shift,
            sampler=args.sampler, seed=args.seed, image=args.image,
            video=video, mode=mode,
            direction=args.direction or "forward", strength=args.strength,
        )
        expander = None
        if args.expander is not None:
            from ..prompts import get_expander

            options = {k: v for k, v in (("base_url", args.expander_url), ("model", args.expander_model)) if v}
            expander = get_expander(args.expander, **options)

        device = check_device(args.device)
        from ..lora import parse_lora_arg

        loras = [parse_lora_arg(text) for text in args.lora]
        check_offload(args.offload, device)
        pipe = SoraPipeline.from_pretrained(model_dir, device=device, dtype=args.dtype, loras=loras,
                                            offload=args.offload)
        generation = pipe.generate(request, expand=not args.no_expand, expander=expander, progress=not args.quiet)
        h, w = request.size
        print(f"prompt: {safe_text(generation.expanded_prompt)}")
        plural = "s" if request.num_frames != 1 else ""
        print(f"generating {request.num_frames} frame{plural} ({request.mode}, {w}x{h}, {request.fps} fps, "
              f"seed {request.seed}, {request.windows} window{'s' if request.windows > 1 else ''})")
        if output.exists():  # an explicit -o names what the user wants there: the last writer wins, said aloud
            print(f"overwriting {output}")
        written = generation.save(output, sidecar=not args.no_sidecar)
    from ..video import written_files

    files = written_files(output, written)
    what = str(files[0]) if len(files) == 1 else f"{files[0]} ... {files[-1]} ({len(files)} frames)"
    print(f"wrote {what}" + ("" if args.no_sidecar else f" (settings in {sidecar_path(output)})"))
    return 0
