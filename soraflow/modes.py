"""Prompting modes as plans over latent frames: which frames are given, which are generated, in which windows.

Pure arithmetic (no torch), so the rules test without a model and the CLI checks a request before it
loads one. :mod:`soraflow.pipeline` runs the plans.

Frame arithmetic of the causal VAE (temporal factor 4): ``1 + 4k`` pixel frames <-> ``1 + k`` latent
frames. Latent 0 holds pixel frame 0 alone (it is encoded like an image); latent ``j >= 1`` holds
pixel frames ``4j-3 .. 4j``. Every DiT window therefore starts with such an "image" latent, as every
training clip does, and a clip's frames become given latents like this:

- **head** (given at the start of a window: the image of image-to-video, the end of a clip being
  extended, the previous window of a long video): its last ``1 + 4(c-1)`` pixel frames are encoded as
  a clip of their own, giving ``c`` latents whose first is an image latent, as at any window start.
- **tail** (given at the end: the start of clip B when connecting, the start of the loop, the clip a
  backward extension leads into): its first ``1 + 4c'`` frames are encoded as a clip of their own and
  latent 0 (the image latent of the tail's frame 0) is dropped; latents ``1..c'`` are 4-frame groups
  and sit at the end of the window. The generated frame just before them occupies the time slot of
  the tail's frame 0, so it is dropped and the original frame 0 shown instead.
- the window is decoded as one clip; the pixel frames of the generated latents are kept, the decoded
  head and tail are dropped (the original frames are shown), except in image-to-video, whose first
  frame *is* the decoded image latent.

Frame counts (``n`` = requested frames = round(seconds * fps), or ``num_frames``; ties round up):

==================  =========================  ===========================================
mode                output frames               why
==================  =========================  ===========================================
text-to-video       1 + 4k, k = round((n-1)/4)  the VAE's native lengths
text-to-image       1                           a one-frame grid
image-to-video      1 + 4k, k >= 1              the image is frame 0
extend (fwd/back)   clip + 4k, k >= 1           each added latent is 4 new frames
connect A -> B      A + (4k - 1) + B, k >= 1    the frame in B's first slot is B's own
loop                4k, k >= 2                  frame 4k would be frame 0 again
edit                the clip's own length       (padded to 1 + 4k inside, trimmed after)
==================  =========================  ===========================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InputError
from .validate import check_text, number

TEMPORAL_FACTOR = 4  # pixel frames per latent frame after the first (Wan's causal VAE)

MODES = ("t2v", "t2i", "i2v", "extend", "loop", "connect", "edit")
MODE_ALIASES = {
    "text-to-video": "t2v", "video": "t2v",
    "text-to-image": "t2i", "image": "t2i",
    "image-to-video": "i2v", "animate": "i2v",
    "extension": "extend",
    "seamless-loop": "loop",
    "interpolate": "connect", "transition": "connect",
    "sdedit": "edit", "video-to-video": "edit",
}
DIRECTIONS = ("forward", "backward")


# ----------------------------------------------------------------------------------------------
# Frame <-> latent arithmetic
# ----------------------------------------------------------------------------------------------


def latents_for(frames: int) -> int:
    """Latent frames of a clip of ``1 + 4k`` pixel frames."""
    return 1 + (frames - 1) // TEMPORAL_FACTOR


def frames_for(latents: int) -> int:
    """Pixel frames of a clip of ``latents`` latent frames."""
    return 1 + TEMPORAL_FACTOR * (latents - 1)


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def requested_frames(seconds: float | None, num_frames: int | None, fps: int, default_seconds: float) -> int:
    """Frames the user asked for: ``num_frames`` or ``round(seconds * fps)`` (not yet snapped)."""
    if seconds is not None and num_frames is not None:
        raise InputError("give seconds or num_frames, not both")
    # The upper bounds only keep the arithmetic finite; check_duration applies the model's limit.
    if num_frames is not None:
        return number("num_frames", num_frames, lo=1, hi=10**7, integer=True)
    seconds = default_seconds if seconds is None else seconds
    number("duration (seconds)", seconds, lo=0, lo_open=True, hi=10**6)
    return max(1, _round_half_up(seconds * fps))


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------


def check_size(size: tuple[int, int], multiple: int, max_side: int) -> tuple[int, int]:
    """(H, W) must be multiples of ``multiple`` (VAE factor x patch size) within [multiple, max_side]."""
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise InputError(f"size must be (height, width), got {size!r}") from None
    if (h, w) != tuple(size):
        raise InputError(f"size must be integers, got {size!r}")
    if min(h, w) < multiple or max(h, w) > max_side:
        raise InputError(
            f"size {w}x{h} (WIDTHxHEIGHT) is not supported: each side must be between {multiple} and {max_side} pixels"
        )
    if h % multiple or w % multiple:
        near = [max(multiple, _round_half_up(v / multiple) * multiple) for v in (w, h)]
        raise InputError(
            f"size {w}x{h} (WIDTHxHEIGHT) is not supported: width and height must be multiples of {multiple} "
            f"(nearest: {near[0]}x{near[1]})"
        )
    return h, w


def check_fps(fps) -> int:
    return number("fps", fps, lo=1, hi=120, integer=True)


def check_duration(frames: int, fps: int, max_seconds: float, what: str = "the requested duration") -> None:
    if frames / fps > max_seconds + 1e-9:
        raise InputError(
            f"{what} is {frames / fps:.2f} s ({frames} frames at {fps} fps), over the limit of {max_seconds:g} s")


def check_strength(strength) -> float:
    return float(number("strength", strength, lo=0, lo_open=True, hi=1))


def check_prompt(prompt) -> str:
    if isinstance(prompt, str) and not prompt.strip():
        raise InputError("the prompt is empty; describe the video to generate")
    return check_text("prompt", prompt)


def resolve_mode(mode: str | None, *, has_image: bool, videos: int, strength_given: bool, frames: int | None) -> str:
    """The mode of a request: as named (aliases allowed) or inferred from its inputs.

    Inference: two clips -> connect; one clip with a strength -> edit; one clip -> extend; an image
    -> image-to-video; one frame -> text-to-image; otherwise text-to-video. A loop must be asked for.
    """
    if mode is None:
        if videos == 2:
            mode = "connect"
        elif videos == 1:
            mode = "edit" if strength_given else "extend"
        elif has_image:
            mode = "i2v"
        else:
            mode = "t2i" if frames == 1 else "t2v"
    mode = MODE_ALIASES.get(mode, mode)
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    needs_videos = {"extend": 1, "edit": 1, "connect": 2}.get(mode, 0)
    if videos != needs_videos:
        what = {0: "no video", 1: "one video", 2: "two videos (A, B)"}
        raise InputError(f"mode {mode!r} takes {what[needs_videos]}, got {what.get(videos, f'{videos} videos')}")
    if mode == "i2v" and not has_image:
        raise InputError("mode 'i2v' (image-to-video) needs an image")
    if has_image and mode not in ("i2v", "loop"):
        raise InputError(f"an image only works with image-to-video or loop, not mode {mode!r}")
    if strength_given and mode != "edit":
        raise InputError(f"strength only applies to mode 'edit', not {mode!r}")
    return mode


# ----------------------------------------------------------------------------------------------
# Output lengths per mode
# ----------------------------------------------------------------------------------------------


def generated_latents(mode: str, n: int) -> int:
    """How much to generate for ``n`` requested frames (see the table in the module docstring).

    t2v/t2i/i2v: latent frames of the whole output; extend: k added latents (4k frames); connect: k
    bridge latents (4k - 1 frames); loop: k groups of 4 frames, split into main and bridge by
    :func:`loop_split`.
    """
    if mode == "t2i":
        return 1
    if mode == "t2v":
        return 1 + max(0, _round_half_up((n - 1) / TEMPORAL_FACTOR))
    if mode == "i2v":
        return 1 + max(1, _round_half_up((n - 1) / TEMPORAL_FACTOR))
    if mode == "extend":
        return max(1, _round_half_up(n / TEMPORAL_FACTOR))
    if mode == "connect":
        return max(1, _round_half_up((n + 1) / TEMPORAL_FACTOR))
    if mode == "loop":
        return max(2, _round_half_up(n / TEMPORAL_FACTOR))
    raise InputError(f"mode {mode!r} has no generated length (edit keeps the clip's length)")


def output_frames(mode: str, latents: int) -> int:
    """Frames a mode adds (extend, connect) or outputs (t2v, t2i, i2v, loop) for ``latents`` from
    :func:`generated_latents`."""
    if mode in ("t2v", "t2i", "i2v"):
        return frames_for(latents)
    if mode == "extend":
        return TEMPORAL_FACTOR * latents
    if mode == "connect":
        return TEMPORAL_FACTOR * latents - 1
    if mode == "loop":
        return TEMPORAL_FACTOR * latents
    raise InputError(f"mode {mode!r} has no generated length")


def loop_split(groups: int) -> tuple[int, int]:
    """A loop of ``4 * groups`` frames = a main clip of ``1 + 4 m`` frames (m + 1 latents) and a bridge
    of ``b`` latents (``4 b - 1`` frames) back into the main clip's first frame: ``m + b = groups``.

    The bridge gets about a third: long enough to turn the motion around, short enough that most
    of the loop is a plain generation.
    """
    if groups < 2:
        raise InputError(f"a loop needs at least 8 frames, got {TEMPORAL_FACTOR * groups}")
    bridge = max(1, groups // 3)
    return groups - bridge + 1, bridge  # (main latents, bridge latents)


# ----------------------------------------------------------------------------------------------
# Windows: long generations as repeated extension with overlap
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowPlan:
    """One DiT pass: ``head`` given latents, ``new`` generated ones, ``tail`` given ones at the end."""

    head: int  # given latents at the start (context)
    new: int  # latents generated in this pass
    tail: int  # given latents at the end (only in the last window of a connect / loop bridge)

    @property
    def latents(self) -> int:
        return self.head + self.new + self.tail


def plan_windows(new: int, *, first_head: int, tail: int, window: int, overlap: int) -> list[WindowPlan]:
    """Split ``new`` latents into DiT passes of at most ``window`` latents.

    The first pass is given ``first_head`` latents (0 for text-to-video, 1 for an image, up to
    ``overlap`` for a clip); each later pass is given the last ``overlap`` latents' worth of frames of
    what came before (re-encoded from pixels, so its first latent is an image latent again). The
    ``tail`` latents sit in the last pass; passes are cut so it always fits.
    """
    if window < 2 * overlap + 1 or overlap < 1:
        raise InputError(f"a window of {window} latents needs 1 <= overlap <= (window - 1) / 2, got overlap {overlap}")
    if first_head + tail >= window or tail > overlap:
        raise InputError(f"context of {first_head} + {tail} latents does not fit a window of {window}")
    if new < 1:
        raise InputError(f"nothing to generate ({new} latents)")
    plans, head, left = [], first_head, new
    while left:
        room = window - head
        if left + tail <= room:
            plans.append(WindowPlan(head, left, tail))
            break
        n = min(room, left - 1)  # leave at least one latent so the tail has company in the last pass
        plans.append(WindowPlan(head, n, 0))
        left -= n
        head = overlap
    return plans


def window_frames(plan: WindowPlan, *, keep_head: bool = False) -> int:
    """Pixel frames a pass contributes (see the module docstring): ``4 new`` after a head, ``1 + 4 (new-1)``
    without one, one fewer with a tail; ``keep_head`` adds the decoded head (image-to-video)."""
    n = TEMPORAL_FACTOR * plan.new if plan.head else frames_for(plan.new)
    if plan.tail:
        n -= 1
    if keep_head and plan.head:
        n += frames_for(plan.head)
    return n


def head_frames(latents: int) -> int:
    """Pixel frames encoded for ``latents`` head latents (``1 + 4 (c-1)``; 0 for none)."""
    return frames_for(latents) if latents else 0


def tail_frames(latents: int) -> int:
    """Pixel frames encoded for ``latents`` tail latents (``1 + 4 c'``: frame 0 is encoded, then dropped)."""
    return 1 + TEMPORAL_FACTOR * latents if latents else 0


def context_latents(available_frames: int, want: int) -> int:
    """How many head latents a clip of ``available_frames`` can give (at most ``want``)."""
    return max(0, min(want, latents_for(available_frames))) if available_frames else 0


def tail_latents(available_frames: int, want: int) -> int:
    """How many tail latents a clip of ``available_frames`` can give (at most ``want``)."""
    return max(0, min(want, (available_frames - 1) // TEMPORAL_FACTOR))


__all__ = [
    "TEMPORAL_FACTOR", "MODES", "MODE_ALIASES", "DIRECTIONS", "WindowPlan",
    "latents_for", "frames_for", "requested_frames", "check_size", "check_fps", "check_duration",
    "check_strength", "check_prompt", "resolve_mode", "generated_latents", "output_frames", "loop_split",
    "plan_windows", "window_frames", "head_frames", "tail_frames", "context_latents", "tail_latents",
]
