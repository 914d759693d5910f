"""The SoraWorld dataset writer: many captioned clips, lossless, multi-process and resumable.

Layout of a dataset folder::

    DIR/dataset.json        the settings it was written with (a rerun must use the same ones)
    DIR/manifest.jsonl      one JSON object per finished clip (fields: docs/world.md)
    DIR/clips/000123.mp4    lossless RGB H.264 (1-frame clips: .png)
    DIR/clips/000123.json   the clip's manifest entry and its per-frame ground truth
    DIR/.lock               held by the running writer (one writer per folder)

Crash safety (a ``kill -9`` at any moment leaves a valid dataset that a rerun completes):

1. a worker writes the clip file atomically, then its sidecar JSON atomically; a clip is finished
   exactly when its sidecar exists;
2. the parent appends the manifest line with ONE ``write`` on an ``O_APPEND`` descriptor and
   fsyncs, so the manifest only ever lists finished clips;
3. a rerun drops a torn last line (should a power cut leave one), adds finished clips whose line
   never made it (killed between steps 1 and 2), deletes temporary files, renders the rest, and
   finally rewrites the manifest sorted by id (atomically).

Clip ``i`` is a pure function of (settings, i): its seed, size, length, spec and captions come
from ``seed * 10_000_000 + i``, so a resumed dataset equals an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import PROBE_PREFIX, check_output_dir, write_json, write_text
from ..errors import DataError, InputError
from ..validate import number
from .clip import MAX_FPS, MAX_SECONDS, MIN_FPS, check_render_args, frames_for, render_clip
from .spec import ShotSpec, background_kind, random_spec

SETTINGS_FILE = "dataset.json"
MANIFEST = "manifest.jsonl"
CLIPS = "clips"
SEED_STRIDE = 10_000_000  # clip seed = seed * SEED_STRIDE + index
LOCK_GRACE_S = 5.0  # how long a new writer waits for the lock of a writer that was just killed


MAX_CLIPS = 10_000_000  # clip i is seeded seed * 10^7 + i: more would repeat another seed's clips


@dataclass
class DatasetConfig:
    n: int = 20000  # number of clips (ids 0 .. n-1); a rerun with a larger n extends the dataset
    sizes: list[tuple[int, int]] = field(default_factory=lambda: [(128, 128)])  # (height, width) choices
    seconds: tuple[float, float] = (1.0, 6.0)  # clip length drawn uniformly from this range
    fps: float = 8
    seed: int = 0  # base seed: a different seed gives a different dataset
    image_fraction: float = 0.1  # share of single images (1-frame clips, written as PNG)
    background: str | None = None  # every clip on this backdrop (any name, concept ones included); None: drawn

    def check(self) -> "DatasetConfig":
        self.fps = number("fps", self.fps, lo=MIN_FPS, hi=MAX_FPS)
        if float(self.fps).is_integer():
            self.fps = int(self.fps)  # the manifest says "fps": 8, not 8.0
        number("--n", self.n, lo=1, hi=MAX_CLIPS, integer=True)
        number("--image-fraction", self.image_fraction, lo=0, hi=1)
        for value in self.seconds:
            number("clip length (seconds)", value, lo=0, lo_open=True, hi=MAX_SECONDS)
        if not self.sizes:
            raise InputError("give at least one clip size")
        lo, hi = self.seconds
        if not 0 < lo <= hi:
            raise InputError(f"clip length range {lo:g}-{hi:g} s must be positive and increasing")
        for size in self.sizes:
            check_render_args(tuple(size), self.fps, frames_for(hi, self.fps))
        if not 0 <= self.image_fraction <= 1:
            raise InputError(f"image fraction {self.image_fraction:g} must be between 0 and 1")
        if self.background is not None:
            background_kind(self.background)  # names the choices when unknown
        return self

    def settings(self) -> dict:
        """Everything that determines clip i (all but n), as stored in dataset.json."""
        d = asdict(self)
        d.pop("n")
        d["sizes"] = [list(s) for s in self.sizes]
        d["seconds"] = list(self.seconds)
        if d["background"] is None:
            del d["background"]  # so that datasets written before the option keep their settings
        return d


def clip_id(index: int) -> str:
    return f"{index:06d}"


@dataclass
class ClipPlan:
    index: int
    seed: int
    size: tuple[int, int]
    num_frames: int


def plan_clip(config: DatasetConfig, index: int) -> tuple[ClipPlan, random.Random]:
    """Seed, size and length of clip ``index``; the returned rng continues into spec and captions."""
    seed = config.seed * SEED_STRIDE + index
    rng = random.Random(seed)
    size = tuple(rng.choice(config.sizes))
    image = rng.random() < config.image_fraction
    seconds = rng.uniform(*config.seconds)
    num_frames = 1 if image else max(2, frames_for(seconds, config.fps))
    return ClipPlan(index, seed, size, num_frames), rng


def captions_for(spec, rng: random.Random) -> tuple[str, str]:
    """(short prompt, long caption) of a spec, with varied wording drawn from ``rng``."""
    from . import captions

    return captions.short_prompt(spec, rng), captions.long_caption(spec, rng)


def make_clip(config: DatasetConfig, index: int):
    """Render clip ``index`` of a dataset: (Clip, manifest entry without the path)."""
    plan, rng = plan_clip(config, index)
    spec = random_spec(rng, config.background)
    if plan.num_frames == 1:
        # A still cannot show a camera move or a cut, so its caption must not claim one.
        spec.camera, spec.shots = "static", [ShotSpec("wide")]
    short, long = captions_for(spec, rng)
    clip = render_clip(spec, plan.size, config.fps, num_frames=plan.num_frames, seed=plan.seed)
    entry = {"id": clip_id(index), "short": short, "long": long, "height": plan.size[0], "width": plan.size[1],
             "fps": config.fps, "frames": plan.num_frames, "seed": plan.seed, "spec": spec.to_dict()}
    return clip, entry


def write_clip(out_dir: Path, config: DatasetConfig, index: int) -> dict:
    """Render and store clip ``index`` (clip file, then sidecar); return its manifest entry."""
    from ..video import write_image, write_video

    clip, entry = make_clip(config, index)
    name = entry["id"]
    suffix = ".png" if clip.num_frames == 1 else ".mp4"
    path = out_dir / CLIPS / f"{name}{suffix}"
    if clip.num_frames == 1:
        write_image(path, clip.frames[0])  # PNG: lossless
    else:
        write_video(path, clip.frames, config.fps, lossless=True)
    entry = {"id": name, "path": f"{CLIPS}/{name}{suffix}", **{k: v for k, v in entry.items() if k != "id"},
             "truth": f"{CLIPS}/{name}.json"}
    # The sidecar marks the clip finished, so it is written last (and atomically).
    write_text(out_dir / CLIPS / f"{name}.json",
               json.dumps({"entry": entry, "truth": clip.truth.to_dict()}, separators=(",", ":")) + "\n")
    return entry


# ---------------------------------------------------------------- manifest


def read_manifest(out_dir: str | os.PathLike) -> list[dict]:
    """The manifest's entries. A torn last line (a write cut by a crash) is skipped."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{path} does not exist: not a SoraWorld dataset folder")
    entries, lines = [], path.read_bytes().split(b"\n")
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            if n < len(lines) - 1:  # only the last line may be torn; anything else is damage
                raise DataError(f"{path}: line {n + 1} is not valid JSON") from None
    return entries


