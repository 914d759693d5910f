"""SoraWorld physics: a fixed-time-step 2D simulation of rigid discs in a walled arena.

World units: 1 unit is the height of the wide camera view; x grows to the right, y grows DOWN
(like image rows), so gravity is +y and "height above the ground" is ``floor - y``.

Every body collides as a disc of its current radius (a circle approximation of its shape) with
mass proportional to its area. Motion is integrated with semi-implicit Euler at a fixed step
(sub-steps per video frame), so the same seed gives the same trajectory at every fps.

Why some choices:
* Bodies "at rest" (spec motion "still") have infinite mass: a caption says the box sits still,
  so a ball that hits it bounces off and the box stays put.
* Object-object collisions are perfectly elastic (momentum and kinetic energy conserved); the
  ground has restitution < 1 so a dropped ball's bounce heights decrease; side walls and the
  ceiling are elastic so a "moving" object keeps its speed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: Restitution of the ground for bodies under gravity (bounce height ratio = RESTITUTION ** 2).
GROUND_RESTITUTION = 0.8
#: Below this rebound speed (units/s) a bouncing body comes to rest on the ground instead of jittering.
REST_SPEED = 0.06
#: Largest physics step (s); a frame is split into ceil(frame_dt / MAX_STEP) equal sub-steps.
MAX_STEP = 1.0 / 120.0


@dataclass
class Body:
    """One simulated object (mutable state advanced by :class:`Physics`)."""

    x: float  # centre, world units
    y: float
    vx: float = 0.0  # velocity, units/s
    vy: float = 0.0
    base_radius: float = 0.08  # collision radius at scale 1
    gravity: float = 0.0  # units/s^2 (0: no gravity, e.g. "move" objects)
    fixed: bool = False  # infinite mass: never moves (objects at rest)
    grounded: bool = False  # a fixed body standing on the ground: stays on it while it grows or shrinks
    angle: float = 0.0  # rotation, radians; positive = clockwise on screen (y points down)
    omega: float = 0.0  # spin, radians/s
    scale_from: float = 1.0  # growth: radius scale goes from scale_from to scale_to ...
    scale_to: float = 1.0
    growth_time: float = 1.0  # ... over this many seconds, then stays
    color: str = "red"  # current colour name (changes on hit)
    hit_color: str = "none"  # colour it turns into when another body hits it
    hit: bool = False
    resting: bool = False  # sitting on the ground (a bouncing body that has come to rest)
    scale: float = 1.0  # current radius scale

    @property
    def radius(self) -> float:
        return self.base_radius * self.scale

    @property
    def mass(self) -> float:
        return math.inf if self.fixed else self.radius**2  # area up to the constant pi


@dataclass
class Collision:
    """Two bodies touched at time ``t`` (the state change of a hit box happens here)."""

    t: float
    a: int
    b: int


@dataclass
class Arena:
    """The walls: bodies stay inside [x0, x1] x [y0, floor]."""

    x0: float
    x1: float
    y0: float
    floor: float


@dataclass
class Physics:
    bodies: list[Body]
    arena: Arena
    t: float = 0.0
    collisions: list[Collision] = field(default_factory=list)
    #: Positions sampled at every sub-step since the last :meth:`take_path` (for paint trails).
    path: list[list[tuple[float, float]]] = field(default_factory=list)

    def __post_init__(self):
        self.path = [[(b.x, b.y)] for b in self.bodies]
        self._update_scale()

    # ------------------------------------------------------------ stepping
    def advance_to(self, t_end: float, max_step: float = MAX_STEP) -> None:
        """Simulate from the current time to ``t_end`` in equal sub-steps no longer than ``max_step``."""
        span = t_end - self.t
        if span <= 0:
            return
        n = max(1, math.ceil(span / max_step - 1e-9))
        dt = span / n
        for _ in range(n):
            self.step(dt)

    def step(self, dt: float) -> None:
        self.t += dt
        self._update_scale()
        for b in self.bodies:
            b.angle += b.omega * dt
            if b.fixed:
                if b.grounded:
                    b.y = self.arena.floor - b.radius
                continue
            if b.gravity and not b.resting:
                b.vy += b.gravity * dt  # semi-implicit Euler: velocity first, then position
            b.x += b.vx * dt
            b.y += b.vy * dt
            self._walls(b)
        self._collide()
        for b, p in zip(self.bodies, self.path):
            p.append((b.x, b.y))

    def take_path(self) -> list[list[tuple[float, float]]]:
        """The sub-step positions of each body since the last call (each list starts at the last end)."""
        out = self.path
        self.path = [[p[-1]] for p in out]
        return out

    # ------------------------------------------------------------ internals
    def _update_scale(self) -> None:
        for b in self.bodies:
            f = min(self.t / b.growth_time, 1.0) if b.growth_time > 0 else 1.0
            b.scale = b.scale_from + (b.scale_to - b.scale_from) * f

    def _walls(self, b: Body) -> None:
        a, r = self.arena, b.radius
        if b.x - r < a.x0:
            b.x, b.vx = a.x0 + r, abs(b.vx)
        elif b.x + r > a.x1:
            b.x, b.vx = a.x1 - r, -abs(b.vx)
        if b.y - r < a.y0:
            b.y, b.vy = a.y0 + r, abs(b.vy)
        elif b.y + r >= a.floor:
            b.y = a.floor - r
            if b.gravity:
                rebound = GROUND_RESTITUTION * abs(b.vy)
                b.resting = b.resting or rebound < REST_SPEED
                b.vy = 0.0 if b.resting else -rebound
            else:
                b.vy = -abs(b.vy)

    def _collide(self) -> None:
        bodies = self.bodies
        for i in range(len(bodies)):
            for j in range(i + 1, len(bodies)):
                a, b = bodies[i], bodies[j]
                dx, dy = b.x - a.x, b.y - a.y
                reach = a.radius + b.radius
                d2 = dx * dx + dy * dy
                if d2 >= reach * reach or (a.fixed and b.fixed):
                    continue
                d = math.sqrt(d2) or 1e-9
                nx, ny = dx / d, dy / d
                inv_a = 0.0 if a.fixed else 1.0 / a.mass
                inv_b = 0.0 if b.fixed else 1.0 / b.mass
                # Separate the overlap in proportion to inverse mass (a fixed body does not move).
                push = (reach - d) / (inv_a + inv_b)
                a.x -= nx * push * inv_a
                a.y -= ny * push * inv_a
                b.x += nx * push * inv_b
                b.y += ny * push * inv_b
                approach = (b.vx - a.vx) * nx + (b.vy - a.vy) * ny
                if approach >= 0:
                    continue  # already separating (e.g. the overlap came from growth)
                # Elastic impulse along the normal: conserves momentum and kinetic energy.
                jn = -2.0 * approach / (inv_a + inv_b)
                a.vx -= jn * inv_a * nx
                a.vy -= jn * inv_a * ny
                b.vx += jn * inv_b * nx
                b.vy += jn * inv_b * ny
                # A resting body that is struck may start moving again.
                a.resting = a.resting and abs(a.vy) < REST_SPEED
                b.resting = b.resting and abs(b.vy) < REST_SPEED
                self.collisions.append(Collision(self.t, i, j))
                for body in (a, b):
                    if body.hit_color != "none" and not body.hit:
                        body.hit = True
                        body.color = body.hit_color
