"""A SoraWorld object detector and tracker with no learned weights.

SoraWorld draws flat objects in twelve named colours chosen far apart (``world.spec.COLORS``), so
colour segmentation finds them; shape descriptors tell a ball from a box, a triangle and a star;
a tracker links detections across frames into identities. The same code scores the simulator's
own renders (where it must agree with the ground truth) and generated videos (where it measures
the model), so it is deliberately tolerant of colour error and blur.

    from soraflow.eval.detector import detect_video
    tracks = detect_video(frames).tracks      # frames: uint8 (T, H, W, 3)
    tracks[0].color, tracks[0].shape, tracks[0].centers()

Pipeline per frame:

1. label each pixel with the nearest named colour (or the darker band of a ball, 0.78 x the colour)
   within ``color_tolerance``; everything else is background;
2. connected components of each label; a component spanning the full height is the occluder pillar,
   one covering most of the frame (or spanning its full width) is background;
3. per object: area, centroid, box, circularity, solidity, corners (peaks of the radial profile) and the
   IoU against each shape's outline (the renderer's own signed-distance functions, fitted in size and
   angle): the shape is the best fit.

Then tracking: detections are matched to tracks (same colour, or a track whose colour vanished where a
new one appeared — a box that changes colour on impact) by predicted position; a track survives
``max_gap_seconds`` unseen, so an object that comes out from behind the pillar keeps its identity.
"""

from __future__ import annotations

import collections
import functools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from ..world.render import SHAPE_AREA, shape_distance
from ..world.spec import COLORS, SHAPES

COLOR_NAMES = tuple(COLORS)
#: Shades of each named colour that still count as it: a ball's seam band is drawn at 0.78 x its colour
#: (world.render.draw_object) with an anti-aliased edge, and the pillar is shaded 0.78 .. 1.08.
SHADES = (1.0, 0.93, 0.86, 0.78)
_SYMMETRY = {"ball": 360.0, "box": 90.0, "triangle": 120.0, "star": 72.0}  # degrees of rotational symmetry
_ANGLE_STEPS = {"ball": 1, "box": 10, "triangle": 12, "star": 10}
_CORNERS = {"ball": 0, "box": 4, "triangle": 3, "star": 5}


@dataclass
class DetectorConfig:
    color_tolerance: float = 30.0  # max RGB distance of a pixel from a shade of its named colour (half the
    # closest pair of shades, 0.78 x yellow vs 0.86 x orange, is 60)
    min_area_frac: float = 0.0008  # smallest component kept, as a fraction of H*W (~13 px at 128x128)
    max_area_frac: float = 0.3  # a larger component is background (a close-up object fills ~16 %)
    max_gap_seconds: float = 3.0  # a track unseen this long ends (an object crossing the pillar)
    gate: float = 3.0  # a detection joins a track within gate x (track radius + motion) pixels
    shape_min_area: float = 30.0  # smaller components get no shape (too few pixels to tell)
    ignore_colors: tuple[str, ...] = ()  # colours the stated background itself shows (white clouds, gray tiles):
    # not objects (see eval.suite.background_colors)
    max_objects: int = 24  # per frame, the largest kept (noise can break into hundreds of specks)
    min_thickness: float = 1.5  # a component thinner than this (largest inscribed radius, pixels) is an
    # anti-aliased seam between two colours, not an object


@dataclass
class Detection:
    frame: int
    color: str  # named colour (one of world.spec.COLORS)
    area: float  # pixels
    center: tuple[float, float]  # (x, y) centroid in pixels, pixel centres at +0.5 (as world.truth)
    bbox: tuple[int, int, int, int]  # (x0, y0, x1, y1), exclusive end
    radius: float  # collision radius implied by the area and the shape (pixels)
    shape: str | None  # best-fitting shape, None when too small or cut off to tell
    shape_scores: dict = field(default_factory=dict)  # shape -> IoU of its fitted outline
    circularity: float = 0.0  # 4 pi area / perimeter^2 (1 for a disc)
    solidity: float = 0.0  # area / convex hull area (a star ~0.6, the rest ~1)
    corners: int = 0  # peaks of the radial profile (ball 0, triangle 3, box 4, star 5)
    touches_border: bool = False  # cut by the frame edge
    touches_occluder: bool = False  # next to the pillar (maybe partly behind it)
    mean_rgb: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def clean(self) -> bool:
        """Whole and unobstructed as far as the detector can tell: its shape and size can be trusted."""
        return not (self.touches_border or self.touches_occluder) and self.shape is not None


