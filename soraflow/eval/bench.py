"""Run a model (or the simulator, or a null model) over the bench suite, score every video, aggregate.

    from soraflow.eval.bench import run_bench, SimulatorSource, PipelineSource
    result = run_bench(SimulatorSource(), build_suite(limit=20))
    result.overall["color"], result.per_category["gravity"]["gravity"]

A *source* turns a :class:`~soraflow.eval.suite.BenchEntry` into frames:

- :class:`PipelineSource`: a soraflow pipeline, called in the entry's mode with its inputs;
- :class:`SimulatorSource`: SoraWorld's own render of the entry (the upper bound: every accuracy must be
  >= 0.98, or the detector is wrong);
- :class:`NullSource`: a model with the prompt removed — the simulator rendering an unrelated scene of
  the same size and length, ignoring the prompt and the given image or clips (the floor of every
  prompt-following metric), or, given a pipeline, random latents through its VAE.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import SoraflowError
from ..world import render_clip, random_spec
from ..world.spec import ShotSpec
from . import metrics as M
from .detector import DetectorConfig, VideoDetections, detect_video
from .suite import BenchEntry, background_signatures, conditioning, detector_config, render_reference


# ---------------------------------------------------------------- sources


class SimulatorSource:
    """The upper bound: the simulator's render of each entry (a loop: the clip and back again)."""

    name = "simulator"

    def __call__(self, entry: BenchEntry, reference) -> np.ndarray:
        return reference.frames


