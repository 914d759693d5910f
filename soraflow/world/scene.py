"""From a scene spec and a render seed to a concrete world: walls, bodies, occluder, camera path.

The spec states only what a caption can say; this module draws the rest from the seed (start
positions, exact speeds, texture phases) so that the stated motion is what a viewer sees:
a "moving right" object starts on the left of the view, a dropped ball starts high, nothing
starts behind the occluder or inside another object.

World units (see :mod:`.physics`): 1 = height of the wide view; y points down. At t = 0 the wide
camera shows x in [0, W/H], y in [0, 1]. Camera moves are slow and bounded, and the walls are the
union of every wide view of the clip, so objects stay in (or near) the picture.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from .physics import Arena, Body, Physics
from .spec import COLORS, SceneSpec

#: Collision radius of each size, world units (x 128 px: 7, 11, 15 px at 128x128).
SIZE_RADIUS = {"small": 0.055, "medium": 0.085, "large": 0.12}
#: "move" speeds, units/s (a 128-px frame is crossed in ~7 / 3.3 / 2 s).
MOVE_SPEED = {"slow": 0.15, "normal": 0.3, "fast": 0.5}
#: "bounce": gravity (units/s^2) and sideways drift (units/s) per speed word.
GRAVITY = {"slow": 1.6, "normal": 2.6, "fast": 4.2}
DRIFT = {"slow": 0.08, "normal": 0.15, "fast": 0.25}
SPIN_RATE = math.pi  # radians/s: half a turn per second
#: Radius scale of growing objects goes from GROW[0] to GROW[1] (shrinking: the reverse).
GROW = (0.7, 1.35)
GROWTH_TIME = 4.0  # s (or the whole clip when shorter)
#: Camera: pans move at most PAN_RATE view-extents/s and PAN_MAX view-extents per clip;
#: zooms change the scale by at most ZOOM_RATE (log units)/s and ZOOM_MAX per clip.
PAN_RATE, PAN_MAX = 0.12, 0.4
ZOOM_RATE, ZOOM_MAX = 0.15, math.log(1.5)
FLOOR_MARGIN = 0.03  # the ground line sits this far above the bottom of the wide view
HORIZON = 0.42  # world y of the horizon on "ground" backgrounds
OCCLUDER_PLACE = {"left": 0.27, "center": 0.5, "right": 0.73}
#: A close-up frames its target so the object's diameter fills this fraction of the view height.
CLOSE_UP_FILL = 0.45
CLOSE_UP_ZOOM = (1.6, 3.5)
CLOSE_UP_LAG = 0.25  # s: the close-up camera follows its target with this time constant

_DIRECTION = {
    "left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1),
    "up-left": (-1, -1), "up-right": (1, -1), "down-left": (-1, 1), "down-right": (1, 1),
}


@dataclass
class CameraPose:
    """Where the camera looks: world point at the image centre and zoom (1 = the wide view)."""

    cx: float
    cy: float
    zoom: float
    shot: int = 0
    kind: str = "wide"

    def scale(self, height: int) -> float:
        """Pixels per world unit."""
        return height * self.zoom


@dataclass
class Occluder:
    x0: float  # world extent of the pillar (it spans the full height)
    x1: float
    color: str


@dataclass
class Scene:
    """Everything the simulator and renderer need, drawn from (spec, size, duration, seed)."""

    spec: SceneSpec
    height: int
    width: int
    duration: float  # time of the last frame, s
    seed: int
    physics: Physics | None  # bodies and walls (set by build_scene once the camera path is known)
    occluder: Occluder | None
    horizon: float | None  # world y of the horizon ("ground" backgrounds)
    texture_seed: int  # phases of the background texture
    shot_starts: list[float] = field(default_factory=list)  # start time of each shot
    zoom_anchor: tuple[float, float] | None = None  # world point a zoom moves towards (the objects' centroid)

    @property
    def aspect(self) -> float:
        return self.width / self.height

    # ------------------------------------------------------------ camera
    def wide_pose(self, t: float) -> CameraPose:
        """The spec's camera move (static, pan, zoom) at time ``t``."""
        a, d = self.aspect, max(self.duration, 1e-6)
        cx, cy, zoom = a / 2, 0.5, 1.0
        cam = self.spec.camera
        if cam in ("pan-left", "pan-right"):
            v = min(PAN_RATE, PAN_MAX / d) * a
            cx += v * t * (1 if cam == "pan-right" else -1)
        elif cam in ("pan-up", "pan-down"):
            v = min(PAN_RATE, PAN_MAX / d)
            cy += v * t * (1 if cam == "pan-down" else -1)
        elif cam in ("zoom-in", "zoom-out"):
            k = min(ZOOM_RATE, ZOOM_MAX / d)
            zoom = math.exp(k * (t if cam == "zoom-in" else self.duration - t))
            # Zoom towards the objects, keeping the view inside the first wide view.
            ax, ay = self.zoom_anchor or (cx, cy)
            hw, hh = a / 2 / zoom, 0.5 / zoom
            cx, cy = min(max(ax, hw), a - hw), min(max(ay, hh), 1 - hh)
        return CameraPose(cx, cy, zoom)

    def shot_at(self, t: float) -> int:
        shot = 0
        for i, start in enumerate(self.shot_starts):
            if t >= start - 1e-9:
                shot = i
        return shot

    def close_up_zoom(self, target: int) -> float:
        body = self.physics.bodies[target]
        r = body.base_radius * max(body.scale_from, body.scale_to)
        return min(max(CLOSE_UP_FILL / (2 * r), CLOSE_UP_ZOOM[0]), CLOSE_UP_ZOOM[1])