def read_truth(out_dir: str | os.PathLike, entry: dict):
    """The per-frame ground truth (:class:`~soraflow.world.truth.ClipTruth`) of a manifest entry."""
    from .truth import ClipTruth

    path = Path(out_dir) / entry["truth"]
    try:
        return ClipTruth.from_dict(json.loads(path.read_text())["truth"])
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"cannot read the ground truth {path}: {err}") from None


def _readable(out_dir: Path, entry: dict) -> bool:
    """Whether a finished clip's file is there and whole: its packets are counted, not decoded
    (milliseconds a clip, so a resume checks every clip without decoding the dataset)."""
    from ..errors import VideoError
    from ..video import probe

    path = out_dir / str(entry.get("path", ""))
    try:
        return path.is_file() and path.stat().st_size > 0 and probe(path).frames > 0
    except (VideoError, OSError, ValueError):
        return False


def _append(fd: int, entry: dict) -> None:
    os.write(fd, (json.dumps(entry) + "\n").encode())  # one write on O_APPEND: never interleaved or torn
    os.fsync(fd)


def _rewrite_manifest(out_dir: Path, entries: dict[str, dict]) -> None:
    text = "".join(json.dumps(entries[k]) + "\n" for k in sorted(entries, key=int))
    write_text(out_dir / MANIFEST, text)


# ---------------------------------------------------------------- the writer

_WORKER: tuple[Path, DatasetConfig] | None = None


def _init_worker(out_dir: Path, config: DatasetConfig) -> None:
    global _WORKER
    _WORKER = (out_dir, config)


def _work(index: int) -> dict:
    return write_clip(*_WORKER, index)


