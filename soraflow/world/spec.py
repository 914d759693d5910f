"""SoraWorld scene specs: what a clip shows, in the words a caption can state.

A spec holds only what a caption can say: shapes, colours, sizes, motions, background, camera,
occluder, shots. Everything else (start positions, exact speeds, texture phase) is drawn from the
render seed, so one spec renders many different clips and ``parse(long_caption(spec)) == spec``
can hold exactly.

Two kinds of spec share these classes:

* a **complete** spec (every field set) is what the simulator renders;
* a **partial** spec comes from parsing a short prompt: a field that is ``None`` was not stated.
  :func:`complete` fills it, either with the "nothing happens" default (closed world: a long
  caption states everything that happens) or with a random plausible choice (open world: a
  user's short prompt leaves room, which prompt expansion fills).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError

# ---------------------------------------------------------------- vocabulary
# Canonical values. Captions use synonyms ("sphere", "cube", "crimson"); the parser maps them back.

#: Named object colours and their sRGB values. Chosen far apart so a detector can tell them apart.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 38, 38),
    "orange": (245, 130, 20),
    "yellow": (245, 215, 35),
    "green": (30, 165, 60),
    "blue": (35, 85, 225),
    "purple": (135, 55, 190),
    "pink": (245, 115, 185),
    "cyan": (30, 200, 215),
    "white": (245, 245, 245),
    "black": (22, 22, 22),
    "brown": (125, 75, 35),
    "gray": (128, 128, 128),
}
SHAPES = ("ball", "box", "triangle", "star")
SIZES = ("small", "medium", "large")

#: "still": at rest. "move": constant velocity in one of DIRECTIONS (bouncing off the frame walls).
#: "bounce": dropped under gravity, bouncing on the ground with decreasing height, optionally
#: drifting left or right.
MOTIONS = ("still", "move", "bounce")
DIRECTIONS = ("left", "right", "up", "down", "up-left", "up-right", "down-left", "down-right")
BOUNCE_DIRECTIONS = ("none", "left", "right")
SPEEDS = ("slow", "normal", "fast")
SPINS = ("none", "clockwise", "counterclockwise")
GROWTHS = ("none", "growing", "shrinking")

#: Background kinds and the names each one takes.
BACKGROUNDS: dict[str, tuple[str, ...]] = {
    "solid": ("white", "black", "gray", "beige", "navy", "teal"),  # a plain colour
    "sky": ("day", "sunset", "night"),  # a vertical gradient sky
    "ground": ("grass", "sand", "snow", "tiles"),  # sky above a ground plane in perspective
}
#: Backgrounds the simulator renders and prompts can name but random scenes never draw: a concept no
#: default training set contains, for a fine-tune to teach and the ``concept`` bench suite to score
#: (docs/finetune.md). Kept apart from BACKGROUNDS so every seeded dataset stays what it was.
CONCEPT_BACKGROUNDS: dict[str, tuple[str, ...]] = {"ground": ("lava",)}


def background_names(kind: str) -> tuple[str, ...]:
    """Every name a ``kind`` background can take, the concept ones included."""
    return BACKGROUNDS.get(kind, ()) + CONCEPT_BACKGROUNDS.get(kind, ())


def background_kind(name: str) -> str:
    """The kind ("solid", "sky", "ground") of background ``name``."""
    for kind in BACKGROUNDS:
        if name in background_names(kind):
            return kind
    raise InputError(f"unknown background {name!r}; choose from "
                     f"{', '.join(n for k in BACKGROUNDS for n in background_names(k))}")

#: Solid background colours that are not object colours.
BACKGROUND_COLORS: dict[str, tuple[int, int, int]] = {
    "white": (236, 236, 232),
    "black": (12, 12, 16),
    "gray": (96, 96, 100),
    "beige": (225, 210, 175),
    "navy": (20, 30, 70),
    "teal": (20, 95, 95),
}
CAMERAS = ("static", "pan-left", "pan-right", "pan-up", "pan-down", "zoom-in", "zoom-out")
OCCLUDER_POSITIONS = ("left", "center", "right")
SHOT_KINDS = ("wide", "close-up")

MAX_OBJECTS = 4
MAX_SHOTS = 3

#: Object colours that would be hard to see on a background; random specs avoid them.
CLASHES: dict[str, tuple[str, ...]] = {
    "white": ("white", "gray"),
    "black": ("black", "gray"),
    "gray": ("gray", "black"),
    "beige": ("white", "yellow"),
    "navy": ("blue", "black"),
    "teal": ("cyan", "green"),
    "day": ("blue", "cyan", "white"),
    "sunset": ("orange", "pink"),
    "night": ("black", "blue", "purple"),
    "grass": ("green",),
    "sand": ("yellow", "brown", "orange"),
    "snow": ("white", "gray"),
    "tiles": ("gray",),
    "lava": ("red", "orange", "brown", "black"),
}


# ---------------------------------------------------------------- the spec


@dataclass
class ObjectSpec:
    shape: str | None = None  # one of SHAPES
    color: str | None = None  # one of COLORS
    size: str | None = None  # one of SIZES
    motion: str | None = None  # one of MOTIONS
    direction: str | None = None  # move: DIRECTIONS; bounce: BOUNCE_DIRECTIONS; still: "none"
    speed: str | None = None  # one of SPEEDS ("normal" for still objects)
    spin: str | None = None  # one of SPINS
    growth: str | None = None  # one of GROWTHS
    trail: bool | None = None  # leaves a paint trail of its colour that stays
    hit_color: str | None = None  # "none", or the colour it turns into when something hits it


@dataclass
class BackgroundSpec:
    kind: str | None = None  # one of BACKGROUNDS
    name: str | None = None  # one of BACKGROUNDS[kind]


@dataclass
class OccluderSpec:
    """A tall foreground pillar that objects pass behind (object permanence)."""

    color: str | None = None  # one of COLORS
    position: str | None = None  # one of OCCLUDER_POSITIONS (horizontal place in the frame)


@dataclass
class ShotSpec:
    kind: str | None = None  # one of SHOT_KINDS
    target: int | None = None  # close-up: index of the object framed; wide: None


@dataclass
class SceneSpec:
    objects: list[ObjectSpec] = field(default_factory=list)  # 1..MAX_OBJECTS
    background: BackgroundSpec | None = None
    camera: str | None = None  # one of CAMERAS
    occluder: OccluderSpec | None = None  # None: no occluder (or, in a partial spec, unstated)
    shots: list[ShotSpec] = field(default_factory=list)  # cut at equal fractions; [] = unstated

    # ------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SceneSpec":
        try:
            return cls(
                objects=[ObjectSpec(**o) for o in data.get("objects", [])],
                background=BackgroundSpec(**data["background"]) if data.get("background") else None,
                camera=data.get("camera"),
                occluder=OccluderSpec(**data["occluder"]) if data.get("occluder") else None,
                shots=[ShotSpec(**s) for s in data.get("shots", [])],
            )
        except TypeError as err:
            raise InputError(f"not a SoraWorld scene spec: {err}") from None

    @property
    def is_complete(self) -> bool:
        return (
            bool(self.objects)
            and all(None not in dataclasses.astuple(o) for o in self.objects)
            and self.background is not None
            and None not in dataclasses.astuple(self.background)
            and self.camera is not None
            and (self.occluder is None or None not in dataclasses.astuple(self.occluder))
            and bool(self.shots)
            and all(s.kind is not None for s in self.shots)
        )


# ---------------------------------------------------------------- validation


def _check(value, allowed, what: str) -> None:
    if value is not None and value not in allowed:
        raise InputError(f"{what} {value!r} is not one of: {', '.join(map(str, allowed))}")


def validate(spec: SceneSpec) -> SceneSpec:
    """Check every stated value against the vocabulary; None (unstated) passes. Returns ``spec``."""
    if not 1 <= len(spec.objects) <= MAX_OBJECTS:
        raise InputError(f"a scene has 1 to {MAX_OBJECTS} objects, got {len(spec.objects)}")
    for i, o in enumerate(spec.objects):
        what = f"object {i + 1}"
        _check(o.shape, SHAPES, f"{what} shape")
        _check(o.color, COLORS, f"{what} colour")
        _check(o.size, SIZES, f"{what} size")
        _check(o.motion, MOTIONS, f"{what} motion")
        allowed = {"move": DIRECTIONS, "bounce": BOUNCE_DIRECTIONS, "still": ("none",)}.get(
            o.motion, DIRECTIONS + ("none",))
        _check(o.direction, allowed, f"{what} direction for motion {o.motion!r}")
        _check(o.speed, ("normal",) if o.motion == "still" else SPEEDS, f"{what} speed")
        _check(o.spin, SPINS, f"{what} spin")
        _check(o.growth, GROWTHS, f"{what} growth")
        _check(o.trail, (True, False), f"{what} trail")
        _check(o.hit_color, ("none",) + tuple(COLORS), f"{what} colour on impact")
    if spec.background is not None:
        _check(spec.background.kind, BACKGROUNDS, "background kind")
        if spec.background.kind is not None:
            _check(spec.background.name, background_names(spec.background.kind),
                   f"{spec.background.kind} background")
    _check(spec.camera, CAMERAS, "camera")
    if spec.occluder is not None:
        _check(spec.occluder.color, COLORS, "occluder colour")
        _check(spec.occluder.position, OCCLUDER_POSITIONS, "occluder position")
    if len(spec.shots) > MAX_SHOTS:
        raise InputError(f"a clip has at most {MAX_SHOTS} shots, got {len(spec.shots)}")
    for i, s in enumerate(spec.shots):
        _check(s.kind, SHOT_KINDS, f"shot {i + 1} kind")
        if s.kind == "close-up" and s.target is not None and not 0 <= s.target < len(spec.objects):
            raise InputError(f"shot {i + 1} is a close-up of object {s.target + 1}, "
                             f"but the scene has {len(spec.objects)} objects")
    return spec


# ---------------------------------------------------------------- random and completed specs

# Probabilities of the training distribution (what random_spec draws and open-world completion uses).
P_OBJECTS = (0.45, 0.30, 0.15, 0.10)  # 1, 2, 3, 4 objects
P_MOTION = {"still": 0.15, "move": 0.5, "bounce": 0.35}
P_BACKGROUND = {"solid": 0.35, "sky": 0.25, "ground": 0.40}
P_CAMERA_STATIC = 0.55
P_SPIN = 0.15
P_GROWTH = 0.10
P_TRAIL = 0.12
P_HIT_COLOR = 0.35  # for boxes in scenes with other moving objects
P_OCCLUDER = 0.20
P_MULTI_SHOT = 0.12


def _pick(rng: random.Random, probs: dict[str, float]) -> str:
    return rng.choices(list(probs), weights=list(probs.values()))[0]


def _background_name(spec: SceneSpec) -> str | None:
    return spec.background.name if spec.background else None


def complete(spec: SceneSpec, rng: random.Random | int | None = None, *, closed_world: bool = False) -> SceneSpec:
    """Return a complete copy of ``spec``: every unstated (None) field filled.

    closed_world=True: unstated modifiers take their "nothing happens" value (no spin, no growth, no
    trail, no colour change, normal speed, static camera, one wide shot, no occluder) — the reading
    of a long caption, which states everything that happens. Unstated core attributes (shape, colour,
    size, motion, direction, background) are still drawn at random.
    closed_world=False: unstated fields are drawn from the training distribution (prompt expansion).
    """
    rng = rng if isinstance(rng, random.Random) else random.Random(rng)
    out = SceneSpec.from_dict(validate(spec).to_dict())  # deep copy
    if not out.objects:
        out.objects = [ObjectSpec()]

    bg = out.background or BackgroundSpec()
    bg.kind = bg.kind or _pick(rng, P_BACKGROUND)
    bg.name = bg.name or rng.choice(BACKGROUNDS[bg.kind])
    out.background = bg
    clashes = CLASHES.get(bg.name, ())

    for o in out.objects:
        o.shape = o.shape or rng.choice(SHAPES)
        o.color = o.color or rng.choice([c for c in COLORS if c not in clashes])
        o.size = o.size or rng.choice(SIZES)
        if o.motion is None:
            # only motions the stated direction and speed allow ("left" cannot be at rest)
            allowed = {m: p for m, p in P_MOTION.items()
                       if (o.direction is None or o.direction in {"still": ("none",), "move": DIRECTIONS,
                                                                   "bounce": BOUNCE_DIRECTIONS}[m])
                       and (o.speed in (None, "normal") or m != "still")}
            o.motion = _pick(rng, allowed or P_MOTION)
    moving = sum(o.motion != "still" for o in out.objects)
    for o in out.objects:
        if o.direction is None:
            o.direction = {"still": "none", "move": None, "bounce": None}[o.motion] or rng.choice(
                DIRECTIONS if o.motion == "move" else BOUNCE_DIRECTIONS)
        if o.speed is None:
            o.speed = "normal" if o.motion == "still" or closed_world else rng.choice(SPEEDS)
        if o.spin is None:
            o.spin = "none" if closed_world or rng.random() > P_SPIN else rng.choice(SPINS[1:])
        if o.growth is None:
            o.growth = "none" if closed_world or rng.random() > P_GROWTH else rng.choice(GROWTHS[1:])
        if o.trail is None:
            o.trail = False if closed_world or o.motion == "still" else rng.random() < P_TRAIL
        if o.hit_color is None:
            can_be_hit = o.shape == "box" and len(out.objects) > 1 and moving > 0
            o.hit_color = "none"
            if can_be_hit and not closed_world and rng.random() < P_HIT_COLOR:
                o.hit_color = rng.choice([c for c in COLORS if c != o.color and c not in clashes])

    if out.camera is None:
        out.camera = "static" if closed_world or rng.random() < P_CAMERA_STATIC else rng.choice(CAMERAS[1:])
    if out.occluder is not None:
        used = {o.color for o in out.objects}
        out.occluder.color = out.occluder.color or rng.choice(
            [c for c in COLORS if c not in used and c not in clashes])
        out.occluder.position = out.occluder.position or rng.choice(OCCLUDER_POSITIONS)
    elif not closed_world and not spec.is_complete and rng.random() < P_OCCLUDER:
        used = {o.color for o in out.objects}
        out.occluder = OccluderSpec(rng.choice([c for c in COLORS if c not in used and c not in clashes]),
                                    rng.choice(OCCLUDER_POSITIONS))
    if not out.shots:
        out.shots = [ShotSpec("wide")]
        if not closed_world and rng.random() < P_MULTI_SHOT:
            # wide, close-up[, wide]: a cut always changes the framing, so it can be seen.
            out.shots.append(ShotSpec("close-up", rng.randrange(len(out.objects))))
            if rng.random() < 0.5:
                out.shots.append(ShotSpec("wide"))
    for s in out.shots:
        s.kind = s.kind or "wide"
        if s.kind == "close-up" and s.target is None:
            s.target = rng.randrange(len(out.objects))
        if s.kind == "wide":
            s.target = None
    return validate(out)


def random_spec(rng: random.Random | int | None = None, background: str | None = None) -> SceneSpec:
    """A complete spec drawn from the training distribution; ``background`` (a name, concept ones
    included) fixes the backdrop and draws the rest."""
    rng = rng if isinstance(rng, random.Random) else random.Random(rng)
    n = rng.choices(range(1, MAX_OBJECTS + 1), weights=P_OBJECTS)[0]
    bg = BackgroundSpec(background_kind(background), background) if background else None
    return complete(SceneSpec(objects=[ObjectSpec() for _ in range(n)], background=bg), rng)
