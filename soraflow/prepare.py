"""Turn a folder of real videos and images into a training set: ``soraflow data prepare IN OUT``.

For every video: split at scene cuts (PySceneDetect's adaptive detector, which follows camera
motion without calling it a cut), cut each scene into clips of at most ``max_seconds`` at ``fps``,
scale each to an aspect bucket near the source's own aspect (no square crops unless asked), drop
clips that are too short, static or black, and attach a caption. Images become one-frame clips.

The result is the dataset layout every trainer reads (the same as ``soraflow world dataset``):
``OUT/clips/ID.mp4`` (lossless H.264) or ``.png``, ``OUT/manifest.jsonl`` (one record per clip:
id, path, long/short captions, size, fps, frames, source and its time span), plus
``OUT/prepare.json`` (the settings and what each source gave: the resume state) and
``OUT/contact_sheet.png`` (a middle frame of each clip, to look at before training).

Captions, first found wins: a sidecar ``NAME.txt`` or ``NAME.json`` beside the source
(``{"caption": ...}`` or ``{"long": ..., "short": ...}``); a ``captions.jsonl`` in IN
(``{"file": "relative/path.mp4", "caption": ...}`` per line); an OpenAI-compatible vision
endpoint (``caption_url``), shown three frames of each clip, as Sora's report re-captions its
training videos. ``recaption`` asks the endpoint for every clip, with the source's own caption as
a hint. A clip that ends with no caption is dropped and counted, unless ``keep_uncaptioned``
(for VAE training, which needs none).

Resumable: a source already in ``prepare.json`` with the same size and modification time is not
done again; a run stopped at any point continues where it was. A file that cannot be read is
reported and skipped, never fatal.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_path, write_json
from .errors import DataError, InputError, SoraflowError, VideoError
from .video import IMAGE_SUFFIXES, VIDEO_SUFFIXES

STATE_NAME = "prepare.json"
CAPTIONS_NAME = "captions.jsonl"
ASPECT_TOLERANCE = 0.07  # |log aspect| within which sizes count as the same shape (the largest is taken): a 7% crop at most
CAPTION_PROMPT = (
    "These are three frames (start, middle, end) of one video clip. Describe the clip in one or two "
    "plain sentences for training a text-to-video model: the main subjects, their colours and what "
    "they do, how they move, the setting and the camera's motion. No preamble."
)


@dataclass
class PrepareConfig:
    fps: float = 8.0  # frame rate of the clips
    max_seconds: float = 5.0  # longer scenes are cut into clips of at most this
    min_seconds: float = 1.0  # shorter clips (and scenes) are dropped
    area: int = 128 * 128  # pixels per frame of the buckets (sides are multiples of 16, aspect near the source's)
    buckets: tuple[tuple[int, int], ...] = ()  # (height, width) buckets to choose from instead of the area rule
    square: bool = False  # centre-crop to squares
    detector: str = "adaptive"  # PySceneDetect detector: adaptive (follows camera motion) or content
    cut_threshold: float | None = None  # the detector's threshold (adaptive: 2.0, content: 27)
    min_motion: float = 0.5  # mean absolute change between frames (0-255) below which a clip is static
    black_level: float = 16.0  # mean brightness (0-255) below which a clip is black
    keep_uncaptioned: bool = False  # keep clips with no caption (for VAE training)
    caption_url: str | None = None  # OpenAI-compatible endpoint for captions
    caption_model: str | None = None
    recaption: bool = False  # ask the endpoint for every clip, not only the uncaptioned

    def settings(self) -> dict:
        """What decides the clips (a resume with other values would mix two datasets)."""
        d = asdict(self)
        for k in ("keep_uncaptioned", "caption_url", "caption_model", "recaption"):
            d.pop(k)
        d["buckets"] = [list(b) for b in self.buckets]
        return d

    def check(self) -> None:
        if not (math.isfinite(self.fps) and 0 < self.fps <= 60):
            raise InputError(f"--fps {self.fps}: give 0 < fps <= 60")
        if not (0 < self.min_seconds <= self.max_seconds):
            raise InputError(f"--min-seconds {self.min_seconds} / --max-seconds {self.max_seconds}: need 0 < min <= max")
        if self.area < 16 * 16:
            raise InputError(f"--area {self.area}: at least 16x16 pixels")
        for h, w in self.buckets:
            if h % 16 or w % 16 or h < 16 or w < 16:
                raise InputError(f"bucket {w}x{h}: sides must be multiples of 16")
        if self.detector not in ("adaptive", "content"):
            raise InputError(f"--detector {self.detector!r}: adaptive or content")
        if self.caption_url and not self.caption_url.startswith(("http://", "https://")):
            raise InputError(f"--caption-url {self.caption_url!r} must start with http:// or https://")
        if self.recaption and not self.caption_url:
            raise InputError("--recaption needs --caption-url")


@dataclass
class PrepareSummary:
    out: Path
    sources: int  # source files seen
    done_before: int  # sources a previous run had already done
    clips: int  # clips in the dataset now (images included)
    images: int
    dropped: Counter = field(default_factory=Counter)  # reason -> clips dropped (this run and before)
    unreadable: list[str] = field(default_factory=list)  # "file: reason"

    def lines(self) -> list[str]:
        out = [f"{self.out}: {self.clips} clips ({self.images} images) from {self.sources} files"
               + (f" ({self.done_before} done before)" if self.done_before else "")]
        if self.dropped:
            out.append("dropped: " + ", ".join(f"{n} {why}" for why, n in sorted(self.dropped.items())))
        if self.unreadable:
            out.append(f"skipped {len(self.unreadable)} unreadable file(s): " + "; ".join(self.unreadable))
        return out


# ---------------------------------------------------------------------------------------------- sizes


def bucket_for(height: int, width: int, cfg: PrepareConfig) -> tuple[int, int]:
    """The (height, width) a source of this size becomes: the bucket nearest its aspect ratio.

    Without explicit buckets, every size with sides in multiples of 16 and at most ``cfg.area``
    pixels is one; among those nearest the source's aspect (in log ratio) the largest wins, never
    larger than the source itself (no upscaling past its native size, but for the 16-px floor).
    """
    aspect = math.log(width / height)
    if cfg.square:
        side = max(16, min(int(math.sqrt(cfg.area)) // 16 * 16, max(16, min(height, width) // 16 * 16)))
        return side, side
    if cfg.buckets:
        return min(cfg.buckets, key=lambda hw: (abs(math.log(hw[1] / hw[0]) - aspect), -hw[0] * hw[1]))
    best = None
    for h in range(16, max(16, min(height, int(cfg.area / 16))) + 1, 16):
        w_exact = h * width / height
        for w in {max(16, int(w_exact // 16) * 16), max(16, int(math.ceil(w_exact / 16)) * 16)}:
            if h * w > cfg.area or (w > max(16, width) or h > max(16, height)):
                continue
            off = abs(math.log(w / h) - aspect)
            key = (0.0 if off <= ASPECT_TOLERANCE else off, -h * w)  # near the aspect, the largest
            if best is None or key < best[0]:
                best = (key, (h, w))
    return best[1] if best else (16, 16)


# ---------------------------------------------------------------------------------------------- scenes


def detect_scenes(path: Path, cfg: PrepareConfig) -> tuple[list[tuple[float, float]], float]:
    """Scene spans (start, end) in seconds, and the video's duration, by PySceneDetect."""
    import scenedetect
    from scenedetect.backends.pyav import VideoStreamAv

    # PyAV's backend, FFmpeg's log callbacks left silent (its default restores them: every later
    # encode would print x264's statistics); single-threaded decoding is what that mode requires.
    video = VideoStreamAv(str(path), threading_mode="NONE", suppress_output=True)
    manager = scenedetect.SceneManager()
    manager.auto_downscale = True  # detection at ~256 px: the same cuts, several times faster
    if cfg.detector == "adaptive":
        detector = scenedetect.AdaptiveDetector(adaptive_threshold=cfg.cut_threshold or 2.0, min_scene_len=8)
    else:
        detector = scenedetect.ContentDetector(threshold=cfg.cut_threshold or 27.0, min_scene_len=8)
    manager.add_detector(detector)
    manager.detect_scenes(video=video, show_progress=False)
    duration = float(video.duration.seconds) if video.duration is not None else 0.0
    scenes = [(float(a.seconds), float(b.seconds)) for a, b in manager.get_scene_list(start_in_scene=True)]
    return scenes or [(0.0, duration)], duration


