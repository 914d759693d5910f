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
from soraflow.errors import DataError, InputError

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


def test_still_views_add_each_videos_first_latent_frame_as_an_image(tmp_path):
    latents = make_cache(tmp_path / "cache")
    plain = LatentDataset(tmp_path / "cache")
    ds = LatentDataset(tmp_path / "cache", still_views=2)
    videos = [i for i, s in enumerate(SHAPES) if s[1] > 1]
    assert len(plain) == len(SHAPES) and len(ds) == len(SHAPES) + 2 * len(videos)
    assert ds.shapes[: len(SHAPES)] == plain.shapes
    assert ds.shapes[len(SHAPES):] == [(c, 1, h, w) for c, _, h, w in (SHAPES[i] for i in videos)] * 2
    first = ds[len(SHAPES)]  # the first video's still
    i = videos[0]
    assert first.id == f"clip{i:03d}#still" and first.caption == f"a long caption {i}"
    assert torch.equal(first.latent, latents[i][:, :1]) and torch.equal(first.text, ds[i].text)
    assert ds[len(SHAPES) + len(videos)].id == first.id  # the second round of views
    # the sampler batches stills with the images of their size, by the token budget
    sampler = BucketSampler(ds.shapes, tokens_per_batch=64, patch_size=(1, 2, 2))
    for batch in sampler:
        assert len({ds.shapes[j] for j in batch}) == 1
    with pytest.raises(InputError, match="still_views"):
        LatentDataset(tmp_path / "cache", still_views=-1)


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


# ----------------------------------------------------------------------------------------------
# Building a cache from clips with the (tiny) VAE


class FakeTextEncoder:
    """Deterministic word-hash features: the caching logic is under test here, not the encoder."""

    dim, reference, max_length, cache_key = 8, "fake-words", 32, "fake-words|8"

    def __init__(self):
        self.encoded = 0

    def encode(self, prompts, batch_size=64):
        import zlib

        from soraflow.models.text import TextEmbedding

        self.encoded += len(prompts)
        words = [["<s>"] + p.split() for p in prompts]
        L = max(len(w) for w in words)
        tokens, mask = torch.zeros(len(prompts), L, self.dim), torch.zeros(len(prompts), L, dtype=torch.bool)
        for i, ws in enumerate(words):
            for j, w in enumerate(ws):
                tokens[i, j] = torch.randn(self.dim, generator=torch.Generator().manual_seed(zlib.crc32(w.encode())))
                mask[i, j] = True
        return TextEmbedding(tokens, mask)


