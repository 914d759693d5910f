"""Caption embedding cache: each training caption is encoded once and reused across steps and runs.

Layout of the cache folder::

    DIR/index.json                       {"version": 1, "entries": {key: shard file name}}
    DIR/shard-<random>.safetensors       one tensor per caption, named by its key: (L_i, D), unpadded

``key = sha256(encoder.cache_key + NUL + caption)``, so one folder can serve several encoders and a
changed encoder (reference, token limit, dtype) never returns stale embeddings. Shards and the index
are written atomically; a missing or corrupt shard is reported with a warning and its captions are
encoded again; a corrupt index is rebuilt from the shards. Concurrent writers (several ranks) do not
clobber each other's shards; at worst an index entry is lost and that caption is encoded again.
"""

from __future__ import annotations

import hashlib
import json
import uuid
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import Tensor

from .atomic import atomic_path, write_json
from .errors import DataError
from .models.text import TextEmbedding, TextEncoder, check_prompts

INDEX = "index.json"
_OPEN_SHARDS = 8  # safetensors handles kept open (each mmaps its shard)


class CacheWarning(UserWarning):
    """A cache shard or index was missing or corrupt; the affected captions are encoded again."""


class CaptionCache:
    """``CaptionCache(dir, encoder).get(captions) -> TextEmbedding``, encoding only what is not cached.

    New embeddings are buffered in memory and written in shards of ``shard_size`` as they accumulate;
    the remainder on :meth:`flush`, or when the cache is used as a context manager and the block ends. Run
    :meth:`precompute` over the whole caption list before training to encode everything up front.
    """

    def __init__(self, directory: str | Path, encoder: TextEncoder, *, shard_size: int = 1024, batch_size: int = 64):
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot create the caption cache folder {self.dir}: {e.strerror}") from e
        self.encoder = encoder
        self.shard_size = shard_size  # captions per shard file
        self.batch_size = batch_size  # captions per encoder forward
        self._index: dict[str, str] = self._load_index()  # key -> shard file name
        self._pending: dict[str, Tensor] = {}  # key -> (L, D), not yet on disk
        self._handles: OrderedDict[str, object] = OrderedDict()

    # -- keys and the index ------------------------------------------------------------------

    def key(self, caption: str) -> str:
        return hashlib.sha256(f"{self.encoder.cache_key}\0{caption}".encode()).hexdigest()

    def __len__(self) -> int:
        return len(self._index) + len(self._pending)

    def __contains__(self, caption: str) -> bool:
        k = self.key(caption)
        return k in self._pending or k in self._index

    def _load_index(self) -> dict[str, str]:
        path = self.dir / INDEX
        if not path.exists():
            return self._rebuild_index() if any(self.dir.glob("shard-*.safetensors")) else {}
        try:
            data = json.loads(path.read_text())
            entries = data["entries"]
            if not isinstance(entries, dict):
                raise TypeError("entries is not an object")
            return {str(k): str(v) for k, v in entries.items()}
        except (OSError, ValueError, KeyError, TypeError) as e:
            warnings.warn(f"caption cache index {path} is corrupt ({e}); rebuilding it from the shards", CacheWarning)
            return self._rebuild_index()

    def _rebuild_index(self) -> dict[str, str]:
        from safetensors import safe_open

        index = {}
        for shard in sorted(self.dir.glob("shard-*.safetensors")):
            try:
                with safe_open(str(shard), framework="pt") as f:
                    index.update({k: shard.name for k in f.keys()})
            except Exception as e:  # safetensors raises its own error types for a bad header
                warnings.warn(f"caption cache shard {shard} is corrupt ({e}); skipping it", CacheWarning)
        write_json(self.dir / INDEX, {"version": 1, "entries": index}, indent=None)
        return index

    def _write_index(self, new: dict[str, str], dropped: Iterable[str] = ()) -> None:
        # Merge with what is on disk so another writer's shards are not forgotten.
        path, on_disk = self.dir / INDEX, {}
        try:
            on_disk = json.loads(path.read_text())["entries"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        merged = {**on_disk, **self._index, **new}
        for shard in set(dropped):
            merged = {k: v for k, v in merged.items() if v != shard}
        self._index = merged
        write_json(path, {"version": 1, "entries": merged}, indent=None)

    # -- reading -----------------------------------------------------------------------------

    def _handle(self, shard: str):
        from safetensors import safe_open

        if shard in self._handles:
            self._handles.move_to_end(shard)
            return self._handles[shard]
        handle = safe_open(str(self.dir / shard), framework="pt")
        self._handles[shard] = handle
        if len(self._handles) > _OPEN_SHARDS:
            self._handles.popitem(last=False)
        return handle

    def _read(self, keys: Sequence[str]) -> dict[str, Tensor]:
        """Cached tensors for ``keys`` that are on disk and readable; corrupt shards are dropped."""
        by_shard: dict[str, list[str]] = {}
        for k in keys:
            if k in self._index:
                by_shard.setdefault(self._index[k], []).append(k)
        found, bad = {}, []
        for shard, shard_keys in by_shard.items():
            try:
                handle = self._handle(shard)
                tensors = {k: handle.get_tensor(k) for k in shard_keys}
                for k, v in tensors.items():
                    if v.ndim != 2 or v.shape[1] != self.encoder.dim or v.shape[0] == 0:
                        raise ValueError(f"entry {k[:12]} has shape {tuple(v.shape)}, expected (L, {self.encoder.dim})")
                    if not torch.isfinite(v).all():
                        raise ValueError(f"entry {k[:12]} holds NaN or inf")
                found.update(tensors)
            except Exception as e:  # any unreadable shard: report and recompute, never fail a run
                warnings.warn(
                    f"caption cache shard {self.dir / shard} is missing or corrupt ({e}); "
                    f"encoding its captions again",
                    CacheWarning,
                )
                self._handles.pop(shard, None)
                (self.dir / shard).unlink(missing_ok=True)
                bad.append(shard)
        if bad:
            self._write_index({}, dropped=bad)
        return found

    # -- public API --------------------------------------------------------------------------

    def get(self, captions: str | Sequence[str]) -> TextEmbedding:
        """Embeddings of ``captions`` (padded to the longest, on CPU), encoding the uncached ones."""
        captions = check_prompts(captions)
        keys = [self.key(c) for c in captions]
        table = {k: self._pending[k] for k in keys if k in self._pending}
        table.update(self._read([k for k in dict.fromkeys(keys) if k not in table]))
        missing = {k: c for k, c in zip(keys, captions) if k not in table}
        if missing:
            table.update(self._encode(list(missing.keys()), list(missing.values())))
        rows = [table[k] for k in keys]
        length = max(r.shape[0] for r in rows)
        tokens = torch.zeros(len(rows), length, self.encoder.dim, dtype=rows[0].dtype)  # (B, L, D)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)  # (B, L)
        for i, r in enumerate(rows):
            tokens[i, : r.shape[0]] = r
            mask[i, : r.shape[0]] = True
        return TextEmbedding(tokens, mask)

    __call__ = get

    def precompute(self, captions: Iterable[str], *, progress: bool = True) -> int:
        """Encode every caption not cached yet and write it to disk. Returns how many were encoded."""
        from tqdm.auto import tqdm

        todo = {}
        for c in captions:
            k = self.key(c)
            if k not in self._index and k not in self._pending:
                todo[k] = c
        keys, texts = list(todo.keys()), list(todo.values())
        for start in tqdm(
            range(0, len(keys), self.batch_size), desc="encoding captions", unit="batch", disable=not progress
        ):
            self._encode(keys[start : start + self.batch_size], texts[start : start + self.batch_size])
        self.flush()
        return len(keys)

    def _encode(self, keys: list[str], captions: list[str]) -> dict[str, Tensor]:
        emb = self.encoder.encode(captions, batch_size=self.batch_size).to("cpu")
        out = {}
        for i, k in enumerate(keys):
            n = int(emb.mask[i].sum())
            out[k] = emb.tokens[i, :n].clone()  # unpadded; clone so shards do not share storage
        self._pending.update(out)
        self._write_shards(full_only=True)
        return out

    def flush(self) -> None:
        """Write all buffered embeddings to disk (shards of at most ``shard_size``) and update the index."""
        self._write_shards(full_only=False)

    def _write_shards(self, full_only: bool) -> None:
        from safetensors.torch import save_file

        items = list(self._pending.items())
        written: dict[str, str] = {}
        while items and (len(items) >= self.shard_size or not full_only):
            chunk, items = dict(items[: self.shard_size]), items[self.shard_size :]
            name = f"shard-{uuid.uuid4().hex[:12]}.safetensors"
            with atomic_path(self.dir / name) as tmp:
                save_file(chunk, str(tmp), metadata={"encoder": self.encoder.cache_key})
            written.update(dict.fromkeys(chunk, name))
        if written:
            self._write_index(written)
            self._pending = dict(items)

    def __enter__(self) -> "CaptionCache":
        return self

    def __exit__(self, *exc) -> None:
        self.flush()


__all__ = ["CaptionCache", "CacheWarning"]
