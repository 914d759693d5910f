"""SoraWorld bench metrics: each a number in [0, 1] (an accuracy or plausibility) or a distance.

Every metric reads a video through the detector (:mod:`soraflow.eval.detector`) and compares what it
sees with what the prompt said (the entry's scene spec), never with the simulator's hidden state, so
the same scorer grades a model, the simulator itself (the upper bound) and a null model (the floor).

==============  ======================================================================================
metric          meaning
==============  ======================================================================================
color           share of the prompt's objects found in their colour
shape           share found with their shape (ball / box / triangle / star)
size            share found with their size word, read as radius / frame height
count           1 when the usual number of objects per frame is the prompt's
direction       share of moving objects whose first second goes the stated way (drift sign for bounces)
gravity         share of dropped objects whose height fits constant downward acceleration between
                bounces, with bounce events and decreasing bounce heights
collision       share of contacts after which the two objects separate without passing through
hit_color       1 when the struck box turns the stated colour and keeps it
permanence      share of disappearances that are explained: out of the frame, behind the pillar and
                back on a plausible track with the same identity, or behind it when the clip ends;
                an object of the prompt that is never seen counts as one unexplained disappearance
consistency     identity, colour and size stable within tracks, no flicker (mean of four parts)
camera          1 when the global background motion (pan / zoom / none) is the stated camera move
trail           share of the path behind a painting object that shows its paint in the last frame
cuts            1 when the number of hard cuts matches the stated shots
first_frame     PSNR (dB, capped at 60) of the first frame against the given image
seam            1 when every seam (given -> generated, loop end -> start) is no bigger a change than
                the clip's usual frame-to-frame change (ratio <= SEAM_OK); ``seam_ratio`` is the ratio
edit_motion     1 when the edited video keeps the source's object positions (mean error < 4 % height)
background      1 when the video's backdrop is nearer the stated background's than any other's
                (median colours of horizontal bands against the simulator's empty renders)
==============  ======================================================================================

:func:`frechet_distance` compares two sets of per-clip detector features (:func:`clip_features`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from ..world.scene import SIZE_RADIUS
from ..world.spec import COLORS, SHAPES, SceneSpec
from .detector import COLOR_NAMES, Track, VideoDetections

#: Radius / frame height between two size words (geometric means of the simulator's radii).
SIZE_EDGES = (math.sqrt(SIZE_RADIUS["small"] * SIZE_RADIUS["medium"]),
              math.sqrt(SIZE_RADIUS["medium"] * SIZE_RADIUS["large"]))
SEAM_OK = 2.0  # a seam may change the picture up to this many times the clip's median frame change
PSNR_CAP = 60.0  # dB; identical frames would be infinite
DIRECTION_TOLERANCE = 30.0  # degrees between the seen and the stated direction of motion
_DIRECTION_ANGLE = {"right": 0, "down-right": 45, "down": 90, "down-left": 135, "left": 180, "up-left": 225,
                    "up": 270, "up-right": 315}  # degrees, image coordinates (y down)
ACCURACY_METRICS = ("color", "shape", "size", "count", "direction", "gravity", "collision", "hit_color",
                    "permanence", "consistency", "camera", "trail", "cuts", "seam", "edit_motion", "background")
ALL_METRICS = ACCURACY_METRICS + ("first_frame", "seam_ratio")


# ---------------------------------------------------------------- objects: prompt <-> tracks


def object_tracks(vd: VideoDetections) -> list[Track]:
    """Tracks long enough to be objects (seen in >= 15 % of the frames, at least 2; all for an image)."""
    n = len(vd.frames)
    return vd.main_tracks(max(2, int(0.15 * n)) if n > 1 else 1)


def size_word(radius_px: float, height: int) -> str:
    r = radius_px / height
    return "small" if r < SIZE_EDGES[0] else "medium" if r < SIZE_EDGES[1] else "large"


def match_objects(spec: SceneSpec, tracks: list[Track]) -> list[Track | None]:
    """For each object of the spec, the track that shows it (or None): Hungarian on colour, shape
    and (weakly) longevity, so the longest red track is "the red ball"."""
    objs = spec.objects
    if not tracks:
        return [None] * len(objs)
    longest = max(len(t.detections) for t in tracks)
    cost = np.zeros((len(objs), len(tracks)))
    for i, o in enumerate(objs):
        for j, t in enumerate(tracks):
            colors = t.colors
            ok_color = o.color in colors or (o.hit_color != "none" and o.hit_color in colors)
            cost[i, j] = (0 if ok_color else 2.0) + (0 if t.shape == o.shape else 1.0) \
                + 0.5 * (1 - len(t.detections) / longest)
    rows, cols = linear_sum_assignment(cost)
    out: list[Track | None] = [None] * len(objs)
    for i, j in zip(rows, cols):
        out[i] = tracks[j]
    return out


def color_accuracy(spec: SceneSpec, matched: list[Track | None]) -> float:
    ok = [t is not None and (t.color == o.color or (o.hit_color != "none" and t.colors[0] == o.color))
          for o, t in zip(spec.objects, matched)]
    return float(np.mean(ok))


def shape_accuracy(spec: SceneSpec, matched: list[Track | None]) -> float:
    return float(np.mean([t is not None and t.shape == o.shape for o, t in zip(spec.objects, matched)]))


def size_accuracy(spec: SceneSpec, matched: list[Track | None], height: int) -> float:
    return float(np.mean([t is not None and size_word(t.radius, height) == o.size
                          for o, t in zip(spec.objects, matched)]))


def count_accuracy(spec: SceneSpec, vd: VideoDetections) -> float:
    counts = vd.counts()
    values, freq = np.unique(counts, return_counts=True)
    return float(values[int(np.argmax(freq))] == len(spec.objects))


# ---------------------------------------------------------------- motion


def _angle_diff(a: float, b: float) -> float:
    return abs((a - b + 180) % 360 - 180)


def direction_accuracy(spec: SceneSpec, matched: list[Track | None], fps: float, width: int) -> float | None:
    """Moving objects: the first second's displacement within DIRECTION_TOLERANCE of the stated way.
    Bouncing objects: the sign of the sideways drift over the first 1.5 s (none: < 3 % of the width)."""
    ok = []
    for o, t in zip(spec.objects, matched):
        if o.motion not in ("move", "bounce"):
            continue
        if t is None or len(t.detections) < 2:
            ok.append(False)
            continue
        c = t.centers()
        span = fps * (1.0 if o.motion == "move" else 1.5)
        c = c[c[:, 0] <= c[0, 0] + span]
        if len(c) < 2:
            ok.append(False)
            continue
        dx, dy = c[-1, 1] - c[0, 1], c[-1, 2] - c[0, 2]
        if o.motion == "move":
            moved = math.hypot(dx, dy) >= 2.0
            ok.append(moved and _angle_diff(math.degrees(math.atan2(dy, dx)) % 360,
                                            _DIRECTION_ANGLE[o.direction]) <= DIRECTION_TOLERANCE)
        elif o.direction == "none":
            ok.append(abs(dx) < 0.03 * width)
        else:
            ok.append(abs(dx) >= 1.0 and (dx > 0) == (o.direction == "right"))
    return float(np.mean(ok)) if ok else None


@dataclass
class FallFit:
    plausible: bool
    gravity: float  # px / frame^2 (positive: down), median over free flight
    bounces: int
    apex_heights: list[float]  # px above the lowest point, per hop (should decrease)
    free_flight_positive: float  # share of free-flight second differences pointing down


def fall_fit(track: Track, height: int) -> FallFit:
    """Does a tracked object's vertical path look like a dropped body bouncing on the ground?

    Second differences of its height are the acceleration: between bounces they must be positive (down,
    in image coordinates) and alike; a bounce is a large negative one at the lowest point; the heights of
    the hops must decrease.
    """
    dets = [d for d in track.detections if not d.touches_border]
    frames = np.array([d.frame for d in dets])
    y = np.array([d.center[1] for d in dets], np.float64)
    if len(y) < 4:
        return FallFit(False, 0.0, 0, [], 0.0)
    floor = y.max()
    tol = max(1.0, 0.01 * height)
    acc, bounce_idx = [], []
    for k in range(1, len(y) - 1):
        if frames[k + 1] - frames[k] != 1 or frames[k] - frames[k - 1] != 1:
            continue  # a gap: no second difference
        a = y[k + 1] - 2 * y[k] + y[k - 1]
        near_floor = max(y[k - 1], y[k], y[k + 1]) > floor - 3 * tol - 0.25 * (floor - y.min()) * 0.2
        resting = abs(y[k + 1] - y[k]) < 0.5 * tol and abs(y[k] - y[k - 1]) < 0.5 * tol and y[k] > floor - tol
        if resting:
            continue
        if a < 0 and near_floor:
            bounce_idx.append(k)  # the ground pushed it back up
            continue
        acc.append(a)
    acc = np.array(acc)
    g = float(np.median(acc)) if len(acc) else 0.0
    positive = float((acc > 0).mean()) if len(acc) else 0.0
    # Bounce events: runs of bounce indices count once.
    events = sum(1 for i, k in enumerate(bounce_idx) if i == 0 or k - bounce_idx[i - 1] > 1)
    # Apexes: the highest point (smallest y) between consecutive bounces.
    apexes, start = [], 0
    cuts = [k for i, k in enumerate(bounce_idx) if i == 0 or k - bounce_idx[i - 1] > 1] + [len(y)]
    for cut in cuts:
        seg = y[start:cut + 1]
        if start > 0 and len(seg) >= 3:
            apexes.append(float(floor - seg.min()))
        start = cut + 1
    decreasing = all(b <= a * 1.05 + tol for a, b in zip(apexes, apexes[1:]))
    min_g = 0.05 * tol  # must clearly accelerate downward, not just drift
    plausible = bool(g > min_g and positive >= 0.75 and events >= 1 and decreasing)
    return FallFit(plausible, g, events, apexes, positive)


def gravity_plausibility(spec: SceneSpec, matched: list[Track | None], height: int) -> float | None:
    ok = [t is not None and fall_fit(t, height).plausible for o, t in zip(spec.objects, matched) if o.motion == "bounce"]
    return float(np.mean(ok)) if ok else None


def collision_plausibility(vd: VideoDetections, tracks: list[Track]) -> float | None:
    """Contacts (two tracks within the sum of their radii + 2 px): they approach, then separate, and
    keep their order along the line between them (no passing through)."""
    events = []
    for a_i in range(len(tracks)):
        for b_i in range(a_i + 1, len(tracks)):
            a, b = tracks[a_i], tracks[b_i]
            common = sorted(set(a.frames) & set(b.frames))
            if len(common) < 4:
                continue
            pa = {d.frame: np.array(d.center) for d in a.detections}
            pb = {d.frame: np.array(d.center) for d in b.detections}
            dist = np.array([np.linalg.norm(pa[k] - pb[k]) for k in common])
            k_min = int(np.argmin(dist))
            reach = a.radius + b.radius
            if dist[k_min] > 1.35 * reach + 2 or k_min in (0, len(common) - 1):
                continue
            before, after = common[max(0, k_min - 3)], common[min(len(common) - 1, k_min + 3)]
            sep_before = pa[before] - pb[before]
            sep_after = pa[after] - pb[after]
            approached = dist[max(0, k_min - 3)] > dist[k_min] + 0.5
            separated = dist[min(len(common) - 1, k_min + 3)] > dist[k_min] + 0.5
            kept_order = float(sep_before @ sep_after) > 0
            events.append(approached and separated and kept_order)
    return float(np.mean(events)) if events else 0.0


def hit_color_accuracy(spec: SceneSpec, matched: list[Track | None]) -> float | None:
    ok = []
    for o, t in zip(spec.objects, matched):
        if o.hit_color == "none":
            continue
        if t is None:
            ok.append(False)
            continue
        # Colour by frame, weighted: starts in its colour, ends (last 3 detections) in the new one.
        tail = [d.color for d in t.detections[-3:]]
        ok.append(t.detections[0].color == o.color and all(c == o.hit_color for c in tail))
    return float(np.mean(ok)) if ok else None


# ---------------------------------------------------------------- object permanence


def _shape_vote(dets) -> str | None:
    shapes = [d.shape for d in dets if d.clean]
    return max(set(shapes), key=shapes.count) if shapes else None


def permanence(vd: VideoDetections, tracks: list[Track], missing: int = 0) -> float:
    """Share of disappearances that are explained (see the module table). 1.0 when nothing disappears.

    ``missing``: the prompt's objects that no track shows (``match_objects`` gave None), each an
    unexplained disappearance: an object that never shows up has not stayed, so a video that leaves
    the objects out does not score as one in which nothing vanished.
    """
    n = len(vd.frames)
    h, w = vd.height, vd.width
    occ = [f.occluder for f in vd.frames]
    events = [False] * missing

    def near_pillar(k: int, x: float, r: float) -> bool:
        o = occ[min(max(k, 0), n - 1)]
        return o is not None and o[0] - r - 2 <= x <= o[1] + r + 2

    def covered(k: int, x: float, y: float) -> bool:
        """Another object (any colour) or the frame edge sits where it should be."""
        if not (0 <= x < w and 0 <= y < h):
            return True
        return any(d.bbox[0] - 2 <= x <= d.bbox[2] + 2 and d.bbox[1] - 2 <= y <= d.bbox[3] + 2
                   for d in vd.frames[k].objects)

    for t in tracks:
        dets = t.detections
        for j in range(len(dets) - 1):
            if dets[j + 1].frame - dets[j].frame <= 1:
                continue
            a, b = dets[j], dets[j + 1]
            span = b.frame - a.frame
            # Heading from the nearest pair of views (a partly hidden object's centroid is biased toward
            # its visible side, but not its sign of motion).
            p, q = (dets[j - 1], a) if j >= 1 else (b, dets[j + 2]) if j + 2 < len(dets) else (a, b)
            vel = (np.array(q.center) - np.array(p.center)) / max(q.frame - p.frame, 1)
            near = [d for d in dets if abs(d.frame - a.frame) <= 4 or abs(d.frame - b.frame) <= 4]
            speed_x = max([abs(d2.center[0] - d1.center[0]) / max(d2.frame - d1.frame, 1)
                           for d1, d2 in zip(near, near[1:])] + [abs(vel[0])])
            hidden_at = np.array(a.center) + vel
            # Same identity: colour, and the shape seen in whole views before and after (one partly
            # hidden view can look like another shape).
            before, after = _shape_vote(dets[:j + 1]), _shape_vote(dets[j + 1:])
            same = b.color == a.color and (before is None or after is None or before == after)
            o = occ[min(a.frame + 1, n - 1)]
            if near_pillar(a.frame + 1, hidden_at[0], a.radius):
                # Behind the pillar: out on the far side it was heading to, at the height it had (+ its
                # vertical drift), not hidden much longer than crossing the pillar takes.
                mid = (o[0] + o[1]) / 2
                far_side = (b.center[0] - mid) * vel[0] > 0 or abs(vel[0]) < 0.5
                dy = abs(b.center[1] - (a.center[1] + vel[1] * span))
                in_time = span <= ((o[1] - o[0]) + 2 * a.radius) / max(0.5 * speed_x, 0.25) + 2
                events.append(bool(same and far_side and in_time and dy <= 2.5 * a.radius + 2 + 0.35 * abs(vel[1]) * span))
            else:
                # Behind another object (or not hidden at all: a flicker), back on its straight-line track.
                behind = covered(a.frame + 1, *hidden_at)
                err = np.linalg.norm(np.array(b.center) - (np.array(a.center) + vel * span))
                plausible = err <= 0.35 * np.linalg.norm(vel) * span + 2.5 * a.radius + 2
                events.append(bool(behind and plausible and same))
        vel = np.zeros(2)
        if len(dets) >= 2:
            p, q = dets[-2], dets[-1]
            vel = (np.array(q.center) - np.array(p.center)) / max(q.frame - p.frame, 1)
        last = dets[-1]
        if last.frame < n - 1:
            # It ended before the clip did: out of the frame, or behind the pillar too recently to be back.
            nxt = np.array(last.center) + vel
            out = last.touches_border or not (0 <= nxt[0] < w and 0 <= nxt[1] < h)
            o = occ[last.frame]
            if o is not None and near_pillar(last.frame + 1, nxt[0], last.radius):
                crossing = ((o[1] - o[0]) + 2 * last.radius) / max(abs(vel[0]), 1e-3)
                events.append(bool(out or (n - 1 - last.frame) <= crossing + 2))
            else:
                events.append(bool(out or covered(min(last.frame + 1, n - 1), *nxt)))
    for t in tracks:
        first = t.detections[0]
        if first.frame > 0:
            # Appeared mid-clip: must come from the frame edge, from behind the pillar or another object.
            x, y = first.center
            from_edge = first.touches_border
            events.append(bool(from_edge or near_pillar(first.frame, x, first.radius)
                               or covered(max(first.frame - 1, 0), x, y)))
    return float(np.mean(events)) if events else 1.0


# ---------------------------------------------------------------- consistency and flicker


def flicker(frames: np.ndarray, threshold: float = 3.0) -> float:
    """Share of frames whose mean brightness is off the average of its two neighbours by more than
    ``threshold`` levels: motion and camera moves change it smoothly, flicker does not."""
    if len(frames) < 3:
        return 0.0
    m = frames.reshape(len(frames), -1).astype(np.float32).mean(1)
    off = np.abs(m[1:-1] - (m[:-2] + m[2:]) / 2)
    return float((off > threshold).mean())


def consistency(spec: SceneSpec, vd: VideoDetections, matched: list[Track | None], frames: np.ndarray,
                *, scale_changes: bool) -> float:
    """Mean of: identity (one track per object, no spawns), colour stability, size stability, no flicker."""
    parts_color, parts_size = [], []
    for o, t in zip(spec.objects, matched):
        if t is None:
            continue
        if o.hit_color == "none":
            parts_color.append(sum(d.color == t.color for d in t.detections) / len(t.detections))
        r = np.array([d.radius for d in t.detections if d.clean])
        if len(r) >= 3 and o.growth == "none" and not scale_changes:
            cv = r.std() / max(r.mean(), 1e-6)
            parts_size.append(1.0 - min(1.0, max(0.0, cv - 0.05) / 0.25))
    tracks = object_tracks(vd)
    identity = min(1.0, len(spec.objects) / max(len(tracks), 1)) * (sum(t is not None for t in matched) / len(matched))
    parts = [identity, float(np.mean(parts_color)) if parts_color else 1.0,
             float(np.mean(parts_size)) if parts_size else 1.0, 1.0 - flicker(frames)]
    return float(np.mean(parts))


# ---------------------------------------------------------------- camera motion


def _gray(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def global_motion(a: np.ndarray, b: np.ndarray, weight: np.ndarray | None = None, levels: int = 3,
                  iters: int = 6) -> tuple[float, float, float]:
    """Background motion from gray frame ``a`` to ``b``: (dx, dy, s) with ``b(c + (1+s)(x-c) + (dx,dy)) = a(x)``,
    c the image centre: a translation in pixels (content moves by +dx, +dy) and a relative scale change
    (s > 0: content grows, a zoom-in). Coarse-to-fine Lucas-Kanade over a Gaussian pyramid, with object
    pixels weighted out so moving objects do not drag the estimate."""
    h, w = a.shape
    if weight is None:
        weight = np.ones_like(a)
    pyr = [(a, b, weight)]
    for _ in range(levels - 1):
        pa, pb, pw = pyr[-1]
        if min(pa.shape) < 24:
            break
        pyr.append((ndimage.gaussian_filter(pa, 1.0)[::2, ::2], ndimage.gaussian_filter(pb, 1.0)[::2, ::2],
                    ndimage.minimum_filter(pw, 3)[::2, ::2]))
    dx = dy = s = 0.0
    for lvl in range(len(pyr) - 1, -1, -1):
        pa, pb, pw = pyr[lvl]
        f = 2.0**lvl
        hh, ww = pa.shape
        ys, xs = np.mgrid[0:hh, 0:ww].astype(np.float32)
        cx, cy = (ww - 1) / 2, (hh - 1) / 2
        ra, rb = ndimage.gaussian_filter(pa, 0.8), ndimage.gaussian_filter(pb, 0.8)
        for _ in range(iters):
            tx, ty = dx / f, dy / f
            X = cx + (1 + s) * (xs - cx) + tx
            Y = cy + (1 + s) * (ys - cy) + ty
            bw = ndimage.map_coordinates(rb, [Y, X], order=1, mode="nearest")
            valid = (X >= 0) & (X <= ww - 1) & (Y >= 0) & (Y <= hh - 1)
            gy, gx = np.gradient(bw)
            r = bw - ra
            wgt = pw * valid
            J = np.stack([gx, gy, gx * (xs - cx) + gy * (ys - cy)], -1)[wgt > 0]  # (N, 3)
            if len(J) < 50:
                return 0.0, 0.0, 0.0
            rr = r[wgt > 0]
            A = J.T @ J + np.diag([1e-3, 1e-3, 1e-1])
            delta = np.linalg.solve(A, -J.T @ rr)
            dx += float(delta[0]) * f
            dy += float(delta[1]) * f
            s += float(delta[2])
            if abs(delta[0]) + abs(delta[1]) < 0.01 and abs(delta[2]) < 1e-4:
                break
    # b(x') = a(x) with x' = x + t: content moved by +t from a to b.
    return dx, dy, s


def _object_weight(vd: VideoDetections, k: int, shape: tuple[int, int]) -> np.ndarray:
    wgt = np.ones(shape, np.float32)
    for d in vd.frames[k].objects:
        x0, y0, x1, y1 = d.bbox
        m = int(3 + 0.3 * d.radius)
        wgt[max(y0 - m, 0):y1 + m, max(x0 - m, 0):x1 + m] = 0
    return wgt


@dataclass
class CameraEstimate:
    label: str  # one of world.spec.CAMERAS
    pan_x: float  # content motion, view widths per second (negative: camera pans right)
    pan_y: float  # view heights per second (negative: camera pans down... content moves up)
    zoom: float  # log scale per second (positive: zoom in)


def camera_motion(frames: np.ndarray, vd: VideoDetections, fps: float, stride: int | None = None) -> CameraEstimate:
    """The camera move of a single-shot clip from the global motion of its background."""
    n, h, w = frames.shape[:3]
    if n < 3:
        return CameraEstimate("static", 0.0, 0.0, 0.0)
    stride = stride or max(1, int(round(fps / 4)))
    gray = [_gray(f) for f in frames]
    steps = []
    for k in range(0, n - stride, stride):
        wgt = _object_weight(vd, k, (h, w)) * _object_weight(vd, k + stride, (h, w))
        dx, dy, s = global_motion(gray[k], gray[k + stride], wgt)
        steps.append((dx, dy, math.log1p(max(s, -0.5))))
    # Camera moves are steady: the median step ignores a pair where the fit slid into a wrong minimum
    # (stripes on the ground trade a little zoom for a little pan).
    dx, dy, dz = np.median(np.array(steps), axis=0) * fps / stride  # per second
    px, py, z = dx / w, dy / h, dz
    # Thresholds: a quarter of the slowest move the simulator makes (0.4 views or log 1.5 over 4 s ~ 0.1/s).
    th = 0.025
    scores = {"pan": max(abs(px), abs(py)) / th, "zoom": abs(z) / th}
    if max(scores.values()) < 1:
        label = "static"
    elif scores["zoom"] >= 0.7 * scores["pan"]:
        # A zoom towards the objects also slides the view (by up to about half the zoom rate in views).
        label = "zoom-in" if z > 0 else "zoom-out"
    elif abs(px) >= abs(py):
        label = "pan-right" if px < 0 else "pan-left"  # the world slides the other way
    else:
        label = "pan-down" if py < 0 else "pan-up"
    return CameraEstimate(label, px, py, z)


# ---------------------------------------------------------------- trails, cuts, seams, PSNR


def trail_presence(spec: SceneSpec, matched: list[Track | None], frames: np.ndarray) -> float | None:
    """Share of painting objects whose old positions (>= 1.6 radii from where they start and end) show
    their colour in the last frame, shifted at least 40 % of the way from the first frame's colour there
    (a trail is painted at 0.8 opacity)."""
    out = []
    last = frames[-1].astype(np.float32)
    first = frames[0].astype(np.float32)
    h, w = frames.shape[1:3]
    for o, t in zip(spec.objects, matched):
        if not o.trail:
            continue
        if t is None or len(t.detections) < 3:
            out.append(0.0)
            continue
        c = np.array(COLORS[o.color], np.float32)
        end = np.array(t.detections[-1].center)
        start = np.array(t.detections[0].center)
        r = t.radius
        hits = []
        for d in t.detections[:-1]:
            p = np.array(d.center)
            if np.linalg.norm(p - end) < 1.6 * r + 1 or np.linalg.norm(p - start) < 1.6 * r + 1:
                continue
            x, y = int(p[0]), int(p[1])
            if not (1 <= x < w - 1 and 1 <= y < h - 1):
                continue
            now = np.median(last[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3), 0)
            was = np.median(first[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3), 0)
            before, after = np.linalg.norm(was - c), np.linalg.norm(now - c)
            hits.append(before > 1e-3 and after <= 0.6 * before)
        out.append(float(np.mean(hits)) if hits else 0.0)
    return float(np.mean([v >= 0.7 for v in out])) if out else None


def frame_changes(frames: np.ndarray) -> np.ndarray:
    """Mean absolute change between consecutive frames, (T-1,)."""
    f = frames.astype(np.float32)
    return np.abs(np.diff(f, axis=0)).mean(axis=(1, 2, 3))


def color_histogram_changes(frames: np.ndarray, bins: int = 6) -> np.ndarray:
    """L1 distance between consecutive frames' colour histograms (bins^3 cells), (T-1,) in [0, 2]."""
    q = frames.astype(np.int32) * bins // 256
    idx = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]  # (T, H, W)
    hist = np.stack([np.bincount(i.ravel(), minlength=bins**3) for i in idx]).astype(np.float64)
    hist /= hist.sum(1, keepdims=True)
    return np.abs(np.diff(hist, axis=0)).sum(1)


