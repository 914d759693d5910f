"""Diffusion transformer over spacetime patches (the Wan2.1/2.2 layout), predicting rectified-flow velocity.

A latent video (B, C, T, H, W) is cut into ``patch_size`` = (pt, ph, pw) spacetime patches; each patch is
a token. Blocks: AdaLN-modulated self-attention with QK RMSNorm and 3D rotary positions over (t, h, w),
cross-attention to text tokens, a GELU feed-forward. The last layer maps tokens back onto the latent grid.
Any grid (resolution, aspect ratio, duration, a single frame) runs through the same weights: positions are
rotary, never learned tables. With a temporal patch (pt > 1) a latent clip of 1 + k pt frames has frame 0
repeated in front to fill a patch of its own (as a causal VAE gives frame 0 a latent frame of its own), and
the repeats are dropped from the output, so a VAE without temporal compression can leave the packing of
frames into tokens to the DiT.

Weight compatibility: module and parameter names are exactly those of diffusers' ``WanTransformer3DModel``
(``blocks.0.attn1.to_q.weight``, ``condition_embedder.time_proj.bias``, ...), so a diffusers folder loads
with :meth:`DiT.from_pretrained` and our folders load in diffusers; original Wan-AI folders load through
the key table in :mod:`soraflow.models.convert_dit`. Every Wan layout runs: T2V (Wan2.1/2.2), TI2V (Wan2.2 5B)
and Wan2.1 I2V / FLF2V with their CLIP image branch (``image_dim``: CLIP tokens, embedded, are a second
set of keys and values in every cross-attention, beside the text's).

Timesteps: flow time t in [0, 1] (0 = clean, 1 = noise), scaled by 1000 inside so Wan weights work as
trained. ``t`` may be (B,), (B, T) per latent frame or (B, N) per token: a given (clean) frame gets t = 0
while the others are noisy, and modulation becomes per frame / per token.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.utils.checkpoint
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from ..errors import CheckpointError, InputError
from ..weights import check_finite_file, read_json_object
from .convert_dit import config_from_original_wan, is_original_wan_config, original_wan_to_ours

# Wan trains with timesteps in [0, 1000]; our flow time lives in [0, 1].
TIMESTEP_SCALE = 1000.0

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
# Block linears that DiT.quantize_int8 keeps in float32 (names within a block; see there why)
INT8_KEEP_FP32 = ("attn1.to_out", "attn2.to_k", "attn2.to_v")


@dataclass(frozen=True)
class DiTConfig:
    """Shape of a DiT. Field names are diffusers' ``WanTransformer3DModel`` config keys."""

    in_channels: int = 16  # latent channels in (Wan2.1 VAE: 16; Wan2.2 VAE: 48)
    out_channels: int = 16  # channels of the predicted velocity
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (t, h, w) latent cells per token
    num_attention_heads: int = 6  # model width = heads * attention_head_dim
    attention_head_dim: int = 64  # split 3 ways by the rotary embedding: t gets the rest, h = w = 2 * (d // 6)
    ffn_dim: int = 1536  # hidden width of the feed-forward
    num_layers: int = 12  # transformer blocks
    text_dim: int = 384  # size of the text encoder's token features (MiniLM 384, umT5 4096)
    freq_dim: int = 256  # sinusoidal timestep features fed to the time MLP
    cross_attn_norm: bool = True  # affine LayerNorm before cross-attention (all Wan models: True)
    qk_norm: str = "rms_norm_across_heads"  # Wan's QK norm: one RMSNorm over all heads of q and of k
    eps: float = 1e-6  # LayerNorm / RMSNorm epsilon
    rope_theta: float = 10000.0  # rotary base
    rope_max_seq_len: int = 1024  # kept for diffusers' config; our rotary tables are computed per grid, no limit
    # soraflow extension (not in Wan; False keeps the Wan layout): the masked mean of the text tokens,
    # through a small MLP, is added to the timestep embedding, so the prompt also steers every block's
    # modulation: a global path beside cross-attention (SD3 and Flux have one, from a pooled CLIP
    # vector). What it measurably does: docs/dit.md.
    pooled_text: bool = False
    # Wan2.1 I2V / FLF2V: CLIP image tokens of this width (1280), embedded to the model width, attended in
    # every cross-attention through their own key/value projections (added_kv_proj_dim: the width they
    # project from, the model's); FLF2V adds a learned position table over its two images' tokens.
    image_dim: int | None = None
    added_kv_proj_dim: int | None = None
    pos_embed_seq_len: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise InputError(f"patch_size must be three positive ints (t, h, w), got {self.patch_size}")
        if self.attention_head_dim < 6 or self.attention_head_dim % 2:
            raise InputError(f"attention_head_dim must be even and >= 6 (3D rotary), got {self.attention_head_dim}")
        if self.qk_norm != "rms_norm_across_heads":
            raise InputError(f"qk_norm {self.qk_norm!r} is not supported (only 'rms_norm_across_heads', as Wan)")
        for name in ("in_channels", "out_channels", "num_attention_heads", "ffn_dim", "num_layers", "text_dim"):
            if getattr(self, name) < 1:
                raise InputError(f"DiTConfig.{name} must be >= 1, got {getattr(self, name)}")
        # Far past any real model (Wan 14B: 40 blocks, width 5120, FFN 13824): a config beyond these is
        # a typo, and building it, even on the meta device to count it, would take minutes.
        for name, limit in (("num_layers", 1000), ("num_attention_heads", 1024), ("attention_head_dim", 1024),
                            ("ffn_dim", 2**20), ("in_channels", 4096), ("out_channels", 4096), ("text_dim", 2**16)):
            if getattr(self, name) > limit:
                raise InputError(f"DiTConfig.{name} = {getattr(self, name)} is over the limit of {limit}")
        if self.freq_dim < 2 or self.freq_dim % 2:
            raise InputError(f"freq_dim must be even and >= 2, got {self.freq_dim}")

    @property
    def dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def rope_dims(self) -> tuple[int, int, int]:
        """Channels of each head rotated by the (t, h, w) position (Wan's split)."""
        h = w = 2 * (self.attention_head_dim // 6)
        return self.attention_head_dim - h - w, h, w

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d

    def to_diffusers_dict(self) -> dict:
        """config.json that diffusers' WanTransformer3DModel.from_pretrained also accepts.

        A model with ``pooled_text`` has weights Wan does not: its config names our class, so diffusers
        does not load it as a Wan model that would silently drop the pooled path.
        """
        d = self.to_dict()
        del d["rope_theta"]  # diffusers hard-codes 10000
        d.update(_class_name="WanTransformer3DModel")
        if self.pooled_text:
            d["_class_name"] = "DiT"
        else:
            del d["pooled_text"]
        if self.rope_theta != 10000.0:
            d["_soraflow_rope_theta"] = self.rope_theta
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "DiTConfig":
        """Read our config.json or a diffusers WanTransformer3DModel one (unknown keys are ignored)."""
        cls_name = d.get("_class_name")
        if cls_name not in (None, "WanTransformer3DModel", "DiT"):
            raise CheckpointError(f"{source}: _class_name {cls_name!r} is not a WanTransformer3DModel / DiT config")
        if (d.get("image_dim") is None) != (d.get("added_kv_proj_dim") is None):
            raise CheckpointError(f"{source}: image_dim and added_kv_proj_dim go together (Wan I2V's image branch)")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in fields}
        if "_soraflow_rope_theta" in d:
            kwargs["rope_theta"] = d["_soraflow_rope_theta"]
        if kwargs.get("out_channels") is None and "in_channels" in kwargs:
            kwargs["out_channels"] = kwargs["in_channels"]  # diffusers: out_channels=None means in_channels
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise CheckpointError(f"{source}: bad DiT config ({e})") from None


