"""The fixed SoraWorld bench suite: prompts with the scenes, seeds and inputs that score them.

Each :class:`BenchEntry` is a complete scene spec, a render seed, a prompting mode, a size, a length and
the conditioning the mode needs (an image, a clip to extend, two clips to connect, a clip to edit), all
rendered by the simulator, so the suite is a pure function of its name and this file. The prompt given
to a model is the spec's long caption (the style soraflow models train on); ``short`` is a user-style
version for reports.

Entries are built to be *measurable*: an object colour is never one the detector could confuse with
that background (clouds are white, a sunset sky passes through gray), and an entry about an event (a
bounce, a collision, a pass behind the pillar, a colour change on impact) uses a seed whose simulation
shows that event within the clip, so the simulator's own render — the upper bound — shows what the
prompt says.

    from soraflow.eval.suite import build_suite, render_reference
    suite = build_suite("default")          # >= 200 entries
    ref = render_reference(suite[0])        # world.Clip: frames + ground truth
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..world import Clip, render_clip
from ..world.captions import long_caption, short_prompt
from ..world.spec import (BACKGROUNDS, COLORS, DIRECTIONS, SHAPES, SIZES, BackgroundSpec, ObjectSpec,
                          OccluderSpec, SceneSpec, ShotSpec, complete)

#: (height, width) of the three aspect ratios (CLI: 128x128, 160x96, 96x160 as WIDTHxHEIGHT).
SIZES_HW = ((128, 128), (96, 160), (160, 96))
FPS = 8
DURATIONS = (1.0, 2.0, 3.0, 4.0)  # seconds; frames are snapped to the VAE's 1 + 4k lengths

#: Which metrics score an entry, by what it is about (see :mod:`soraflow.eval.metrics`).
BASE_METRICS = ("color", "shape", "count", "consistency")


@dataclass
class BenchEntry:
    id: str  # "<category>-<nnn>"
    category: str  # what the entry is about (colour, direction, gravity, ..., i2v, loop)
    mode: str  # pipeline mode: t2v, t2i, i2v, extend, loop, connect, edit
    spec: SceneSpec  # the complete scene the output should show
    seed: int  # render seed of the reference
    size: tuple[int, int]  # (height, width)
    fps: int
    frames: int  # frames of the output video
    prompt: str  # long caption: what the model is given
    short: str  # short user-style prompt (reports)
    metrics: tuple[str, ...]  # metric names that apply
    given: int = 0  # extend: frames of the reference given as the clip; connect: frames of clip A
    given_tail: int = 0  # connect: frames of clip B (the reference's last frames)
    source_spec: SceneSpec | None = None  # edit: the clip to edit is this spec's render (same seed)
    strength: float | None = None  # edit: SDEdit strength
    notes: dict = field(default_factory=dict)

    def request(self) -> dict:
        """Keyword arguments of ``SoraPipeline.__call__`` apart from the prompt and the inputs."""
        out = {"size": self.size, "fps": self.fps, "seed": self.seed, "mode": self.mode}
        if self.mode != "edit":
            new = {"t2v": self.frames, "t2i": 1, "i2v": self.frames, "loop": self.frames,
                   "extend": self.frames - self.given,
                   "connect": self.frames - self.given - self.given_tail}[self.mode]
            out["num_frames"] = new
        else:
            out["strength"] = self.strength
        return out

    def to_dict(self) -> dict:
        return {"id": self.id, "category": self.category, "mode": self.mode, "seed": self.seed,
                "size": f"{self.size[1]}x{self.size[0]}", "fps": self.fps, "frames": self.frames,
                "prompt": self.prompt, "short": self.short, "metrics": list(self.metrics), "given": self.given,
                "given_tail": self.given_tail, "strength": self.strength, "spec": self.spec.to_dict(),
                "source_spec": self.source_spec.to_dict() if self.source_spec else None}


# ---------------------------------------------------------------- references and inputs


def render_reference(entry: BenchEntry) -> Clip:
    """What the simulator shows for ``entry``: the ideal output (for a loop, the clip and back again)."""
    if entry.mode == "loop":
        half = entry.frames // 2 + 1  # 4k frames = f0 .. f2k, then f(2k-1) .. f1: every step continuous
        clip = render_clip(entry.spec, entry.size, entry.fps, num_frames=half, seed=entry.seed)
        idx = list(range(half)) + list(range(half - 2, 0, -1))
        clip.frames = clip.frames[idx]
        clip.truth.frames = [clip.truth.frames[i] for i in idx]
        return clip
    return render_clip(entry.spec, entry.size, entry.fps, num_frames=entry.frames, seed=entry.seed)


def conditioning(entry: BenchEntry, reference: Clip | None = None) -> dict:
    """The ``image`` / ``video`` inputs of the entry's mode, cut from the simulator's renders."""
    if entry.mode in ("t2v", "t2i", "loop"):
        return {}
    ref = reference if reference is not None else render_reference(entry)
    if entry.mode == "i2v":
        return {"image": ref.frames[0]}
    if entry.mode == "extend":
        return {"video": ref.frames[:entry.given]}
    if entry.mode == "connect":
        return {"video": (ref.frames[:entry.given], ref.frames[entry.frames - entry.given_tail:])}
    if entry.mode == "edit":
        src = render_clip(entry.source_spec, entry.size, entry.fps, num_frames=entry.frames, seed=entry.seed)
        return {"video": src.frames}
    raise InputError(f"unknown mode {entry.mode!r}")


# ---------------------------------------------------------------- what the detector can see


def _background_pixels(kind: str, name: str) -> np.ndarray:
    """(N, 3) float background pixels of ``name`` as wide, zoomed-out and panned views show it."""
    px = []
    for seed, cam in enumerate(("zoom-out", "pan-up", "pan-down", "zoom-out", "pan-left", "pan-right")):
        spec = SceneSpec([ObjectSpec("ball", "red", "small", "still", "none", "normal", "none", "none", False, "none")],
                         BackgroundSpec(kind, name), cam, None, [ShotSpec("wide")])
        clip = render_clip(spec, (64, 64), FPS, num_frames=9, seed=seed)
        for f, t in zip(clip.frames[::4], clip.truth.frames[::4]):
            keep = np.ones(f.shape[:2], bool)
            if t.objects[0].bbox is not None:
                x0, y0, x1, y1 = (int(v) for v in t.objects[0].bbox)
                keep[max(y0 - 2, 0):y1 + 2, max(x0 - 2, 0):x1 + 2] = False
            px.append(f[keep].astype(np.float32))
    return np.concatenate(px)


def _labels(pixels: np.ndarray, tolerance: float) -> np.ndarray:
    from .detector import label_colors

    return label_colors(pixels.reshape(-1, 1, 3).round().clip(0, 255).astype(np.uint8), tolerance)[:, 0]


def _tolerance() -> float:
    from .detector import DetectorConfig

    return DetectorConfig().color_tolerance + 6.0  # a margin: generated backgrounds drift


@functools.lru_cache(maxsize=None)
def background_colors(background: str) -> tuple[str, ...]:
    """Named colours that the background ``background`` itself shows (white clouds, gray tiles, a sunset
    passing through gray): the detector ignores them on that background, and no object wears them there."""
    from .detector import COLOR_NAMES

    kind = next(k for k, names in BACKGROUNDS.items() if background in names)
    labels = _labels(_background_pixels(kind, background), _tolerance())
    return tuple(c for i, c in enumerate(COLOR_NAMES) if (labels == i).mean() > 0.0005)


@functools.lru_cache(maxsize=None)
def detectable_colors(background: str, trail: bool = False) -> tuple[str, ...]:
    """Object colours the detector can tell apart from ``background`` (and, with ``trail``, from
    their own paint trail on it: 0.8 x colour + 0.2 x background must not read as the colour)."""
    from .detector import COLOR_NAMES

    kind = next(k for k, names in BACKGROUNDS.items() if background in names)
    bg = _background_pixels(kind, background)
    ok = []
    for i, name in enumerate(COLOR_NAMES):
        if name in background_colors(background):
            continue
        if trail and (_labels(0.8 * np.array(COLORS[name], np.float32) + 0.2 * bg, _tolerance()) == i).mean() > 0.002:
            continue
        ok.append(name)
    return tuple(ok)


def detector_config(entry: "BenchEntry"):
    """The detector settings for scoring ``entry``: its stated background's own colours are ignored."""
    from .detector import DetectorConfig

    return DetectorConfig(ignore_colors=background_colors(entry.spec.background.name))


