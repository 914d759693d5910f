"""Ground truth of a rendered SoraWorld clip: per frame, where everything is and what it looks like.

Pixel coordinates: x to the right, y down, (0, 0) is the top-left CORNER of the image, so the
centre of pixel (row i, column j) is (j + 0.5, i + 0.5). World coordinates: see
:mod:`soraflow.world.physics` (1 unit = wide view height, y down).

``ClipTruth.to_dict()`` is compact and columnar (one list per quantity per object, rounded), so a
60-s clip's truth stays small on disk; ``ClipTruth.from_dict`` reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CameraTruth:
    cx: float  # world point at the image centre
    cy: float
    zoom: float  # 1 = the wide view at t = 0 (1 world unit = image height)
    scale: float  # pixels per world unit (= height * zoom)
    shot: int  # index into spec.shots
    kind: str  # "wide" or "close-up"

    def world_to_pixel(self, x: float, y: float, width: int, height: int) -> tuple[float, float]:
        return (x - self.cx) * self.scale + width / 2, (y - self.cy) * self.scale + height / 2


@dataclass
class ObjectTruth:
    index: int  # position in spec.objects
    shape: str
    color: str  # current colour name (changes when a box is hit)
    rgb: tuple[int, int, int]
    world: tuple[float, float]  # centre, world units
    velocity: tuple[float, float]  # world units / s
    pixel: tuple[float, float]  # centre, pixels (may lie outside the frame)
    bbox: tuple[float, float, float, float] | None  # (x0, y0, x1, y1) pixels: the outline's box clipped
    # to the frame (the occluder is ignored); None when the object is outside the frame
    size_px: float  # diameter of the object's collision disc, pixels
    angle: float  # rotation, degrees, clockwise
    scale: float  # growth factor (1 = the spec's size)
    in_frame: float  # fraction of its area inside the frame
    visible: float  # fraction of its area inside the frame and not behind the occluder
    occluded: bool  # the occluder hides more than half of it


@dataclass
class FrameTruth:
    index: int
    time: float  # seconds
    shot: int
    camera: CameraTruth
    objects: list[ObjectTruth]
    collisions: list[tuple[int, int]] = field(default_factory=list)  # object pairs that hit since the last frame
    occluder_px: tuple[float, float] | None = None  # pillar's [x0, x1) in pixels (full height)


@dataclass
class ClipTruth:
    height: int
    width: int
    fps: float
    frames: list[FrameTruth]
    occluder: dict | None  # {"x0", "x1" (world), "color"} or None
    horizon: float | None  # world y of the horizon (ground backgrounds)
    arena: dict  # walls, world units: {"x0", "x1", "y0", "floor"}

    # ------------------------------------------------------------ (de)serialisation
    def to_dict(self, digits: int = 3) -> dict:
        """Columnar, rounded: {"camera": {"cx": [...], ...}, "objects": [{"pixel": [[x, y], ...], ...}]}."""

        def r(v):
            if isinstance(v, float):
                return round(v, digits)
            if isinstance(v, (tuple, list)):
                return [r(x) for x in v]
            return v

        cams = [vars(f.camera) for f in self.frames]  # flat dataclasses: vars() is asdict() without the deep copy
        out = {
            "height": self.height, "width": self.width, "fps": self.fps, "frames": len(self.frames),
            "occluder": self.occluder, "horizon": self.horizon, "arena": self.arena,
            "time": [r(f.time) for f in self.frames],
            "shot": [f.shot for f in self.frames],
            "camera": {k: [r(c[k]) for c in cams] for k in cams[0]} if cams else {},
            "collisions": [[list(p) for p in f.collisions] for f in self.frames],
            "occluder_px": [r(f.occluder_px) for f in self.frames],
            "objects": [],
        }
        n_obj = len(self.frames[0].objects) if self.frames else 0
        for i in range(n_obj):
            rows = [vars(f.objects[i]) for f in self.frames]
            col = {k: [r(row[k]) for row in rows] for k in rows[0] if k not in ("index", "shape")}
            out["objects"].append({"index": i, "shape": rows[0]["shape"], **col})
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "ClipTruth":
        n = data["frames"]
        cam_keys = list(data["camera"])
        frames = []
        for t in range(n):
            cam = CameraTruth(**{k: data["camera"][k][t] for k in cam_keys})
            objs = []
            for o in data["objects"]:
                fields = {k: v[t] for k, v in o.items() if k not in ("index", "shape")}
                for k in ("rgb", "world", "velocity", "pixel", "bbox"):
                    if fields.get(k) is not None:
                        fields[k] = tuple(fields[k])
                objs.append(ObjectTruth(index=o["index"], shape=o["shape"], **fields))
            occ = data["occluder_px"][t]
            frames.append(FrameTruth(t, data["time"][t], data["shot"][t], cam, objs,
                                     [tuple(p) for p in data["collisions"][t]],
                                     tuple(occ) if occ is not None else None))
        return cls(data["height"], data["width"], data["fps"], frames, data["occluder"], data["horizon"],
                   data["arena"])