def count_cuts(frames: np.ndarray) -> int:
    """Hard cuts: a frame step whose colour histogram change is a spike (>= 0.08 and twice either
    neighbour's) and whose pixel change is well above the clip's usual (2.5 x median + 1). A wide shot
    cut to a close-up is, in a flat world, an instant zoom: the histogram jumps (the object's share of
    the picture), where a camera that follows keeps changing smoothly."""
    if len(frames) < 2:
        return 0
    hist = color_histogram_changes(frames)
    # Pixel change of 4x4-pooled frames: noise averages out, a new view does not.
    t, h, w = frames.shape[:3]
    pooled = frames[:, :h // 4 * 4, :w // 4 * 4].astype(np.float32)
    pooled = pooled.reshape(t, h // 4, 4, w // 4, 4, 3).mean(axis=(2, 4))
    pix = frame_changes(pooled)
    base = 2.5 * float(np.median(pix)) + 1.0
    cuts = 0
    for k in range(len(hist)):
        around = max(hist[k - 1] if k > 0 else 0.0, hist[k + 1] if k + 1 < len(hist) else 0.0)
        cuts += bool(hist[k] >= 0.08 and hist[k] >= 2 * around and pix[k] >= base)
    return cuts


def seam_ratio(frames: np.ndarray, seams: list[int]) -> float:
    """Largest change across a seam (seam k: between frames k-1 and k; 0 = last -> first) over the median
    frame-to-frame change of the clip (1 = as smooth as the rest)."""
    d = frame_changes(frames)
    base = max(float(np.median(d)), 0.5)
    worst = 0.0
    for k in seams:
        a, b = frames[k - 1 if k > 0 else -1], frames[k]
        worst = max(worst, float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean()) / base)
    return worst


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * math.log10(255.0**2 / mse))