ALL_BACKGROUNDS = tuple((k, n) for k, names in BACKGROUNDS.items() for n in names)


# ---------------------------------------------------------------- checks on the simulated truth


def _in_view(clip: Clip, min_in_frame: float = 0.99) -> bool:
    return all(o.in_frame >= min_in_frame for f in clip.truth.frames for o in f.objects)


def _mostly_unoverlapped(clip: Clip, max_frac: float = 0.2) -> bool:
    """No object is hidden (by another or by the pillar) in more than ``max_frac`` of the frames."""
    bad = sum(any(o.visible < 0.9 for o in f.objects) for f in clip.truth.frames)
    return bad <= max_frac * len(clip.truth.frames)


def _no_wall_bounce(clip: Clip, seconds: float = 1.0) -> bool:
    """Moving objects keep their velocity for the first ``seconds`` (the direction is unambiguous)."""
    n = min(len(clip.truth.frames), int(seconds * clip.fps) + 1)
    for i, o in enumerate(clip.spec.objects):
        if o.motion != "move":
            continue
        v0 = clip.truth.frames[0].objects[i].velocity
        for f in clip.truth.frames[1:n]:
            v = f.objects[i].velocity
            if v[0] * v0[0] < 0 or v[1] * v0[1] < 0:
                return False
    return True