DIT_PRESETS: dict[str, DiTConfig] = {
    # Unit tests: a few thousand parameters.
    "tiny": DiTConfig(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, ffn_dim=48,
        num_layers=2, text_dim=16, freq_dim=32,
    ),
    # The default world model: MiniLM text features (384), Wan2.1-VAE latents (16 ch).
    "small": DiTConfig(
        in_channels=16, out_channels=16, num_attention_heads=6, attention_head_dim=64, ffn_dim=1536,
        num_layers=12, text_dim=384, freq_dim=256,
    ),
    # Wan2.1 T2V 1.3B (umT5-XXL text features, 4096).
    "wan-1.3b": DiTConfig(
        in_channels=16, out_channels=16, num_attention_heads=12, attention_head_dim=128, ffn_dim=8960,
        num_layers=30, text_dim=4096, freq_dim=256,
    ),
    # Wan2.2 TI2V 5B (48-channel Wan2.2 VAE latents).
    "wan2.2-5b": DiTConfig(
        in_channels=48, out_channels=48, num_attention_heads=24, attention_head_dim=128, ffn_dim=14336,
        num_layers=30, text_dim=4096, freq_dim=256,
    ),
    # Wan2.1 T2V 14B (also the shape of each Wan2.2 A14B expert).
    "wan-14b": DiTConfig(
        in_channels=16, out_channels=16, num_attention_heads=40, attention_head_dim=128, ffn_dim=13824,
        num_layers=40, text_dim=4096, freq_dim=256,
    ),
}


def dit_config(name: str, **overrides) -> DiTConfig:
    """A preset by name, with fields overridden (``dit_config("small", num_layers=8)``)."""
    if name not in DIT_PRESETS:
        raise InputError(f"unknown DiT preset {name!r}; choose one of {', '.join(DIT_PRESETS)}")
    return dataclasses.replace(DIT_PRESETS[name], **overrides)


