"""Original Wan checkpoints (Wan-AI's ``WanModel`` layout) -> the diffusers / soraflow DiT layout.

Wan-AI publishes two forms of each model: a diffusers folder (``...-Diffusers``, ``WanTransformer3DModel``
keys, which are ours) and the original repository's ``WanModel`` (config keys ``dim``, ``num_heads``,
``in_dim``; weight names ``self_attn.q``, ``ffn.0``, ``modulation``, ``head.head``). This module maps the
second onto the first, so :meth:`soraflow.models.dit.DiT.from_pretrained` reads both. The table is the
one diffusers' single-file loader uses (``convert_wan_transformer_to_diffusers``), which a test checks
ours against on every key.

Mapping (original -> ours), per block ``blocks.{i}.``:

    self_attn.{q,k,v,o}       -> attn1.{to_q,to_k,to_v,to_out.0}
    cross_attn.{q,k,v,o}      -> attn2.{to_q,to_k,to_v,to_out.0}
    {self,cross}_attn.norm_q/k -> attn{1,2}.norm_q/k
    norm3 (the affine norm before cross-attention) -> norm2
    ffn.0 / ffn.2             -> ffn.net.0.proj / ffn.net.2
    modulation                -> scale_shift_table

and at the top: ``time_embedding.{0,2}`` -> ``condition_embedder.time_embedder.linear_{1,2}``,
``text_embedding.{0,2}`` -> ``condition_embedder.text_embedder.linear_{1,2}``, ``time_projection.1`` ->
``condition_embedder.time_proj``, ``head.head`` -> ``proj_out``, ``head.modulation`` ->
``scale_shift_table``; ``patch_embedding`` is unchanged. A ``model.diffusion_model.`` prefix (ComfyUI
exports) is stripped.
"""

from __future__ import annotations

import re

from ..errors import CheckpointError

_PREFIX = "model.diffusion_model."

_TOP = {
    "time_embedding.0.": "condition_embedder.time_embedder.linear_1.",
    "time_embedding.2.": "condition_embedder.time_embedder.linear_2.",
    "text_embedding.0.": "condition_embedder.text_embedder.linear_1.",
    "text_embedding.2.": "condition_embedder.text_embedder.linear_2.",
    "time_projection.1.": "condition_embedder.time_proj.",
    "head.head.": "proj_out.",
}

_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_ATTN = {"self_attn": "attn1", "cross_attn": "attn2"}
_PROJ = {"q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0"}


def is_original_wan_config(config: dict) -> bool:
    """True for the original repository's config.json (``WanModel``: dim, num_heads, in_dim ...)."""
    return config.get("_class_name") == "WanModel" or ("dim" in config and "num_heads" in config)


def config_from_original_wan(config: dict, source: str = "config") -> dict:
    """The original ``WanModel`` config as diffusers' ``WanTransformer3DModel`` config keys."""
    if config.get("model_type", "t2v") not in ("t2v", "ti2v"):
        raise CheckpointError(
            f"{source}: Wan model_type {config['model_type']!r} (image branch) is not supported; use T2V or TI2V weights"
        )
    try:
        dim, heads = int(config["dim"]), int(config["num_heads"])
        return {
            "in_channels": config.get("in_dim", 16),
            "out_channels": config.get("out_dim", config.get("in_dim", 16)),
            "patch_size": config.get("patch_size", (1, 2, 2)),
            "num_attention_heads": heads,
            "attention_head_dim": dim // heads,
            "ffn_dim": config["ffn_dim"],
            "num_layers": config["num_layers"],
            "text_dim": config.get("text_dim", 4096),
            "freq_dim": config.get("freq_dim", 256),
            "cross_attn_norm": config.get("cross_attn_norm", True),
            "eps": config.get("eps", 1e-6),
        }
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: incomplete original Wan config ({e})") from None


def rename_original_wan_key(key: str) -> str:
    """One original Wan weight name -> ours; names it does not know come back unchanged."""
    if key.startswith(_PREFIX):
        key = key[len(_PREFIX):]
    if "img_emb" in key or "_img." in key:
        raise CheckpointError(f"weight {key!r} belongs to Wan's I2V image branch, which is not supported")
    for old, new in _TOP.items():
        if key.startswith(old):
            return new + key[len(old):]
    if key == "head.modulation":
        return "scale_shift_table"
    m = _BLOCK.match(key)
    if m is None:
        return key
    i, rest = m.groups()
    parts = rest.split(".")
    if parts[0] in _ATTN and len(parts) == 3:
        attn, name, leaf = _ATTN[parts[0]], parts[1], parts[2]
        name = _PROJ.get(name, name)  # norm_q / norm_k keep their names
        rest = f"{attn}.{name}.{leaf}"
    elif parts[0] == "norm3":
        rest = "norm2." + ".".join(parts[1:])
    elif parts[0] == "ffn" and parts[1] in ("0", "2"):
        rest = ("ffn.net.0.proj." if parts[1] == "0" else "ffn.net.2.") + ".".join(parts[2:])
    elif rest == "modulation":
        rest = "scale_shift_table"
    return f"blocks.{i}.{rest}"


def original_wan_to_ours(state: dict) -> dict:
    """A whole original Wan state dict renamed to our (= diffusers') keys."""
    out = {}
    for key, value in state.items():
        new = rename_original_wan_key(key)
        if new in out:
            raise CheckpointError(f"two original Wan weights map to {new!r}")
        out[new] = value
    return out