@dataclass
class FrameDetections:
    objects: list[Detection]
    occluder: tuple[int, int] | None  # pillar columns [x0, x1) or None
    occluder_color: str | None


@dataclass
class Track:
    """One object over time: its detections in frame order, with gaps where it was not seen."""

    id: int
    detections: list[Detection] = field(default_factory=list)

    @property
    def frames(self) -> list[int]:
        return [d.frame for d in self.detections]

    @property
    def first(self) -> int:
        return self.detections[0].frame

    @property
    def last(self) -> int:
        return self.detections[-1].frame

    @staticmethod
    def _vote(values: list) -> str | None:
        counts = collections.Counter(v for v in values if v is not None)
        return counts.most_common(1)[0][0] if counts else None

    @property
    def color(self) -> str:
        """The colour it shows most (weighted by area, so a sliver at the frame edge counts little)."""
        weights: dict[str, float] = {}
        for d in self.detections:
            weights[d.color] = weights.get(d.color, 0.0) + d.area
        return max(weights, key=weights.get)

    @property
    def colors(self) -> list[str]:
        """Colours in the order they appear, consecutive repeats merged (a hit box: [red, blue])."""
        out: list[str] = []
        for d in self.detections:
            if not out or out[-1] != d.color:
                out.append(d.color)
        return out

    @property
    def shape(self) -> str | None:
        clean = [d.shape for d in self.detections if d.clean]
        return self._vote(clean or [d.shape for d in self.detections])

    @property
    def radius(self) -> float:
        r = [d.radius for d in self.detections if d.clean] or [d.radius for d in self.detections]
        return float(np.median(r))

    def centers(self) -> np.ndarray:
        """(n, 3) rows of (frame, x, y)."""
        return np.array([(d.frame, *d.center) for d in self.detections], np.float64).reshape(-1, 3)

    def at(self, frame: int) -> Detection | None:
        for d in self.detections:
            if d.frame == frame:
                return d
        return None


@dataclass
class VideoDetections:
    frames: list[FrameDetections]
    tracks: list[Track]
    height: int
    width: int
    fps: float

    def counts(self) -> list[int]:
        """Objects seen per frame."""
        return [len(f.objects) for f in self.frames]

    def main_tracks(self, min_frames: int = 2) -> list[Track]:
        """Tracks seen in at least ``min_frames`` frames (or all, for an image)."""
        need = min(min_frames, len(self.frames))
        return [t for t in self.tracks if len(t.detections) >= need]


# ---------------------------------------------------------------- colour segmentation


def _prototypes() -> tuple[np.ndarray, np.ndarray]:
    names, rgbs = [], []
    for i, name in enumerate(COLOR_NAMES):
        c = np.array(COLORS[name], np.float32)
        rgbs += [c * s for s in SHADES]
        names += [i] * len(SHADES)
    return np.stack(rgbs), np.array(names)


_PROTO_RGB, _PROTO_LABEL = _prototypes()


def _nearest(rgb: np.ndarray, tolerance: float) -> np.ndarray:
    """(N, 3) float -> (N,) index into COLOR_NAMES of the nearest shade within ``tolerance``, or -1."""
    # |f - p|^2 = |f|^2 - 2 f.p + |p|^2 as one matmul over the prototypes.
    d2 = (rgb * rgb).sum(-1, keepdims=True) - 2.0 * rgb @ _PROTO_RGB.T + (_PROTO_RGB * _PROTO_RGB).sum(-1)
    k = d2.argmin(-1)
    labels = _PROTO_LABEL[k]
    labels[np.take_along_axis(d2, k[:, None], -1)[:, 0] > tolerance * tolerance] = -1
    return labels