# --------------------------------------------------------------------------------------------- pieces


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features [cos, sin] of timesteps t (any shape, in Wan's [0, 1000] scale) -> (*t.shape, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class MLP2(nn.Module):
    """linear_1 -> activation -> linear_2 (the names diffusers' TimestepEmbedding / PixArt projection use)."""

    def __init__(self, d_in: int, d_hidden: int, act: nn.Module):
        super().__init__()
        self.linear_1 = nn.Linear(d_in, d_hidden)
        self.act = act
        self.linear_2 = nn.Linear(d_hidden, d_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


def _mlp2_fp32(mlp: MLP2, x: torch.Tensor, act) -> torch.Tensor:
    h = F.linear(x.float(), mlp.linear_1.weight.float(), mlp.linear_1.bias.float())
    return F.linear(act(h), mlp.linear_2.weight.float(), mlp.linear_2.bias.float())


class ConditionEmbedder(nn.Module):
    """Timestep (+ pooled text) -> (temb, six modulation vectors); text features -> model width."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.freq_dim = cfg.freq_dim
        self.time_embedder = MLP2(cfg.freq_dim, cfg.dim, nn.SiLU())
        self.time_proj = nn.Linear(cfg.dim, 6 * cfg.dim)
        self.text_embedder = MLP2(cfg.text_dim, cfg.dim, nn.GELU(approximate="tanh"))
        self.text_pooler = MLP2(cfg.text_dim, cfg.dim, nn.SiLU()) if cfg.pooled_text else None
        self.image_embedder = ImageEmbedding(cfg.image_dim, cfg.dim, cfg.pos_embed_seq_len) if cfg.image_dim else None

    # The time path stays in fp32 even under autocast (Wan keeps it so): it is tiny and the
    # modulation multiplies every activation.

    def time(self, t: torch.Tensor) -> torch.Tensor:
        """t (M,) in [0, 1000] -> temb (M, D), fp32."""
        with torch.autocast(t.device.type, enabled=False):
            return _mlp2_fp32(self.time_embedder, timestep_features(t, self.freq_dim), F.silu)

    def pooled(self, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Masked mean of the text tokens (B, L, text_dim) -> (B, D) fp32, added to temb (``pooled_text``)."""
        with torch.autocast(context.device.type, enabled=False):
            context = context.float()
            if mask is None:
                mean = context.mean(1)
            else:
                weights = mask.float()[..., None]
                mean = (context * weights).sum(1) / weights.sum(1).clamp(min=1)
            return _mlp2_fp32(self.text_pooler, mean, F.silu)

    def modulation(self, temb: torch.Tensor) -> torch.Tensor:
        """temb (..., D) -> the blocks' modulation (..., 6, D), fp32."""
        with torch.autocast(temb.device.type, enabled=False):
            mod = F.linear(F.silu(temb), self.time_proj.weight.float(), self.time_proj.bias.float())
        return mod.unflatten(-1, (6, -1))


class ImageEmbedding(nn.Module):
    """CLIP image tokens -> model width: LayerNorm, GELU MLP, LayerNorm, in fp32 (diffusers' WanImageEmbedding).
    With ``pos_embed_seq_len`` (FLF2V), the two images' tokens are one sequence with a learned position table."""

    def __init__(self, d_in: int, d_out: int, pos_embed_seq_len: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_in)
        self.ff = FeedForward(d_in, d_in, d_out=d_out, approximate="none")
        self.norm2 = nn.LayerNorm(d_out)
        self.pos_embed = nn.Parameter(torch.zeros(1, pos_embed_seq_len, d_in)) if pos_embed_seq_len else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, d_in) -> (B, L, d_out)
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            if self.pos_embed is not None:
                x = x.reshape(-1, self.pos_embed.shape[1], x.shape[-1]) + self.pos_embed.float()
            x = F.layer_norm(x, x.shape[-1:], self.norm1.weight.float(), self.norm1.bias.float(), self.norm1.eps)
            p0, p2 = self.ff.net[0].proj, self.ff.net[2]
            x = F.gelu(F.linear(x, p0.weight.float(), p0.bias.float()))
            x = F.linear(x, p2.weight.float(), p2.bias.float())
            return F.layer_norm(x, x.shape[-1:], self.norm2.weight.float(), self.norm2.bias.float(), self.norm2.eps)


class Attention(nn.Module):
    """Multi-head attention with Wan's QK RMSNorm across heads; self-attention (rotary) or cross-attention,
    the latter optionally also over image tokens with their own keys and values (Wan2.1 I2V)."""

    def __init__(self, cfg: DiTConfig, image: bool = False):
        super().__init__()
        dim = cfg.dim
        self.heads = cfg.num_attention_heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])  # index 0: diffusers' key is to_out.0
        self.norm_q = nn.RMSNorm(dim, eps=cfg.eps)
        self.norm_k = nn.RMSNorm(dim, eps=cfg.eps)
        if image:  # diffusers' names: add_k_proj, add_v_proj, norm_added_k
            self.add_k_proj = nn.Linear(cfg.added_kv_proj_dim, dim)
            self.add_v_proj = nn.Linear(cfg.added_kv_proj_dim, dim)
            self.norm_added_k = nn.RMSNorm(dim, eps=cfg.eps)
        # None: local SDPA. soraflow.parallel.ulysses sets a sequence-parallel attention here (same signature).
        self.attention_fn = None

    def forward(
        self,
        x: torch.Tensor,  # (B, N, D)
        context: torch.Tensor | None = None,  # (B, L, D) for cross-attention
        rope: torch.Tensor | None = None,  # (N, 1, d/2, 2) rotary cos/sin, self-attention only
        mask: torch.Tensor | None = None,  # (B, 1, 1, L) bool, True = attend
        image: torch.Tensor | None = None,  # (B, L_img, D) embedded image tokens (cross-attention only)
    ) -> torch.Tensor:
        kv_in = x if context is None else context
        q = _rms_norm(self.norm_q, self.to_q(x))  # (B, N, D)
        k = _rms_norm(self.norm_k, self.to_k(kv_in))  # (B, L, D)
        v = self.to_v(kv_in)
        q = q.unflatten(-1, (self.heads, -1))  # (B, N, H, d)
        k = k.unflatten(-1, (self.heads, -1))
        v = v.unflatten(-1, (self.heads, -1))
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        # SDPA takes (B, H, N, d); the transposes are views, the CPU kernels accept the strides.
        attend = self.attention_fn or F.scaled_dot_product_attention
        out = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        out = out.transpose(1, 2).flatten(2)  # (B, N, D)
        if image is not None:  # a second attention over the image tokens, added before the output projection
            ki = _rms_norm(self.norm_added_k, self.add_k_proj(image)).unflatten(-1, (self.heads, -1))
            vi = self.add_v_proj(image).unflatten(-1, (self.heads, -1))
            out = out + F.scaled_dot_product_attention(q.transpose(1, 2), ki.transpose(1, 2), vi.transpose(1, 2)).transpose(1, 2).flatten(2)
        return self.to_out[0](out)


