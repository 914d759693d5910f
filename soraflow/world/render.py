"""SoraWorld renderer: world -> camera -> pixels, anti-aliased with analytic coverage, in numpy.

Everything is a function of WORLD coordinates seen through a camera (centre, zoom), so a pan or a
zoom moves the background, the paint trails and the occluder exactly as it moves the objects —
camera motion is measurable from the pixels.

Speed: the camera has no rotation, so world x depends only on the column and world y only on the
row. Backgrounds are built from 1-D per-row/per-column arrays and outer products; shapes are
signed-distance functions evaluated only inside each object's bounding box, and coverage
``clip(0.5 - distance_px, 0, 1)`` is their anti-aliasing (a 1-px box filter across the edge).
A static camera renders its background once per clip.
"""

from __future__ import annotations

import math

import numpy as np

from .scene import CameraPose, Occluder, Scene
from .spec import BACKGROUND_COLORS, COLORS

# ---------------------------------------------------------------- palettes

SKY = {  # (top, horizon) colours of the gradient sky
    "day": ((70, 130, 215), (180, 212, 240)),
    "sunset": ((60, 45, 115), (250, 150, 90)),
    "night": ((4, 6, 22), (28, 38, 80)),
}
CLOUD = {"day": (250, 250, 252), "sunset": (255, 190, 170)}
GROUND = {  # (base, pattern) colours of the ground plane
    "grass": ((70, 140, 55), (100, 170, 72)),
    "sand": ((214, 188, 132), (190, 160, 105)),
    "snow": ((236, 240, 248), (208, 218, 234)),
    "tiles": ((172, 172, 178), (118, 118, 128)),
    "lava": ((48, 26, 24), (250, 110, 20)),  # dark crust, glowing cracks (a concept: spec.CONCEPT_BACKGROUNDS)
}
GROUND_SKY = "day"

# Shape geometry relative to the collision radius R (a disc of radius R is the physics body).
BOX_HALF = 0.84  # half side of the box
TRI_RADIUS = 1.25  # circumradius of the triangle
STAR_OUTER, STAR_INNER = 1.3, 0.62  # star tip and notch radii
BALL_SEAM = 0.16  # half width of the darker band across a ball (makes its spin visible)


def _edges(poly: np.ndarray) -> np.ndarray:
    """Outward edge lines (nx, ny, c) of a convex polygon: inside <=> n.p - c <= 0 for all edges."""
    centroid = poly.mean(0)
    out = []
    for p, q in zip(poly, np.roll(poly, -1, axis=0)):
        n = np.array([q[1] - p[1], p[0] - q[0]])
        n /= np.linalg.norm(n)
        if n @ (centroid - p) > 0:
            n = -n
        out.append((n[0], n[1], n @ p))
    return np.array(out)


def _star_edges() -> np.ndarray:
    """A 5-point star as the union of 5 convex kites (centre, notch, tip, notch): (5, 4, 3)."""
    kites = []
    for k in range(5):
        a = -math.pi / 2 + k * 2 * math.pi / 5
        b = math.pi / 5
        pts = np.array([[0.0, 0.0],
                        [STAR_INNER * math.cos(a - b), STAR_INNER * math.sin(a - b)],
                        [STAR_OUTER * math.cos(a), STAR_OUTER * math.sin(a)],
                        [STAR_INNER * math.cos(a + b), STAR_INNER * math.sin(a + b)]])
        kites.append(_edges(pts))
    return np.stack(kites)


_TRIANGLE = _edges(np.array([[TRI_RADIUS * math.cos(a), TRI_RADIUS * math.sin(a)]
                             for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]))
_STAR = _star_edges()
#: Area of each shape in units of R^2 (the denominators of visibility fractions).
SHAPE_AREA = {
    "ball": math.pi,
    "box": (2 * BOX_HALF) ** 2,
    "triangle": 3 * math.sqrt(3) / 4 * TRI_RADIUS**2,
    "star": 5 * STAR_INNER * STAR_OUTER * math.sin(math.pi / 5),
}
#: Farthest point of each shape from its centre, in units of R (bounding boxes).
SHAPE_EXTENT = {"ball": 1.0, "box": BOX_HALF * math.sqrt(2), "triangle": TRI_RADIUS, "star": STAR_OUTER}


