"""Training data for the DiT: the latent cache, the dataset over it, and native-size bucketed batches.

Sora trains on videos at their native size instead of square crops (its report; docs/training.md). Here:

1. **Latent cache** (:func:`build_latent_cache`, ``soraflow train cache-latents``): every clip is encoded
   by the VAE *once* (the VAE is the expensive part of a training step on a CPU) into safetensors
   shards, together with the text-encoder embeddings of its captions. ``CACHE/index.json`` lists,
   per entry: shard, key, latent shape, captions, fps, source path and a CRC32 of the stored latent.
2. **LatentDataset** reads the cache. A missing shard, an unreadable shard or an entry whose bytes do
   not match their CRC is reported (a :class:`DataWarning`) and skipped, never fed to the model.
3. **BucketSampler** groups samples of one latent shape into a batch, with the batch size set by a
   token budget (a 1-frame 64x64 image fits many times into the budget of one 33-frame 128x128 clip),
   shuffled deterministically from (seed, epoch) and resumable mid-epoch.

Cache layout::

    CACHE/index.json             {"format": 1, "vae": {...}, "text": {...}, "entries": [...], "skipped": [...]}
    CACHE/shard_00000.safetensors  "<key>/latent" (C, T, H, W) normalized latents,
                                   "<key>/text/<kind>" (L, D) caption token features (kind: long, short)
    CACHE/null_text.safetensors  "tokens" (L, D): the empty caption (the unconditional input of CFG)
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .atomic import atomic_path, check_output_dir, write_json
from . import modes
from .errors import DataError, InputError, VideoError
from .latents import encode_frames
from .memory import check_fits
from .validate import number
from .video import IMAGE_SUFFIXES, VIDEO_SUFFIXES  # the one list of what the readers open

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
NULL_TEXT_NAME = "null_text.safetensors"
CACHE_FORMAT = 1
# Latent H and W must be even for the DiT's 1x2x2 patches and pixels are 8x the latent grid.
PIXEL_MULTIPLE = 16


class DataWarning(UserWarning):
    """A clip or cache entry that was skipped (corrupt, missing, unreadable)."""


def _warn(msg: str) -> None:
    warnings.warn(msg, DataWarning, stacklevel=3)


# ----------------------------------------------------------------------------------------------
# Cache entries and the writer


@dataclass
class CacheEntry:
    """One cached clip: where its latent and caption features live and what it was made from."""

    id: str  # unique id of the clip (manifest id, or path relative to the data folder)
    shard: str  # shard file name inside the cache folder
    key: str  # tensor key prefix inside the shard ("<key>/latent", "<key>/text/<kind>")
    shape: tuple[int, int, int, int]  # latent (C, T, H, W)
    captions: dict[str, str] = field(default_factory=dict)  # kind ("long", "short") -> caption text
    fps: float = 0.0  # frame rate of the encoded frames
    frames: int = 0  # number of pixel frames encoded (1 + 4k for the causal VAE; 1 for an image)
    height: int = 0  # pixel height encoded
    width: int = 0  # pixel width encoded
    source: str = ""  # the clip's path (relative to the data folder when it has one)
    crc32: int = 0  # CRC32 of the stored latent bytes, to detect corruption

    @classmethod
    def from_dict(cls, d: dict) -> "CacheEntry":
        d = dict(d)
        d["shape"] = tuple(int(v) for v in d["shape"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def tokens(self, patch_size: Sequence[int] = (1, 2, 2)) -> int:
        return latent_tokens(self.shape, patch_size)


def latent_tokens(shape: Sequence[int], patch_size: Sequence[int] = (1, 2, 2)) -> int:
    """DiT tokens of a latent (C, T, H, W) or (T, H, W) grid cut into ``patch_size`` patches."""
    t, h, w = shape[-3:]
    pt, ph, pw = patch_size
    return math.ceil(t / pt) * math.ceil(h / ph) * math.ceil(w / pw)


def _crc(t: torch.Tensor) -> int:
    # Through uint8 so any dtype (bf16 has no numpy equivalent) hashes its exact bytes.
    return zlib.crc32(t.contiguous().view(torch.uint8).numpy().tobytes()) if t.numel() else 0


class LatentCacheWriter:
    """Append entries to a latent cache; shards are written atomically, the index after each shard.

    Re-opening an existing cache resumes it: :attr:`done` holds the sources already cached or
    skipped, so a caller can skip them. A crash loses at most the unwritten shard in progress.
    """

    def __init__(
        self,
        out: str | os.PathLike,
        *,
        meta: dict | None = None,
        shard_size: int = 256,
        dtype: torch.dtype = torch.float16,
    ):
        if shard_size < 1:
            raise InputError(f"shard_size must be >= 1, got {shard_size}")
        self.out = Path(out)
        self.shard_size = shard_size
        self.dtype = dtype
        self.out.mkdir(parents=True, exist_ok=True)
        index_path = self.out / INDEX_NAME
        meta = dict(meta or {})
        if index_path.is_file():
            index = _read_index(self.out)
            for key in ("vae", "text"):
                if key in meta and key in index and not _same_source(key, index[key], meta[key]):
                    raise DataError(
                        f"cache {self.out} was built with another {key} configuration; "
                        "use a new --out folder (or delete this one)"
                    )
            if "vae" in meta:
                # the same encoder under another decoder (or folder): the cache stays and names the VAE it goes on with
                index["vae"] = meta["vae"]
            self.index = index
            self.index.update({k: v for k, v in meta.items() if k not in self.index})
        else:
            self.index = {"format": CACHE_FORMAT, **meta, "entries": [], "skipped": []}
        self.entries = [CacheEntry.from_dict(e) for e in self.index["entries"]]
        self.skipped = list(self.index.get("skipped", []))
        self.done = {e.source for e in self.entries} | {s["source"] for s in self.skipped}
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_entries: list[CacheEntry] = []
        self._next_shard = 1 + max(
            (int(p.stem.split("_")[1]) for p in self.out.glob("shard_*.safetensors") if p.stem.split("_")[1].isdigit()),
            default=-1,
        )

    def __enter__(self) -> "LatentCacheWriter":
        return self

    def __exit__(self, *exc) -> None:
        # Keep what was finished even when the run is interrupted: flush the completed entries.
        self.flush()

    def set_null_text(self, tokens: torch.Tensor) -> None:
        """The empty caption's features (L, D), used as the unconditional input for CFG."""
        with atomic_path(self.out / NULL_TEXT_NAME) as tmp:
            save_file({"tokens": tokens.detach().to("cpu", self.dtype).contiguous()}, str(tmp))
        self.index["null_text"] = NULL_TEXT_NAME
        self._write_index()

    def add(
        self,
        id: str,
        latent: torch.Tensor,
        text: dict[str, torch.Tensor] | None = None,
        *,
        captions: dict[str, str] | None = None,
        fps: float = 0.0,
        frames: int = 0,
        height: int = 0,
        width: int = 0,
        source: str = "",
    ) -> CacheEntry:
        """Add one clip: ``latent`` (C, T, H, W), ``text`` kind -> (L, D) token features (valid tokens only)."""
        if latent.ndim != 4:
            raise InputError(f"latent of {id!r} must be (C, T, H, W), got shape {tuple(latent.shape)}")
        key = f"e{len(self.entries) + len(self._pending_entries):08d}"
        lat = latent.detach().to("cpu", self.dtype).contiguous()
        self._pending[f"{key}/latent"] = lat
        for kind, tokens in (text or {}).items():
            if tokens.ndim != 2:
                raise InputError(f"text features of {id!r} ({kind}) must be (L, D), got {tuple(tokens.shape)}")
            self._pending[f"{key}/text/{kind}"] = tokens.detach().to("cpu", self.dtype).contiguous()
        entry = CacheEntry(
            id=str(id), shard=f"shard_{self._next_shard:05d}.safetensors", key=key, shape=tuple(lat.shape),
            captions=dict(captions or {}), fps=float(fps), frames=int(frames), height=int(height),
            width=int(width), source=str(source or id), crc32=_crc(lat),
        )
        self._pending_entries.append(entry)
        self.done.add(entry.source)
        if len(self._pending_entries) >= self.shard_size:
            self.flush()
        return entry

    def skip(self, source: str, reason: str) -> None:
        """Record a clip that could not be used, so a resumed run does not retry it."""
        self.skipped.append({"source": str(source), "reason": reason})
        self.done.add(str(source))

    def flush(self) -> None:
        if self._pending_entries:
            shard = self.out / self._pending_entries[0].shard
            with atomic_path(shard) as tmp:
                save_file(self._pending, str(tmp), metadata={"format": "pt"})
            self.entries.extend(self._pending_entries)
            self._pending, self._pending_entries = {}, []
            self._next_shard += 1
        self._write_index()

    def _write_index(self) -> None:
        self.index["entries"] = [_entry_json(e) for e in self.entries]
        self.index["skipped"] = self.skipped
        write_json(self.out / INDEX_NAME, self.index, indent=None)


