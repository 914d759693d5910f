"""LoRA adapters for the DiT: train them, save them as diffusers reads them, read the formats people share.

A low-rank adapter adds ``scale * B @ A`` to a linear layer's weight (A: rank x in, B: out x rank).
Training wraps the chosen linears in :class:`LoRALinear` and learns only A and B; generation merges
the adapters into the weights (``W += scale * B @ A``), so a sampling step costs what it costs
without them and several adapters stack by adding.

This is a small module of our own rather than peft: generation must not import peft (it pulls in
transformers and accelerate, seconds of start-up on a CPU), merging in place is all generation
needs, and the trainer's checkpoints keep their layout (only the adapter's tensors, one module).
The file format is peft's as diffusers writes it for Wan, so ``WanPipeline.load_lora_weights``
reads an adapter trained here, and the oracle tests check the output against diffusers + peft.

Formats read (each with the scaling ``alpha / rank`` folded in where the file gives an alpha):

- diffusers / peft: ``transformer.blocks.0.attn1.to_q.lora_A.weight`` and ``lora_B.weight``
  (``transformer.`` or peft's ``base_model.model.`` prefix, or none), ``lora_B.bias``;
- the original Wan / ComfyUI layout: ``diffusion_model.blocks.0.self_attn.q.lora_A.weight`` or
  ``lora_down`` / ``lora_up``, ``.alpha``, and ``.diff`` / ``.diff_b`` (full weight and bias deltas,
  as the step-distillation LoRAs carry);
- kohya / musubi-tuner: ``lora_unet_blocks_0_self_attn_q.lora_down.weight`` with ``.alpha``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import InputError
from .train.dit_config import LORA_TARGETS

WEIGHTS_NAME = "pytorch_lora_weights.safetensors"  # the file name diffusers' load_lora_weights looks for
# The linears a LoRA trains by default: both attentions and the feed-forward, in every block.
DEFAULT_TARGETS = tuple(LORA_TARGETS.split(","))

# Original Wan module names -> ours (= diffusers'), inside a block and outside.
_BLOCK_NAMES = {
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v", "self_attn.o": "attn1.to_out.0",
    "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k", "cross_attn.v": "attn2.to_v", "cross_attn.o": "attn2.to_out.0",
    "cross_attn.k_img": "attn2.add_k_proj", "cross_attn.v_img": "attn2.add_v_proj",
    "self_attn.norm_q": "attn1.norm_q", "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.norm_q": "attn2.norm_q", "cross_attn.norm_k": "attn2.norm_k",
    "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2", "norm3": "norm2", "modulation": "scale_shift_table",
}
_TOP_NAMES = {
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out", "patch_embedding": "patch_embedding",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
}
_SUFFIXES = {  # key ending -> role
    ".lora_A.weight": "down", ".lora_down.weight": "down", ".lora_B.weight": "up", ".lora_up.weight": "up",
    ".lora_B.bias": "bias", ".diff_b": "bias", ".diff": "diff", ".alpha": "alpha",
}


@dataclass
class LoRAWeights:
    """One module's adapter: ``down`` (rank, in) and ``up`` (out, rank) with the file's scaling
    folded into ``up``, and/or full deltas ``diff`` (the weight's shape) and ``bias`` (out,)."""

    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    diff: torch.Tensor | None = None
    bias: torch.Tensor | None = None

    def delta(self) -> torch.Tensor | None:
        """The weight delta in fp32, shaped like the module's weight."""
        out = None
        if self.down is not None:
            down = self.down.float().flatten(1)
            out = self.up.float().flatten(1) @ down
        if self.diff is not None:
            diff = self.diff.float()
            out = diff if out is None else out + diff.reshape(out.shape)
        return out


def _module_name(name: str) -> str:
    """A key's module path (without the role suffix) in our naming."""
    for prefix in ("base_model.model.", "transformer.", "model.diffusion_model.", "diffusion_model."):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    else:
        if name.startswith("lora_unet_"):  # kohya: dots written as underscores
            name = name[len("lora_unet_"):]
            m = re.fullmatch(r"blocks_(\d+)_(.+)", name)
            if m:
                rest = m.group(2)
                for orig in _BLOCK_NAMES:
                    if rest == orig.replace(".", "_"):
                        rest = orig
                        break
                name = f"blocks.{m.group(1)}.{rest}"
            else:
                name = next((orig for orig in _TOP_NAMES if name == orig.replace(".", "_")), name)
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
    if m and m.group(2) in _BLOCK_NAMES:
        return f"blocks.{m.group(1)}.{_BLOCK_NAMES[m.group(2)]}"
    return _TOP_NAMES.get(name, name)


def parse_lora(state: dict[str, torch.Tensor], *, source: str = "the LoRA") -> dict[str, LoRAWeights]:
    """Module name -> :class:`LoRAWeights` from a state dict in any of the formats above."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        role = next((r for s, r in _SUFFIXES.items() if key.endswith(s)), None)
        if role is None:
            raise InputError(f"{source}: key {key!r} is not a LoRA key (expected .lora_A/.lora_B/.lora_down/.lora_up "
                             f"weights, .alpha, .diff or .diff_b)")
        suffix = next(s for s, r in _SUFFIXES.items() if key.endswith(s) and r == role)
        name = _module_name(key[: -len(suffix)])
        if "dora_scale" in name:
            raise InputError(f"{source}: {key!r} is a DoRA adapter, which soraflow does not read")
        parts.setdefault(name, {})[role] = value
    if not parts:
        raise InputError(f"{source} holds no tensors")
    out = {}
    for name, p in parts.items():
        if ("down" in p) != ("up" in p):
            raise InputError(f"{source}: {name} has a LoRA {'down' if 'down' in p else 'up'} matrix and not the other")
        w = LoRAWeights(diff=p.get("diff"), bias=p.get("bias"))
        if "down" in p:
            down, up = p["down"], p["up"]
            rank = down.shape[0]
            if up.shape[1] != rank:
                raise InputError(f"{source}: {name}: up {tuple(up.shape)} and down {tuple(down.shape)} have different ranks")
            scale = float(p["alpha"]) / rank if "alpha" in p else 1.0
            w.down, w.up = down, up * scale if scale != 1.0 else up
        elif "alpha" in p and "diff" not in p and "bias" not in p:
            raise InputError(f"{source}: {name} has an alpha and no matrices")
        out[name] = w
    return out


def read_lora(path: str | os.PathLike) -> dict[str, LoRAWeights]:
    """Read a LoRA file (or a folder holding ``pytorch_lora_weights.safetensors``); safetensors only."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        files = [path / WEIGHTS_NAME] if (path / WEIGHTS_NAME).is_file() else sorted(
            p for p in path.glob("*.safetensors") if not p.name.startswith("."))  # not temporaries
        if len(files) != 1:
            raise InputError(f"LoRA folder {path}: expected {WEIGHTS_NAME} or exactly one .safetensors file, found {len(files)}")
        path = files[0]
    if not path.is_file():
        raise InputError(f"LoRA {path} does not exist")
    if path.suffix != ".safetensors":
        raise InputError(f"LoRA {path}: only .safetensors files are read (a pickle can run code when loaded)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"LoRA {path} is not a readable safetensors file: {err}") from None
    return parse_lora(state, source=f"LoRA {path}")


def parse_lora_arg(text: str) -> tuple[Path, float]:
    """``PATH[:SCALE]`` (the CLI's --lora) as (path, scale); a path may itself contain colons."""
    path, sep, scale = text.rpartition(":")
    if sep and path:
        try:
            return Path(path), float(scale)
        except ValueError:
            pass
    return Path(text), 1.0


@torch.no_grad()
def merge_lora(model: nn.Module, lora: dict[str, LoRAWeights], scale: float = 1.0, *, source: str = "the LoRA") -> int:
    """Add ``scale`` x the adapter into ``model``'s weights in place; returns the number of modules changed.

    Every module the adapter names must exist with matching shapes: an adapter for another model
    is refused before any weight changes. Scale 0 leaves the weights bit for bit as they were.
    """
    plan = []
    for name, w in lora.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            try:  # a bare parameter (a block's scale_shift_table: the original layout's "modulation")
                module = model.get_parameter(name)
            except AttributeError:
                raise InputError(f"{source} adapts {name}, which this model does not have (an adapter for another model?)") from None
        weight = module if isinstance(module, nn.Parameter) else getattr(module, "weight", None)
        if isinstance(module, LoRALinear):
            weight = module.base.weight
            module = module.base
        if weight is None:
            raise InputError(f"{source}: {name} has no weight to adapt")
        delta = w.delta()
        if delta is not None and delta.numel() != weight.numel():
            raise InputError(f"{source}: {name} is {tuple(weight.shape)} in this model, the adapter's delta is {tuple(delta.shape)}")
        bias = getattr(module, "bias", None)
        if w.bias is not None and (bias is None or bias.numel() != w.bias.numel()):
            raise InputError(f"{source}: {name} has no bias of {w.bias.numel()} values to adapt")
        plan.append((weight, delta, bias, w.bias))
    if scale == 0:
        return 0
    for weight, delta, bias, dbias in plan:
        if delta is not None:
            weight.copy_((weight.float() + scale * delta.to(weight.device).view(weight.shape)).to(weight.dtype))
        if dbias is not None:
            bias.copy_((bias.float() + scale * dbias.float().to(bias.device)).to(bias.dtype))
    return len(plan)


def merge_loras(model: nn.Module, loras) -> None:
    """Merge (path, scale) adapter files into ``model`` in float32, then back to its stored dtype (several
    adapters add up before one rounding)."""
    stored = next(model.parameters()).dtype
    model.float()
    for path, scale in loras:
        merge_lora(model, read_lora(path), scale, source=f"LoRA {path}")
    model.to(stored)


def merge_into_folder(model_dir: str | os.PathLike, loras, out_dir: str | os.PathLike) -> Path:
    """Write a copy of a model folder (ours, a diffusers pipeline folder, or a DiT folder alone) with
    the (path, scale) ``loras`` merged into its DiT, in the DiT's stored dtype. The other parts are
    hard-linked where the file system allows (else copied); the folder appears whole or not at all."""
    import shutil

    from .model_folder import read_config
    from .models.dit import DiT

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not model_dir.is_dir():
        raise InputError(f"model folder {model_dir} does not exist")
    if out_dir.resolve() == model_dir.resolve():
        raise InputError(f"-o {out_dir} is the model folder itself; write the merged model elsewhere")
    if out_dir.exists():
        raise InputError(f"-o {out_dir} already exists; choose a new folder")
    is_dit = (model_dir / "diffusion_pytorch_model.safetensors").is_file() or (model_dir / "diffusion_pytorch_model.safetensors.index.json").is_file()
    sub = None if is_dit else read_config(model_dir).dit_folder
    dit = DiT.from_pretrained(model_dir if is_dit else model_dir / sub)
    merge_loras(dit, loras)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    def link_or_copy(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    try:
        if is_dit:
            dit.save_pretrained(tmp)
        else:
            shutil.copytree(model_dir, tmp, copy_function=link_or_copy, ignore=lambda d, names: names if Path(d) == model_dir / sub else [])
            shutil.rmtree(tmp / sub, ignore_errors=True)
            dit.save_pretrained(tmp / sub)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


# --------------------------------------------------------------------------------------------- training


class LoRAAdapter(nn.Module):
    """The trainable part of one adapted linear: A (rank, in) and B (out, rank)."""

    def __init__(self, in_features: int, out_features: int, rank: int, device=None):
        super().__init__()
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, device=device))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # peft's init of A; B = 0