def edit_motion(source: VideoDetections, edited: VideoDetections, height: int) -> float:
    """1 when each long source track has an edited track (any colour) within 4 % of the height on average."""
    src = object_tracks(source)
    dst = object_tracks(edited)
    if not src:
        return 0.0
    ok = []
    for s in src:
        ps = {d.frame: np.array(d.center) for d in s.detections}
        best = math.inf
        for t in dst:
            common = [d for d in t.detections if d.frame in ps]
            if len(common) >= 0.5 * len(ps):
                best = min(best, float(np.mean([np.linalg.norm(np.array(d.center) - ps[d.frame]) for d in common])))
        ok.append(best < 0.04 * height)
    return float(np.mean(ok))


# ---------------------------------------------------------------- Fréchet distance over detector features


FEATURE_NAMES = (["objects", "area", "speed", "accel", "pillar"] + [f"color:{c}" for c in COLOR_NAMES]
                 + [f"shape:{s}" for s in SHAPES])


BACKGROUND_BANDS = 4  # horizontal bands of a backdrop signature: sky, horizon, near and far ground


def background_signature(frames: np.ndarray) -> np.ndarray:
    """A backdrop in 3 x BACKGROUND_BANDS numbers: the median colour of each horizontal band, top to bottom,
    over every frame. Medians, so that objects (a few percent of a frame) and textures do not move it."""
    f = np.asarray(frames, np.float32).reshape(-1, *np.shape(frames)[-3:])
    bands = np.array_split(np.arange(f.shape[1]), BACKGROUND_BANDS)
    return np.concatenate([np.median(f[:, rows].reshape(-1, 3), axis=0) for rows in bands])