def shape_distance(shape: str, dx: np.ndarray, dy: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """Signed distance (pixels; < 0 inside) from pixel offsets (dx, dy) to a shape's outline.

    Exact on edges, approximate near outer corners, which is all 1-px anti-aliasing needs.
    Positive ``angle`` turns the shape clockwise on screen (y points down).
    """
    if shape == "ball":
        return np.sqrt(dx * dx + dy * dy) - radius
    c, s = math.cos(angle), math.sin(angle)
    u = (dx * c + dy * s) / radius  # rotate the query point by -angle, in units of R
    v = (dy * c - dx * s) / radius
    if shape == "box":
        return (np.maximum(np.abs(u), np.abs(v)) - BOX_HALF) * radius
    if shape == "triangle":
        e = _TRIANGLE
        d = u * e[0, 0] + v * e[0, 1] - e[0, 2]
        for k in (1, 2):
            np.maximum(d, u * e[k, 0] + v * e[k, 1] - e[k, 2], out=d)
        return d * radius
    return _star_distance(u, -v) * radius  # the fold below works with y up


# Unit vectors of the star's mirror lines (Inigo Quilez's sdStar5, exact for a regular 5-point star).
_K1 = (math.cos(math.pi / 5), -math.sin(math.pi / 5))
_K2 = (-_K1[0], _K1[1])
_RF = STAR_INNER / STAR_OUTER
_BA = (_RF * -_K1[1], _RF * _K1[0] - 1.0)  # from the tip to the notch, in units of the outer radius


def _star_distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Exact signed distance to the star (tip up, y up, units of R): fold the plane into one
    tenth of the star by its mirror lines, then measure to the tip-notch edge."""
    x = np.abs(x)
    d1 = np.maximum(_K1[0] * x + _K1[1] * y, 0.0) * 2
    x, y = x - d1 * _K1[0], y - d1 * _K1[1]
    d2 = np.maximum(_K2[0] * x + _K2[1] * y, 0.0) * 2
    x, y = np.abs(x - d2 * _K2[0]), y - d2 * _K2[1] - STAR_OUTER
    bb = _BA[0] ** 2 + _BA[1] ** 2
    h = np.clip((x * _BA[0] + y * _BA[1]) / bb, 0.0, STAR_OUTER)
    dist = np.hypot(x - _BA[0] * h, y - _BA[1] * h)
    return dist * np.sign(y * _BA[0] - x * _BA[1])


_OUTLINE = {  # points whose hull contains the shape (units of R, before rotation)
    "box": np.array([[-BOX_HALF, -BOX_HALF], [BOX_HALF, -BOX_HALF], [BOX_HALF, BOX_HALF], [-BOX_HALF, BOX_HALF]]),
    "triangle": np.array([[TRI_RADIUS * math.cos(a), TRI_RADIUS * math.sin(a)]
                          for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]),
    "star": np.array([[STAR_OUTER * math.cos(a), STAR_OUTER * math.sin(a)]
                      for a in (-math.pi / 2 + k * 2 * math.pi / 5 for k in range(5))]),
}


def shape_bbox(shape: str, cx: float, cy: float, radius: float, angle: float) -> tuple[float, float, float, float]:
    """Exact bounding box (x0, y0, x1, y1) of a shape in pixels, unclipped."""
    if shape == "ball":
        return cx - radius, cy - radius, cx + radius, cy + radius
    c, s = math.cos(angle), math.sin(angle)
    pts = _OUTLINE[shape] * radius
    xs = pts[:, 0] * c - pts[:, 1] * s
    ys = pts[:, 0] * s + pts[:, 1] * c
    return cx + float(xs.min()), cy + float(ys.min()), cx + float(xs.max()), cy + float(ys.max())


# ---------------------------------------------------------------- background


class Background:
    """The world backdrop (solid / sky / ground), evaluated for a camera pose."""

    def __init__(self, scene: Scene):
        self.kind, self.name = scene.spec.background.kind, scene.spec.background.name
        self.horizon = scene.horizon
        self.height, self.width = scene.height, scene.width
        self.vanish_x = scene.aspect / 2  # the ground's lines converge above the middle of the first view
        rng = np.random.default_rng(scene.texture_seed)
        # Texture: a few products of sinusoids in world units, incommensurate frequencies so the
        # pattern never repeats within a view (a shift is unambiguous to measure).
        k = 6
        self.fx = rng.uniform(6, 22, k) * rng.choice([-1, 1], k)
        self.fy = rng.uniform(6, 22, k)
        self.px, self.py = rng.uniform(0, 2 * math.pi, k), rng.uniform(0, 2 * math.pi, k)
        self.amp = rng.uniform(0.5, 1.0, k)
        self.amp /= self.amp.sum()
        # Clouds: lower frequencies.
        self.cfx, self.cfy = rng.uniform(1.5, 4, 4), rng.uniform(3, 7, 4)
        self.cpx, self.cpy = rng.uniform(0, 2 * math.pi, 4), rng.uniform(0, 2 * math.pi, 4)
        # Stars: fixed world positions over a generous area.
        n = 400
        self.stars = np.stack([rng.uniform(-3, 6, n), rng.uniform(-2, 2, n), rng.uniform(0.35, 1.0, n)], 1)
        self._cache_key = None
        self._cache = None

    def render(self, pose: CameraPose) -> np.ndarray:
        """(H, W, 3) float32 in 0..255. Cached while the camera does not move."""
        key = (pose.cx, pose.cy, pose.zoom)
        if key != self._cache_key:
            self._cache = self._render(pose)
            self._cache_key = key
        return self._cache

    def _texture(self, wx: np.ndarray, wy: np.ndarray) -> np.ndarray:
        # sum_k a_k sin(fx_k x + px_k) sin(fy_k y + py_k) as one matmul: (H, k) @ (k, W).
        rows = (np.sin(wy[:, None] * self.fy + self.py) * self.amp).astype(np.float32)  # (H, k)
        cols = np.sin(wx[:, None] * self.fx + self.px).astype(np.float32)  # (W, k)
        return rows @ cols.T  # (H, W), about -1..1

    def _render(self, pose: CameraPose) -> np.ndarray:
        # Trigonometry runs on 1-D float64 world coordinates (exact positions); everything 2-D is float32.
        h, w = self.height, self.width
        s = pose.scale(h)  # pixels per world unit
        wx = pose.cx + (np.arange(w) + 0.5 - w / 2) / s  # world x of each column
        wy = pose.cy + (np.arange(h) + 0.5 - h / 2) / s  # world y of each row
        tex = self._texture(wx, wy)[..., None]  # (H, W, 1)
        if self.kind == "solid":
            return np.array(BACKGROUND_COLORS[self.name], np.float32) + 7.0 * tex  # subtle, but it moves with the camera
        if self.kind == "sky":
            img = self._sky_image(wx, wy, -0.3, 1.2, self.name, s)
        else:
            img = self._sky_image(wx, wy, -0.3, self.horizon, GROUND_SKY, s)
            self._ground(img, wx, wy, s)
        img += 3.0 * tex
        return img

    def _sky_image(self, wx, wy, top, bottom, name, s) -> np.ndarray:
        t = np.clip((wy - top) / (bottom - top), 0, 1)[:, None]  # (H, 1)
        c0, c1 = (np.array(c, np.float64) for c in SKY[name])
        sky = (c0 + (c1 - c0) * t).astype(np.float32)[:, None, :]  # (H, 1, 3) gradient colour of each row
        if name not in CLOUD:
            img = np.broadcast_to(sky, (len(wy), len(wx), 3)).copy()
            self._stars(img, wx, wy, s)
            return img
        # Soft clouds: a low-frequency field, thresholded smoothly, thinning out towards the horizon.
        rows = np.sin(wy[:, None] * self.cfy + self.cpy).astype(np.float32) / 4  # (H, 4)
        cols = np.sin(wx[:, None] * self.cfx + self.cpx).astype(np.float32)  # (W, 4)
        field = rows @ cols.T + (0.25 * np.sin(wx * 2.3 + self.cpx[0])).astype(np.float32)  # (H, W)
        alpha = np.clip((field - 0.2) * 3.0, 0, 0.85)
        alpha *= np.clip((bottom - wy) * 4, 0, 1).astype(np.float32)[:, None]
        return sky + alpha[..., None] * (np.array(CLOUD[name], np.float32) - sky)  # (H, W, 3)

    def _stars(self, img: np.ndarray, wx: np.ndarray, wy: np.ndarray, s: float) -> None:
        h, w = img.shape[:2]
        x = (self.stars[:, 0] - wx[0]) * s  # pixel coordinates (of pixel centres: +0.5 below)
        y = (self.stars[:, 1] - wy[0]) * s
        keep = (x >= 0) & (x < w - 1) & (y >= 0) & (y < h - 1)
        x, y, b = x[keep], y[keep], self.stars[keep, 2] * 200.0
        if self.horizon is not None:
            b = b * (self.stars[keep, 1] < self.horizon)
        x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
        fx, fy = x - x0, y - y0
        glow = np.zeros((h, w), np.float32)
        # Bilinear splat: a star at a sub-pixel position lights its 4 neighbours, so it glides with the camera.
        for ddx, ddy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                              (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            np.add.at(glow, (y0 + ddy, x0 + ddx), b * wgt)
        img += np.minimum(glow, 230.0)[..., None]

    def _ground(self, img: np.ndarray, wx: np.ndarray, wy: np.ndarray, s: float) -> None:
        """A ground plane in perspective below the horizon, painted on the world backdrop."""
        below = np.nonzero(wy + 0.5 / s > self.horizon)[0]
        if len(below) == 0:
            return
        r0 = below[0]
        wyb = wy[r0:]
        depth_s = np.maximum(wyb - self.horizon, 0.5 / s)  # screen distance below the horizon
        z = 1.0 / depth_s  # ground depth of each row, (h,)
        px_z = z * z / s  # depth change across one pixel (how fast the pattern gets finer)
        px_x = z / s
        zc = z.astype(np.float32)[:, None]  # (h, 1)
        gx = (wx - self.vanish_x).astype(np.float32)[None, :] * zc  # ground x of each pixel, (h, W)
        two_pi = np.float32(2 * math.pi)
        if self.name == "grass":  # mowing stripes converging to the vanishing point
            fade = np.clip(1 - 1.5 * px_x / 0.7, 0, 1).astype(np.float32)[:, None]
            v = np.clip(2.5 * np.sin(gx * (two_pi / np.float32(0.7))), -1, 1) * fade
        elif self.name == "sand":  # ripples across the depth
            fade = np.clip(1 - 1.5 * px_z / 0.45, 0, 1).astype(np.float32)[:, None]
            v = np.sin(zc * (two_pi / np.float32(0.45)) + np.float32(0.6) * np.sin(gx * np.float32(1.3))) * fade
        elif self.name == "snow":  # faint drifts
            fade = np.clip(1 - 1.5 * px_z / 0.8, 0, 1).astype(np.float32)[:, None]
            v = np.sin(gx * (two_pi / np.float32(1.1))) * (0.7 * np.sin(z * (2 * math.pi / 0.8)).astype(np.float32)[:, None] * fade)
        elif self.name == "lava":  # glowing cracks across a dark crust: two wavy sets of thin lines
            fade = np.clip(1 - 1.5 * np.maximum(px_z, px_x) / 0.6, 0, 1).astype(np.float32)[:, None]
            a = np.abs(np.sin(gx * np.float32(math.pi / 0.6) + np.float32(0.9) * np.sin(zc * np.float32(2.1))))
            b = np.abs(np.sin(zc * np.float32(math.pi / 0.5) + np.float32(0.7) * np.sin(gx * np.float32(1.7))))
            crack = np.clip(1.0 - 4.0 * np.minimum(a, b), 0.0, 1.0)  # 1 on a crack, 0 on the crust
            v = (2.0 * crack - 1.0) * fade - (1.0 - fade) * np.float32(0.5)  # far off: a dull glow
        else:  # tiles: a checkerboard
            fade = np.clip(1 - 1.5 * np.maximum(px_z, px_x) / 0.5, 0, 1).astype(np.float32)[:, None]
            rows = (np.sin(z * (math.pi / 0.5)) * 4).astype(np.float32)[:, None]
            v = np.clip(np.sin(gx * np.float32(math.pi / 0.5)) * rows, -1, 1) * fade
        base, pat = (np.array(c, np.float32) for c in GROUND[self.name])
        mid, half = (base + pat) / 2, (pat - base) / 2
        ground = mid + v[..., None] * half  # (h, W, 3); v in -1..1
        # Anti-aliased horizon: only the row that straddles it is blended by coverage.
        cov = float(np.clip((wyb[0] - self.horizon) * s + 0.5, 0, 1))
        img[r0] += cov * (ground[0] - img[r0])
        img[r0 + 1:] = ground[1:]


# ---------------------------------------------------------------- paint trails


class TrailCanvas:
    """Paint that stays where it was laid: an RGBA raster in world coordinates, sampled per frame."""

    def __init__(self, bounds: tuple[float, float, float, float], resolution: float):
        self.x0, self.y0, x1, y1 = bounds
        self.res = resolution  # canvas pixels per world unit
        self.w = int(math.ceil((x1 - self.x0) * resolution)) + 2
        self.h = int(math.ceil((y1 - self.y0) * resolution)) + 2
        self._rgba = np.zeros((self.h, self.w, 4), np.float32)  # premultiplied colour + alpha
        self.rgb, self.alpha = self._rgba[..., :3], self._rgba[..., 3]  # views
        self.painted: list[int] | None = None  # [x0, y0, x1, y1] canvas pixels that hold paint

    def paint(self, points: list[tuple[float, float]], half_width: float, rgb, opacity: float = 0.8) -> None:
        """Stroke the polyline ``points`` (world) with a round brush of ``half_width`` (world)."""
        pts = (np.asarray(points, np.float64) - (self.x0, self.y0)) * self.res
        hw = half_width * self.res
        # One stroke = the union of capsules, painted once (no double alpha where segments meet).
        lo = np.floor(pts.min(0) - hw - 1).astype(int)
        hi = np.ceil(pts.max(0) + hw + 2).astype(int)
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, (self.w, self.h))
        if (hi <= lo).any():
            return
        xs = np.arange(lo[0], hi[0]) + 0.5
        ys = np.arange(lo[1], hi[1]) + 0.5
        d = np.full((len(ys), len(xs)), np.inf, np.float32)
        if len(pts) == 1:
            pts = np.concatenate([pts, pts])
        for a, b in zip(pts[:-1], pts[1:]):
            ab = b - a
            l2 = max(ab @ ab, 1e-12)
            px, py = xs[None, :] - a[0], ys[:, None] - a[1]
            t = np.clip((px * ab[0] + py * ab[1]) / l2, 0, 1)
            d = np.minimum(d, np.hypot(px - t * ab[0], py - t * ab[1]))
        cov = np.clip(hw + 0.5 - d, 0, 1) * opacity
        sl = np.s_[lo[1]:hi[1], lo[0]:hi[0]]
        a = self.alpha[sl]
        new = np.maximum(a, cov)  # paint over paint of the same stroke does not darken
        gain = np.where(new > a, (new - a) / np.maximum(1 - a, 1e-6), 0).astype(np.float32)
        self.rgb[sl] += gain[..., None] * (np.array(rgb, np.float32) - self.rgb[sl])
        self.alpha[sl] = new
        p = self.painted
        self.painted = [int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])] if p is None else [
            min(p[0], int(lo[0])), min(p[1], int(lo[1])), max(p[2], int(hi[0])), max(p[3], int(hi[1]))]

    def composite(self, img: np.ndarray, pose: CameraPose) -> None:
        """Blend the paint into ``img`` as the camera ``pose`` sees it (bilinear sampling)."""
        if self.painted is None:
            return
        h, w = img.shape[:2]
        s = pose.scale(h)
        # Only the image rectangle that can see paint is sampled (trails are thin).
        cx0, cy0, cx1, cy1 = self.painted
        ix0 = max(int(math.floor(((cx0 - 1) / self.res + self.x0 - pose.cx) * s + w / 2)), 0)
        ix1 = min(int(math.ceil(((cx1 + 1) / self.res + self.x0 - pose.cx) * s + w / 2)) + 1, w)
        iy0 = max(int(math.floor(((cy0 - 1) / self.res + self.y0 - pose.cy) * s + h / 2)), 0)
        iy1 = min(int(math.ceil(((cy1 + 1) / self.res + self.y0 - pose.cy) * s + h / 2)) + 1, h)
        if ix1 <= ix0 or iy1 <= iy0:
            return
        img = img[iy0:iy1, ix0:ix1]
        u = (pose.cx + (np.arange(ix0, ix1) + 0.5 - w / 2) / s - self.x0) * self.res - 0.5
        v = (pose.cy + (np.arange(iy0, iy1) + 0.5 - h / 2) / s - self.y0) * self.res - 0.5
        u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
        fu, fv = (u - u0).astype(np.float32), (v - v0).astype(np.float32)
        rgba = self._rgba
        # Separable bilinear: blend two row gathers, then two column gathers (indices clamped onto
        # the empty border, so outside the canvas there is no paint).
        c0, c1 = np.clip(u0, 0, self.w - 1), np.clip(u0 + 1, 0, self.w - 1)
        lo, hi = int(c0.min()), int(c1.max()) + 1
        band = rgba[:, lo:hi]
        r0, r1 = np.clip(v0, 0, self.h - 1), np.clip(v0 + 1, 0, self.h - 1)
        rows = band[r0] * (1 - fv)[:, None, None] + band[r1] * fv[:, None, None]  # (h, w', 4)
        out = rows[:, c0 - lo] * (1 - fu)[None, :, None] + rows[:, c1 - lo] * fu[None, :, None]  # (h, w, 4)
        col, alpha = out[..., :3], out[..., 3]
        img *= 1 - alpha[..., None]
        img += col  # premultiplied: col already carries alpha


# ---------------------------------------------------------------- objects and occluder


def draw_object(img: np.ndarray, shape: str, cx: float, cy: float, radius: float, angle: float,
                rgb) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """Composite one object (pixel centre (cx, cy), collision radius in px) into ``img``.

    Returns (coverage of the bounding box, (x0, y0, x1, y1) integer box in the frame), or None
    when it is entirely outside the frame.
    """
    h, w = img.shape[:2]
    ext = radius * SHAPE_EXTENT[shape] + 1.5
    x0, x1 = max(int(math.floor(cx - ext)), 0), min(int(math.ceil(cx + ext)), w)
    y0, y1 = max(int(math.floor(cy - ext)), 0), min(int(math.ceil(cy + ext)), h)
    if x1 <= x0 or y1 <= y0:
        return None
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
    dist = shape_distance(shape, dx, dy, radius, angle)
    cov = np.clip(0.5 - dist, 0, 1).astype(np.float32)  # (h, w)
    color = np.array(rgb, np.float32)
    region = img[y0:y1, x0:x1]
    if shape == "ball":
        # A darker band through the centre, turning with the ball: spin you can see.
        band = np.abs(dx * math.sin(angle) - dy * math.cos(angle)) - BALL_SEAM * radius
        dark = np.clip(0.5 - band, 0, 1)[..., None] * 0.22
        region += cov[..., None] * (color * (1 - dark) - region)
    else:
        region += cov[..., None] * (color - region)
    return cov, (x0, y0, x1, y1)


def occluder_coverage(occ: Occluder, pose: CameraPose, width: int, height: int) -> np.ndarray:
    """Fraction of each pixel column covered by the pillar (it spans the whole height): (W,)."""
    s = pose.scale(height)
    a = (occ.x0 - pose.cx) * s + width / 2
    b = (occ.x1 - pose.cx) * s + width / 2
    cols = np.arange(width, dtype=np.float32)
    return np.clip(np.minimum(cols + 1, b) - np.maximum(cols, a), 0, 1)


def draw_occluder(img: np.ndarray, occ: Occluder, pose: CameraPose, cov: np.ndarray) -> None:
    h, w = img.shape[:2]
    if not cov.any():
        return
    s = pose.scale(h)
    # Shade across the pillar (lit from the left) so it reads as a round column, not a stripe.
    xs = (pose.cx + (np.arange(w) + 0.5 - w / 2) / s - occ.x0) / max(occ.x1 - occ.x0, 1e-6)
    shade = (0.78 + 0.3 * np.sin(np.clip(xs, 0, 1) * math.pi * 0.9 + 0.25)).astype(np.float32)
    color = np.array(COLORS[occ.color], np.float32)[None, :] * shade[:, None]  # (W, 3)
    color = np.minimum(color, 255.0)
    img += cov[None, :, None] * (color[None] - img)