class NullSource:
    """The floor: a video that ignores the prompt and the given inputs.

    Without a pipeline: SoraWorld renders a random scene (one wide shot) of the entry's size and length —
    a "model" with perfect physics and no prompt. With a pipeline: random latents decoded by its VAE.
    Clips given to extend or connect stay in the output, as a pipeline keeps them.
    """

    def __init__(self, pipeline=None):
        self.pipeline = pipeline
        self.name = "null" if pipeline is None else "null-vae"

    def __call__(self, entry: BenchEntry, reference) -> np.ndarray:
        frames = self._frames(entry, len(reference.frames))
        # Given clips are part of the output whatever a model does (the pipeline shows them as given):
        # the null ignores them only in what it adds, so its seams are real seams.
        if entry.mode == "extend":
            frames[:entry.given] = reference.frames[:entry.given]
        elif entry.mode == "connect":
            frames[:entry.given] = reference.frames[:entry.given]
            frames[entry.frames - entry.given_tail:] = reference.frames[entry.frames - entry.given_tail:]
        return frames

    def _frames(self, entry: BenchEntry, n: int) -> np.ndarray:
        if self.pipeline is None:
            spec = random_spec(random.Random(f"null-{entry.id}"))
            spec.shots = [ShotSpec("wide")]
            return render_clip(spec, entry.size, entry.fps, num_frames=n, seed=entry.seed + 1).frames
        import torch

        pipe = self.pipeline
        sf, C = pipe.vae.spatial_factor, pipe.config.latent_channels
        g = torch.Generator().manual_seed(entry.seed)
        z = torch.randn(1, C, 1 + math.ceil((n - 1) / 4), entry.size[0] // sf, entry.size[1] // sf, generator=g)
        frames = pipe.decode_latents(z.to(pipe.device, next(pipe.vae.parameters()).dtype))
        return frames[:n].copy()


class VAESource:
    """The VAE ceiling: the simulator's render encoded and decoded by a pipeline's VAE. What its VAE loses
    (small objects' colours, fast motion) no DiT sampling in that latent space can put back, so a model
    scores near this at best; the gap from here to the simulator is the VAE's."""

    name = "vae"

    def __init__(self, pipeline):
        self.pipeline = pipeline  # anything with a pipeline's encode_frames / decode_latents

    @classmethod
    def of_vae(cls, vae) -> "VAESource":
        """The ceiling of a VideoVAE on its own, before any DiT is trained on its latents."""
        from types import SimpleNamespace

        from .. import latents

        return cls(SimpleNamespace(encode_frames=lambda frames: latents.encode_frames(vae, frames, frame_policy="error"),
                                   decode_latents=lambda z: latents.decode_latents(vae, z)))

    def __call__(self, entry: BenchEntry, reference) -> np.ndarray:
        from ..modes import pad_to_vae_length

        frames = reference.frames
        z = self.pipeline.encode_frames(pad_to_vae_length(frames))
        return self.pipeline.decode_latents(z)[:len(frames)].copy()


class PipelineSource:
    """A soraflow pipeline, called in each entry's mode with the simulator-rendered inputs."""

    def __init__(self, pipeline, *, steps: int | None = None, guidance_scale: float | None = None,
                 expand: bool = False, name: str = "model"):
        self.pipeline = pipeline
        self.steps, self.guidance_scale, self.expand = steps, guidance_scale, expand
        self.name = name

    def __call__(self, entry: BenchEntry, reference) -> np.ndarray:
        kwargs = entry.request()
        kwargs.update(conditioning(entry, reference))
        if self.steps is not None:
            kwargs["steps"] = self.steps
        if self.guidance_scale is not None:
            kwargs["guidance_scale"] = self.guidance_scale
        result = self.pipeline(entry.prompt, expand=self.expand, progress=False, **kwargs)
        return result.frames


# ---------------------------------------------------------------- scoring one video


@dataclass
class EntryScore:
    id: str
    category: str
    mode: str
    scores: dict  # metric -> value (None: the metric does not apply to this video)
    features: list  # metrics.clip_features of the video
    seconds: float  # generation time
    tracks: list = field(default_factory=list)  # [(colour, shape, [[frame, x, y], ...]), ...] for plots
    sample: np.ndarray | None = None  # a few frames (k, H, W, 3) kept for the contact sheet
    size: tuple[int, int] = (0, 0)  # (H, W) of the video
    error: str | None = None  # why the source could not make this video (it scores 0)


def seams_of(entry: BenchEntry, frames: int | None = None) -> list[int]:
    """Frame indices k where frame k-1 -> k joins given and generated frames (0: the loop's end -> start)
    in an output of ``frames`` frames (default: the entry's length)."""
    n = entry.frames if frames is None else frames
    if entry.mode == "extend":
        return [entry.given]
    if entry.mode == "connect":
        return [entry.given, n - entry.given_tail]
    if entry.mode == "loop":
        return [0]
    return []


def score_video(entry: BenchEntry, frames: np.ndarray, *, inputs: dict | None = None,
                detector: DetectorConfig | None = None, source_detections: VideoDetections | None = None) -> tuple[dict, VideoDetections]:
    """Every metric of ``entry.metrics`` for one video (uint8 (T, H, W, 3))."""
    frames = np.asarray(frames)
    spec = entry.spec
    detector = detector or detector_config(entry)
    vd = detect_video(frames, entry.fps, detector)
    tracks = M.object_tracks(vd)
    matched = M.match_objects(spec, tracks)
    h, w = frames.shape[1:3]
    out: dict[str, float | None] = {}
    scale_changes = spec.camera in ("zoom-in", "zoom-out") or len(spec.shots) > 1
    for name in entry.metrics:
        if name == "color":
            out[name] = M.color_accuracy(spec, matched)
        elif name == "shape":
            out[name] = M.shape_accuracy(spec, matched)
        elif name == "size":
            out[name] = None if scale_changes else M.size_accuracy(spec, matched, h)
        elif name == "count":
            out[name] = M.count_accuracy(spec, vd)
        elif name == "direction":
            out[name] = M.direction_accuracy(spec, matched, entry.fps, w) if spec.camera == "static" else None
        elif name == "gravity":
            out[name] = M.gravity_plausibility(spec, matched, h)
        elif name == "collision":
            out[name] = M.collision_plausibility(vd, [t for t in matched if t is not None])
        elif name == "hit_color":
            out[name] = M.hit_color_accuracy(spec, matched)
        elif name == "permanence":
            out[name] = M.permanence(vd, tracks, missing=sum(t is None for t in matched))
        elif name == "consistency":
            out[name] = M.consistency(spec, vd, matched, frames, scale_changes=scale_changes) if len(frames) >= 5 else None
        elif name == "camera":
            est = M.camera_motion(frames, vd, entry.fps)
            out[name] = float(est.label == spec.camera)
            out["camera_seen"] = est.label
        elif name == "trail":
            out[name] = M.trail_presence(spec, matched, frames)
        elif name == "cuts":
            out[name] = float(M.count_cuts(frames) == len(spec.shots) - 1)
        elif name == "first_frame":
            image = (inputs or {}).get("image")
            out[name] = M.psnr(frames[0], image) if image is not None and image.shape == frames[0].shape else 0.0
        elif name == "seam":
            ratio = M.seam_ratio(frames, seams_of(entry, len(frames))) if len(frames) > 2 else None
            out["seam_ratio"] = ratio
            out[name] = float(ratio is not None and ratio <= M.SEAM_OK)
        elif name == "edit_motion":
            out[name] = M.edit_motion(source_detections, vd, h) if source_detections is not None else None
        elif name == "background":
            out[name] = M.background_match(frames, spec.background.name, background_signatures(h, w))
        else:
            raise SoraflowError(f"unknown metric {name!r} in bench entry {entry.id}")
    return out, vd


def score_entry(entry: BenchEntry, source, *, detector: DetectorConfig | None = None, reference=None,
                keep_frames: int = 0) -> EntryScore:
    """Generate ``entry`` with ``source`` and score it."""
    reference = reference if reference is not None else render_reference(entry)
    detector = detector or detector_config(entry)
    inputs = conditioning(entry, reference) if entry.mode in ("i2v", "edit") else {}
    tick = time.perf_counter()
    try:
        frames = np.asarray(source(entry, reference))
    except SoraflowError as err:
        # A model that cannot take this request (a mode, a size) fails the entry, not the whole bench.
        scores = {m: 0.0 for m in entry.metrics}  # (seam_ratio stays unset: there is no seam to measure)
        return EntryScore(entry.id, entry.category, entry.mode, scores, [0.0] * len(M.FEATURE_NAMES),
                          time.perf_counter() - tick, error=str(err))
    seconds = time.perf_counter() - tick
    if frames.shape[1:3] != tuple(entry.size) or frames.dtype != np.uint8:
        raise SoraflowError(f"{getattr(source, 'name', 'source')} returned {frames.dtype} {frames.shape} for "
                            f"{entry.id}; expected uint8 (T, {entry.size[0]}, {entry.size[1]}, 3)")
    src_vd = None
    if entry.mode == "edit" and "edit_motion" in entry.metrics:
        src_vd = detect_video(inputs["video"], entry.fps, detector, shapes=False)
    scores, vd = score_video(entry, frames, inputs=inputs, detector=detector, source_detections=src_vd)
    tracks = [(t.color, t.shape, t.centers().round(2).tolist()) for t in M.object_tracks(vd)]
    sample = None
    if keep_frames:
        sample = frames[np.linspace(0, len(frames) - 1, min(keep_frames, len(frames))).round().astype(int)].copy()
    return EntryScore(entry.id, entry.category, entry.mode, scores, M.clip_features(vd).tolist(), seconds, tracks,
                      sample, tuple(frames.shape[1:3]))


# ---------------------------------------------------------------- aggregation


@dataclass
class BenchResult:
    name: str  # the source's name: model, simulator, null
    entries: list[EntryScore]
    overall: dict  # metric -> mean over the entries it applies to
    per_category: dict  # category -> metric -> mean
    frechet: float | None = None  # Fréchet distance of the detector features to the simulator's
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"name": self.name, "overall": self.overall, "per_category": self.per_category,
                "frechet": self.frechet, "seconds": round(self.seconds, 2),
                "entries": [{"id": e.id, "category": e.category, "mode": e.mode, "scores": e.scores,
                             "seconds": round(e.seconds, 3), **({"error": e.error} if e.error else {})}
                            for e in self.entries]}


