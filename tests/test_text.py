"""Text encoders (shipped MiniLM, tiny random T5/UMT5/CLIP folders) and the caption embedding cache."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from soraflow.errors import CheckpointError, InputError
from soraflow.models.text import (
    PromptTruncatedWarning,
    TextEmbedding,
    load_text_encoder,
    minilm_dir,
)
from soraflow.text_cache import CacheWarning, CaptionCache

WORDS = "a red blue green ball cube bouncing rolling on grass sand the camera pans left right".split()


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder("minilm")


def _tiny_tokenizer(folder: Path, model_max_length: int):
    """A T5-style word-level tokenizer (pad 0, eos 1 appended, unk 2) built offline and saved to ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=model_max_length
    )
    fast.save_pretrained(folder)
    return len(vocab)


def _tiny_encoder(kind: str, folder: Path) -> Path:
    """A randomly initialised encoder of ``kind`` with its tokenizer, saved as a transformers folder."""
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    vocab = _tiny_tokenizer(folder, model_max_length=12)
    torch.manual_seed(0)
    if kind in ("t5", "umt5"):
        cls = transformers.T5Config if kind == "t5" else transformers.UMT5Config
        model_cls = transformers.T5EncoderModel if kind == "t5" else transformers.UMT5EncoderModel
        cfg = cls(vocab_size=vocab, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
                  pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    else:
        model_cls = transformers.CLIPTextModel
        cfg = transformers.CLIPTextConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                          num_attention_heads=2, max_position_embeddings=10,
                                          pad_token_id=0, bos_token_id=1, eos_token_id=1)
    model_cls(cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory) -> Path:
    return _tiny_encoder("t5", tmp_path_factory.mktemp("t5"))