class LoRALinear(nn.Module):
    """``base(x) + (x @ A^T @ B^T) * alpha / rank``: a frozen linear with a trainable low-rank update.

    B starts at zero, so a fresh adapter leaves the model's output exactly as it was.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        self.adapter = LoRAAdapter(base.in_features, base.out_features, rank, device=base.weight.device)

    @property
    def weight(self) -> torch.Tensor:  # the base's, for code that reads a linear's weight (dtype checks)
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.adapter.lora_A.to(x.dtype), self.adapter.lora_B.to(x.dtype)
        return self.base(x) + (x @ a.t() @ b.t()) * self.scaling


def add_lora(model: nn.Module, rank: int, *, alpha: float | None = None, targets=DEFAULT_TARGETS) -> list[str]:
    """Freeze ``model`` and wrap its linears whose names end in one of ``targets`` (a module path
    suffix: "to_q", "attn2.to_k", "ffn.net.2") in :class:`LoRALinear`. Returns the wrapped names."""
    if rank < 1:
        raise InputError(f"LoRA rank {rank} must be at least 1")
    targets = tuple(t.strip() for t in targets if t.strip())
    model.requires_grad_(False)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)
             and any(n == t or n.endswith("." + t) for t in targets)]
    if not names:
        linears = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise InputError(f"--lora-targets {','.join(targets)} matches no linear layer; names end in e.g. {', '.join(linears[:8])}")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, float(alpha or rank)))
    return names


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


class LoRAParameters(nn.Module):
    """The adapters of a model as one module (their tensors only, shared with the model): what a
    LoRA run optimizes and checkpoints, instead of the frozen base it reloads from ``--init``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.layers = nn.ModuleDict({n.replace(".", "__"): m.adapter for n, m in lora_layers(model).items()})