def background_match(frames: np.ndarray, stated: str, references: dict[str, np.ndarray]) -> float:
    """1 when the video's backdrop signature is nearer (Euclidean) one of the ``stated`` background's
    reference signatures (name -> (n, 3 x bands)) than any other background's, else 0."""
    sig = background_signature(frames)
    nearest = min(references, key=lambda name: float(np.linalg.norm(np.atleast_2d(references[name]) - sig, axis=1).min()))
    return float(nearest == stated)


def clip_features(vd: VideoDetections) -> np.ndarray:
    """A fixed-length description of a clip by what the detector sees (FEATURE_NAMES)."""
    n, h, w = len(vd.frames), vd.height, vd.width
    dets = [d for f in vd.frames for d in f.objects]
    speed, accel = [], []
    for t in object_tracks(vd):
        c = t.centers()
        if len(c) >= 2:
            v = np.diff(c[:, 1:], axis=0) / np.maximum(np.diff(c[:, :1], axis=0), 1)
            speed.append(np.linalg.norm(v, axis=1).mean() / h)
            if len(v) >= 2:
                accel.append(np.linalg.norm(np.diff(v, axis=0), axis=1).mean() / h)
    colors = np.zeros(len(COLOR_NAMES))
    shapes = np.zeros(len(SHAPES))
    for d in dets:
        colors[COLOR_NAMES.index(d.color)] += d.area
        if d.shape:
            shapes[SHAPES.index(d.shape)] += 1
    colors /= max(colors.sum(), 1e-9)
    shapes /= max(shapes.sum(), 1e-9)
    return np.concatenate([[len(dets) / max(n, 1), sum(d.area for d in dets) / max(n * h * w, 1),
                            np.mean(speed) if speed else 0.0, np.mean(accel) if accel else 0.0,
                            np.mean([f.occluder is not None for f in vd.frames])], colors, shapes])


