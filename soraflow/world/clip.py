"""Render a SoraWorld clip: simulate the scene frame by frame and rasterise what the camera sees."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..validate import number
from .render import (SHAPE_AREA, Background, TrailCanvas, draw_object, draw_occluder, occluder_coverage,
                     shape_bbox)
from .scene import CLOSE_UP_LAG, CameraPose, Scene, build_scene
from .spec import COLORS, SceneSpec, complete
from .truth import CameraTruth, ClipTruth, FrameTruth, ObjectTruth

MIN_SIDE, MAX_SIDE, SIDE_STEP = 64, 512, 16
MIN_FPS, MAX_FPS = 4, 30
MAX_SECONDS = 60.0
TRAIL_WIDTH = 0.3  # half width of a paint trail, in units of the object's radius


@dataclass
class Clip:
    """A rendered clip with its ground truth."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    truth: ClipTruth  # per-frame positions, boxes, visibility, colours, camera, shot
    spec: SceneSpec  # the complete spec that was rendered
    fps: float
    seed: int

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        return self.frames.shape[1], self.frames.shape[2]

    def to_dict(self) -> dict:
        """JSON-serialisable metadata: spec, seed, fps and columnar ground truth (no pixels)."""
        return {"spec": self.spec.to_dict(), "seed": self.seed, "fps": self.fps, "truth": self.truth.to_dict()}


def check_render_args(size: tuple[int, int], fps: float, num_frames: int) -> None:
    """Raise InputError for a size, fps or length the simulator does not render."""
    for side, what in zip(size, ("height", "width")):
        if not (MIN_SIDE <= side <= MAX_SIDE and side % SIDE_STEP == 0):
            raise InputError(f"{what} {side} must be a multiple of {SIDE_STEP} between {MIN_SIDE} and {MAX_SIDE}")
    number("fps", fps, lo=MIN_FPS, hi=MAX_FPS)
    if num_frames < 1:
        raise InputError(f"a clip needs at least 1 frame, got {num_frames}")
    if num_frames / fps > MAX_SECONDS + 1e-9:
        raise InputError(f"clip length {num_frames / fps:g} s is over the {MAX_SECONDS:g} s limit")


def frames_for(seconds: float, fps: float) -> int:
    """Number of frames of a clip ``seconds`` long (0 < seconds <= 60)."""
    number("duration (seconds)", seconds, lo=0, lo_open=True, hi=MAX_SECONDS)
    number("fps", fps, lo=MIN_FPS, hi=MAX_FPS)
    return max(1, round(seconds * fps))


def render_clip(spec: SceneSpec, size: tuple[int, int] = (128, 128), fps: float = 8, seconds: float | None = None,
                num_frames: int | None = None, seed: int = 0) -> Clip:
    """Simulate and render ``spec`` at ``size`` = (height, width).

    Give ``seconds`` or ``num_frames`` (1 frame = an image; default 2 s). A partial spec is first
    completed with :func:`~soraflow.world.spec.complete` (open world, drawn from ``seed``).
    The same (spec, size, fps, frames, seed) always gives the same bytes.
    """
    height, width = size
    if num_frames is None:
        num_frames = frames_for(2.0 if seconds is None else seconds, fps)
    check_render_args(size, fps, num_frames)
    if not spec.is_complete:
        spec = complete(spec, seed)
    scene = build_scene(spec, height, width, (num_frames - 1) / fps, seed)
    return _simulate(scene, fps, num_frames)


class _Camera:
    """The camera of each frame: the spec's wide move, or a close-up that follows its target."""

    def __init__(self, scene: Scene, fps: float):
        self.scene, self.fps = scene, fps
        self.follow: tuple[float, float] | None = None
        self.shot = -1

    def pose(self, t: float) -> CameraPose:
        shot = self.scene.shot_at(t)
        spec = self.scene.spec.shots[shot]
        cut, self.shot = shot != self.shot, shot
        if spec.kind == "wide":
            pose = self.scene.wide_pose(t)
            pose.shot, pose.kind = shot, "wide"
            return pose
        body = self.scene.physics.bodies[spec.target]
        if cut or self.follow is None:
            self.follow = (body.x, body.y)
        else:  # lag behind the target a little, like a camera operator
            k = 1 - math.exp(-1 / (self.fps * CLOSE_UP_LAG))
            self.follow = (self.follow[0] + k * (body.x - self.follow[0]), self.follow[1] + k * (body.y - self.follow[1]))
        return CameraPose(self.follow[0], self.follow[1], self.scene.close_up_zoom(spec.target), shot, "close-up")


