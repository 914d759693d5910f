"""Prompting modes as plans over latent frames: which frames are given, which are generated, in which windows.

Each mode is one :class:`Mode` object in :data:`MODES` (adding a mode is adding one): what it takes
(clips, an image), how long its output is, the DiT passes it needs (:meth:`Mode.chains`) and how
they chain, as a run (:meth:`Mode.run`) that asks for one :class:`Window` at a time and says which
frames to output. No torch here, so the rules test without a model and the CLI checks a request
before it loads one. :mod:`soraflow.pipeline` runs the windows.

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

from collections import deque
from typing import Generator

import numpy as np

from .errors import InputError, SoraflowError
from .validate import check_text, number

TEMPORAL_FACTOR = 4  # pixel frames per latent frame after the first (Wan's causal VAE)

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
    plan = MODES[mode]
    if videos != plan.videos:
        what = {0: "no video", 1: "one video", 2: "two videos (A, B)"}
        raise InputError(f"mode {mode!r} takes {what[plan.videos]}, got {what.get(videos, f'{videos} videos')}")
    if plan.image == "required" and not has_image:
        raise InputError(f"mode {mode!r} ({plan.title}) needs an image")
    if has_image and plan.image == "no":
        takes = " or ".join(m.title for m in MODES.values() if m.image != "no")
        raise InputError(f"an image only works with {takes}, not mode {mode!r}")
    if strength_given and not plan.strength:
        raise InputError(f"strength only applies to mode 'edit', not {mode!r}")
    return mode


def generated_latents(mode: str, n: int) -> int:
    """How much mode ``mode`` generates for ``n`` requested frames (:meth:`Mode.generated_latents`)."""
    return MODES[mode].generated_latents(n)


def output_frames(mode: str, latents: int) -> int:
    """Frames mode ``mode`` makes for ``latents`` from :func:`generated_latents` (:meth:`Mode.made_frames`)."""
    return MODES[mode].made_frames(latents)


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


# ----------------------------------------------------------------------------------------------
# The modes
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Given:
    """What a request gives its mode, read and resized: the image and the clips (uint8)."""

    image: np.ndarray | None = None  # (H, W, 3)
    clips: tuple[np.ndarray, ...] = ()  # each (T, H, W, 3)
    direction: str = "forward"  # extend: "forward" (after the clip) or "backward" (before it)
    # How the model takes the image: "frames" (its latent given at t = 0) or "channels" (Wan image-to-video:
    # concatenated to the DiT's input with a mask, the whole clip in one window).
    image_condition: str = "frames"


@dataclass(frozen=True)
class Window:
    """One DiT pass for the pipeline to run: its plan and the pixels its given latents come from."""

    plan: WindowPlan
    head: np.ndarray | None = None  # frames encoded into the head latents (their last 1 + 4 (head-1))
    tail: np.ndarray | None = None  # frames encoded into the tail latents (their first 1 + 4 tail)
    source: np.ndarray | None = None  # edit: the frames under the head and new latents, noised to strength
    keep_head: bool = False  # output the decoded head too (image-to-video: its first frame is the image latent)
    image: np.ndarray | None = None  # the image given through the DiT's input channels (image_condition "channels")
    last_image: np.ndarray | None = None  # and the last frame beside it (Wan FLF2V: connect two images)


Run = Generator["Window | np.ndarray", "np.ndarray | None", None]
"""A mode's run: it yields a :class:`Window` and is sent back the new pixel frames that pass made,
or yields a chunk of output frames (T, H, W, 3) and is sent None. The pipeline drives it."""


class Mode:
    """A prompting mode: what it takes, how long its output is, and its DiT passes.

    Subclasses set the attributes and override what differs; the defaults are text-to-video's.
    """

    name = "t2v"
    title = "text-to-video"
    videos = 0  # clips it takes
    image = "no"  # "no", "optional" or "required"
    strength = False  # takes an SDEdit strength
    keeps_length = False  # the output is as long as the clip (no seconds / num_frames)
    duration_checked = True  # the request's duration must be within the model's limit

    def generated_latents(self, n: int) -> int:
        """Latents to generate for ``n`` requested frames (the module docstring's table)."""
        return 1 + max(0, _round_half_up((n - 1) / TEMPORAL_FACTOR))

    def made_frames(self, new: int) -> int:
        """Pixel frames the generated latents become."""
        return frames_for(new)

    def output_frames(self, new: int, given: Given) -> int:
        """Frames of the whole output: the made ones and any given clip shown as it is."""
        return self.made_frames(new)

    def chains(self, new: int, given: Given, *, window: int, overlap: int) -> list[list[WindowPlan]]:
        """The DiT passes, grouped into chains of forward windows."""
        return [plan_windows(new, first_head=0, tail=0, window=window, overlap=overlap)]

    def clip_latents(self, given: Given) -> int:
        """Latents of a mode that keeps its clip's length (``keeps_length``)."""
        raise InputError(f"mode {self.name!r} does not keep a clip's length")

    def run(self, chains: list[list[WindowPlan]], given: Given, overlap: int) -> Run:
        yield from forward(chains[0], overlap=overlap)


def forward(plans: list[WindowPlan], *, overlap: int, head: np.ndarray | None = None, keep_head: bool = False,
            tail: np.ndarray | None = None, source: np.ndarray | None = None, history: deque | None = None) -> Run:
    """A chain of forward windows, each later one given the last ``overlap`` latents' worth of the frames
    so far (``history`` keeps just those, and is the caller's when given). ``head``: frames before the
    chain; ``tail``: frames the last window leads into; ``source``: edit frames aligned with the output."""
    if history is None:
        history = deque(maxlen=head_frames(overlap))
    if head is not None:
        history.extend(head[-history.maxlen:])
    emitted = 0
    for i, plan in enumerate(plans):
        hf = head_frames(plan.head)
        if len(history) < hf:
            raise SoraflowError(f"internal: {len(history)} frames of context for a head of {plan.head} latents")
        head_px = np.stack(list(history)[len(history) - hf:]) if plan.head else None
        src = None
        if source is not None:  # the source frames under this pass's head and new latents
            offset = 0 if keep_head else hf
            src = source[emitted - offset: emitted - offset + frames_for(plan.head + plan.new)]
        frames = yield Window(plan, head_px, tail[: tail_frames(plan.tail)] if plan.tail else None, src,
                              keep_head and i == 0)
        history.extend(frames)
        emitted += len(frames)
        yield frames


def each_output(run: Run, change) -> Run:
    """``run`` with each output chunk passed through ``change`` (which may return None to drop it);
    its windows go to the pipeline and their frames back to it as before."""
    reply = None
    while True:
        try:
            item = run.send(reply)
        except StopIteration:
            return
        if isinstance(item, Window):
            reply = yield item
            continue
        reply = None
        item = change(item)
        if item is not None:
            yield item


class TextToVideo(Mode):
    """The defaults: every latent generated, in forward windows."""


class TextToImage(Mode):
    name, title, duration_checked = "t2i", "text-to-image", False

    def generated_latents(self, n: int) -> int:
        return 1


class ImageToVideo(Mode):
    name, title, image = "i2v", "image-to-video", "required"

    def generated_latents(self, n: int) -> int:
        return 1 + max(1, _round_half_up((n - 1) / TEMPORAL_FACTOR))

    def chains(self, new, given, *, window, overlap):
        if given.image_condition == "channels":  # the image enters every step of one pass, with no head
            if new > window:
                raise InputError(f"this model takes the image through its input channels, in one window: at most "
                                 f"{frames_for(window)} frames, asked for {frames_for(new)}")
            return [[WindowPlan(0, new, 0)]]
        return [plan_windows(new - 1, first_head=1, tail=0, window=window, overlap=overlap)]

    def run(self, chains, given, overlap):
        if given.image_condition == "channels":
            frames = yield Window(chains[0][0], image=given.image)
            yield frames
            return
        yield from forward(chains[0], overlap=overlap, head=given.image[None], keep_head=True)


class Extend(Mode):
    """Forward: the clip, then frames after it (its end is each first window's head). Backward: frames
    before it, window by window back in time, each given the start of what follows as its tail."""

    name, title, videos = "extend", "extend", 1

    def generated_latents(self, n: int) -> int:
        return max(1, _round_half_up(n / TEMPORAL_FACTOR))

    def made_frames(self, new: int) -> int:
        return TEMPORAL_FACTOR * new

    def output_frames(self, new, given):
        return len(given.clips[0]) + self.made_frames(new)

    def chains(self, new, given, *, window, overlap):
        clip = given.clips[0]
        if given.direction == "forward":
            return [plan_windows(new, first_head=context_latents(len(clip), overlap), tail=0, window=window,
                                 overlap=overlap)]
        available = min(len(clip), tail_frames(overlap))  # frames of what follows the next pass
        if not tail_latents(available, overlap):
            raise InputError(f"extending backward needs a clip of at least {tail_frames(1)} frames, got {len(clip)}")
        # Each pass: no head, g + 1 new latents (the first an image latent; its 4 g frames are kept).
        plans, left = [], new
        while left:
            tail = tail_latents(available, overlap)
            g = min(left, window - tail - 1)
            plans.append(WindowPlan(0, g + 1, tail))
            left -= g
            available = min(tail_frames(overlap), TEMPORAL_FACTOR * g + available)
        return [plans]

    def run(self, chains, given, overlap):
        clip = given.clips[0]
        if given.direction == "forward":
            yield clip
            yield from forward(chains[0], overlap=overlap, head=clip)
            return
        # The segments come out in reverse, so they are held until the first is made (pixels only: the
        # memory grows with the added length, unlike the forward modes).
        segments: list[np.ndarray] = []
        following = clip[: tail_frames(overlap)]
        for plan in chains[0]:
            frames = yield Window(plan, tail=following[: tail_frames(plan.tail)])
            segments.append(frames)
            following = np.concatenate([frames, following])[: tail_frames(overlap)]
        yield from reversed(segments)
        yield clip


class Connect(Mode):
    """Clip A, a transition generated between A's end (head) and B's start (tail), clip B."""

    name, title, videos = "connect", "connect", 2

    def generated_latents(self, n: int) -> int:
        return max(1, _round_half_up((n + 1) / TEMPORAL_FACTOR))

    def made_frames(self, new: int) -> int:
        return TEMPORAL_FACTOR * new - 1

    def output_frames(self, new, given):
        a, b = given.clips
        return len(a) + self.made_frames(new) + len(b)

    def chains(self, new, given, *, window, overlap):
        a, b = given.clips
        if given.image_condition == "channels":  # Wan FLF2V: A's last and B's first frame through the channels
            if new + 1 > window:
                raise InputError(f"this model takes its first and last frame through its input channels, in one window: "
                                 f"at most {frames_for(window)} frames, asked for {frames_for(new + 1)}")
            return [[WindowPlan(0, new + 1, 0)]]
        tail = tail_latents(len(b), overlap)
        if not tail:
            still = " (a still image is one frame: only first-last-frame models, Wan FLF2V, connect two images)" if len(b) == 1 else ""
            raise InputError(f"clip B has {len(b)} frames; connecting needs at least {tail_frames(1)} to give the "
                             f"model its start{still}")
        return [plan_windows(new, first_head=context_latents(len(a), overlap), tail=tail, window=window,
                             overlap=overlap)]

    def run(self, chains, given, overlap):
        a, b = given.clips
        if given.image_condition == "channels":  # the pass makes A's last frame, the transition and B's first
            frames = yield Window(chains[0][0], image=a[-1], last_image=b[0])
            yield a[:-1]
            yield frames
            yield b[1:]
            return
        yield a
        yield from forward(chains[0], overlap=overlap, head=a, tail=b)
        yield b


class Loop(Mode):
    """A main clip (from an image, optionally), then a bridge from its end back into its own first
    frames (the connect mechanism with the clip on both sides): the last frame leads into the first
    like any other frame pair."""

    name, title, image = "loop", "loop", "optional"

    def generated_latents(self, n: int) -> int:  # groups of 4 frames
        return max(2, _round_half_up(n / TEMPORAL_FACTOR))

    def made_frames(self, new: int) -> int:
        return TEMPORAL_FACTOR * new

    def chains(self, new, given, *, window, overlap):
        main, bridge = loop_split(new)
        first = 1 if given.image is not None else 0
        if first and main < 2:
            raise InputError("a loop from an image needs at least 8 frames")
        main_frames = frames_for(main)
        return [plan_windows(main - first, first_head=first, tail=0, window=window, overlap=overlap),
                plan_windows(bridge, first_head=context_latents(main_frames, overlap),
                             tail=tail_latents(main_frames, overlap), window=window, overlap=overlap)]

    def run(self, chains, given, overlap):
        history = deque(maxlen=head_frames(overlap))
        want = tail_frames(chains[1][-1].tail)
        first: list[np.ndarray] = []
        head = None if given.image is None else given.image[None]

        def keep_first(frames: np.ndarray) -> np.ndarray:
            if sum(len(f) for f in first) < want:
                first.append(frames[:want])
            return frames

        yield from each_output(forward(chains[0], overlap=overlap, head=head, keep_head=head is not None,
                                       history=history), keep_first)
        yield from forward(chains[1], overlap=overlap, head=np.stack(list(history)), tail=np.concatenate(first)[:want])


class Edit(Mode):
    """SDEdit: the clip's latents noised to the strength, then denoised under the new prompt."""

    name, title, videos, strength, keeps_length = "edit", "edit", 1, True, True

    def generated_latents(self, n: int) -> int:
        raise InputError("an edit keeps the clip's length; do not give seconds or num_frames")

    def clip_latents(self, given: Given) -> int:
        return latents_for(len(pad_to_vae_length(given.clips[0])))

    def output_frames(self, new, given):
        return len(given.clips[0])

    def run(self, chains, given, overlap):
        clip = given.clips[0]
        left = len(clip)

        def trim(frames: np.ndarray) -> np.ndarray | None:  # drop the padding again
            nonlocal left
            frames = frames[:left]
            left -= len(frames)
            return frames if len(frames) else None

        yield from each_output(forward(chains[0], overlap=overlap, source=pad_to_vae_length(clip)), trim)


def pad_to_vae_length(clip: np.ndarray) -> np.ndarray:
    """Repeat the last frame up to 1 + 4k frames (the VAE's lengths); the output is trimmed back."""
    extra = (len(clip) - 1) % TEMPORAL_FACTOR
    if not extra:
        return clip
    return np.concatenate([clip, np.repeat(clip[-1:], TEMPORAL_FACTOR - extra, axis=0)])


MODES: dict[str, Mode] = {m.name: m for m in (TextToVideo(), TextToImage(), ImageToVideo(), Extend(), Loop(), Connect(), Edit())}


__all__ = [
    "Mode", "Given", "Window", "Run", "forward", "each_output", "pad_to_vae_length",
    "TEMPORAL_FACTOR", "MODES", "MODE_ALIASES", "DIRECTIONS", "WindowPlan",
    "latents_for", "frames_for", "requested_frames", "check_size", "check_fps", "check_duration",
    "check_strength", "check_prompt", "resolve_mode", "generated_latents", "output_frames", "loop_split",
    "plan_windows", "window_frames", "head_frames", "tail_frames", "context_latents", "tail_latents",
]