def _rms_norm(norm: nn.RMSNorm, x: torch.Tensor) -> torch.Tensor:
    # Under autocast, x arrives in bf16 while the weight is fp32; the fused kernel wants one dtype.
    return F.rms_norm(x, norm.normalized_shape, norm.weight.to(x.dtype), norm.eps)


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs (x0, x1), (x2, x3), ... of x (B, N, H, d) by per-token angles.

    ``rope`` is (N, 1, d/2, 2) [cos, sin]. Eager: one complex multiply (a free view of the table), ~10x
    fewer passes over memory than the real-valued form (diffusers writes strided halves). Under
    torch.compile the real-valued form, which Inductor fuses (it generates no code for complex ops).
    Both in fp32.
    """
    pairs = x.float().unflatten(-1, (-1, 2))  # (B, N, H, d/2, 2)
    if torch.compiler.is_compiling():
        cos, sin = rope.unbind(-1)
        x1, x2 = pairs.unbind(-1)
        out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    else:
        out = torch.view_as_real(torch.view_as_complex(pairs) * torch.view_as_complex(rope))
    return out.flatten(-2).to(x.dtype)


class GeluProj(nn.Module):
    """Linear then tanh-GELU (diffusers' FeedForward first layer: key ffn.net.0.proj)."""

    def __init__(self, d_in: int, d_out: int, approximate: str = "tanh"):
        super().__init__()
        self.proj = nn.Linear(d_in, d_out)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate=self.approximate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, *, d_out: int | None = None, approximate: str = "tanh"):
        super().__init__()
        # net.0 / net.2 are diffusers' keys; net.1 was a dropout and holds nothing.
        self.net = nn.ModuleList([GeluProj(dim, hidden, approximate), nn.Identity(), nn.Linear(hidden, d_out or dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class DiTBlock(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        dim = cfg.dim
        self.eps = cfg.eps
        self.attn1 = Attention(cfg)
        self.attn2 = Attention(cfg, image=cfg.image_dim is not None)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.eps) if cfg.cross_attn_norm else None
        self.ffn = FeedForward(dim, cfg.ffn_dim)
        # Learned offsets of the six modulation vectors (shift, scale, gate) x (attention, FFN).
        self.scale_shift_table = nn.Parameter(torch.empty(1, 6, dim))  # filled by DiT.initialize_weights

    def forward(
        self,
        x: torch.Tensor,  # (B, G, N/G, D) fp32 residual stream, tokens grouped by shared timestep
        context: torch.Tensor,  # (B, L, D)
        mod: torch.Tensor,  # (B, G, 6, D) fp32 modulation from the timestep
        rope: torch.Tensor,  # (N, 1, d/2, 2) rotary cos/sin
        mask: torch.Tensor | None,
        dtype: torch.dtype,  # matmul dtype
        image: torch.Tensor | None = None,  # (B, L_img, D) embedded image tokens (Wan2.1 I2V)
    ) -> torch.Tensor:
        B, G, S, D = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.scale_shift_table.float() + mod).unsqueeze(2).unbind(3)

        h = modulated_norm(x, shift1, scale1, self.eps).to(dtype)  # (B, G, S, D)
        x = torch.addcmul(x, self.attn1(h.view(B, G * S, D), rope=rope).view(B, G, S, D), gate1)

        h = x.view(B, G * S, D)
        if self.norm2 is not None:
            h = F.layer_norm(h, (D,), self.norm2.weight.float(), self.norm2.bias.float(), self.eps)
        x = x + self.attn2(h.to(dtype), context=context, mask=mask, image=image).view(B, G, S, D)

        h = modulated_norm(x, shift2, scale2, self.eps).to(dtype)
        return torch.addcmul(x, self.ffn(h.view(B, G * S, D)).view(B, G, S, D), gate2)


def modulated_norm(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm(x) * (1 + scale) + shift for x (B, G, S, D) and shift/scale (B|1, G, 1, D).

    When one (shift, scale) covers every token (one timestep for the whole batch, the usual sampling
    step) it is LayerNorm's own affine: one fused pass instead of three.
    """
    if shift.shape[0] == 1 and shift.shape[1] == 1:
        return F.layer_norm(x, x.shape[-1:], 1 + scale.reshape(-1), shift.reshape(-1), eps)
    return torch.addcmul(shift, _layer_norm(x, eps), 1 + scale)


def _layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=eps)


# --------------------------------------------------------------------------------------------- model


class DiT(nn.Module):
    """Diffusion transformer: velocity = DiT(noisy latents, flow time, text tokens)."""

    def __init__(self, config: DiTConfig | None = None):
        super().__init__()
        cfg = self.config = config or DIT_PRESETS["small"]
        self.patch_embedding = nn.Conv3d(cfg.in_channels, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.condition_embedder = ConditionEmbedder(cfg)
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.num_layers))
        self.proj_out = nn.Linear(cfg.dim, cfg.out_channels * math.prod(cfg.patch_size))
        # output shift, scale; empty here (initialize_weights fills it) because arithmetic on the meta
        # tensors of from_pretrained goes through torch's reference kernels, which import torch._dynamo (seconds of start-up)
        self.scale_shift_table = nn.Parameter(torch.empty(1, 2, cfg.dim))
        self._rope_cache: dict[tuple, torch.Tensor] = {}
        self.gradient_checkpointing = False  # training: recompute each block in the backward pass (less memory)
        self.initialize_weights()

    # ------------------------------------------------------------------ init

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """All special initialisation (Wan's init plus DiT's adaLN-zero).

        Linear layers: Xavier-uniform, zero bias (patch embedding too, as a linear over a flattened patch).
        Text and time MLPs: normal(0.02); the text pooler's output layer zero. adaLN-zero: the timestep
        modulation (time_proj) and every block's scale_shift_table are zero, so each block starts as the
        identity; the output projection is zero, so a fresh model predicts exactly zero velocity.
        """
        if self.patch_embedding.weight.is_meta:
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embedding.weight
        w.copy_(nn.init.xavier_uniform_(torch.empty_like(w).flatten(1)).view_as(w))
        nn.init.zeros_(self.patch_embedding.bias)
        for mlp in (self.condition_embedder.time_embedder, self.condition_embedder.text_embedder):
            nn.init.normal_(mlp.linear_1.weight, std=0.02)
            nn.init.normal_(mlp.linear_2.weight, std=0.02)
        pooler = self.condition_embedder.text_pooler
        if pooler is not None:  # zero output: adding the pooled path leaves a model's outputs unchanged
            nn.init.normal_(pooler.linear_1.weight, std=0.02)
            nn.init.zeros_(pooler.linear_2.weight)
        nn.init.zeros_(self.condition_embedder.time_proj.weight)
        nn.init.zeros_(self.condition_embedder.time_proj.bias)
        for block in self.blocks:
            nn.init.zeros_(block.scale_shift_table)
        nn.init.normal_(self.scale_shift_table, std=self.config.dim**-0.5)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "DiT":
        return cls(dit_config(name, **overrides))

    def quantize_int8(self) -> int:
        """Run most of the blocks' linear layers in dynamic int8: weights int8 per output channel,
        activations quantized per call; returns how many were converted.

        CPU inference only, and worth it where bf16 matmuls are not fast (no AMX): the int8 GEMMs
        (fbgemm) are about 2.2-2.4x the fp32 ones at the default model's wide shapes with AVX-512
        VNNI and 1.6x with AVX2. Converted:
        self-attention q/k/v, cross-attention q and output, both feed-forward layers. Kept in fp32
        (``INT8_KEEP_FP32``): the self-attention output projection, whose rounding measurably moved
        the default model's clips, and the cross-attention key/value projections, which see only the
        few text tokens (nothing to gain). So kept, the default model's clips are 52.3 dB PSNR from fp32
        ones (worst of six prompts 50.9 dB, against 48.5 / 32.2 dB with every block linear in int8) for
        ~5% more DiT time at two threads (BENCHMARKS.md, "The DiT's int8 scheme"). The time MLP, text projection,
        patch embedding and output projection stay fp32 too. Irreversible: reload the weights for
        another precision. Uses torch's eager dynamic quantization (``torch.ao``, which torch
        deprecates in favour of torchao); where it is missing this raises ``InputError``.
        """
        import warnings

        if self.proj_out.weight.device.type != "cpu" or self.proj_out.weight.dtype != torch.float32:
            raise InputError("int8 quantization needs the DiT on the CPU in float32")
        try:
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
        except ImportError as e:  # a torch without eager quantization
            raise InputError(f"int8 is not available in this torch build ({e}); use float32 or bfloat16") from None
        names = {name for name, m in self.blocks.named_modules()
                 if isinstance(m, nn.Linear) and not any(keep in name for keep in INT8_KEEP_FP32)}
        with warnings.catch_warnings():  # torch.ao's deprecation notices, once per layer
            warnings.simplefilter("ignore")
            quantize_dynamic(self.blocks, {name: per_channel_dynamic_qconfig for name in names}, inplace=True)
        return len(names)

    @property
    def is_quantized(self) -> bool:
        """Whether :meth:`quantize_int8` converted this model's blocks."""
        try:
            from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
        except ImportError:
            return False
        return any(isinstance(m, DynamicLinear) for m in self.blocks.modules())

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops(self, grid: tuple[int, int, int], text_len: int, batch_size: int = 1) -> int:
        """Forward FLOPs for a latent grid (T, H, W) (``x.shape[2:]``) and ``text_len`` text tokens.

        Matrix multiplies only, 2 FLOPs per multiply-add (the MFU convention). In multiply-adds, with N
        tokens, L text tokens, width D, FFN width F: patch embedding; text projection; time MLP (once
        per sample); per block the self-attention projections 4 N D^2, scores and weighted sum 2 N^2 D,
        cross-attention q/out 2 N D^2, k/v 2 L D^2, scores and sum 2 N L D, FFN 2 N D F; the output
        projection. Norms, rotary, softmax and GELU are not counted.
        """
        cfg = self.config
        pt, ph, pw = cfg.patch_size
        T, H, W = grid
        N, L, D, Fd = -(-T // pt) * (H // ph) * (W // pw), text_len, cfg.dim, cfg.ffn_dim  # T: padded (forward)
        patch = math.prod(cfg.patch_size)
        macs = N * cfg.in_channels * patch * D  # patch embedding
        macs += L * (cfg.text_dim * D + D * D)  # text projection
        macs += cfg.freq_dim * D + D * D + D * 6 * D  # time MLP
        per_block = 4 * N * D * D + 2 * N * N * D  # self-attention: q k v out, scores + weighted sum
        per_block += 2 * N * D * D + 2 * L * D * D + 2 * N * L * D  # cross-attention
        per_block += 2 * N * D * Fd  # feed-forward
        macs += cfg.num_layers * per_block
        macs += N * D * cfg.out_channels * patch  # output projection
        return 2 * macs * batch_size

    def flops_per_step(self, grid: tuple[int, int, int], text_len: int, batch_size: int = 1, training: bool = True) -> int:
        """FLOPs of one step: forward, or forward + backward (3x forward: backward costs two matmuls per one)."""
        return self.flops(grid, text_len, batch_size) * (3 if training else 1)

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        x: torch.Tensor,  # (B, C, T, H, W) noisy latents
        t: torch.Tensor | float,  # (B,) | (B, T) per latent frame | (B, N) per token, flow time in [0, 1]
        context: torch.Tensor,  # (B, L, text_dim) text token features
        context_mask: torch.Tensor | None = None,  # (B, L) bool, True = real token; None attends to all
        image_context: torch.Tensor | None = None,  # (B, L_img, image_dim) CLIP image tokens (Wan2.1 I2V / FLF2V)
    ) -> torch.Tensor:
        """Predicted velocity (noise - x0), shaped like ``x`` with ``out_channels`` channels.

        Runs in the precision of the weights, or in the autocast dtype when autocast is on; the
        residual stream, norms and modulation stay fp32 (as Wan does).
        """
        cfg = self.config
        pt, ph, pw = cfg.patch_size
        self._check_inputs(x, context, context_mask)
        pad = (-x.shape[2]) % pt  # frame 0 repeated in front until the frames fill whole temporal patches
        if pad:
            x = torch.cat([x[:, :, :1].expand(-1, -1, pad, -1, -1), x], dim=2)
            t = torch.as_tensor(t)
            if t.ndim == 2 and t.shape[1] == x.shape[2] - pad:  # per latent frame: frame 0's time for its repeats
                t = torch.cat([t[:, :1].expand(-1, pad), t], dim=1)
        B, _, T, H, W = x.shape
        grid = (T // pt, H // ph, W // pw)  # token grid (T', H', W')
        N = math.prod(grid)
        dtype = self._compute_dtype(x.device)

        # 1. Timesteps (+ pooled text) -> modulation per group of tokens that share a timestep.
        t_groups = self._timestep_groups(t, B, T, grid, x.device)  # (B, G) in [0, 1]
        G = t_groups.shape[1]
        values, index = torch.unique(t_groups, return_inverse=True)  # the time MLP runs once per distinct t
        embed = self.condition_embedder
        temb = embed.time(values * TIMESTEP_SCALE)  # (M, D), once per distinct time
        mod = embed.modulation(temb) if embed.text_pooler is None else None  # likewise, unless the prompt enters it
        if values.numel() == 1:  # one time for every token: broadcast over the batch
            G, temb, mod = 1, temb[:, None], None if mod is None else mod[:, None]  # (1, 1, D), (1, 1, 6, D)
        else:
            temb, mod = temb[index], None if mod is None else mod[index]  # (B, G, D), (B, G, 6, D)
        if mod is None:  # the pooled prompt is part of the embedding: one per sample (and time group)
            temb = temb + embed.pooled(context, context_mask)[:, None]  # (B, G, D)
            mod = embed.modulation(temb)

        # 2. Patchify: a stride-p Conv3d is a linear map of the flattened patch.
        tokens = rearrange(x, "b c (t pt) (h ph) (w pw) -> b (t h w) (c pt ph pw)", pt=pt, ph=ph, pw=pw)
        w = self.patch_embedding.weight
        h = F.linear(tokens.to(dtype), w.flatten(1).to(dtype), self.patch_embedding.bias.to(dtype))  # (B, N, D)
        h = h.float().view(B, G, N // G, -1)  # fp32 residual stream

        # 3. Text tokens -> model width; the mask becomes SDPA's boolean attention mask.
        ctx = self.condition_embedder.text_embedder(context.to(dtype)).to(dtype)  # (B, L, D)
        mask = self._attention_mask(context_mask)  # (B, 1, 1, L) or None
        image = self._image_tokens(image_context, B, dtype)  # (B, L_img, D) or None

        # 4. Blocks.
        rope = self.rope_table(grid, x.device)
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                h = torch.utils.checkpoint.checkpoint(block, h, ctx, mod, rope, mask, dtype, image, use_reentrant=False)
            else:
                h = block(h, ctx, mod, rope, mask, dtype, image)

        # 5. Output modulation, projection, unpatchify.
        shift, scale = (self.scale_shift_table.float() + temb.unsqueeze(2)).unsqueeze(2).unbind(3)  # (B, G, 1, D)
        h = modulated_norm(h, shift, scale, cfg.eps).to(dtype)
        out = self.proj_out(h.view(B, N, -1))  # (B, N, pt*ph*pw*C)
        out = rearrange(
            out, "b (t h w) (pt ph pw c) -> b c (t pt) (h ph) (w pw)",
            t=grid[0], h=grid[1], w=grid[2], pt=pt, ph=ph, pw=pw,
        )
        return out[:, :, pad:].to(x.dtype)

    def _check_inputs(self, x, context, context_mask):
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_channels:
            raise InputError(f"DiT input must be (B, {cfg.in_channels}, T, H, W) latents, got {tuple(x.shape)}")
        for size, p, axis in zip(x.shape[2:], cfg.patch_size, "THW"):
            if axis != "T" and size % p:  # (T is padded: forward)
                raise InputError(f"latent {axis}={size} is not a multiple of the patch size {p} (patch {cfg.patch_size})")
        if context.ndim != 3 or context.shape[0] != x.shape[0] or context.shape[2] != cfg.text_dim:
            raise InputError(
                f"context must be (B={x.shape[0]}, L, text_dim={cfg.text_dim}), got {tuple(context.shape)}"
            )
        if context_mask is not None and tuple(context_mask.shape) != tuple(context.shape[:2]):
            raise InputError(f"context_mask must be (B, L)={tuple(context.shape[:2])}, got {tuple(context_mask.shape)}")

    def _image_tokens(self, image_context: torch.Tensor | None, batch: int, dtype: torch.dtype) -> torch.Tensor | None:
        embedder = self.condition_embedder.image_embedder
        if embedder is None:
            if image_context is not None:
                raise InputError("this DiT has no image branch (image_dim); it takes no image_context")
            return None
        if image_context is None:
            raise InputError("this DiT (Wan I2V: image_dim set) needs the CLIP image tokens: pass image_context")
        if image_context.ndim != 3 or image_context.shape[-1] != self.config.image_dim:
            raise InputError(f"image_context must be (B, L, image_dim={self.config.image_dim}), got {tuple(image_context.shape)}")
        tokens = embedder(image_context)
        if tokens.shape[0] != batch:
            raise InputError(f"image_context gives {tokens.shape[0]} samples for a batch of {batch}")
        return tokens.to(dtype)

    def _compute_dtype(self, device: torch.device) -> torch.dtype:
        if torch.is_autocast_enabled(device.type):
            return torch.get_autocast_dtype(device.type)
        return self.proj_out.weight.dtype

    def _timestep_groups(self, t, B: int, T: int, grid: tuple[int, int, int], device) -> torch.Tensor:
        """t as (B, G): G = 1 (per sample), T' (per latent frame) or N (per token)."""
        t = torch.as_tensor(t, dtype=torch.float32, device=device)
        if t.ndim == 0:
            t = t.expand(B)
        if t.ndim == 1:
            if t.shape[0] != B:
                raise InputError(f"t has {t.shape[0]} values for a batch of {B}")
            return t.float()[:, None]
        N, pt = math.prod(grid), self.config.patch_size[0]
        if t.ndim != 2 or t.shape[0] != B or t.shape[1] not in (T, N):
            raise InputError(f"t must be (B,), (B, T={T}) per latent frame or (B, N={N}) per token, got {tuple(t.shape)}")
        t = t.float()
        if t.shape[1] == N:
            return t
        if pt > 1:  # frames inside one temporal patch become one token: they must share t
            t = t.view(B, grid[0], pt)
            if not torch.equal(t, t[..., :1].expand_as(t)):
                raise InputError(f"per-frame t must be equal within each temporal patch of {pt} frames")
            t = t[..., 0]
        return t

    @staticmethod
    def _attention_mask(context_mask):
        if context_mask is None:
            return None
        mask = context_mask.bool()
        if mask.all():
            return None  # the unmasked kernel is faster
        # A sample with no valid token would make softmax 0/0; let it attend to everything instead.
        mask = mask | ~mask.any(dim=1, keepdim=True)
        return mask[:, None, None, :]

    def rope_table(self, grid: tuple[int, int, int], device) -> torch.Tensor:
        """Rotary [cos, sin] (N, 1, head_dim/2, 2) fp32 for a token grid (T', H', W'), cached per grid.

        Channel pairs of a head are split (t, h, w) as Wan does; angles are computed in float64.
        """
        key = (tuple(grid), str(device))
        table = self._rope_cache.get(key)
        if table is None:
            if len(self._rope_cache) >= 32:  # bounded: a long run sees few distinct grids
                self._rope_cache.pop(next(iter(self._rope_cache)))
            with torch.inference_mode(False):  # a table made while sampling must still serve training
                table = self._make_rope_table(grid).to(device)
            self._rope_cache[key] = table
        return table

    def _make_rope_table(self, grid: tuple[int, int, int]) -> torch.Tensor:
        angles = []
        for n, d, axis in zip(grid, self.config.rope_dims, range(3)):
            inv_freq = 1.0 / self.config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
            a = torch.arange(n, dtype=torch.float64)[:, None] * inv_freq  # (n, d/2)
            shape = [1, 1, 1, d // 2]
            shape[axis] = n
            angles.append(a.view(shape).expand(*grid, d // 2))
        ang = torch.cat(angles, dim=-1).reshape(-1, 1, self.config.attention_head_dim // 2)  # (N, 1, d/2)
        return torch.stack([ang.cos(), ang.sin()], dim=-1).float()

    # ------------------------------------------------------------------ save / load

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write config.json + diffusion_pytorch_model.safetensors (a folder diffusers can load too), atomically."""
        from safetensors.torch import save_file

        from ..atomic import atomic_path, write_json

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
        write_json(directory / CONFIG_NAME, self.config.to_diffusers_dict())
        return directory

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
    ) -> "DiT":
        """Load one of our folders, a diffusers ``WanTransformer3DModel`` folder (single file or sharded), or
        an original Wan-AI ``WanModel`` folder (keys renamed by :mod:`soraflow.models.convert_dit`).

        ``directory`` may be a pipeline folder with a ``transformer/`` (diffusers) or ``dit/`` (ours)
        subfolder. Weights keep their stored dtype unless ``dtype`` is given. The model is built on the
        meta device and the tensors are assigned, so a 14B checkpoint needs its own size in memory,
        not twice that.
        """
        from safetensors import safe_open

        directory = Path(directory)
        if _is_pipeline_folder(directory):  # diffusers' transformer/ or our SoraPipeline's dit/
            directory = next(directory / sub for sub in ("transformer", "dit") if (directory / sub / CONFIG_NAME).is_file())
        config_path = directory / CONFIG_NAME
        if not config_path.is_file():
            raise CheckpointError(f"{directory}: no {CONFIG_NAME} (expected a DiT / WanTransformer3DModel folder)")
        raw = read_json_object(config_path)
        original = is_original_wan_config(raw)  # Wan-AI's own WanModel layout, renamed while loading
        if original:
            raw = config_from_original_wan(raw, source=str(config_path))
        config = DiTConfig.from_dict(raw, source=str(config_path))
        from ..memory import check_fits, count_parameters

        params = count_parameters(cls, config.num_layers, config)
        itemsize = torch.empty((), dtype=dtype).element_size() if dtype is not None else 4
        check_fits(f"the DiT in {directory} ({params / 1e6:,.0f} M parameters)", params * itemsize, device)

        files = _weight_files(directory)
        with torch.device("meta"):
            model = cls(config)
        expected = model.state_dict()
        state: dict[str, torch.Tensor] = {}
        for f in files:
            try:
                with safe_open(str(f), framework="pt", device=str(device)) as sf:
                    for key in sf.keys():
                        state[key] = sf.get_tensor(key)
            except Exception as e:  # safetensors raises several types for a truncated or corrupt file
                raise CheckpointError(f"{f}: cannot read weights ({e})") from None
        if original:
            state = original_wan_to_ours(state)
        # Some Wan checkpoints carry an unused norm_added_q; diffusers ignores it too.
        state = {k: v for k, v in state.items() if "norm_added_q" not in k}
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise CheckpointError(
                f"{directory}: weights do not match config.json: {len(missing)} missing (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
        for f in files:  # read apart from the memory map, so unused pages stay unread (weights.check_finite_file)
            check_finite_file(f, f"{directory}: {f.name}")
        for k, v in state.items():
            if v.shape != expected[k].shape:
                raise CheckpointError(f"{directory}: {k} has shape {tuple(v.shape)}, config.json implies {tuple(expected[k].shape)}")
            if dtype is not None:
                state[k] = v.to(dtype)
        model.load_state_dict(state, assign=True)
        return model


def _is_pipeline_folder(directory: Path) -> bool:
    """A folder whose DiT is in transformer/ (diffusers) or dit/ (a SoraPipeline folder)."""
    if not any((directory / sub / CONFIG_NAME).is_file() for sub in ("transformer", "dit")):
        return False
    top = directory / CONFIG_NAME
    if not top.is_file():
        return True
    try:
        return json.loads(top.read_text()).get("_class_name") == "SoraPipeline"
    except (json.JSONDecodeError, AttributeError):
        return False


def _weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a folder: the sharded index's files, or the single weights file."""
    index = directory / WEIGHTS_INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index}: not a safetensors index ({e})") from None
        files = [directory / name for name in sorted(set(weight_map.values()))]
    elif (directory / WEIGHTS_NAME).is_file():
        files = [directory / WEIGHTS_NAME]
    else:
        found = sorted(p.name for p in directory.glob("*.safetensors") if not p.name.startswith("."))  # not temporaries
        if len(found) != 1:
            raise CheckpointError(
                f"{directory}: no {WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME}"
                + (f" (found {len(found)} other .safetensors files)" if found else "")
            )
        files = [directory / found[0]]
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"{f}: weight shard listed in the index is missing")
    return files
