"""The fixed SoraWorld bench suites: prompts with the scenes, seeds and inputs that score them.

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

Two suites: ``default`` (246 entries, what the world's random scenes cover) and ``concept`` (32: a
backdrop no default training set contains, lava, against the four known grounds), which scores a
fine-tune that teaches it (docs/finetune.md).
"""

from __future__ import annotations

import functools
import random
import zlib
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..world import Clip, render_clip
from ..world.captions import long_caption, short_prompt
from ..world.spec import (BACKGROUNDS, CONCEPT_BACKGROUNDS, COLORS, DIRECTIONS, SHAPES, SIZES, BackgroundSpec,
                          ObjectSpec, OccluderSpec, SceneSpec, ShotSpec, background_kind, background_names, complete)

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
    """(N, 3) float background pixels of ``name`` as still, zoomed-out and panned views show it."""
    from ..world.render import Background
    from ..world.scene import build_scene

    px = []
    for seed, cam in enumerate(("zoom-out", "pan-up", "pan-down", "pan-left", "pan-right")):
        spec = SceneSpec([ObjectSpec("ball", "red", "small", "still", "none", "normal", "none", "none", False, "none")],
                         BackgroundSpec(kind, name), cam, None, [ShotSpec("wide")])
        scene = build_scene(spec, 64, 64, 4.0, seed)
        background = Background(scene)
        for t in (0.0, 2.0, 4.0):
            px.append(background.render(scene.wide_pose(t)).reshape(-1, 3).round().clip(0, 255))
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

    kind = background_kind(background)
    labels = _labels(_background_pixels(kind, background), _tolerance())
    return tuple(c for i, c in enumerate(COLOR_NAMES) if (labels == i).mean() > 0.0005)


@functools.lru_cache(maxsize=None)
def detectable_colors(background: str, trail: bool = False) -> tuple[str, ...]:
    """Object colours the detector can tell apart from ``background`` (and, with ``trail``, from
    their own paint trail on it: 0.8 x colour + 0.2 x background must not read as the colour)."""
    from .detector import COLOR_NAMES

    kind = background_kind(background)
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


@functools.lru_cache(maxsize=None)
def background_signatures(height: int, width: int, seeds: int = 4) -> dict[str, np.ndarray]:
    """Every background's signatures (:func:`~soraflow.eval.metrics.background_signature`), concept ones
    included, (seeds, 3 x bands) as a static camera shows it empty at this size under ``seeds`` render seeds
    (clouds and texture phases differ): what the ``background`` metric compares with."""
    from ..world.render import Background
    from ..world.scene import build_scene
    from .metrics import background_signature

    out = {}
    for kind in BACKGROUNDS:
        for name in background_names(kind):
            spec = SceneSpec([ObjectSpec("ball", "red", "small", "still", "none", "normal", "none", "none", False, "none")],
                             BackgroundSpec(kind, name), "static", None, [ShotSpec("wide")])
            sigs = []
            for seed in range(seeds):
                scene = build_scene(spec, height, width, 1.0, seed)
                sigs.append(background_signature(Background(scene).render(scene.wide_pose(0.0))[None]))
            out[name] = np.stack(sigs)
    return out


# ---------------------------------------------------------------- checks on the simulated truth


def _in_view(clip: Clip, min_in_frame: float = 0.99) -> bool:
    return all(o.in_frame >= min_in_frame for f in clip.truth.frames for o in f.objects)