@dataclass
class DatasetSummary:
    total: int  # clips in the dataset now
    written: int  # clips rendered by this run
    skipped: int  # clips found finished
    seconds: float  # wall time of the rendering

    @property
    def clips_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


def write_dataset(out_dir: str | os.PathLike, config: DatasetConfig, *, workers: int = 2, progress: bool = True,
                  chunksize: int = 8) -> DatasetSummary:
    """Write (or complete) a SoraWorld dataset in ``out_dir``. See the module docstring."""
    config.check()
    out_dir = check_output_dir(out_dir, "--out")
    try:
        (out_dir / CLIPS).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create {out_dir / CLIPS}: {err.strerror}") from None
    if not os.access(out_dir, os.W_OK):
        raise InputError(f"cannot write into {out_dir}")

    # One writer per folder: the lock dies with its process, so a killed run never blocks a rerun.
    # Its forked workers hold it too, and after a kill -9 they take a moment to go: wait a little.
    import fcntl

    lock = open(out_dir / ".lock", "w")
    deadline = time.monotonic() + LOCK_GRACE_S
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if time.monotonic() > deadline:
                lock.close()
                raise InputError(f"{out_dir} is being written by another process") from None
            time.sleep(0.1)
    try:
        return _write_locked(out_dir, config, workers=workers, progress=progress, chunksize=chunksize)
    finally:
        lock.close()


def _write_locked(out_dir: Path, config: DatasetConfig, *, workers: int, progress: bool,
                  chunksize: int) -> DatasetSummary:
    settings_path = out_dir / SETTINGS_FILE
    if settings_path.is_file():
        try:
            old = json.loads(settings_path.read_text())
        except (OSError, ValueError) as err:
            raise InputError(f"{settings_path} is damaged ({err}); delete it to resume with these settings, "
                             f"or use a new --out") from None
        if not isinstance(old, dict):
            raise InputError(f"{settings_path} is not a JSON object; delete it to resume with these settings, "
                             f"or use a new --out")
        if old != config.settings():
            changed = sorted(k for k in set(old) | set(config.settings()) if old.get(k) != config.settings().get(k))
            raise InputError(f"{out_dir} was written with different settings ({', '.join(changed)}); "
                             f"rerun with the same settings or use a new --out")
    else:
        write_json(settings_path, config.settings())

    # Recover: temporary files of killed writes, torn manifest lines, finished clips with no line.
    for pattern in (".*.tmp*", f"{PROBE_PREFIX}*"):
        for tmp in (out_dir / CLIPS).glob(pattern):
            tmp.unlink(missing_ok=True)
    for tmp in out_dir.glob(f".{MANIFEST}.*"):
        tmp.unlink(missing_ok=True)
    entries = {e["id"]: e for e in read_manifest(out_dir)} if (out_dir / MANIFEST).is_file() else {}
    finished = {p.stem for p in (out_dir / CLIPS).glob("*.json")}
    for name in sorted(finished - set(entries)):
        try:
            entries[name] = json.loads((out_dir / CLIPS / f"{name}.json").read_text())["entry"]
        except (json.JSONDecodeError, KeyError):
            finished.discard(name)  # not ours or damaged by hand: render it again
    for name in set(entries) - finished:  # listed, but its sidecar was deleted by hand
        del entries[name]
    for name in [n for n, e in entries.items() if not _readable(out_dir, e)]:  # damaged since: render it again
        del entries[name]
    _rewrite_manifest(out_dir, entries)

    todo = [i for i in range(config.n) if clip_id(i) not in entries]
    skipped = config.n - len(todo)
    start = time.perf_counter()
    fd = os.open(out_dir / MANIFEST, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        from tqdm import tqdm

        with tqdm(total=config.n, initial=skipped, unit="clip", disable=not progress, dynamic_ncols=True,
                  desc="SoraWorld") as bar:
            if workers <= 1 or len(todo) <= 1:
                results = map(lambda i: write_clip(out_dir, config, i), todo)
                for entry in results:
                    _append(fd, entry)
                    entries[entry["id"]] = entry
                    bar.update()
            else:
                import multiprocessing

                with multiprocessing.Pool(
                        workers, initializer=_init_worker, initargs=(out_dir, config)) as pool:
                    for entry in pool.imap_unordered(_work, todo, chunksize=chunksize):
                        _append(fd, entry)
                        entries[entry["id"]] = entry
                        bar.update()
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - start
    _rewrite_manifest(out_dir, entries)  # sorted by id, same content
    return DatasetSummary(total=len(entries), written=len(todo), skipped=skipped, seconds=elapsed)