def _simulate(scene: Scene, fps: float, num_frames: int) -> Clip:
    spec, phys = scene.spec, scene.physics
    h, w = scene.height, scene.width
    background = Background(scene)
    camera = _Camera(scene, fps)
    trails = [o.trail for o in spec.objects]
    canvas = None
    if any(trails):
        a = phys.arena
        zooms = [scene.wide_pose(scene.duration * k / 8).zoom for k in range(9)]
        zooms += [scene.close_up_zoom(s.target) for s in spec.shots if s.kind == "close-up"]
        canvas = TrailCanvas((a.x0 - 0.3, a.y0 - 0.3, a.x1 + 0.3, a.floor + 0.3), h * min(max(zooms), 2.5))

    frames = np.empty((num_frames, h, w, 3), np.uint8)
    truth_frames = []
    n_collisions = 0
    for k in range(num_frames):
        t = k / fps
        phys.advance_to(t)
        paths = phys.take_path()
        if canvas is not None:
            for body, path, trail in zip(phys.bodies, paths, trails):
                if trail:
                    stride = max(1, len(path) // 6)  # a polyline through the sub-steps, <= ~7 points
                    canvas.paint(path[::stride] + [path[-1]], TRAIL_WIDTH * body.radius, COLORS[body.color])
        pose = camera.pose(t)
        s = pose.scale(h)
        img = background.render(pose).copy()
        if canvas is not None:
            canvas.composite(img, pose)
        occ_cov = occluder_coverage(scene.occluder, pose, w, h) if scene.occluder else None

        objects = []
        for i, (o, body) in enumerate(zip(spec.objects, phys.bodies)):
            px, py = (body.x - pose.cx) * s + w / 2, (body.y - pose.cy) * s + h / 2
            radius_px = body.radius * s
            drawn = draw_object(img, o.shape, px, py, radius_px, body.angle, COLORS[body.color])
            area = SHAPE_AREA[o.shape] * radius_px**2
            bbox, in_frame, visible, hidden = None, 0.0, 0.0, 0.0
            if drawn is not None:
                cov, (x0, y0, x1, y1) = drawn
                total = float(cov.sum())
                # The AA coverage sum differs from the exact area by a fraction of the outline's
                # length; the clip keeps full objects at exactly 1.
                in_frame = min(total / area, 1.0)
                if occ_cov is not None and total > 0:
                    hidden = in_frame * float((cov * occ_cov[x0:x1]).sum()) / total
                visible = in_frame - hidden
                bx0, by0, bx1, by1 = shape_bbox(o.shape, px, py, radius_px, body.angle)
                bx0, by0, bx1, by1 = max(bx0, 0.0), max(by0, 0.0), min(bx1, float(w)), min(by1, float(h))
                if bx1 > bx0 and by1 > by0:
                    bbox = (bx0, by0, bx1, by1)
            objects.append(ObjectTruth(
                index=i, shape=o.shape, color=body.color, rgb=COLORS[body.color], world=(body.x, body.y),
                velocity=(body.vx, body.vy), pixel=(px, py), bbox=bbox, size_px=2 * radius_px,
                angle=math.degrees(body.angle) % 360.0, scale=body.scale,
                in_frame=in_frame, visible=max(visible, 0.0), occluded=hidden > 0.5))
        occ_px = None
        if scene.occluder is not None:
            draw_occluder(img, scene.occluder, pose, occ_cov)
            occ_px = ((scene.occluder.x0 - pose.cx) * s + w / 2, (scene.occluder.x1 - pose.cx) * s + w / 2)
        np.clip(img, 0, 255, out=img)
        img += 0.5
        frames[k] = img  # truncation after +0.5 = rounding

        hits = [(c.a, c.b) for c in phys.collisions[n_collisions:]]
        n_collisions = len(phys.collisions)
        truth_frames.append(FrameTruth(k, t, pose.shot, CameraTruth(pose.cx, pose.cy, pose.zoom, s, pose.shot, pose.kind),
                                       objects, sorted(set(hits)), occ_px))

    a = phys.arena
    truth = ClipTruth(
        h, w, fps, truth_frames,
        occluder=None if scene.occluder is None else {"x0": scene.occluder.x0, "x1": scene.occluder.x1,
                                                       "color": scene.occluder.color},
        horizon=scene.horizon, arena={"x0": a.x0, "x1": a.x1, "y0": a.y0, "floor": a.floor})
    return Clip(frames, truth, spec, fps, scene.seed)