def _mostly_in_view(clip: Clip, share: float = 0.8) -> bool:
    """Every object wholly in the frame in at least ``share`` of the frames (a pan may lose it at the end)."""
    n = len(clip.truth.frames)
    return all(sum(f.objects[i].in_frame >= 0.99 for f in clip.truth.frames) >= share * n
               for i in range(len(clip.spec.objects)))


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
    """Makes entry ``i`` of a category; every entry depends only on (suite, category, i), so a subset
    (``--limit``) is built without the rest and equals the same entries of the full suite."""

    def __init__(self, name: str, category: str, i: int):
        self.name, self.category, self.i = name, category, i
        self.r = random.Random(f"soraflow-bench-{name}-{category}-{i}")

    @property
    def size(self) -> tuple[int, int]:
        """The entry's default (H, W): categories start the aspect-ratio cycle at different places."""
        return SIZES_HW[(self.i + zlib.crc32(self.category.encode())) % 3]

    def add(self, spec: SceneSpec, *, mode: str = "t2v", metrics: tuple[str, ...] = BASE_METRICS, accept=None,
            seconds: float | None = None, size: tuple[int, int] | None = None, tries: int = 60,
            **extra) -> BenchEntry:
        category, i, r = self.category, self.i, self.r
        size = size or self.size
        offset = zlib.crc32(category.encode())
        seconds = seconds if seconds is not None else DURATIONS[(i // 3 + offset) % len(DURATIONS)]
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
        for _ in range(tries):
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
        return best


def _obj(shape="ball", color="red", size="medium", motion="still", direction="none", speed="normal", **mods) -> ObjectSpec:
    o = ObjectSpec(shape, color, size, motion, direction, speed)
    o.spin, o.growth, o.trail, o.hit_color = mods.get("spin", "none"), mods.get("growth", "none"), \
        mods.get("trail", False), mods.get("hit_color", "none")
    return o


def _scene(objects, background, camera="static", occluder=None, shots=None) -> SceneSpec:
    kind = background_kind(background)
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


_ATTR = BASE_METRICS + ("size",)
_CAMERAS = ("pan-left", "pan-right", "pan-up", "pan-down", "zoom-in", "zoom-out", "static")


def _color_entry(b: _Builder) -> BenchEntry:
    """Colours: every named colour twice, one object, still or moving."""
    r = b.r
    color = list(COLORS)[b.i % len(COLORS)]
    o = _obj(r.choice(SHAPES), color, r.choice(("medium", "large")), **_motion(r))
    return b.add(_scene([o], _background_for(r, [color])), metrics=_ATTR, accept=_clear)


def _shape_entry(b: _Builder) -> BenchEntry:
    """Shapes: each shape six times, sizes and colours varied."""
    r = b.r
    color = _colors(r, 1)[0]
    o = _obj(SHAPES[b.i % 4], color, SIZES[1 + b.i % 2], **_motion(r))
    return b.add(_scene([o], _background_for(r, [color])), metrics=_ATTR, accept=_clear)


def _size_entry(b: _Builder) -> BenchEntry:
    """Sizes: one still object of each size (read against the frame height)."""
    r = b.r
    color = _colors(r, 1)[0]
    o = _obj(r.choice(SHAPES), color, SIZES[b.i % 3])
    return b.add(_scene([o], _background_for(r, [color])), metrics=_ATTR, accept=_clear)


def _count_entry(b: _Builder) -> BenchEntry:
    """Counts: 1-4 objects (some identical), still or slow."""
    r, i = b.r, b.i
    n = 1 + i % 4
    colors = _colors(r, n)
    if n > 1 and i % 3 == 0:
        colors[1] = colors[0]  # "two red balls": identical objects count too
    shape = r.choice(SHAPES)
    objs = [_obj(shape if (k == 1 and colors[1] == colors[0]) else r.choice(SHAPES), c, "medium" if n < 4 else "small",
                 **({"motion": "move", "direction": r.choice(DIRECTIONS), "speed": "slow"} if r.random() < 0.4
                    else {"motion": "still"})) for k, c in enumerate(colors)]
    return b.add(_scene(objs, _background_for(r, set(colors))), accept=_clear)


def _direction_entry(b: _Builder) -> BenchEntry:
    """Directions: each of the eight three times, static camera, no wall in the first second."""
    r, i = b.r, b.i
    color = _colors(r, 1)[0]
    direction = DIRECTIONS[i % 8]
    # A portrait frame is 0.6 units wide: fast sideways motion would reach a wall within the second measured.
    narrow = b.size[1] < b.size[0] and direction not in ("up", "down")
    o = _obj(r.choice(SHAPES), color, r.choice(("small", "medium")), "move", direction,
             r.choice(("slow", "normal") if narrow else ("slow", "normal", "fast")))
    return b.add(_scene([o], _background_for(r, [color])), metrics=BASE_METRICS + ("direction",),
                 accept=lambda c: _no_wall_bounce(c) and _in_view(c, 0.9), seconds=max(2.0, DURATIONS[i % 4]))


def _gravity_entry(b: _Builder) -> BenchEntry:
    """Gravity: dropped objects bounce with decreasing height (drift none / left / right)."""
    r, i = b.r, b.i
    color = _colors(r, 1)[0]
    o = _obj(r.choice(SHAPES), color, r.choice(("small", "medium")), "bounce", ("none", "left", "right")[i % 3],
             ("slow", "normal", "fast")[i % 3])
    return b.add(_scene([o], _background_for(r, [color])), metrics=BASE_METRICS + ("gravity", "direction"),
                 accept=lambda c: _bounces(c, 0) >= 1 and _in_view(c), seconds=(3.0, 4.0)[i % 2])


def _collision_entry(b: _Builder) -> BenchEntry:
    """Collisions: two objects moving toward each other that meet within the clip."""
    r, i = b.r, b.i
    colors = _colors(r, 2)
    a = _obj(r.choice(SHAPES), colors[0], "medium", "move", "right", "normal")
    c = _obj(r.choice(SHAPES), colors[1], "medium", "move", "left", "normal")
    return b.add(_scene([a, c], _background_for(r, colors)), metrics=BASE_METRICS + ("collision",),
                 accept=lambda cl: any(f.collisions for f in cl.truth.frames[1:-3]) and _in_view(cl),
                 seconds=(3.0, 4.0)[i % 2], tries=120)


def _hit_entry(b: _Builder) -> BenchEntry:
    """Colour change on impact: a box turns a new colour when a moving object hits it."""
    r, i = b.r, b.i
    colors = _colors(r, 3)
    box = _obj("box", colors[0], "large", "still", hit_color=colors[2])
    ball = _obj(r.choice(("ball", "star")), colors[1], "medium", "move", ("left", "right")[i % 2], "fast")
    return b.add(_scene([box, ball], _background_for(r, colors)), metrics=BASE_METRICS + ("hit_color",),
                 accept=lambda cl: cl.truth.frames[-1].objects[0].color != cl.truth.frames[0].objects[0].color
                 and any(f.collisions for f in cl.truth.frames[1:-3]) and _in_view(cl), seconds=4.0, tries=200)


def _camera_entry(b: _Builder) -> BenchEntry:
    """Camera moves: each of the seven (static included), the object in view throughout."""
    r, i = b.r, b.i
    color = _colors(r, 1)[0]
    o = _obj(r.choice(SHAPES), color, "medium", "still")
    camera = _CAMERAS[i % 7]
    # On a ground plane things at rest sit on the ground, which a vertical pan leaves out of view for long.
    kinds = ("solid", "sky") if camera in ("pan-up", "pan-down") else None
    return b.add(_scene([o], _background_for(r, [color], kinds=kinds), camera=camera), metrics=BASE_METRICS + ("camera",),
                 seconds=(2.0, 3.0, 4.0)[i % 3], accept=_mostly_in_view)


def _occlusion_entry(b: _Builder) -> BenchEntry:
    """Occlusion: an object passes behind the pillar and comes out."""
    r, i = b.r, b.i
    colors = _colors(r, 2)
    o = _obj(r.choice(SHAPES), colors[0], r.choice(("small", "medium")), "move", ("left", "right")[i % 2],
             r.choice(("normal", "fast")))
    spec = _scene([o], _background_for(r, colors), occluder=OccluderSpec(colors[1], "center"))
    return b.add(spec, metrics=BASE_METRICS + ("permanence",), accept=lambda c: _passes_behind(c, 0), seconds=4.0,
                 tries=120)


def _trail_entry(b: _Builder) -> BenchEntry:
    """Paint trails, along the frame's long side so two seconds of travel leave a trail long enough to see."""
    r, i = b.r, b.i
    size = SIZES_HW[i % 3]
    bg = r.choice([n for _, n in ALL_BACKGROUNDS if len(detectable_colors(n, True)) >= 3])
    color = r.choice(detectable_colors(bg, True))
    ways = {(128, 128): DIRECTIONS, (96, 160): ("left", "right"), (160, 96): ("up", "down")}[size]
    o = _obj(r.choice(SHAPES), color, "medium", "move", r.choice(ways), "normal", trail=True)
    # No wall bounce in the whole clip: paint laid twice on one path cannot show where it came from.
    return b.add(_scene([o], bg), metrics=BASE_METRICS + ("trail",), size=size,
                 accept=lambda c: _in_view(c, 0.9) and _no_wall_bounce(c, 10.0), seconds=2.0, tries=150)


def _multishot_entry(b: _Builder) -> BenchEntry:
    """Multi-shot: wide, close-up[, wide]."""
    r, i = b.r, b.i
    colors = _colors(r, 2)
    objs = [_obj(r.choice(SHAPES), c, "medium", **_motion(r)) for c in colors]
    shots = [ShotSpec("wide"), ShotSpec("close-up", i % 2)] + ([ShotSpec("wide")] if i % 2 else [])
    return b.add(_scene(objs, _background_for(r, colors), shots=shots), metrics=("color", "cuts"),
                 seconds=(3.0, 4.0)[i % 2])


def _t2i_entry(b: _Builder) -> BenchEntry:
    """Text-to-image: one frame."""
    r, i = b.r, b.i
    colors = _colors(r, 1 + i % 3)
    objs = [_obj(r.choice(SHAPES), c, r.choice(SIZES)) for c in colors]
    return b.add(_scene(objs, _background_for(r, colors)), mode="t2i", metrics=("color", "shape", "count", "size"),
                 accept=_clear)


def _i2v_entry(b: _Builder) -> BenchEntry:
    """Image-to-video: the first frame is the simulator's."""
    r, i = b.r, b.i
    colors = _colors(r, 1 + i % 2)
    objs = [_obj(r.choice(SHAPES), c, "medium", **_motion(r)) for c in colors]
    return b.add(_scene(objs, _background_for(r, colors)), mode="i2v", metrics=BASE_METRICS + ("first_frame",),
                 accept=_clear)


def _extend_entry(b: _Builder) -> BenchEntry:
    """Extension: the first 9 or 17 frames are given, the model continues them."""
    r, i = b.r, b.i
    colors = _colors(r, 1 + i % 2)
    objs = [_obj(r.choice(SHAPES), c, "medium", **_motion(r)) for c in colors]
    return b.add(_scene(objs, _background_for(r, colors)), mode="extend", metrics=BASE_METRICS + ("seam",),
                 accept=_clear, given=(9, 17)[i % 2], seconds=(1.0, 2.0)[i % 2])


def _loop_entry(b: _Builder) -> BenchEntry:
    """Loops: the last frame leads back into the first."""
    r, i = b.r, b.i
    colors = _colors(r, 1 + i % 2)
    objs = [_obj(r.choice(SHAPES), c, "medium", **_motion(r)) for c in colors]
    return b.add(_scene(objs, _background_for(r, colors)), mode="loop", metrics=("color", "shape", "count", "seam"),
                 accept=_clear, seconds=(2.0, 4.0)[i % 2])


def _connect_entry(b: _Builder) -> BenchEntry:
    """Connect: clip A, a generated transition, clip B (both cut from one simulated clip)."""
    r, i = b.r, b.i
    colors = _colors(r, 1 + i % 2)
    objs = [_obj(r.choice(SHAPES), c, "medium", **_motion(r)) for c in colors]
    return b.add(_scene(objs, _background_for(r, colors)), mode="connect", metrics=BASE_METRICS + ("seam",),
                 accept=_clear, given=9, given_tail=9, seconds=1.0)


def _edit_entry(b: _Builder) -> BenchEntry:
    """Edit (SDEdit): the same scene in another colour."""
    r = b.r
    old, new = _colors(r, 2)
    o = _obj(r.choice(SHAPES), new, "large", **_motion(r))
    spec = _scene([o], _background_for(r, [old, new]))
    source = SceneSpec.from_dict(spec.to_dict())
    source.objects[0].color = old
    return b.add(spec, mode="edit", metrics=BASE_METRICS + ("edit_motion",), accept=_clear, source_spec=source,
                 strength=0.7, seconds=2.0)


def _ground_entry(b: _Builder, ground: str) -> BenchEntry:
    """One object in a detectable colour on ``ground``; scored on the objects and on the backdrop."""
    r = b.r
    o = _obj(r.choice(SHAPES), r.choice(detectable_colors(ground)), r.choice(("medium", "large")), **_motion(r))
    return b.add(_scene([o], ground), metrics=BASE_METRICS + ("background",), accept=_clear)


def _concept_entry(b: _Builder) -> BenchEntry:
    """The concept backdrop (lava), which random training scenes never show."""
    return _ground_entry(b, CONCEPT_BACKGROUNDS["ground"][b.i % len(CONCEPT_BACKGROUNDS["ground"])])


def _known_entry(b: _Builder) -> BenchEntry:
    """The same kind of scene on the four grounds a default training set has: what a fine-tune must not break."""
    return _ground_entry(b, BACKGROUNDS["ground"][b.i % len(BACKGROUNDS["ground"])])


#: category -> (entries, builder of entry i). 246 entries in all.
CATEGORIES = {
    "color": (24, _color_entry), "shape": (24, _shape_entry), "size": (18, _size_entry), "count": (20, _count_entry),
    "direction": (24, _direction_entry), "gravity": (16, _gravity_entry), "collision": (10, _collision_entry),
    "hit": (8, _hit_entry), "camera": (18, _camera_entry), "occlusion": (12, _occlusion_entry),
    "trail": (8, _trail_entry), "multishot": (8, _multishot_entry), "t2i": (10, _t2i_entry), "i2v": (12, _i2v_entry),
    "extend": (10, _extend_entry), "loop": (8, _loop_entry), "connect": (8, _connect_entry), "edit": (8, _edit_entry),
}
CONCEPT_CATEGORIES = {"concept": (16, _concept_entry), "known": (16, _known_entry)}
#: suite name -> its categories
SUITE_CATEGORIES = {"default": CATEGORIES, "concept": CONCEPT_CATEGORIES}
SUITES = tuple(SUITE_CATEGORIES)


@functools.lru_cache(maxsize=None)
def _entry(name: str, category: str, i: int) -> BenchEntry:
    b = _Builder(name, category, i)
    entry = SUITE_CATEGORIES[name][category][1](b)
    entry.id = f"{category}-{i:03d}"
    entry.category = category
    return entry

def build_suite(name: str = "default", *, limit: int | None = None, categories: list[str] | None = None) -> list[BenchEntry]:
    """The entries of suite ``name`` (all, or ``categories``); ``limit`` keeps an even spread over the
    categories (round robin) and builds only what it keeps."""
    if name not in SUITES:
        raise InputError(f"unknown bench suite {name!r}; available: {', '.join(SUITES)}")
    table = SUITE_CATEGORIES[name]
    cats = list(table) if not categories else list(dict.fromkeys(categories))
    unknown = [c for c in cats if c not in table]
    if unknown:
        raise InputError(f"unknown {name} bench categories: {', '.join(unknown)}; choose from {', '.join(table)}")
    if limit is None:
        order = [(c, i) for c in cats for i in range(table[c][0])]
    else:
        order, k = [], 0
        while len(order) < limit and k < max(table[c][0] for c in cats):
            order += [(c, k) for c in cats if k < table[c][0]][:limit - len(order)]
            k += 1
        order.sort(key=lambda ci: (cats.index(ci[0]), ci[1]))
    return [_entry(name, c, i) for c, i in order]


__all__ = ["BenchEntry", "build_suite", "render_reference", "conditioning", "detectable_colors", "background_colors",
           "background_signatures", "detector_config", "CATEGORIES", "CONCEPT_CATEGORIES", "SUITE_CATEGORIES", "SUITES", "SIZES_HW", "FPS"]
