"""all-MiniLM-L6-v2 in plain torch: the default model's text encoder without importing transformers.

A 6-layer, 384-wide BERT encoder is a few dozen lines; importing transformers to build it costs more
than a second of every `soraflow generate` on a small CPU, longer than the encoder then runs. The
module names and keys are transformers' ``BertModel`` ones, so the shipped ``model.safetensors``
loads strictly, and the tokenizer is the same ``tokenizer.json`` read by the ``tokenizers`` library
(what transformers' fast tokenizer wraps). Tests compare both with transformers' own outputs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn


class _SelfAttention(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)


class _Projection(nn.Module):
    """A dense layer, then dropout-free LayerNorm of it plus the residual (BERT's post-norm)."""

    def __init__(self, dim_in: int, dim: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(dim_in, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.self = _SelfAttention(dim)
        self.output = _Projection(dim, dim, eps)


class _Intermediate(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.dense = nn.Linear(dim, hidden)


class _Layer(nn.Module):
    def __init__(self, dim: int, hidden: int, heads: int, eps: float):
        super().__init__()
        self.heads = heads
        self.attention = _Attention(dim, eps)
        self.intermediate = _Intermediate(dim, hidden)
        self.output = _Projection(hidden, dim, eps)

    def forward(self, x, bias):  # x (B, L, D), bias (B, 1, 1, L): 0 for tokens, -inf-ish for padding
        B, L, D = x.shape
        a = self.attention.self
        q, k, v = (proj(x).view(B, L, self.heads, D // self.heads).transpose(1, 2) for proj in (a.query, a.key, a.value))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, L, D/H)
        x = self.attention.output(y.transpose(1, 2).reshape(B, L, D), x)
        return self.output(F.gelu(self.intermediate.dense(x)), x)  # exact (erf) GELU, as BERT's "gelu"


class _Embeddings(nn.Module):
    def __init__(self, vocab: int, positions: int, types: int, dim: int, eps: float):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, dim)
        self.position_embeddings = nn.Embedding(positions, dim)
        self.token_type_embeddings = nn.Embedding(types, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=eps)
        self.register_buffer("position_ids", torch.arange(positions)[None], persistent=True)

    def forward(self, ids):  # (B, L) -> (B, L, D); one segment, so token type 0 everywhere
        x = self.word_embeddings(ids) + self.position_embeddings(self.position_ids[:, : ids.shape[1]])
        return self.LayerNorm(x + self.token_type_embeddings.weight[0])


class _Encoder(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layer = nn.ModuleList(layers)


class _Pooler(nn.Module):  # in the checkpoint; unused (the DiT reads every token)
    def __init__(self, dim: int):
        super().__init__()
        self.dense = nn.Linear(dim, dim)


class MiniLM(nn.Module):
    """BERT encoder with transformers' key names; ``forward(input_ids, attention_mask)`` returns an
    object with ``last_hidden_state`` (B, L, D), as transformers' models do."""

    def __init__(self, config: dict):
        super().__init__()
        dim, eps = config["hidden_size"], config.get("layer_norm_eps", 1e-12)
        if config.get("hidden_act", "gelu") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only BERT encoders with exact GELU and absolute positions are supported")
        self.config = SimpleNamespace(**config)
        self.embeddings = _Embeddings(config["vocab_size"], config["max_position_embeddings"],
                                      config["type_vocab_size"], dim, eps)
        self.encoder = _Encoder([_Layer(dim, config["intermediate_size"], config["num_attention_heads"], eps)
                                 for _ in range(config["num_hidden_layers"])])
        self.pooler = _Pooler(dim)

    def forward(self, input_ids, attention_mask=None):
        x = self.embeddings(input_ids)
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        bias = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(~mask, torch.finfo(x.dtype).min)
        bias = bias[:, None, None, :]  # (B, 1, 1, L)
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return SimpleNamespace(last_hidden_state=x)

    @classmethod
    def from_folder(cls, folder: str | Path, *, dtype: torch.dtype = torch.float32) -> "MiniLM":
        from ..weights import load_state_dict_checked, read_safetensors

        folder = Path(folder)
        model = cls(json.loads((folder / "config.json").read_text()))
        load_state_dict_checked(model, read_safetensors(folder / "model.safetensors"), source=str(folder))
        return model.to(dtype=dtype)


class WordPieceTokenizer:
    """``tokenizer.json`` through the ``tokenizers`` library, called like transformers' tokenizers
    (``tok(prompts, padding=..., truncation=..., max_length=..., return_tensors="pt")``)."""

    def __init__(self, folder: str | Path):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        self._tok.no_padding()
        self._tok.no_truncation()
        self.pad_id = self._tok.token_to_id("[PAD]") or 0
        self.model_max_length = math.inf

    def __call__(self, prompts, *, add_special_tokens: bool = True, padding: bool = False, truncation: bool = False,
                 max_length: int | None = None, return_tensors: str | None = None, verbose: bool = True):
        encoded = self._tok.encode_batch(list(prompts), add_special_tokens=add_special_tokens)
        ids = [e.ids for e in encoded]
        if truncation and max_length is not None:
            # Keep [CLS] ... and the final [SEP], as transformers' longest-first truncation does for one sequence.
            ids = [i if len(i) <= max_length else i[: max_length - 1] + i[-1:] for i in ids]
        masks = [[1] * len(i) for i in ids]
        if padding:
            width = max(len(i) for i in ids)
            ids = [i + [self.pad_id] * (width - len(i)) for i in ids]
            masks = [m + [0] * (width - len(m)) for m in masks]
        if return_tensors == "pt":
            return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(masks)}
        return {"input_ids": ids, "attention_mask": masks}


__all__ = ["MiniLM", "WordPieceTokenizer"]