def _bounces(clip: Clip, i: int) -> int:
    vy = [f.objects[i].velocity[1] for f in clip.truth.frames]
    return sum(a > 0 and b < 0 for a, b in zip(vy, vy[1:]))


def _passes_behind(clip: Clip, i: int) -> bool:
    """Object ``i`` is seen, goes (mostly) behind the pillar, and is seen whole again afterwards."""
    state = 0
    for f in clip.truth.frames:
        o = f.objects[i]
        if state == 0 and o.visible > 0.95:
            state = 1
        elif state == 1 and o.occluded:
            state = 2
        elif state == 2 and o.visible > 0.95:
            return True
    return False


# ---------------------------------------------------------------- the builder


class _Builder:
    def __init__(self, name: str):
        self.name = name
        self.entries: list[BenchEntry] = []
        self.count: dict[str, int] = {}

    def rng(self, category: str, i: int) -> random.Random:
        return random.Random(f"soraflow-bench-{self.name}-{category}-{i}")

    def add(self, category: str, spec: SceneSpec, *, r: random.Random, mode: str = "t2v",
            metrics: tuple[str, ...] = BASE_METRICS, accept=None, seconds: float | None = None,
            size: tuple[int, int] | None = None, tries: int = 60, **extra) -> BenchEntry:
        i = self.count.get(category, 0)
        self.count[category] = i + 1
        size = size or SIZES_HW[(i + len(self.entries)) % 3]
        seconds = seconds if seconds is not None else DURATIONS[(i + len(self.entries) // 3) % len(DURATIONS)]
        frames = 1 + 4 * round((seconds * FPS - 1) / 4)  # the VAE's 1 + 4k lengths
        if mode == "t2i":
            frames = 1
        elif mode == "loop":
            frames = 4 * max(2, round(seconds * FPS / 4))
        elif mode == "connect":
            frames = extra["given"] + (4 * max(1, round(seconds * FPS / 4)) - 1) + extra["given_tail"]
        elif mode == "extend":
            frames = extra["given"] + 4 * max(1, round(seconds * FPS / 4))
        best = None
        for t in range(tries):
            seed = r.randrange(10**6)
            entry = BenchEntry(f"{category}-{i:03d}", category, mode, spec, seed, size, FPS, frames,
                               long_caption(spec, seed), short_prompt(spec, seed), metrics, **extra)
            best = entry
            if accept is None:
                break
            if accept(render_reference(entry)):
                break
        else:
            best.notes["event_not_found"] = True
        self.entries.append(best)
        return best


def _obj(shape="ball", color="red", size="medium", motion="still", direction="none", speed="normal", **mods) -> ObjectSpec:
    o = ObjectSpec(shape, color, size, motion, direction, speed)
    o.spin, o.growth, o.trail, o.hit_color = mods.get("spin", "none"), mods.get("growth", "none"), \
        mods.get("trail", False), mods.get("hit_color", "none")
    return o


def _scene(objects, background, camera="static", occluder=None, shots=None) -> SceneSpec:
    kind = next(k for k, names in BACKGROUNDS.items() if background in names)
    spec = SceneSpec(objects, BackgroundSpec(kind, background), camera, occluder, shots or [ShotSpec("wide")])
    return complete(spec, 0, closed_world=True)


def _background_for(r: random.Random, colors, *, trail: bool = False, kinds=None) -> str:
    """A background on which every one of ``colors`` is detectable."""
    options = [n for k, n in ALL_BACKGROUNDS if (kinds is None or k in kinds)
               and all(c in detectable_colors(n, trail) for c in colors)]
    if not options:
        raise InputError(f"no background shows {', '.join(colors)} to the detector")
    return r.choice(options)


def _colors(r: random.Random, n: int, exclude=()) -> list[str]:
    return r.sample([c for c in COLORS if c not in exclude], n)


def _motion(r: random.Random) -> dict:
    m = r.choice(("still", "move", "move", "bounce"))
    if m == "still":
        return {"motion": "still", "direction": "none", "speed": "normal"}
    if m == "move":
        return {"motion": "move", "direction": r.choice(DIRECTIONS), "speed": r.choice(("slow", "normal"))}
    return {"motion": "bounce", "direction": r.choice(("none", "left", "right")), "speed": "normal"}


def _clear(clip: Clip) -> bool:
    return _in_view(clip) and _mostly_unoverlapped(clip)


@functools.lru_cache(maxsize=4)
def _build(name: str) -> tuple[BenchEntry, ...]:
    if name != "default":
        raise InputError(f"unknown bench suite {name!r}; available: default")
    b = _Builder(name)
    attr = BASE_METRICS + ("size",)

    # Colours: every named colour twice, one object, still or moving.
    for i, color in enumerate(list(COLORS) * 2):
        r = b.rng("color", i)
        o = _obj(r.choice(SHAPES), color, r.choice(("medium", "large")), **_motion(r))
        b.add("color", _scene([o], _background_for(r, [color])), r=r, metrics=attr, accept=_clear)

    # Shapes: each shape six times, sizes and colours varied.
    for i, shape in enumerate(SHAPES * 6):
        r = b.rng("shape", i)
        color = _colors(r, 1)[0]
        o = _obj(shape, color, SIZES[1 + i % 2], **_motion(r))
        b.add("shape", _scene([o], _background_for(r, [color])), r=r, metrics=attr, accept=_clear)

    # Sizes: one still object of each size, six times (its size is read against the frame height).
    for i, size in enumerate(SIZES * 6):
        r = b.rng("size", i)
        color = _colors(r, 1)[0]
        o = _obj(r.choice(SHAPES), color, size)
        b.add("size", _scene([o], _background_for(r, [color])), r=r, metrics=attr, accept=_clear)

    # Counts: 1-4 objects (some identical), still or slow.
    for i in range(20):
        r = b.rng("count", i)
        n = 1 + i % 4
        colors = _colors(r, n)
        if n > 1 and i % 3 == 0:
            colors[1] = colors[0]  # "two red balls": identical objects count too
        shape = r.choice(SHAPES)
        objs = [_obj(shape if (k == 1 and colors[1] == colors[0]) else r.choice(SHAPES), c, "medium" if n < 4 else "small",
                     **({"motion": "move", "direction": r.choice(DIRECTIONS), "speed": "slow"} if r.random() < 0.4
                        else {"motion": "still"})) for k, c in enumerate(colors)]
        b.add("count", _scene(objs, _background_for(r, set(colors))), r=r, accept=_clear)

    # Directions: each of the eight directions three times, static camera.
    for i, d in enumerate(DIRECTIONS * 3):
        r = b.rng("direction", i)
        color = _colors(r, 1)[0]
        o = _obj(r.choice(SHAPES), color, r.choice(("small", "medium")), "move", d, r.choice(("slow", "normal", "fast")))
        b.add("direction", _scene([o], _background_for(r, [color])), r=r,
              metrics=BASE_METRICS + ("direction",), accept=lambda c: _no_wall_bounce(c) and _in_view(c, 0.9),
              seconds=max(2.0, DURATIONS[i % 4]))

    # Gravity: dropped objects bounce with decreasing height (drift none / left / right).
    for i in range(16):
        r = b.rng("gravity", i)
        color = _colors(r, 1)[0]
        o = _obj(r.choice(SHAPES), color, r.choice(("small", "medium")), "bounce", ("none", "left", "right")[i % 3],
                 ("slow", "normal", "fast")[i % 3])
        b.add("gravity", _scene([o], _background_for(r, [color])), r=r,
              metrics=BASE_METRICS + ("gravity", "direction"),
              accept=lambda c: _bounces(c, 0) >= 1 and _in_view(c), seconds=(3.0, 4.0)[i % 2])

    # Collisions: two moving objects that meet.
    for i in range(10):
        r = b.rng("collision", i)
        colors = _colors(r, 2)
        a = _obj(r.choice(SHAPES), colors[0], "medium", "move", "right", "normal")
        c = _obj(r.choice(SHAPES), colors[1], "medium", "move", "left", "normal")
        b.add("collision", _scene([a, c], _background_for(r, colors)), r=r, metrics=BASE_METRICS + ("collision",),
              accept=lambda cl: any(f.collisions for f in cl.truth.frames[1:-3]) and _in_view(cl),
              seconds=(3.0, 4.0)[i % 2], tries=120)

    # Colour change on impact: a box that turns a new colour when a moving object hits it.
    for i in range(8):
        r = b.rng("hit", i)
        colors = _colors(r, 3)
        box = _obj("box", colors[0], "large", "still", hit_color=colors[2])
        ball = _obj(r.choice(("ball", "star")), colors[1], "medium", "move", ("left", "right")[i % 2], "fast")
        b.add("hit", _scene([box, ball], _background_for(r, colors)), r=r, metrics=BASE_METRICS + ("hit_color",),
              accept=lambda cl: cl.truth.frames[-1].objects[0].color != cl.truth.frames[0].objects[0].color
              and any(f.collisions for f in cl.truth.frames[1:-3]) and _in_view(cl), seconds=4.0, tries=200)

    # Camera moves: each of the seven (static included) on textured backgrounds.
    cameras = ("pan-left", "pan-right", "pan-up", "pan-down", "zoom-in", "zoom-out", "static")
    for i in range(18):
        r = b.rng("camera", i)
        color = _colors(r, 1)[0]
        o = _obj(r.choice(SHAPES), color, "medium", "still")
        b.add("camera", _scene([o], _background_for(r, [color]), camera=cameras[i % 7]), r=r,
              metrics=BASE_METRICS + ("camera",), seconds=(2.0, 3.0, 4.0)[i % 3], accept=_in_view)

    # Occlusion: an object passes behind the pillar and comes out.
    for i in range(12):
        r = b.rng("occlusion", i)
        colors = _colors(r, 2)
        o = _obj(r.choice(SHAPES), colors[0], r.choice(("small", "medium")), "move", ("left", "right")[i % 2],
                 r.choice(("normal", "fast")))
        spec = _scene([o], _background_for(r, colors), occluder=OccluderSpec(colors[1], "center"))
        b.add("occlusion", spec, r=r, metrics=BASE_METRICS + ("permanence",),
              accept=lambda c: _passes_behind(c, 0), seconds=4.0, tries=120)

    # Paint trails: along the frame's long side, so two seconds of travel leave a trail long enough to see.
    for i in range(8):
        r = b.rng("trail", i)
        size = SIZES_HW[i % 3]
        bg = r.choice([n for _, n in ALL_BACKGROUNDS if len(detectable_colors(n, True)) >= 3])
        color = r.choice(detectable_colors(bg, True))
        ways = {(128, 128): DIRECTIONS, (96, 160): ("left", "right"), (160, 96): ("up", "down")}[size]
        o = _obj(r.choice(SHAPES), color, "medium", "move", r.choice(ways), "normal", trail=True)
        # No wall bounce in the whole clip: paint laid twice on one path cannot show where it came from.
        b.add("trail", _scene([o], bg), r=r, metrics=BASE_METRICS + ("trail",), size=size,
              accept=lambda c: _in_view(c, 0.9) and _no_wall_bounce(c, 10.0), seconds=2.0, tries=150)

    # Multi-shot: wide, close-up[, wide].
    for i in range(8):
        r = b.rng("multishot", i)
        colors = _colors(r, 2)
        objs = [_obj(r.choice(SHAPES), c, "medium", **_motion(r)) for c in colors]
        shots = [ShotSpec("wide"), ShotSpec("close-up", i % 2)] + ([ShotSpec("wide")] if i % 2 else [])
        b.add("multishot", _scene(objs, _background_for(r, colors), shots=shots), r=r,
              metrics=("color", "cuts"), seconds=(3.0, 4.0)[i % 2])

    # Text-to-image: one frame.
    for i in range(10):
        r = b.rng("t2i", i)
        colors = _colors(r, 1 + i % 3)
        objs = [_obj(r.choice(SHAPES), c, r.choice(SIZES)) for c in colors]
        b.add("t2i", _scene(objs, _background_for(r, colors)), r=r, mode="t2i",
              metrics=("color", "shape", "count", "size"), accept=_clear)

    # Image-to-video: the first frame is the simulator's.
    for i in range(12):
        r = b.rng("i2v", i)
        colors = _colors(r, 1 + i % 2)
        objs = [_obj(r.choice(SHAPES), c, "medium", **_motion(r)) for c in colors]
        b.add("i2v", _scene(objs, _background_for(r, colors)), r=r, mode="i2v",
              metrics=BASE_METRICS + ("first_frame",), accept=_clear)

    # Extension: the first part is given (9 or 17 frames), the model continues it.
    for i in range(10):
        r = b.rng("extend", i)
        colors = _colors(r, 1 + i % 2)
        objs = [_obj(r.choice(SHAPES), c, "medium", **_motion(r)) for c in colors]
        b.add("extend", _scene(objs, _background_for(r, colors)), r=r, mode="extend",
              metrics=BASE_METRICS + ("seam",), accept=_clear, given=(9, 17)[i % 2], seconds=(1.0, 2.0)[i % 2])

    # Loops: the last frame leads back into the first.
    for i in range(8):
        r = b.rng("loop", i)
        colors = _colors(r, 1 + i % 2)
        objs = [_obj(r.choice(SHAPES), c, "medium", **_motion(r)) for c in colors]
        b.add("loop", _scene(objs, _background_for(r, colors)), r=r, mode="loop",
              metrics=("color", "shape", "count", "seam"), accept=_clear, seconds=(2.0, 4.0)[i % 2])

    # Connect: clip A, a generated transition, clip B (both cut from one simulated clip).
    for i in range(8):
        r = b.rng("connect", i)
        colors = _colors(r, 1 + i % 2)
        objs = [_obj(r.choice(SHAPES), c, "medium", **_motion(r)) for c in colors]
        b.add("connect", _scene(objs, _background_for(r, colors)), r=r, mode="connect",
              metrics=BASE_METRICS + ("seam",), accept=_clear, given=9, given_tail=9, seconds=1.0)

    # Edit (SDEdit): the same scene in another colour.
    for i in range(8):
        r = b.rng("edit", i)
        old, new = _colors(r, 2)
        o = _obj(r.choice(SHAPES), new, "large", **_motion(r))
        spec = _scene([o], _background_for(r, [old, new]))
        source = SceneSpec.from_dict(spec.to_dict())
        source.objects[0].color = old
        b.add("edit", spec, r=r, mode="edit", metrics=BASE_METRICS + ("edit_motion",), accept=_clear,
              source_spec=source, strength=0.7, seconds=2.0)
    return tuple(b.entries)


def build_suite(name: str = "default", *, limit: int | None = None, categories: list[str] | None = None) -> list[BenchEntry]:
    """The entries of suite ``name``; ``limit`` keeps an even spread over categories (round robin)."""
    entries = list(_build(name))
    if categories:
        unknown = set(categories) - {e.category for e in entries}
        if unknown:
            raise InputError(f"unknown bench categories: {', '.join(sorted(unknown))}")
        entries = [e for e in entries if e.category in categories]
    if limit is not None and limit < len(entries):
        by_cat: dict[str, list[BenchEntry]] = {}
        for e in entries:
            by_cat.setdefault(e.category, []).append(e)
        picked, k = [], 0
        while len(picked) < limit:
            for cat in by_cat.values():
                if k < len(cat) and len(picked) < limit:
                    picked.append(cat[k])
            k += 1
        entries = picked
    return entries


SUITES = ("default",)

__all__ = ["BenchEntry", "build_suite", "render_reference", "conditioning", "detectable_colors", "background_colors",
           "detector_config", "SUITES",
           "SIZES_HW", "FPS"]