def _entry_json(e: CacheEntry) -> dict:
    d = asdict(e)
    d["shape"] = list(e.shape)
    return d


def _comparable(v):
    return json.loads(json.dumps(v, sort_keys=True, default=str))


def _same_source(key: str, old, new) -> bool:
    """Whether a cache made with ``old`` may be resumed with ``new``: for the VAE the same encoder (its
    fingerprint; for a cache made before fingerprints, the settings that are not decoder-only), for the
    text encoder the same record."""
    if key != "vae" or not (isinstance(old, dict) and isinstance(new, dict)):
        return _comparable(old) == _comparable(new)
    if old.get("encoder") and new.get("encoder"):
        return old["encoder"] == new["encoder"]
    from .models.vae import VideoVAE

    def settings(record):
        return _comparable({k: v for k, v in (record.get("config") or {}).items() if k not in VideoVAE.DECODER_ONLY})

    return settings(old) == settings(new)


def _read_index(cache: Path) -> dict:
    path = cache / INDEX_NAME
    if not cache.exists():
        raise DataError(f"latent cache {cache} does not exist (build one with `soraflow train cache-latents`)")
    if not path.is_file():
        raise DataError(f"{cache} is not a latent cache: {INDEX_NAME} is missing (build one with `soraflow train cache-latents`)")
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read the cache index {path}: {err}") from None
    if not isinstance(index, dict) or "entries" not in index:
        raise DataError(f"{path} is not a latent cache index (no 'entries')")
    if index.get("format", CACHE_FORMAT) > CACHE_FORMAT:
        raise DataError(f"{path} has cache format {index['format']}; this soraflow reads format <= {CACHE_FORMAT}")
    return index