def lora_state_dict(model: nn.Module, *, prefix: str = "transformer.") -> dict[str, torch.Tensor]:
    """The adapter in diffusers' Wan layout, the scaling folded into B (so no alpha is needed)."""
    out = {}
    for name, m in lora_layers(model).items():
        out[f"{prefix}{name}.lora_A.weight"] = m.adapter.lora_A.detach().float().contiguous()
        out[f"{prefix}{name}.lora_B.weight"] = (m.adapter.lora_B.detach().float() * m.scaling).contiguous()
    return out


def save_lora(model: nn.Module, out_dir: str | os.PathLike, *, metadata: dict | None = None) -> Path:
    """Write ``OUT_DIR/pytorch_lora_weights.safetensors`` atomically; returns its path."""
    from safetensors.torch import save_file

    from .atomic import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / WEIGHTS_NAME
    meta = {"format": "pt", **{k: str(v) for k, v in (metadata or {}).items()}}
    with atomic_path(path) as tmp:
        save_file(lora_state_dict(model), str(tmp), metadata=meta)
    return path


def unwrap_lora(model: nn.Module, *, merge: bool = True) -> None:
    """Replace every :class:`LoRALinear` by its base linear, with the update merged in (or dropped)."""
    for name, m in lora_layers(model).items():
        if merge:
            with torch.no_grad():
                delta = (m.adapter.lora_B.float() @ m.adapter.lora_A.float()) * m.scaling
                m.base.weight.copy_((m.base.weight.float() + delta).to(m.base.weight.dtype))
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, m.base)


__all__ = [
    "DEFAULT_TARGETS", "LoRAAdapter", "LoRALinear", "LoRAParameters", "LoRAWeights", "WEIGHTS_NAME", "add_lora", "lora_layers",
    "lora_state_dict", "merge_into_folder", "merge_lora", "merge_loras", "parse_lora", "parse_lora_arg", "read_lora", "save_lora", "unwrap_lora",
]