@functools.lru_cache(maxsize=4)
def _lut(tolerance: float) -> np.ndarray:
    """Labels of every colour quantised to 7 bits per channel (2 M entries, int8): one lookup per pixel
    instead of 48 distances. Quantising moves a colour by at most 0.9 RGB units. Built prototype by
    prototype over the cube around it, keeping the nearest within ``tolerance``."""
    lut = np.full(128**3, -1, np.int8)
    best = np.full(128**3, np.inf, np.float32)
    for rgb, label in zip(_PROTO_RGB, _PROTO_LABEL):
        lo = np.clip(np.floor((rgb - tolerance - 0.5) / 2), 0, 127).astype(int)
        hi = np.clip(np.ceil((rgb + tolerance - 0.5) / 2), 0, 127).astype(int) + 1
        axes = [np.arange(lo[c], hi[c]) for c in range(3)]
        d2 = sum(np.meshgrid(*[((ax * 2 + 0.5) - rgb[c]) ** 2 for c, ax in enumerate(axes)], indexing="ij"))
        idx = np.add.outer(np.add.outer(axes[0] << 14, axes[1] << 7), axes[2])
        d2, idx = d2.ravel(), idx.ravel()
        win = (d2 <= tolerance * tolerance) & (d2 < best[idx])
        best[idx[win]] = d2[win]
        lut[idx[win]] = label
    return lut


def label_colors(frame: np.ndarray, tolerance: float) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int: index into COLOR_NAMES of each pixel's named colour, -1 for none."""
    q = (frame >> 1).astype(np.int32)
    return _lut(float(tolerance))[(q[..., 0] << 14) | (q[..., 1] << 7) | q[..., 2]].astype(np.int32)


# ---------------------------------------------------------------- shape descriptors


def _template(shape: str, h: int, w: int, cx: float, cy: float, radius: float, angle_deg: float) -> np.ndarray:
    dx = (np.arange(w, dtype=np.float32) + 0.5 - cx)[None, :]
    dy = (np.arange(h, dtype=np.float32) + 0.5 - cy)[:, None]
    return shape_distance(shape, dx, dy, radius, math.radians(angle_deg)) < 0