def _reference_forward(folder: Path, kind: str, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    import transformers

    cls = {"t5": transformers.T5EncoderModel, "umt5": transformers.UMT5EncoderModel, "clip": transformers.CLIPTextModel}
    model = cls[kind].from_pretrained(folder).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    batch = tok(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    return out, batch["attention_mask"].bool()


# ---------------------------------------------------------------------------------------------
# MiniLM, the default
# ---------------------------------------------------------------------------------------------


def test_minilm_tokens_match_sentence_transformers(minilm):
    from sentence_transformers import SentenceTransformer

    assert minilm.reference == "minilm" and minilm.dim == 384 and minilm.max_length == 256
    assert not minilm.model.training and not any(p.requires_grad for p in minilm.model.parameters())
    prompts = ["a red ball bouncing on grass", "the camera pans left over a blue cube and a green ball", ""]
    emb = minilm.encode(prompts)
    assert emb.tokens.shape == (3, max(minilm.token_counts(prompts)), 384)
    assert emb.mask.sum(1).tolist() == minilm.token_counts(prompts)
    assert emb.mask[2].sum() == 2  # the empty prompt is [CLS] [SEP]: the null condition
    assert torch.all(emb.tokens[~emb.mask] == 0)  # padding zeroed
    st = SentenceTransformer(str(minilm_dir()), device="cpu")
    for i, p in enumerate(prompts[:2]):
        want = torch.as_tensor(st.encode([p], output_value="token_embeddings")[0])
        n = int(emb.mask[i].sum())
        assert torch.allclose(emb.tokens[i, :n], want, atol=1e-4)


def test_minilm_batching_does_not_leak_and_meaning_is_kept(minilm):
    prompts = ["a red ball", "a crimson ball", "quarterly earnings fell sharply at the bank", "a red ball " * 8]
    together = minilm.encode(prompts, batch_size=3)
    for i, p in enumerate(prompts):
        alone = minilm.encode([p])
        n = alone.tokens.shape[1]
        assert torch.allclose(together.tokens[i, :n], alone.tokens[0], atol=1e-4)
    pooled = torch.nn.functional.normalize(
        (together.tokens * together.mask[..., None]).sum(1) / together.mask.sum(1, keepdim=True), dim=-1
    )
    sim = pooled @ pooled.T
    assert sim[0, 1] > sim[0, 2] + 0.2  # real weights: synonyms are closer than an unrelated sentence


def test_long_prompt_truncated_with_warning(minilm):
    long = "a red ball bouncing on grass " * 60
    with pytest.warns(PromptTruncatedWarning, match=r"limit of 256 tokens"):
        emb = minilm.encode(["short", long])
    assert emb.tokens.shape[1] == 256 and emb.mask[1].all() and emb.mask[0].sum() == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        minilm.encode(["a red ball bouncing on grass"])  # no warning under the limit


def test_bad_prompts_raise_input_error(minilm):
    for bad in ([], [1, "x"], None, ["ok", None]):
        with pytest.raises(InputError):
            minilm.encode(bad)
    assert minilm.encode("one prompt").tokens.shape[0] == 1


def test_minilm_bf16_close_to_fp32(minilm):
    enc = load_text_encoder("minilm", dtype=torch.bfloat16, max_length=32)
    assert enc.dtype == torch.bfloat16 and enc.max_length == 32
    a = enc.encode(["a red ball bouncing on grass"])
    b = minilm.encode(["a red ball bouncing on grass"])
    assert a.tokens.dtype == torch.bfloat16
    cos = torch.nn.functional.cosine_similarity(a.tokens.float(), b.tokens, dim=-1)
    assert cos.min() > 0.98
    assert enc.cache_key != minilm.cache_key


# ---------------------------------------------------------------------------------------------
# T5 / UMT5 / CLIP from local folders
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, limit", [("t5", 12), ("umt5", 12), ("clip", 10)])
def test_local_encoders_match_transformers(tmp_path, kind, limit):
    folder = _tiny_encoder(kind, tmp_path / kind)
    enc = load_text_encoder(str(folder))
    assert enc.dim == 16 and enc.max_length == limit and enc.reference == str(folder.resolve())
    prompts = ["a red ball", "the camera pans left over a blue cube"]
    emb = enc.encode(prompts)
    want, mask = _reference_forward(folder, kind, prompts)
    assert torch.equal(emb.mask, mask)
    assert torch.allclose(emb.tokens[mask], want[mask], atol=1e-5)
    with pytest.warns(PromptTruncatedWarning, match=rf"limit of {limit} tokens"):
        emb = enc.encode(["a red ball " * 10])
    assert emb.tokens.shape[1] == limit


def test_diffusers_layout_and_reload_by_reference(tmp_path, tiny_t5):
    import shutil

    root = tmp_path / "pipeline"
    (root / "text_encoder").mkdir(parents=True)
    (root / "tokenizer").mkdir()
    for f in tiny_t5.iterdir():
        shutil.copy(f, root / ("tokenizer" if f.name.startswith("tokenizer") else "text_encoder") / f.name)
    a = load_text_encoder(str(root))
    b = load_text_encoder(a.reference)  # what a pipeline stores in its config reloads the same encoder
    c = load_text_encoder(str(tiny_t5))
    x = a.encode(["green cube rolling"])
    assert torch.equal(x.tokens, b.encode(["green cube rolling"]).tokens)
    assert torch.equal(x.tokens, c.encode(["green cube rolling"]).tokens)


def test_missing_or_broken_folders_raise_checkpoint_error(tmp_path, tiny_t5):
    with pytest.raises(CheckpointError, match="neither"):
        load_text_encoder(str(tmp_path / "nope"))
    no_tok = tmp_path / "no_tokenizer"
    no_tok.mkdir()
    (no_tok / "config.json").write_text((tiny_t5 / "config.json").read_text())
    with pytest.raises(CheckpointError, match="tokenizer"):
        load_text_encoder(str(no_tok))


def test_text_embedding_helpers():
    a = TextEmbedding(torch.ones(2, 3, 4), torch.ones(2, 3, dtype=torch.bool))
    b = TextEmbedding(torch.ones(1, 5, 4), torch.ones(1, 5, dtype=torch.bool))
    c = TextEmbedding.cat([a, b])
    assert c.tokens.shape == (3, 5, 4) and c.mask.sum(1).tolist() == [3, 3, 5]
    assert torch.all(c.tokens[0, 3:] == 0)
    assert len(c[1:]) == 2 and c[2].tokens.shape == (1, 5, 4)
    assert set(c.as_cond()) == {"context", "context_mask"}
    with pytest.raises(InputError):
        TextEmbedding(torch.ones(2, 3, 4), torch.ones(2, 4, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------
# Caption cache
# ---------------------------------------------------------------------------------------------


def _counting(encoder):
    """Wrap encoder.encode to record how many prompts it was asked to encode."""
    calls = []
    original = encoder.encode

    def encode(prompts, **kw):
        calls.extend(prompts)
        return original(prompts, **kw)

    encoder.encode = encode
    return calls


def test_caption_cache_encodes_once_across_runs(tmp_path, minilm):
    caps = ["a red ball bouncing on grass", "a blue cube rolling on sand", "the camera pans right", ""]
    fresh = minilm.encode(caps)
    enc = load_text_encoder("minilm")
    calls = _counting(enc)
    with CaptionCache(tmp_path / "cache", enc, shard_size=3) as cache:
        got = cache.get(caps + caps[:1])  # duplicates are encoded once
        assert len(calls) == 4 and len(cache) == 4
        assert torch.allclose(got.tokens[:4], fresh.tokens, atol=1e-4) and torch.equal(got.mask[:4], fresh.mask)
        assert torch.equal(got.tokens[4], got.tokens[0])
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert len(index["entries"]) == 4 and len(list((tmp_path / "cache").glob("shard-*.safetensors"))) == 2
    calls.clear()
    again = CaptionCache(tmp_path / "cache", enc).get(list(reversed(caps)))  # a new run
    assert calls == []
    assert torch.allclose(again.tokens, got.tokens[[3, 2, 1, 0]], atol=0) and torch.equal(again.mask, got.mask[[3, 2, 1, 0]])
    # another encoder configuration never sees these entries
    other = load_text_encoder("minilm", max_length=4)
    assert "a red ball bouncing on grass" not in CaptionCache(tmp_path / "cache", other)
    assert "a red ball bouncing on grass" in CaptionCache(tmp_path / "cache", enc)


def test_caption_cache_corrupt_shard_is_reported_and_recomputed(tmp_path, tiny_t5):
    enc = load_text_encoder(str(tiny_t5))
    caps = [f"a {c} ball on grass" for c in ("red", "blue", "green")] + ["the camera pans left"]
    cache = CaptionCache(tmp_path / "c", enc, shard_size=2)
    assert cache.precompute(caps, progress=False) == 4
    assert cache.precompute(caps, progress=False) == 0
    want = cache.get(caps)
    shards = sorted((tmp_path / "c").glob("shard-*.safetensors"))
    assert len(shards) == 2
    shards[0].write_bytes(shards[0].read_bytes()[:40])  # truncated
    calls = _counting(enc)
    fresh = CaptionCache(tmp_path / "c", enc)
    with pytest.warns(CacheWarning, match="corrupt"):
        got = fresh.get(caps)
    assert len(calls) == 2  # only the broken shard's captions were encoded again
    assert torch.allclose(got.tokens, want.tokens, atol=1e-6) and torch.equal(got.mask, want.mask)
    fresh.flush()
    calls.clear()
    CaptionCache(tmp_path / "c", enc).get(caps)
    assert calls == []  # repaired on disk


def test_caption_cache_corrupt_index_is_rebuilt(tmp_path, tiny_t5):
    enc = load_text_encoder(str(tiny_t5))
    caps = ["a red ball", "a blue cube"]
    CaptionCache(tmp_path / "c", enc).precompute(caps, progress=False)
    (tmp_path / "c" / "index.json").write_text("{not json")
    calls = _counting(enc)
    with pytest.warns(CacheWarning, match="index"):
        cache = CaptionCache(tmp_path / "c", enc)
    cache.get(caps)
    assert calls == [] and json.loads((tmp_path / "c" / "index.json").read_text())["entries"]


def test_native_minilm_equals_transformers_bert_and_needs_no_transformers_import(minilm):
    import subprocess
    import sys

    import transformers

    prompts = ["a red ball bouncing on grass", "", "Ünïcödé, 3 CUBES & a ball!", "a long caption " * 90]
    tok = transformers.AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
    bert = transformers.AutoModel.from_pretrained(str(minilm_dir()), local_files_only=True).eval()
    want = tok(prompts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    got = minilm.tokenizer(prompts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    assert torch.equal(got["input_ids"], want["input_ids"]) and torch.equal(got["attention_mask"], want["attention_mask"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PromptTruncatedWarning)
        emb = minilm.encode(prompts)
    with torch.no_grad():
        ref = bert(**want).last_hidden_state.masked_fill(~want["attention_mask"].bool()[..., None], 0.0)
    torch.testing.assert_close(emb.tokens, ref, atol=2e-5, rtol=1e-4)  # fp32, another summation order
    code = "import sys; from soraflow.models.text import load_text_encoder; load_text_encoder(); print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