def clip_spans(scenes: list[tuple[float, float]], cfg: PrepareConfig) -> tuple[list[tuple[int, float, int]], int]:
    """(scene index, start seconds, frames) of every clip the scenes give, and how many were too short.

    A scene is cut into equal pieces of at most ``max_seconds``; frames are ``1 + 4k`` (what the
    causal VAE encodes whole).
    """
    from .data import causal_frames

    spans, short = [], 0
    for i, (start, end) in enumerate(scenes):
        length = end - start
        if length + 1e-6 < cfg.min_seconds:
            short += 1
            continue
        pieces = max(1, math.ceil(length / cfg.max_seconds - 1e-9))
        piece = length / pieces
        for k in range(pieces):
            frames = causal_frames(int(piece * cfg.fps + 1e-6))
            if frames < max(1, causal_frames(int(cfg.min_seconds * cfg.fps + 1e-6))):
                short += 1
                continue
            spans.append((i, start + k * piece, frames))
    return spans, short


def clip_problem(frames: np.ndarray, cfg: PrepareConfig) -> str | None:
    """"static" or "black" when a clip is one, else None."""
    if frames.mean() < cfg.black_level:
        return "black"
    if len(frames) > 1:
        motion = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean()
        if motion < cfg.min_motion:
            return "static"
    return None