# ----------------------------------------------------------------------------------------------
# Finding clips and building the cache


@dataclass
class ClipItem:
    """A clip to encode: a file and its captions."""

    id: str
    path: Path
    source: str  # path as recorded in the cache (relative to the data folder)
    captions: dict[str, str] = field(default_factory=dict)
    fps: float | None = None
    frames: int | None = None
    height: int | None = None
    width: int | None = None

    @property
    def is_image(self) -> bool:
        return self.path.suffix.lower() in IMAGE_SUFFIXES


def discover_clips(data_dir: str | os.PathLike) -> list[ClipItem]:
    """The clips of a SoraWorld dataset (``manifest.jsonl``), of a folder of videos and images, or the
    one clip a video or image file is.

    For a plain folder, a caption is read from a text file beside the clip (``clip.txt``), if any.
    """
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise DataError(f"dataset folder {data_dir} does not exist")
    if data_dir.is_file():  # one clip or image on its own
        if data_dir.suffix.lower() not in VIDEO_SUFFIXES | IMAGE_SUFFIXES:
            raise DataError(f"{data_dir} is neither a dataset folder nor a video or image file")
        return [ClipItem(id=data_dir.stem, path=data_dir, source=data_dir.name, captions={})]
    if not data_dir.is_dir():
        raise DataError(f"dataset {data_dir} is not a folder")
    manifest = data_dir / "manifest.jsonl"
    items: list[ClipItem] = []
    if manifest.is_file():
        root = data_dir.resolve()
        try:
            lines = manifest.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as err:
            raise DataError(f"cannot read {manifest}: {err}") from None
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{manifest}:{lineno}"
            try:
                rec = json.loads(line)
                rel = rec["path"]
            except (ValueError, KeyError, TypeError):
                _warn(f"{where}: not a manifest record (JSON with a 'path'); skipped")
                continue
            if not isinstance(rel, str) or not rel:
                _warn(f"{where}: 'path' is not a file name; skipped")
                continue
            # A manifest names files inside its dataset; one that reaches out (../../etc/passwd, an
            # absolute path, a symlink out) is someone else's file, never read.
            if not (data_dir / rel).resolve().is_relative_to(root):
                _warn(f"{where}: path {rel!r} points outside the dataset folder; skipped")
                continue
            damaged = [k for k in ("long", "short") if k in rec and not (isinstance(rec[k], str) and rec[k].strip())]
            if damaged:
                _warn(f"{where}: caption {' and '.join(map(repr, damaged))} is not text ({rec[damaged[0]]!r}); skipped")
                continue
            captions = {k: rec[k] for k in ("long", "short") if k in rec}
            items.append(
                ClipItem(
                    id=str(rec.get("id", rel)), path=data_dir / rel, source=rel, captions=captions,
                    fps=rec.get("fps"), frames=rec.get("frames"), height=rec.get("height"), width=rec.get("width"),
                )
            )
    else:
        for p in sorted(data_dir.rglob("*")):
            if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES and not p.name.startswith("."):
                rel = p.relative_to(data_dir).as_posix()
                side = p.with_suffix(".txt")
                captions = {"long": side.read_text().strip()} if side.is_file() else {}
                items.append(ClipItem(id=rel, path=p, source=rel, captions=captions))
        bare = sum(1 for it in items if not it.captions)
        if bare:
            _warn(
                f"{bare} of {len(items)} clips in {data_dir} have no caption (a NAME.txt beside the clip); "
                "they train with the empty caption (unconditional)"
            )
    if not items:
        raise DataError(
            f"dataset {data_dir} has no clips (expected manifest.jsonl or video/image files: "
            f"{', '.join(sorted(VIDEO_SUFFIXES | IMAGE_SUFFIXES))})"
        )
    return items