def _wide_extent(scene: Scene, t: float) -> tuple[float, float, float, float]:
    pose = scene.wide_pose(t)
    hw, hh = scene.aspect / 2 / pose.zoom, 0.5 / pose.zoom
    return pose.cx - hw, pose.cy - hh, pose.cx + hw, pose.cy + hh


def build_scene(spec: SceneSpec, height: int, width: int, duration: float, seed: int) -> Scene:
    """Lay out a complete spec: walls, bodies with start states, occluder, shot cuts."""
    rng = random.Random(f"soraworld-{seed}")
    scene = Scene(spec, height, width, duration, seed, physics=None, occluder=None,
                  horizon=HORIZON if spec.background.kind == "ground" else None,
                  texture_seed=rng.randrange(2**31))
    n_shots = len(spec.shots)
    # An image (duration 0) shows the first shot.
    scene.shot_starts = [duration * i / n_shots if duration > 0 and i else (0.0 if i == 0 else math.inf)
                         for i in range(n_shots)]

    # Walls: the union of every wide view over the clip (a pan or zoom never leaves them behind).
    boxes = [_wide_extent(scene, duration * k / 8) for k in range(9)]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    arena = Arena(x0, x1, y0, y1 - FLOOR_MARGIN)
    # Objects start inside the view at mid-clip, so they are on screen for most of it.
    vx0, vy0, vx1, vy1 = _wide_extent(scene, duration / 2)
    vx0, vy0, vx1, vy1 = max(vx0, x0), max(vy0, y0), min(vx1, x1), min(vy1, arena.floor)

    radii = [SIZE_RADIUS[o.size] for o in spec.objects]
    occluder = None
    if spec.occluder is not None:
        width_w = min(max(2.3 * max(r * max(GROW) for r in radii), 0.12), 0.3 * (vx1 - vx0))
        xc = vx0 + OCCLUDER_PLACE[spec.occluder.position] * (vx1 - vx0)
        occluder = Occluder(xc - width_w / 2, xc + width_w / 2, spec.occluder.color)
    scene.occluder = occluder

    bodies: list[Body] = []
    for o, r0 in zip(spec.objects, radii):
        grow = {"none": (1.0, 1.0), "growing": GROW, "shrinking": GROW[::-1]}[o.growth]
        r_max = r0 * max(grow)
        body = Body(0.0, 0.0, base_radius=r0, color=o.color, hit_color=o.hit_color,
                    scale_from=grow[0], scale_to=grow[1], growth_time=max(min(duration, GROWTH_TIME), 1e-6),
                    omega={"none": 0.0, "clockwise": SPIN_RATE, "counterclockwise": -SPIN_RATE}[o.spin],
                    angle=rng.uniform(0, 2 * math.pi) if o.spin != "none" else 0.0)
        if o.motion == "move":
            dx, dy = _DIRECTION[o.direction]
            norm = math.hypot(dx, dy)
            speed = MOVE_SPEED[o.speed] * rng.uniform(0.9, 1.1)
            body.vx, body.vy = speed * dx / norm, speed * dy / norm
        elif o.motion == "bounce":
            body.gravity = GRAVITY[o.speed] * rng.uniform(0.9, 1.1)
            side = {"none": 0, "left": -1, "right": 1}[o.direction]
            body.vx = side * DRIFT[o.speed] * rng.uniform(0.9, 1.1)
        else:
            body.fixed = True
            body.grounded = spec.background.kind == "ground"  # things at rest on a ground plane sit on it
        body.x, body.y = _place(rng, o, body, r_max, bodies, occluder, spec.background.kind,
                                (vx0, vy0, vx1, vy1), arena)
        bodies.append(body)
    scene.physics = Physics(bodies, arena)
    if spec.camera in ("zoom-in", "zoom-out"):
        scene.zoom_anchor = (sum(b.x for b in bodies) / len(bodies), sum(b.y for b in bodies) / len(bodies))
    return scene