# ---------------------------------------------------------------------------------------------- captions


def read_sidecar(path: Path) -> dict[str, str]:
    """Captions from NAME.txt / NAME.json beside ``path`` ({} when there is none or it is unusable)."""
    txt, js = path.with_suffix(".txt"), path.with_suffix(".json")
    if txt.is_file():
        text = " ".join(txt.read_text(encoding="utf-8", errors="replace").split())
        return {"long": text} if text else {}
    if js.is_file():
        try:
            rec = json.loads(js.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            return {}
        return _captions_of(rec) if isinstance(rec, dict) else {}
    return {}


def _captions_of(rec: dict) -> dict[str, str]:
    out = {}
    for key, name in (("caption", "long"), ("long", "long"), ("short", "short")):
        value = rec.get(key)
        if isinstance(value, str) and value.strip() and name not in out:
            out[name] = " ".join(value.split())
    return out


def read_captions_file(in_dir: Path, warn) -> dict[str, dict[str, str]]:
    """``captions.jsonl`` in IN: relative path -> captions. Bad lines are reported and skipped."""
    path = in_dir / CAPTIONS_NAME
    out: dict[str, dict[str, str]] = {}
    if not path.is_file():
        return out
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            name = rec.get("file") or rec.get("path")
        except (ValueError, AttributeError):
            rec, name = None, None
        captions = _captions_of(rec) if isinstance(rec, dict) else {}
        if not isinstance(name, str) or not captions:
            warn(f"{path}:{lineno}: not a caption record ({{\"file\": ..., \"caption\": ...}}); skipped")
            continue
        out[Path(name).as_posix()] = captions
    return out


class Captioner:
    """Captions clips through an OpenAI-compatible vision endpoint (the expander's client)."""

    def __init__(self, base_url: str, model: str | None = None, *, api_key: str | None = None, timeout: float = 120.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model or os.environ.get("SORAFLOW_CAPTION_MODEL", "default")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout

    def caption(self, frames: np.ndarray, hint: str | None = None) -> str:
        from PIL import Image

        from .prompts import chat_completion

        picks = sorted({0, len(frames) // 2, len(frames) - 1})
        content: list[dict] = [{"type": "text", "text": CAPTION_PROMPT + (f" The uploader described it as: {hint}" if hint else "")}]
        for i in picks:
            buf = io.BytesIO()
            Image.fromarray(frames[i]).save(buf, format="JPEG", quality=90)
            url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
            content.append({"type": "image_url", "image_url": {"url": url}})
        body = {"model": self.model, "messages": [{"role": "user", "content": content}], "temperature": 0.2, "max_tokens": 200}
        text = chat_completion(self.url, body, api_key=self.api_key, timeout=self.timeout, what="captioning endpoint",
                               hint="is the server running? or give captions in NAME.txt / captions.jsonl")
        text = " ".join(str(text).split())
        if not text:
            raise SoraflowError(f"captioning endpoint {self.url} returned an empty caption")
        return text


# ---------------------------------------------------------------------------------------------- the run


def list_sources(in_dir: Path) -> list[Path]:
    files = [p for p in sorted(in_dir.rglob("*")) if p.is_file() and not p.name.startswith(".")
             and p.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES]
    return files


def _clip_id(rel: str, scene: int | None = None, piece: int | None = None) -> str:
    stem = rel.rsplit(".", 1)[0].replace("/", "__").replace(" ", "_")
    return stem if scene is None else f"{stem}-s{scene:03d}-{piece:02d}"


def prepare_dataset(in_dir: str | os.PathLike, out_dir: str | os.PathLike, cfg: PrepareConfig | None = None, *,
                    progress: bool = True, warn=None) -> PrepareSummary:
    """Prepare ``in_dir`` into the dataset ``out_dir`` (see the module docstring). ``warn(msg)``
    receives each report (a file skipped, a bad caption line); default: printed to stderr."""
    import sys

    from tqdm.auto import tqdm

    from .atomic import check_output_dir

    cfg = cfg or PrepareConfig()
    cfg.check()
    warn = warn or (lambda msg: print(msg, file=sys.stderr, flush=True))
    in_dir = Path(in_dir)
    if not in_dir.is_dir():
        raise DataError(f"input folder {in_dir} does not exist")
    out = check_output_dir(out_dir, "OUT_DIR")
    if out.resolve() == in_dir.resolve() or out.resolve().is_relative_to(in_dir.resolve()):
        raise InputError(f"OUT_DIR {out} is inside IN_DIR {in_dir}: its clips would become sources; choose another folder")
    sources = list_sources(in_dir)
    if not sources:
        raise DataError(f"{in_dir} has no videos or images ({', '.join(sorted(VIDEO_SUFFIXES | IMAGE_SUFFIXES))})")
    state_path = out / STATE_NAME
    state = {"settings": cfg.settings(), "sources": {}}
    if state_path.is_file():
        try:
            saved = json.loads(state_path.read_text())
        except ValueError:
            raise DataError(f"{state_path} is not JSON; remove it to start over") from None
        if saved.get("settings") != state["settings"]:
            diff = sorted(k for k in state["settings"] if saved.get("settings", {}).get(k) != state["settings"][k])
            raise InputError(f"{out} was prepared with other settings ({', '.join(diff)}); use a new OUT_DIR or the same options")
        state = saved
    (out / "clips").mkdir(parents=True, exist_ok=True)
    listed = read_captions_file(in_dir, warn)
    captioner = Captioner(cfg.caption_url, cfg.caption_model) if cfg.caption_url else None
    done_before = 0
    bar = tqdm(sources, desc="prepare", unit="file", disable=not progress, dynamic_ncols=True)
    for path in bar:
        rel = path.relative_to(in_dir).as_posix()
        stat = path.stat()
        stamp = {"size": stat.st_size, "mtime": stat.st_mtime}
        old = state["sources"].get(rel)
        if old is not None and old.get("stamp") == stamp:
            done_before += 1
            continue
        bar.set_postfix_str(rel[-40:])
        captions = read_sidecar(path) or listed.get(rel, {})
        try:
            entry = _prepare_source(path, rel, out, cfg, captions, captioner)
        except (VideoError, DataError) as err:  # this file; a failing caption endpoint stops the run (resumable)
            entry = {"records": [], "dropped": {}, "error": str(err)}
            warn(f"skipped unreadable file {rel}: {err}")
        entry["stamp"] = stamp
        state["sources"][rel] = entry
        write_json(state_path, state)
        _write_manifest(out, state)
    bar.close()
    _write_manifest(out, state)
    records = [r for e in state["sources"].values() for r in e["records"]]
    if records:
        write_contact_sheet(out, records)
    dropped = Counter()
    for e in state["sources"].values():
        dropped.update(e.get("dropped", {}))
    unreadable = [f"{rel}: {e['error']}" for rel, e in state["sources"].items() if e.get("error")]
    return PrepareSummary(out=out, sources=len(sources), done_before=done_before, clips=len(records),
                          images=sum(1 for r in records if r["frames"] == 1), dropped=dropped, unreadable=unreadable)


def _prepare_source(path: Path, rel: str, out: Path, cfg: PrepareConfig, captions: dict, captioner) -> dict:
    from . import video

    info = video.probe(path)
    size = bucket_for(info.height, info.width, cfg)
    dropped: Counter = Counter()
    records = []
    if path.suffix.lower() in IMAGE_SUFFIXES:
        frames = video.read_image(path, size=size, crop="center")[None]
        plan = [(None, None, 0.0, frames)]
    else:
        try:
            scenes, _ = detect_scenes(path, cfg)
        except SoraflowError:
            raise
        except Exception as err:  # PySceneDetect's and PyAV's own errors on a damaged file
            raise VideoError(f"{path} is not a video that can be read (truncated or corrupt?): {err}") from None
        spans, short = clip_spans(scenes, cfg)
        dropped["too short"] += short
        plan = []
        pieces: Counter = Counter()
        for scene, start, n in spans:
            frames = video.read_video(path, fps=cfg.fps, size=size, crop="center", start=start, max_frames=n)
            if len(frames) < n:  # the file ended early (a truncated tail): keep what decodes whole
                from .data import causal_frames

                frames = frames[: causal_frames(len(frames))]
                if len(frames) < max(2, causal_frames(int(cfg.min_seconds * cfg.fps + 1e-6))):
                    dropped["too short"] += 1
                    continue
            plan.append((scene, pieces[scene], start, frames))
            pieces[scene] += 1
    for scene, piece, start, frames in plan:
        problem = clip_problem(frames, cfg)
        if problem:
            dropped[problem] += 1
            continue
        clip_captions = dict(captions)
        if captioner is not None and (cfg.recaption or not clip_captions):
            clip_captions["long"] = captioner.caption(frames, hint=captions.get("long"))
        if not clip_captions and not cfg.keep_uncaptioned:
            dropped["no caption"] += 1
            continue
        cid = _clip_id(rel, scene, piece)
        image = len(frames) == 1 and scene is None
        target = out / "clips" / f"{cid}{'.png' if image else '.mp4'}"
        if image:
            video.write_image(target, frames[0])
        else:
            video.write_video(target, frames, fps=cfg.fps, lossless=True)
        record = {"id": cid, "path": f"clips/{target.name}", **clip_captions, "height": int(frames.shape[1]),
                  "width": int(frames.shape[2]), "fps": cfg.fps if not image else 0, "frames": int(len(frames)),
                  "source": rel}
        if not image:
            record.update(start=round(start, 3), end=round(start + len(frames) / cfg.fps, 3))
        records.append(record)
    return {"records": records, "dropped": dict(dropped), "error": None}


def _write_manifest(out: Path, state: dict) -> None:
    lines = [json.dumps(r) for e in state["sources"].values() for r in e["records"]]
    with atomic_path(out / "manifest.jsonl") as tmp:
        tmp.write_text("".join(line + "\n" for line in lines))


def write_contact_sheet(out: Path, records: list[dict], *, cell: int = 128, columns: int = 8, limit: int = 64) -> Path:
    """OUT/contact_sheet.png: the middle frame of (up to ``limit``) clips with their ids."""
    from PIL import Image, ImageDraw

    from . import video

    shown = records[:limit]
    rows = math.ceil(len(shown) / columns)
    sheet = Image.new("RGB", (columns * cell, rows * (cell + 14)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for i, rec in enumerate(shown):
        path = out / rec["path"]
        try:
            frames = video.read_video(path, max_frames=rec["frames"]) if rec["frames"] > 1 else video.read_image(path)[None]
        except SoraflowError:
            continue
        thumb = Image.fromarray(frames[len(frames) // 2])
        thumb.thumbnail((cell, cell))
        x, y = (i % columns) * cell, (i // columns) * (cell + 14)
        sheet.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
        label = f"{rec['id'][:20]} {rec['frames']}f"
        draw.text((x + 2, y + cell), label, fill=(220, 220, 220))
    path = out / "contact_sheet.png"
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


__all__ = ["Captioner", "PrepareConfig", "PrepareSummary", "bucket_for", "clip_spans", "detect_scenes", "prepare_dataset",
           "write_contact_sheet"]