def frechet_distance(x: np.ndarray, y: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to feature sets x (n, d) and y (m, d):
    |mu_x - mu_y|^2 + tr(Sx + Sy - 2 (Sx^1/2 Sy Sx^1/2)^1/2)."""
    x, y = np.atleast_2d(x).astype(np.float64), np.atleast_2d(y).astype(np.float64)
    mx, my = x.mean(0), y.mean(0)
    d = x.shape[1]
    sx = np.cov(x, rowvar=False) if len(x) > 1 else np.zeros((d, d))
    sy = np.cov(y, rowvar=False) if len(y) > 1 else np.zeros((d, d))
    sx, sy = np.atleast_2d(sx) + eps * np.eye(d), np.atleast_2d(sy) + eps * np.eye(d)
    vals, vecs = np.linalg.eigh(sx)
    root = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    mid = np.linalg.eigvalsh(root @ sy @ root)
    return float(max(((mx - my) ** 2).sum() + np.trace(sx) + np.trace(sy) - 2 * np.sqrt(np.clip(mid, 0, None)).sum(), 0.0))


__all__ = ["ACCURACY_METRICS", "ALL_METRICS", "background_signature", "background_match", "object_tracks", "match_objects", "color_accuracy", "shape_accuracy",
           "size_accuracy", "count_accuracy", "direction_accuracy", "fall_fit", "FallFit", "gravity_plausibility",
           "collision_plausibility", "hit_color_accuracy", "permanence", "flicker", "consistency", "global_motion",
           "camera_motion", "CameraEstimate", "trail_presence", "count_cuts", "seam_ratio", "psnr", "edit_motion",
           "clip_features", "frechet_distance", "size_word", "SIZE_EDGES", "SEAM_OK"]