def _place(rng, o, body: Body, r_max: float, placed: list[Body], occluder: Occluder | None, bg_kind: str,
           view: tuple[float, float, float, float], arena: Arena) -> tuple[float, float]:
    """A start position that shows the stated motion, clear of other objects and of the occluder."""
    vx0, vy0, vx1, vy1 = view
    m = r_max + 0.01
    lo_x, hi_x, lo_y, hi_y = vx0 + m, vx1 - m, vy0 + m, vy1 - m
    if lo_x > hi_x:
        lo_x = hi_x = (vx0 + vx1) / 2
    if lo_y > hi_y:
        lo_y = hi_y = (vy0 + vy1) / 2

    def frac(a: float, b: float, lo: float, hi: float) -> float:
        return lo + (hi - lo) * rng.uniform(a, b)

    best, best_score = None, -math.inf
    for attempt in range(60):
        if o.motion == "move":
            # Start on the side the motion comes from, so the stated direction dominates early on.
            dx, dy = _DIRECTION[o.direction]
            x = frac(*{-1: (0.7, 1.0), 0: (0.15, 0.85), 1: (0.0, 0.3)}[dx], lo_x, hi_x)
            y = frac(*{-1: (0.7, 1.0), 0: (0.15, 0.85), 1: (0.0, 0.3)}[dy], lo_y, hi_y)
        elif o.motion == "bounce":
            side = {"none": 0, "left": -1, "right": 1}[o.direction]
            x = frac(*{-1: (0.55, 1.0), 0: (0.1, 0.9), 1: (0.0, 0.45)}[side], lo_x, hi_x)
            y = frac(0.0, 0.35, lo_y, hi_y)  # dropped from high up: big first bounce
        else:
            x = frac(0.05, 0.95, lo_x, hi_x)
            # On a ground plane things at rest sit on the ground; elsewhere they float anywhere.
            y = arena.floor - body.base_radius * body.scale_from if bg_kind == "ground" else frac(0.1, 0.9, lo_y, hi_y)
        # Score: clearance from the others and from the occluder (positive = no overlap).
        score = min([math.hypot(x - b.x, y - b.y) - r_max - b.base_radius * max(b.scale_from, b.scale_to) - 0.02
                     for b in placed] + [1.0])
        if occluder is not None:
            score = min(score, max(occluder.x0 - (x + r_max), x - r_max - occluder.x1))
        if score > 0:
            return x, y
        if score > best_score:
            best, best_score = (x, y), score
    return best  # crowded: the least overlapping try (physics separates overlaps)


def object_rgb(name: str) -> tuple[int, int, int]:
    return COLORS[name]