def causal_frames(n: int) -> int:
    """The largest 1 + 4k <= n: the causal VAE encodes the first frame alone, then groups of 4."""
    return 1 + 4 * ((n - 1) // 4) if n >= 1 else 0


def snap_size(height: int, width: int, multiple: int = PIXEL_MULTIPLE) -> tuple[int, int]:
    """Round a pixel size down to the grid the VAE and the DiT patches need."""
    h, w = (height // multiple) * multiple, (width // multiple) * multiple
    if h < multiple or w < multiple:
        raise InputError(f"size {width}x{height} is smaller than the minimum {multiple}x{multiple}")
    return h, w


def read_clip(
    item: ClipItem,
    *,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
) -> tuple[np.ndarray, float]:
    """Frames (T, H, W, 3) uint8 with T = 1 + 4k and H, W multiples of 16, and their fps.

    ``size`` (H, W) scales to cover and centre-crops; without it the native size is centre-cropped
    down to multiples of 16 (native size is what Sora trains on).
    """
    from . import video

    if item.is_image:
        img = video.read_image(item.path)
        target = size or snap_size(*img.shape[:2])
        if target != img.shape[:2]:
            img = video.read_image(item.path, size=target, crop="center")
        return img[None], float(item.fps or 0.0)
    info = video.probe(item.path)
    target = size or snap_size(info.height, info.width)
    frames = video.read_video(item.path, fps=fps, size=target, crop="center", max_frames=max_frames)
    if len(frames) == 0:
        raise DataError(f"{item.path} has no frames")
    frames = frames[: causal_frames(len(frames))]
    return frames, float(fps or info.fps)


@dataclass
class CacheSummary:
    """What :func:`build_latent_cache` did."""

    out: Path
    added: int  # clips encoded in this run
    skipped: int  # clips skipped in this run (unreadable)
    total: int  # entries in the cache now
    shapes: dict[str, int]  # latent shape "CxTxHxW" -> count, over the whole cache


MAX_CACHE_SIDE = 4096  # pixels per side of a cached clip
VAE_ENCODE_BYTES = 60  # activation bytes per pixel-frame and first-stage channel of a chunked encode, rounded up


def build_latent_cache(
    data: str | os.PathLike,
    vae: str | os.PathLike | torch.nn.Module,
    out: str | os.PathLike,
    *,
    text_encoder=None,
    text_reference: str = "minilm",
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    max_frames: int | None = 33,
    shard_size: int = 64,
    dtype: torch.dtype = torch.float16,
    device: str | torch.device = "cpu",
    precision: str = "auto",
    limit: int | None = None,
    caption_cache: str | os.PathLike | None = None,
    progress: bool = True,
) -> CacheSummary:
    """Encode every clip of ``data`` with the VAE (once) and its captions with the text encoder
    into a latent cache at ``out``. Resumable: clips already in ``out`` are not encoded again.

    ``vae`` is a model folder (``VideoVAE.from_pretrained``) or a loaded model; ``text_encoder`` a
    loaded encoder or None to load ``text_reference``. Caption features go through a
    :class:`~soraflow.text_cache.CaptionCache` (``caption_cache``, default ``OUT/captions``): every
    distinct caption is encoded once, in batches, and reused by later runs and other caches.
    ``limit`` caches the dataset's first ``limit`` clips only (a resumed run finishes those).
    Unreadable clips are skipped with a warning. ``precision`` "auto" encodes under bf16 autocast
    where this device runs bf16 faster than fp32 (measured once, :mod:`soraflow.hardware`), "bf16"
    or "fp32" as given.
    """
    from tqdm.auto import tqdm

    from .hardware import autocast_dtype

    from .models.text import load_text_encoder
    from .models.vae import VideoVAE
    from .text_cache import CaptionCache

    # Arguments first: a bad --fps or --size is the run's mistake, and must fail here rather than
    # reach the loop below, where every clip would be recorded as unreadable for good.
    if fps is not None:
        fps = number("fps", fps, lo=1, hi=120)
    if size is not None:
        size = modes.check_size(size, 16, MAX_CACHE_SIDE)
    if max_frames is not None:
        max_frames = number("max_frames", max_frames, lo=1, hi=10**5, integer=True)
    check_output_dir(out, "cache folder")
    items = discover_clips(data)
    if isinstance(vae, (str, os.PathLike)):
        vae_path = str(vae)
        shape = VideoVAE.config_from_pretrained(vae)
        if size is not None:
            h, w = size
            check_fits(f"encoding {w}x{h} clips of {max_frames or 'all'} frames",
                       (max_frames or 1) * h * w * 3 + 5 * h * w * shape.base_dim * VAE_ENCODE_BYTES, device)
        vae = VideoVAE.from_pretrained(vae)
    else:
        vae_path = "<in-memory>"
    vae = vae.to(device).eval()
    autocast = autocast_dtype(precision, device, model="vae") == torch.bfloat16
    if torch.device(device).type == "cpu" and hasattr(vae, "to_channels_last"):
        vae.to_channels_last()  # 1.3x faster encodes on a CPU
    encoder = text_encoder if text_encoder is not None else load_text_encoder(text_reference)
    meta = {
        "vae": {"path": vae_path, "config": _config_dict(getattr(vae, "config", None)),
                **({"encoder": vae.encoder_fingerprint()} if hasattr(vae, "encoder_fingerprint") else {})},
        "text": {"reference": str(getattr(encoder, "reference", text_reference)), "dim": int(encoder.dim)},
        "dtype": str(dtype).removeprefix("torch."),
    }
    added = skipped = 0
    captions = CaptionCache(Path(caption_cache) if caption_cache else Path(out) / "captions", encoder)
    with LatentCacheWriter(out, meta=meta, shard_size=shard_size, dtype=dtype) as writer, captions:
        # limit picks the dataset's first clips, so a resumed run finishes the same set, not `limit` more
        todo = [it for it in items[:limit] if it.source not in writer.done]
        # Batched encoding of every caption up front (the encoder is fast per batch, slow per call).
        captions.precompute([""] + [c for it in todo for c in it.captions.values()], progress=progress)
        if "null_text" not in writer.index:
            writer.set_null_text(_unpad(captions.get([""]))[0])
        bar = tqdm(todo, desc="caching latents", unit="clip", disable=not progress, dynamic_ncols=True)
        for item in bar:
            try:
                frames, clip_fps = read_clip(item, size=size, fps=fps, max_frames=max_frames)
            except (VideoError, DataError) as err:  # the file's fault: remembered, so a resumed run does not retry it
                msg = " ".join(str(err).split())
                _warn(f"skipping {item.path}: {msg}")
                writer.skip(item.source, msg)
                skipped += 1
                continue
            except (OSError, ValueError) as err:  # maybe this run's (permissions, a full disk): skipped now, tried next run
                _warn(f"skipping {item.path} for now: {' '.join(str(err).split())}")
                skipped += 1
                continue
            latent = encode_frames(vae, frames, autocast=autocast)[0].cpu()  # (C, T, H, W)
            stored = latent.to(dtype)
            if not torch.isfinite(stored).all():  # would poison every batch it lands in
                msg = f"its latent is not finite in {str(dtype).removeprefix('torch.')} (max |z| {latent.abs().max():.3g})"
                _warn(f"skipping {item.path}: {msg}")
                writer.skip(item.source, msg)
                skipped += 1
                continue
            kinds = list(item.captions)
            feats = _unpad(captions.get([item.captions[k] for k in kinds])) if kinds else []
            writer.add(
                item.id, latent, dict(zip(kinds, feats)), captions=item.captions, fps=clip_fps,
                frames=len(frames), height=frames.shape[1], width=frames.shape[2], source=item.source,
            )
            added += 1
            bar.set_postfix(shape="x".join(map(str, latent.shape)), skipped=skipped)
        bar.close()
    entries = writer.entries
    if not entries:
        raise DataError(f"no clip of {data} could be cached ({skipped} skipped); see the warnings above")
    shapes: dict[str, int] = {}
    for e in entries:
        k = "x".join(map(str, e.shape))
        shapes[k] = shapes.get(k, 0) + 1
    return CacheSummary(out=Path(out), added=added, skipped=skipped, total=len(entries), shapes=shapes)


def _unpad(emb) -> list[torch.Tensor]:
    """A TextEmbedding (B, L, D) + mask -> list of (L_i, D) float32 features, padding removed."""
    return [emb.tokens[i][emb.mask[i].bool()].float().cpu() for i in range(emb.tokens.shape[0])]


def _config_dict(cfg) -> dict:
    if cfg is None:
        return {}
    if hasattr(cfg, "to_dict"):
        return cfg.to_dict()
    try:
        return json.loads(json.dumps(asdict(cfg), default=str))
    except TypeError:
        return {}


# ----------------------------------------------------------------------------------------------
# Reading the cache


@dataclass
class LatentSample:
    """One training sample from the cache."""

    index: int  # position in the dataset
    id: str
    latent: torch.Tensor  # (C, T, H, W) float32, normalized
    text: torch.Tensor  # (L, D) float32 caption token features (L may be 0: no caption)
    caption: str
    fps: float


@dataclass
class LatentBatch:
    """Samples of one latent shape stacked, caption features padded to the longest."""

    latents: torch.Tensor  # (B, C, T, H, W)
    context: torch.Tensor  # (B, L, D)
    context_mask: torch.Tensor  # (B, L) bool, True = a real token
    ids: list[str]
    captions: list[str]
    fps: torch.Tensor  # (B,)

    def __len__(self) -> int:
        return self.latents.shape[0]


STILL_SUFFIX = "#still"  # a still view's id: its clip's id and this


class LatentDataset(torch.utils.data.Dataset):
    """The entries of a latent cache. Entries whose shard is missing or unreadable are reported
    once (one warning with a count) and left out; an entry whose bytes fail their CRC at read time
    is reported and returns None (the collate function drops it).

    ``caption`` picks the caption kind ("long", Sora's detailed re-captions, or "short");
    ``short_caption_prob`` trains on the short one instead that often (deterministic per
    (seed, epoch, index) so resumed runs see the same choices).

    ``still_views`` K > 0 adds K still views of every video entry after the entries themselves: its
    first latent frame with its caption, which is what the VAE makes of that frame as an image (frame 0
    is encoded alone). Sora trains on images and videos together; a still costs 1/T of its clip's
    tokens, so a batch of the same size carries T times as many captions and objects. A view's id is
    the entry's with STILL_SUFFIX after it.
    """

    def __init__(
        self,
        cache: str | os.PathLike,
        *,
        caption: str = "long",
        short_caption_prob: float = 0.0,
        seed: int = 0,
        verify: bool = True,
        still_views: int = 0,
    ):
        self.cache = Path(cache)
        self.index = _read_index(self.cache)
        self.caption = caption
        self.short_caption_prob = short_caption_prob
        self.seed = seed
        self.epoch = 0
        self.verify = verify
        entries = [CacheEntry.from_dict(e) for e in self.index["entries"]]
        self.entries = self._usable(entries)
        if not self.entries:
            raise DataError(f"latent cache {self.cache} has no usable entries ({len(entries)} listed)")
        self.text_dim = int(self.index.get("text", {}).get("dim", 0)) or self._guess_text_dim()
        still_views = number("still_views", still_views, lo=0, hi=1000, integer=True)
        # (entry index, still view?) per dataset index: the entries in order, then the still views
        videos = [i for i, e in enumerate(self.entries) if e.shape[1] > 1]
        self.views = [(i, False) for i in range(len(self.entries))] + [(i, True) for i in videos] * still_views
        self._handles: dict[str, object] = {}
        self._pid = os.getpid()
        self._bad: set[int] = set()

    def _usable(self, entries: list[CacheEntry]) -> list[CacheEntry]:
        keys_by_shard: dict[str, set[str] | None] = {}
        for shard in sorted({e.shard for e in entries}):
            path = self.cache / shard
            if not path.is_file():
                keys_by_shard[shard] = None
                continue
            try:
                with safe_open(str(path), framework="pt") as f:
                    keys_by_shard[shard] = set(f.keys())
            except (SafetensorError, OSError) as err:
                n = sum(1 for e in entries if e.shard == shard)
                _warn(f"latent cache shard {path} is unreadable ({' '.join(str(err).split())}); its {n} entries are skipped")
                keys_by_shard[shard] = None
        missing_shards = sorted(s for s, k in keys_by_shard.items() if k is None and not (self.cache / s).is_file())
        if missing_shards:
            n = sum(1 for e in entries if e.shard in missing_shards)
            _warn(f"latent cache {self.cache}: {len(missing_shards)} shard(s) missing ({', '.join(missing_shards[:3])}); {n} entries skipped")
        good, lost = [], []
        for e in entries:
            keys = keys_by_shard.get(e.shard)
            if keys is None:
                continue
            if f"{e.key}/latent" not in keys:
                lost.append(e.id)
                continue
            good.append(e)
        if lost:
            _warn(f"latent cache {self.cache}: {len(lost)} entries missing from their shards ({', '.join(lost[:3])}); skipped")
        return good

    def _guess_text_dim(self) -> int:
        null = self.null_text()
        return int(null.shape[-1]) if null is not None else 0

    def __len__(self) -> int:
        return len(self.views)

    @property
    def shapes(self) -> list[tuple[int, int, int, int]]:
        """Latent (C, T, H, W) of every sample, in dataset order (what the BucketSampler groups by)."""
        out = []
        for i, still in self.views:
            c, t, h, w = self.entries[i].shape
            out.append((c, 1, h, w) if still else (c, t, h, w))
        return out

    @property
    def latent_channels(self) -> int:
        return self.entries[0].shape[0]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def null_text(self) -> torch.Tensor | None:
        """The empty caption's features (L, D) float32, or None if the cache has none."""
        name = self.index.get("null_text")
        if not name or not (self.cache / name).is_file():
            return None
        with safe_open(str(self.cache / name), framework="pt") as f:
            return f.get_tensor("tokens").float()

    def __getstate__(self):  # DataLoader workers (spawn): open shards are per process
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def _handle(self, shard: str):
        if os.getpid() != self._pid:  # forked into a DataLoader worker: mmaps are per process
            self._handles, self._pid = {}, os.getpid()
        h = self._handles.get(shard)
        if h is None:
            h = safe_open(str(self.cache / shard), framework="pt")
            self._handles[shard] = h
        return h

    def _caption_kind(self, i: int, e: CacheEntry) -> str:
        kind = self.caption
        if self.short_caption_prob > 0 and "short" in e.captions:
            r = np.random.default_rng([self.seed, self.epoch, i]).random()
            if r < self.short_caption_prob:
                kind = "short"
        if kind not in e.captions:
            kind = next(iter(e.captions), kind)
        return kind

    def __getitem__(self, i: int) -> LatentSample | None:
        entry, still = self.views[i]
        e = self.entries[entry]
        try:
            f = self._handle(e.shard)
            latent = f.get_tensor(f"{e.key}/latent")
            kind = self._caption_kind(i, e)
            keys = f.keys()
            text_key = f"{e.key}/text/{kind}"
            text = f.get_tensor(text_key) if text_key in keys else torch.zeros(0, self.text_dim)
        except (SafetensorError, OSError, RuntimeError) as err:
            return self._reject(i, e, f"unreadable ({' '.join(str(err).split())})")
        if tuple(latent.shape) != e.shape:
            return self._reject(i, e, f"shape {tuple(latent.shape)} differs from the index {e.shape}")
        if self.verify and e.crc32 and _crc(latent) != e.crc32:
            return self._reject(i, e, "its bytes fail the CRC check (corrupt)")
        if still:
            latent = latent[:, :1]
        return LatentSample(
            index=i, id=e.id + STILL_SUFFIX if still else e.id, latent=latent.float(), text=text.float(),
            caption=e.captions.get(kind, ""), fps=e.fps,
        )

    def _reject(self, i: int, e: CacheEntry, why: str) -> None:
        if i not in self._bad:
            self._bad.add(i)
            _warn(f"skipping cache entry {e.id!r} ({e.shard}:{e.key}): {why}")
        return None


def collate_latents(samples: Sequence[LatentSample | None]) -> LatentBatch | None:
    """Stack samples of one shape; drop Nones (corrupt entries); None if nothing is left."""
    samples = [s for s in samples if s is not None]
    if not samples:
        return None
    shapes = {tuple(s.latent.shape) for s in samples}
    if len(shapes) != 1:
        raise DataError(f"a batch mixes latent shapes {sorted(shapes)}; use the BucketSampler")
    dim = max(s.text.shape[-1] for s in samples)
    L = max(1, max(s.text.shape[0] for s in samples))
    context = torch.zeros(len(samples), L, dim)
    mask = torch.zeros(len(samples), L, dtype=torch.bool)
    for b, s in enumerate(samples):
        n = s.text.shape[0]
        if n:
            context[b, :n] = s.text
            mask[b, :n] = True
    return LatentBatch(
        latents=torch.stack([s.latent for s in samples]),  # (B, C, T, H, W)
        context=context,
        context_mask=mask,
        ids=[s.id for s in samples],
        captions=[s.caption for s in samples],
        fps=torch.tensor([s.fps for s in samples], dtype=torch.float32),
    )


# ----------------------------------------------------------------------------------------------
# Bucketed batches


class BucketSampler(torch.utils.data.Sampler):
    """Batches of indices whose samples share one latent shape, sized by a token budget.

    For a shape with N tokens the batch size is ``max(1, tokens_per_batch // N)`` (capped by
    ``max_batch_size``), so every batch costs about the same compute whatever its resolution,
    aspect ratio or duration. The order is a pure function of (seed, epoch): samples are shuffled
    within each shape, cut into batches, and the batches of all shapes shuffled together.

    Resuming mid-epoch: ``load_state_dict({"epoch": e, "start": k})`` makes the next ``iter()`` of
    epoch ``e`` skip its first ``k`` batches. (Track ``k`` as batches *consumed* by the training
    loop; a DataLoader prefetches ahead of it.) With ``num_replicas`` > 1 each rank takes every
    ``num_replicas``-th batch of the same global order (equal counts; the remainder is dropped).
    """

    def __init__(
        self,
        shapes: Sequence[Sequence[int]],
        *,
        tokens_per_batch: int,
        patch_size: Sequence[int] = (1, 2, 2),
        max_batch_size: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if tokens_per_batch < 1:
            raise InputError(f"tokens_per_batch must be >= 1, got {tokens_per_batch}")
        if max_batch_size is not None and max_batch_size < 1:
            raise InputError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if not 0 <= rank < num_replicas:
            raise InputError(f"rank {rank} is outside 0..{num_replicas - 1}")
        if len(shapes) == 0:
            raise DataError("no samples to batch (empty dataset)")
        self.shapes = [tuple(int(v) for v in s) for s in shapes]
        self.tokens_per_batch = tokens_per_batch
        self.patch_size = tuple(patch_size)
        self.max_batch_size = max_batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.start = 0  # batches of the current epoch to skip on the next iter() (resume)
        self.buckets: dict[tuple, list[int]] = {}
        for i, s in enumerate(self.shapes):
            self.buckets.setdefault(s, []).append(i)

    def batch_size_for(self, shape: Sequence[int]) -> int:
        bs = max(1, self.tokens_per_batch // latent_tokens(shape, self.patch_size))
        return min(bs, self.max_batch_size) if self.max_batch_size else bs

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches of ``epoch`` (default: the current one), in order."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch])
        out: list[list[int]] = []
        for shape in sorted(self.buckets):  # sorted: independent of dataset order of first appearance
            idx = list(self.buckets[shape])
            if self.shuffle:
                idx = [idx[j] for j in rng.permutation(len(idx))]
            bs = self.batch_size_for(shape)
            for k in range(0, len(idx), bs):
                chunk = idx[k : k + bs]
                if len(chunk) < bs and self.drop_last:
                    continue
                out.append(chunk)
        if self.shuffle:
            out = [out[j] for j in rng.permutation(len(out))]
        if self.num_replicas > 1:
            n = len(out) // self.num_replicas
            out = out[self.rank : n * self.num_replicas : self.num_replicas]
        return out

    def __iter__(self) -> Iterator[list[int]]:
        start, self.start = self.start, 0
        yield from self.batches()[start:]

    def __len__(self) -> int:
        return len(self.batches())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "start": self.start}

    def load_state_dict(self, state: dict) -> None:
        if "seed" in state and int(state["seed"]) != self.seed:
            raise InputError(f"sampler state was saved with seed {state['seed']}, this sampler uses {self.seed}")
        self.epoch = int(state.get("epoch", 0))
        self.start = int(state.get("start", 0))

    def summary(self) -> list[dict]:
        """Per shape: count, tokens per sample, batch size (for logs and docs)."""
        return [
            {"shape": list(s), "count": len(ix), "tokens": latent_tokens(s, self.patch_size), "batch_size": self.batch_size_for(s)}
            for s, ix in sorted(self.buckets.items())
        ]


def iterate_batches(
    dataset: LatentDataset,
    sampler: BucketSampler,
    *,
    num_workers: int = 0,
) -> Iterable[LatentBatch | None]:
    """Batches of one epoch (the sampler's current one, from its resume position)."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate_latents, num_workers=num_workers,
        persistent_workers=False,
    )
    return loader