def _write_world(root, clips):
    """A SoraWorld-style folder: clips/*.mp4|png and manifest.jsonl."""
    import numpy as np

    from soraflow import video

    (root / "clips").mkdir(parents=True, exist_ok=True)
    lines = []
    for cid, (frames, h, w, caption) in clips.items():
        rng = np.random.default_rng(len(lines))
        if frames == "garbage":
            rel = f"clips/{cid}.mp4"
            (root / rel).write_bytes(b"this is not a video" * 10)
        elif frames == 1:
            rel = f"clips/{cid}.png"
            video.write_image(root / rel, rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        else:
            rel = f"clips/{cid}.mp4"
            video.write_video(root / rel, rng.integers(0, 255, (frames, h, w, 3), dtype=np.uint8), fps=8, lossless=True)
        lines.append(json.dumps({"id": cid, "path": rel, "short": caption.split(",")[0], "long": caption, "fps": 8}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")


def test_build_latent_cache_encodes_once_skips_bad_clips_and_resumes(tmp_path):
    import numpy as np

    from soraflow import video
    from soraflow.data import build_latent_cache
    from soraflow.models.vae import VideoVAE, vae_config

    torch.manual_seed(0)
    vae = VideoVAE(vae_config("tiny"))
    vae.save_pretrained(tmp_path / "vae")
    clips = {
        "a": (9, 32, 48, "a red ball bouncing, on green grass"),
        "b": (7, 40, 40, "a blue cube sliding, left to right"),  # 7 -> 5 frames, 40x40 -> 32x32 crop
        "c": (1, 32, 32, "a yellow star, still"),  # an image: one latent frame
        "bad": ("garbage", 0, 0, "broken"),
    }
    _write_world(tmp_path / "world", clips)
    enc = FakeTextEncoder()
    kw = dict(text_encoder=enc, dtype=torch.float32, precision="fp32", shard_size=2, progress=False)
    with pytest.warns(DataWarning, match="bad.mp4"):
        summary = build_latent_cache(tmp_path / "world", tmp_path / "vae", tmp_path / "cache", **kw)
    assert (summary.added, summary.skipped, summary.total) == (3, 1, 3)
    assert summary.shapes == {"4x3x4x6": 1, "4x2x4x4": 1, "4x1x4x4": 1}

    ds = LatentDataset(tmp_path / "cache")
    by_id = {e.id: i for i, e in enumerate(ds.entries)}
    frames = video.read_video(tmp_path / "world/clips/a.mp4")
    x = torch.from_numpy(np.array(frames)).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    with torch.no_grad():
        expected = vae.normalize(vae.encode(x).mean)[0]
    sample = ds[by_id["a"]]
    assert torch.allclose(sample.latent, expected, atol=1e-5)
    assert sample.caption == clips["a"][3]
    want = enc.encode([clips["a"][3]])
    assert torch.allclose(sample.text, want.tokens[0][want.mask[0]])
    entry = ds.entries[by_id["b"]]
    assert (entry.frames, entry.height, entry.width) == (5, 32, 32)
    assert ds.null_text().shape == (1, 8)  # "" -> the start token only

    # Run again: nothing is encoded twice (VAE or text), the bad clip is not retried.
    before = enc.encoded
    again = build_latent_cache(tmp_path / "world", tmp_path / "vae", tmp_path / "cache", **kw)
    assert (again.added, again.skipped, again.total) == (0, 0, 3) and enc.encoded == before
    # A new clip in the dataset: only it is added.
    clips["d"] = (5, 32, 32, "a green disc falling")
    _write_world(tmp_path / "world", clips)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # the bad clip is remembered, not retried
        third = build_latent_cache(tmp_path / "world", tmp_path / "vae", tmp_path / "cache", **kw)
    assert (third.added, third.total) == (1, 4)
    with pytest.raises(DataError, match="does not exist"):
        build_latent_cache(tmp_path / "nowhere", tmp_path / "vae", tmp_path / "cache2", **kw)


def test_build_latent_cache_limit_caps_the_cache_across_resumes(tmp_path):
    """``limit`` takes the dataset's first clips: a resumed run finishes those, it does not add ``limit`` more."""
    from soraflow.data import build_latent_cache, discover_clips
    from soraflow.models.vae import VideoVAE, vae_config

    torch.manual_seed(0)
    VideoVAE(vae_config("tiny")).save_pretrained(tmp_path / "vae")
    _write_world(tmp_path / "world", {c: (1, 32, 32, f"a {c} square, still") for c in "abcde"})
    first3 = {it.source for it in discover_clips(tmp_path / "world")[:3]}
    kw = dict(text_encoder=FakeTextEncoder(), dtype=torch.float32, precision="fp32", shard_size=1, progress=False)
    # An interrupted run: the first clip is cached (shard_size 1 writes each clip at once).
    build_latent_cache(tmp_path / "world", tmp_path / "vae", tmp_path / "cache", limit=1, **kw)
    resumed = build_latent_cache(tmp_path / "world", tmp_path / "vae", tmp_path / "cache", limit=3, **kw)
    assert (resumed.added, resumed.total) == (2, 3)
    assert {e.source for e in LatentDataset(tmp_path / "cache").entries} == first3
    again = build_latent_cache(tmp_path / "world", tmp_path / "vae", tmp_path / "cache", limit=3, **kw)
    assert (again.added, again.total) == (0, 3)


def test_cache_resumes_under_a_new_decoder_but_not_a_new_encoder(tmp_path):
    """The cache is keyed by the VAE's encoder: a wider decoder trained on the frozen encoder keeps it."""
    from soraflow.data import build_latent_cache
    from soraflow.models.vae import VideoVAE, vae_config

    torch.manual_seed(0)
    vae = VideoVAE(vae_config("tiny"))
    vae.save_pretrained(tmp_path / "vae")
    _write_world(tmp_path / "world", {c: (1, 32, 32, f"a {c} square, still") for c in "abc"})
    kw = dict(text_encoder=FakeTextEncoder(), dtype=torch.float32, precision="fp32", shard_size=1, progress=False)
    build_latent_cache(tmp_path / "world", tmp_path / "vae", tmp_path / "cache", limit=2, **kw)

    wide = VideoVAE(vae_config("tiny", decoder_base_dim=2 * vae.config.base_dim))
    wide.encoder.load_state_dict(vae.encoder.state_dict())
    wide.quant_conv.load_state_dict(vae.quant_conv.state_dict())
    assert wide.encoder_fingerprint() == vae.encoder_fingerprint()
    wide.save_pretrained(tmp_path / "wide")
    resumed = build_latent_cache(tmp_path / "world", tmp_path / "wide", tmp_path / "cache", **kw)
    assert (resumed.added, resumed.total) == (1, 3)
    index = json.loads((tmp_path / "cache/index.json").read_text())
    assert index["vae"]["path"] == str(tmp_path / "wide")  # the cache now names the VAE it goes on with

    other = VideoVAE(vae_config("tiny", decoder_base_dim=2 * vae.config.base_dim))  # new encoder weights
    assert other.encoder_fingerprint() != vae.encoder_fingerprint()
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(DataError, match="another vae configuration"):
        build_latent_cache(tmp_path / "world", tmp_path / "other", tmp_path / "cache", **kw)
    # a cache made before fingerprints: its settings decide, the decoder's width left out
    del index["vae"]["encoder"]
    (tmp_path / "cache/index.json").write_text(json.dumps(index))
    assert build_latent_cache(tmp_path / "world", tmp_path / "wide", tmp_path / "cache", **kw).total == 3


def test_real_clips_folder_is_discovered_and_read_at_native_size(real_videos):
    from soraflow.data import discover_clips, read_clip

    with pytest.warns(DataWarning, match="no caption"):
        items = {it.id: it for it in discover_clips(real_videos)}
    assert {"bikes.mp4", "carphone_pristine.mp4"} <= set(items)
    frames, fps = read_clip(items["carphone_pristine.mp4"], max_frames=7)
    assert frames.shape == (5, 144, 176, 3) and frames.dtype.name == "uint8"  # 7 -> 1 + 4k = 5 frames
    assert fps == pytest.approx(29.97, abs=0.01)
    frames, _ = read_clip(items["bikes.mp4"], size=(64, 96), max_frames=3)
    assert frames.shape == (1, 64, 96, 3)


def test_clip_whose_latent_overflows_the_storage_dtype_is_skipped(tmp_path, monkeypatch):
    import soraflow.data as data
    from soraflow.models.vae import VideoVAE, vae_config

    VideoVAE(vae_config("tiny")).save_pretrained(tmp_path / "vae")
    _write_world(tmp_path / "world", {"ok": (1, 32, 32, "fine"), "huge": (1, 32, 32, "overflow")})
    real = data.encode_frames
    calls = []

    def encode(vae, frames, **kw):
        z = real(vae, frames, **kw)
        calls.append(1)
        return z * 1e6 if len(calls) == 2 else z  # 1e6 is inf in float16

    monkeypatch.setattr(data, "encode_frames", encode)
    with pytest.warns(DataWarning, match="huge.png: its latent is not finite in float16"):
        summary = data.build_latent_cache(tmp_path / "world", tmp_path / "vae", tmp_path / "cache", text_encoder=FakeTextEncoder(), progress=False)
    assert (summary.added, summary.skipped) == (1, 1)
