"""Latent cache, LatentDataset (corruption handling) and the native-size BucketSampler."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from soraflow.data import (
    BucketSampler,
    DataWarning,
    LatentCacheWriter,
    LatentDataset,
    collate_latents,
    latent_tokens,
)
from soraflow.errors import DataError

# A run that mixes resolutions, aspect ratios, durations and single images: latent (C, T, H, W).
SHAPES = [(4, 5, 8, 8)] * 7 + [(4, 3, 8, 12)] * 5 + [(4, 1, 16, 16)] * 6 + [(4, 1, 8, 8)] * 9 + [(4, 9, 4, 6)] * 3


def make_cache(path, shapes=SHAPES, shard_size=8, text_dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    latents = []
    with LatentCacheWriter(path, meta={"text": {"reference": "fake", "dim": text_dim}}, shard_size=shard_size, dtype=torch.float32) as w:
        w.set_null_text(torch.zeros(2, text_dim))
        for i, shape in enumerate(shapes):
            lat = torch.randn(shape, generator=g)
            latents.append(lat)
            n_tok = 1 + i % 4
            w.add(
                f"clip{i:03d}", lat,
                {"long": torch.randn(n_tok, text_dim, generator=g), "short": torch.randn(1, text_dim, generator=g)},
                captions={"long": f"a long caption {i}", "short": f"short {i}"}, fps=8, frames=1 + 4 * (shape[1] - 1),
                source=f"clips/{i:03d}.mp4",
            )
    return latents


def test_cache_round_trip_and_collate(tmp_path):
    latents = make_cache(tmp_path / "cache")
    ds = LatentDataset(tmp_path / "cache")
    assert len(ds) == len(SHAPES) and ds.text_dim == 6 and ds.latent_channels == 4
    for i in (0, 9, len(SHAPES) - 1):
        s = ds[i]
        assert torch.equal(s.latent, latents[i]) and s.caption == f"a long caption {i}"
        assert s.text.shape == (1 + i % 4, 6)
    batch = collate_latents([ds[0], ds[1], ds[2]])
    assert batch.latents.shape == (3, 4, 5, 8, 8) and batch.context.shape == (3, 3, 6)
    assert batch.context_mask.tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    assert torch.equal(ds.null_text(), torch.zeros(2, 6))
    with pytest.raises(DataError, match="mixes latent shapes"):
        collate_latents([ds[0], ds[10]])


def test_short_caption_probability_is_deterministic(tmp_path):
    make_cache(tmp_path / "cache")
    ds = LatentDataset(tmp_path / "cache", short_caption_prob=0.5, seed=3)
    first = [ds[i].caption for i in range(len(ds))]
    assert first == [ds[i].caption for i in range(len(ds))]
    n_short = sum(c.startswith("short") for c in first)
    assert 5 <= n_short <= 25  # about half of 30
    ds.set_epoch(1)
    assert [ds[i].caption for i in range(len(ds))] != first


def test_resumed_writer_skips_done_clips(tmp_path):
    make_cache(tmp_path / "cache", shapes=SHAPES[:5], shard_size=2)
    w = LatentCacheWriter(tmp_path / "cache", shard_size=2, dtype=torch.float32)
    assert w.done == {f"clips/{i:03d}.mp4" for i in range(5)}
    w.add("new", torch.zeros(4, 1, 8, 8), source="clips/new.mp4")
    w.skip("clips/broken.mp4", "not a video")
    w.flush()
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert len(index["entries"]) == 6 and index["skipped"] == [{"source": "clips/broken.mp4", "reason": "not a video"}]
    assert len({e["shard"] for e in index["entries"]}) == 4  # 2 + 2 + 1 from the first run, 1 new
    assert len(LatentDataset(tmp_path / "cache")) == 6
    with pytest.raises(DataError, match="another text"):
        LatentCacheWriter(tmp_path / "cache", meta={"text": {"reference": "other", "dim": 6}})


def test_corrupt_and_missing_entries_are_reported_and_skipped(tmp_path):
    cache = tmp_path / "cache"
    make_cache(cache, shard_size=8)
    index = json.loads((cache / "index.json").read_text())
    shards = sorted({e["shard"] for e in index["entries"]})
    # 1. One shard deleted: its 8 entries are left out at load, with one warning.
    (cache / shards[1]).unlink()
    # 2. One entry's stored bytes flipped in place (header still valid): fails its CRC at read time.
    victim = index["entries"][2]
    raw = bytearray((cache / victim["shard"]).read_bytes())
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    begin, _ = header[f"{victim['key']}/latent"]["data_offsets"]
    raw[8 + header_len + begin + 5] ^= 0xFF
    (cache / victim["shard"]).write_bytes(bytes(raw))
    with pytest.warns(DataWarning, match="1 shard\\(s\\) missing"):
        ds = LatentDataset(cache)
    assert len(ds) == len(SHAPES) - 8
    with pytest.warns(DataWarning, match="clip002.*CRC"):
        assert ds[2] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reported once, not on every epoch
        assert ds[2] is None
        batch = collate_latents([ds[i] for i in range(4)])
    assert batch.ids == ["clip000", "clip001", "clip003"]
    # 3. A truncated shard (unreadable header) is reported and its entries skipped too.
    (cache / shards[0]).write_bytes(b"\x00" * 10)
    with pytest.warns(DataWarning) as record:
        assert len(LatentDataset(cache)) == len(SHAPES) - 16
    messages = [str(r.message) for r in record]
    assert any("unreadable" in m and "8 entries" in m for m in messages), messages
    assert not any("missing from their shards" in m for m in messages), messages


def test_empty_or_missing_cache_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        LatentDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="index.json is missing"):
        LatentDataset(tmp_path / "empty")
    LatentCacheWriter(tmp_path / "empty").flush()
    with pytest.raises(DataError, match="no usable entries"):
        LatentDataset(tmp_path / "empty")


def _sampler(**kw):
    args = dict(tokens_per_batch=64, seed=1)
    args.update(kw)
    return BucketSampler(SHAPES, **args)


def test_bucket_sampler_one_shape_per_batch_and_token_budget():
    s = _sampler()
    batches = s.batches()
    seen = sorted(i for b in batches for i in b)
    assert seen == list(range(len(SHAPES)))  # every sample exactly once per epoch
    sizes = {}
    for b in batches:
        shapes = {SHAPES[i] for i in b}
        assert len(shapes) == 1
        shape = shapes.pop()
        tokens = latent_tokens(shape)
        assert len(b) * tokens <= 64 or len(b) == 1  # the budget holds (a sample above it goes alone)
        sizes.setdefault(shape, set()).add(len(b))
    # Batch size scales inversely with tokens per sample: 1x8x8 latents (16 tokens) -> 4 per batch,
    # 9x4x6 (54 tokens) -> 1, 5x8x8 (80 tokens, over the budget) -> 1.
    assert sizes[(4, 1, 8, 8)] == {4, 1}  # 9 samples: 4 + 4 + 1
    assert sizes[(4, 9, 4, 6)] == {1} and sizes[(4, 5, 8, 8)] == {1}
    assert s.batch_size_for((4, 1, 8, 8)) == 4 and _sampler(tokens_per_batch=640).batch_size_for((4, 5, 8, 8)) == 8
    assert _sampler(tokens_per_batch=640, max_batch_size=3).batch_size_for((4, 1, 8, 8)) == 3


def test_bucket_sampler_is_deterministic_per_seed_and_epoch():
    a, b = _sampler(), _sampler()
    assert a.batches() == b.batches()
    a.set_epoch(1)
    assert a.batches() != b.batches()  # a new order each epoch
    b.set_epoch(1)
    assert list(a) == list(b)
    assert _sampler(seed=2).batches() != _sampler(seed=1).batches()


def test_bucket_sampler_resumes_mid_epoch():
    s = _sampler()
    s.set_epoch(3)
    full = list(s)
    consumed = 5
    state = {"seed": 1, "epoch": 3, "start": consumed}  # what a trainer saves after 5 batches
    fresh = _sampler()
    fresh.load_state_dict(state)
    assert list(fresh) == full[consumed:]
    assert len(list(fresh)) == len(full)  # the skip applies to one pass only
    with pytest.raises(Exception, match="seed"):
        _sampler(seed=9).load_state_dict(state)


def test_bucket_sampler_splits_batches_across_ranks():
    ranks = [_sampler(num_replicas=3, rank=r).batches() for r in range(3)]
    assert len({len(r) for r in ranks}) == 1
    flat = [tuple(b) for r in ranks for b in r]
    assert len(flat) == len(set(flat))  # no batch on two ranks