def fit_shapes(mask: np.ndarray) -> dict[str, float]:
    """IoU of ``mask`` (a component cut out with a margin) against each shape's outline, fitted in
    size (same area) and angle, centred on the mask's centroid."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    area = float(len(xs))
    cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
    scores = {}
    for shape in SHAPES:
        radius = math.sqrt(area / SHAPE_AREA[shape])
        best = 0.0
        steps = _ANGLE_STEPS[shape]
        for k in range(steps):
            t = _template(shape, h, w, cx, cy, radius, k * _SYMMETRY[shape] / steps)
            inter = float(np.logical_and(t, mask).sum())
            best = max(best, inter / (area + float(t.sum()) - inter))
        scores[shape] = best
    return scores


def _descriptors(mask: np.ndarray) -> tuple[float, float, int]:
    """(circularity, solidity, corners) of a binary component mask."""
    from scipy.spatial import ConvexHull, QhullError

    area = float(mask.sum())
    inner = ndimage.binary_erosion(mask, structure=np.ones((3, 3)), border_value=0)
    edge = mask & ~inner
    # Boundary pixels counted along 8-connected steps under-count a circle's perimeter; pi/4-corrected
    # crossing counts are closer, but the ratio only has to rank shapes, not be exact.
    perimeter = max(float(edge.sum()), 1.0)
    circularity = min(4 * math.pi * area / perimeter**2, 1.5)
    ys, xs = np.nonzero(mask)
    ey, ex = np.nonzero(edge)
    # The hull of the outline pixels' corners is the hull of the whole component.
    pts = np.concatenate([np.stack([ex + dx, ey + dy], 1) for dx in (0, 1) for dy in (0, 1)]).astype(np.float64)
    try:
        hull = ConvexHull(pts).volume
    except (QhullError, ValueError):
        hull = area
    solidity = min(area / max(hull, 1.0), 1.0)
    # Corners: peaks of the distance from the centroid to the outline over 48 angle bins.
    cx, cy = xs.mean(), ys.mean()
    ang = np.arctan2(ey - cy, ex - cx)
    rad = np.hypot(ey - cy, ex - cx)
    bins = ((ang + math.pi) / (2 * math.pi) * 48).astype(int) % 48
    prof = np.zeros(48)
    np.maximum.at(prof, bins, rad)
    filled = prof > 0
    if filled.sum() < 12:
        return circularity, solidity, 0
    idx = np.arange(48)
    prof = np.interp(idx, idx[filled], prof[filled], period=48)
    prof = np.convolve(np.r_[prof[-2:], prof, prof[:2]], np.ones(5) / 5, "valid")
    mean = prof.mean()
    peaks = (prof > np.roll(prof, 1)) & (prof >= np.roll(prof, -1)) & (prof > mean * 1.06)
    return circularity, solidity, int(peaks.sum())


# ---------------------------------------------------------------- per frame


def detect_frame(frame: np.ndarray, index: int = 0, config: DetectorConfig | None = None,
                 *, shapes: bool = True) -> FrameDetections:
    """Objects and the occluder pillar in one (H, W, 3) uint8 frame."""
    cfg = config or DetectorConfig()
    h, w = frame.shape[:2]
    labels = label_colors(frame, cfg.color_tolerance)
    min_area = max(cfg.min_area_frac * h * w, 4.0)
    occluder, occ_color, objects = None, None, []
    comps = []
    ignore = {COLOR_NAMES.index(c) for c in cfg.ignore_colors}
    for ci in np.nonzero(np.bincount(labels.ravel() + 1, minlength=len(COLOR_NAMES) + 1)[1:])[0]:
        if ci in ignore:
            continue
        lab, n = ndimage.label(labels == ci, structure=np.ones((3, 3)))
        for k, sl in enumerate(ndimage.find_objects(lab), start=1):
            comps.append((int(ci), lab[sl] == k, sl))
    pillar_cols = np.zeros(w, bool)
    for ci, m, sl in comps:
        if sl[0].stop - sl[0].start >= h - 1 and (sl[1].stop - sl[1].start) < 0.5 * w:
            # Full height, not full width: the pillar (drawn in front of everything, top to bottom).
            cols = m.sum(0) >= 0.6 * h
            if cols.any():
                pillar_cols[sl[1].start:sl[1].stop] |= cols
                occ_color = COLOR_NAMES[ci]
    if pillar_cols.any():
        xs = np.nonzero(pillar_cols)[0]
        occluder = (int(xs.min()), int(xs.max()) + 1)
    comps.sort(key=lambda c: -int(c[1].sum()))
    for ci, m, sl in comps:
        if len(objects) >= cfg.max_objects:
            break
        area = float(m.sum())
        y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        if area < min_area or area > cfg.max_area_frac * h * w or (x1 - x0) >= w - 1:
            continue
        if occluder is not None and x0 >= occluder[0] - 1 and x1 <= occluder[1] + 1 and y1 - y0 >= h - 1:
            continue  # a piece of the pillar
        pad = np.pad(m, 2)
        if ndimage.distance_transform_edt(pad).max() < cfg.min_thickness:
            continue
        ys, xs = np.nonzero(m)
        cx, cy = float(xs.mean() + x0 + 0.5), float(ys.mean() + y0 + 0.5)
        touches_border = x0 == 0 or y0 == 0 or x1 == w or y1 == h
        touches_occ = occluder is not None and x0 <= occluder[1] + 2 and x1 >= occluder[0] - 2
        shape, scores, circ, sol, corners = None, {}, 0.0, 0.0, 0
        if shapes and area >= cfg.shape_min_area:
            circ, sol, corners = _descriptors(pad)
            scores = fit_shapes(pad)
            shape = max(scores, key=scores.get)
        radius = math.sqrt(area / SHAPE_AREA[shape or "ball"])
        rgb = frame[y0:y1, x0:x1][m].astype(np.float32).mean(0)
        objects.append(Detection(index, COLOR_NAMES[ci], area, (cx, cy), (x0, y0, x1, y1), radius, shape, scores,
                                 circ, sol, corners, touches_border, touches_occ, tuple(float(v) for v in rgb)))
    return FrameDetections(objects, occluder, occ_color)


# ---------------------------------------------------------------- tracking


@dataclass
class _Live:
    track: Track
    velocity: tuple[float, float] = (0.0, 0.0)  # pixels / frame
    missed: int = 0
    radius: float = 0.0  # of its last whole view (a partly hidden object looks smaller)

    def predict(self, frame: int) -> tuple[float, float]:
        d = self.track.detections[-1]
        k = frame - d.frame
        return d.center[0] + self.velocity[0] * k, d.center[1] + self.velocity[1] * k


def track(frames: list[FrameDetections], fps: float, config: DetectorConfig | None = None) -> list[Track]:
    """Link per-frame detections into tracks (Hungarian matching on predicted positions)."""
    cfg = config or DetectorConfig()
    max_gap = max(2, int(round(cfg.max_gap_seconds * fps)))
    live: list[_Live] = []
    done: list[Track] = []
    next_id = 0
    for k, fd in enumerate(frames):
        dets = fd.objects
        cost = np.full((len(live), len(dets)), np.inf)
        for i, lv in enumerate(live):
            px, py = lv.predict(k)
            last = lv.track.detections[-1]
            speed = math.hypot(*lv.velocity)
            radius = max(lv.radius, last.radius)
            # Room for the object's size, for a bounce reversing its velocity (2 x speed) and for drift
            # while it was unseen.
            gate = cfg.gate * radius + 2.0 + 2.0 * speed + 1.5 * speed * lv.missed
            occ = frames[last.frame].occluder
            if lv.missed and last.touches_occluder and occ is not None:
                gate += occ[1] - occ[0] + 2 * radius  # it may come out on the far side of the pillar
            for j, d in enumerate(dets):
                dist = math.hypot(d.center[0] - px, d.center[1] - py)
                if dist > gate:
                    continue
                same = d.color == last.color
                # A colour change is allowed (a box hit by another turns a new colour) but costs more, and
                # only for an object of the same size whose old colour is not seen nearby in this frame
                # (after a cut to a close-up, a bigger object of another colour is another object).
                if not same and (abs(math.log(max(d.radius, 0.5) / max(radius, 0.5))) > 0.3 or any(
                        o.color == last.color and math.hypot(o.center[0] - px, o.center[1] - py) < gate for o in dets)):
                    continue
                size = 0.0 if d.touches_occluder or last.touches_occluder else \
                    abs(math.log(max(d.radius, 0.5) / max(last.radius, 0.5)))
                cost[i, j] = dist / gate + (0 if same else 1.0) + 0.5 * size + 0.05 * lv.missed
        matched_live, matched_det = set(), set()
        if cost.size:
            big = 1e6
            rows, cols = linear_sum_assignment(np.where(np.isfinite(cost), cost, big))
            for i, j in zip(rows, cols):
                if cost[i, j] < big:
                    lv, d = live[i], dets[j]
                    prev = lv.track.detections[-1]
                    gap = k - prev.frame
                    v = ((d.center[0] - prev.center[0]) / gap, (d.center[1] - prev.center[1]) / gap)
                    # Smooth the velocity a little; a partly hidden object's centroid slides toward its
                    # visible side, so views at the pillar only set the velocity of a new track.
                    a = 0.7 if len(lv.track.detections) > 1 else 1.0
                    if len(lv.track.detections) == 1 or not (d.touches_occluder or prev.touches_occluder):
                        lv.velocity = (a * v[0] + (1 - a) * lv.velocity[0], a * v[1] + (1 - a) * lv.velocity[1])
                    if not (d.touches_occluder or d.touches_border):
                        lv.radius = d.radius
                    lv.track.detections.append(d)
                    lv.missed = 0
                    matched_live.add(i)
                    matched_det.add(j)
        still = []
        for i, lv in enumerate(live):
            if i not in matched_live:
                lv.missed += 1
                if lv.missed > max_gap:
                    done.append(lv.track)
                    continue
            still.append(lv)
        live = still
        for j, d in enumerate(dets):
            if j not in matched_det:
                live.append(_Live(Track(next_id, [d]), radius=d.radius))
                next_id += 1
    done += [lv.track for lv in live]
    return sorted(done, key=lambda t: t.id)


def detect_video(frames: np.ndarray, fps: float = 8.0, config: DetectorConfig | None = None,
                 *, shapes: bool = True) -> VideoDetections:
    """Detect every frame of a uint8 (T, H, W, 3) video and track the objects."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    per_frame = [detect_frame(f, i, config, shapes=shapes) for i, f in enumerate(frames)]
    return VideoDetections(per_frame, track(per_frame, fps, config), frames.shape[1], frames.shape[2], fps)


__all__ = ["DetectorConfig", "Detection", "FrameDetections", "Track", "VideoDetections", "label_colors",
           "fit_shapes", "detect_frame", "track", "detect_video", "COLOR_NAMES"]