def _mean(values) -> float | None:
    vals = [float(v) for v in values if isinstance(v, (int, float)) and v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def aggregate(entries: list[EntryScore]) -> tuple[dict, dict]:
    """(overall, per_category): the mean of each metric over the entries it applies to; each also gets
    "score", the mean of its accuracy metrics."""
    def summarise(group: list[EntryScore]) -> dict:
        names = sorted({k for e in group for k, v in e.scores.items() if isinstance(v, (int, float))})
        out = {k: _mean(e.scores.get(k) for e in group) for k in names}
        out["score"] = _mean(v for e in group for k, v in e.scores.items() if k in M.ACCURACY_METRICS)
        out["n"] = len(group)
        return out

    cats: dict[str, list[EntryScore]] = {}
    for e in entries:
        cats.setdefault(e.category, []).append(e)
    return summarise(entries), {c: summarise(g) for c, g in cats.items()}


def run_bench(source, entries: list[BenchEntry], *, detector: DetectorConfig | None = None, progress: bool = True,
              desc: str | None = None, samples: int = 8) -> BenchResult:
    """Score ``source`` on every entry (with a tqdm progress bar); keep a few frames of the first entry of
    ``samples`` categories for the contact sheet."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    scores, sampled = [], set()
    bar = tqdm(entries, desc=desc or f"bench {source.name}", disable=not progress, unit="video")
    for entry in bar:
        keep = entry.category not in sampled and len(sampled) < samples
        if keep:
            sampled.add(entry.category)
        scores.append(score_entry(entry, source, detector=detector, keep_frames=4 if keep else 0))
        if scores[-1].error:
            bar.write(f"{source.name}: {entry.id} failed (scored 0): {scores[-1].error}")
    overall, per_cat = aggregate(scores)
    return BenchResult(source.name, scores, overall, per_cat, seconds=time.perf_counter() - start)


def add_frechet(results: list[BenchResult], reference: BenchResult) -> None:
    """Set each result's Fréchet distance of detector features to ``reference``'s (the simulator's)."""
    ref = np.array([e.features for e in reference.entries])
    for r in results:
        r.frechet = M.frechet_distance(np.array([e.features for e in r.entries]), ref)


__all__ = ["SimulatorSource", "NullSource", "PipelineSource", "EntryScore", "BenchResult", "score_video",
           "score_entry", "aggregate", "run_bench", "add_frechet", "seams_of"]
