"""The video compression network: a causal 3D VAE in the layout of Wan2.1's VAE (diffusers' AutoencoderKLWan).

Pixels (B, 3, T, H, W) in [-1, 1] become latents (B, z_dim, 1 + (T-1)/tf, H/sf, W/sf) (tf = 4, sf = 8
by default). The first frame is encoded on its own, so an image is a one-frame video.

- Same state-dict keys and config.json fields as diffusers' ``AutoencoderKLWan``: a diffusers-format
  Wan2.1 VAE folder loads with ``VideoVAE.from_pretrained(folder)``, and what we save loads in diffusers.
- Bounded memory: ``encode``/``decode`` run over time in chunks with a causal cache (the result equals
  the whole-clip computation) and over large frames in spatial tiles blended across their overlaps;
  ``decode_iter`` streams pixel frames so a long clip is never held at once.
- Fast CPU path: ``vae.to_fast()`` (bf16 weights, channels_last_3d), see docs/vae.md.

Frame-wise latents (``frame_pack = k``, a soraflow extension): every frame is encoded on its own, as an
image (the network's first-frame path), and the latents of k consecutive frames are stacked in channels,
so the rest of the system sees a VAE of temporal factor k with ``z_dim * k`` latent channels (frame 0
fills its latent frame with k copies). A small causal VAE carries frame 0's picture forward and loses
moving objects; the same weights run frame by frame keep every frame as well as the first
(BENCHMARKS.md, "Default model v2"), and the DiT's patches still pack four frames into one token.

Frame counts that are not 1 + 4k (``frame_policy``): "pad" (default) repeats the last frame up to the
next 1 + 4k; pass ``num_frames=T`` to ``decode`` to trim the padding back off. "trim" drops the extra
trailing frames; "error" raises :class:`InputError`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn

from ..errors import CheckpointError, InputError
from ..weights import check_finite_file, load_state_dict_checked, read_json_object, read_safetensors
from .vae_blocks import CausalCache, WanCausalConv3d, WanDecoder3d, WanEncoder3d, _format_of

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"  # diffusers' file name, so folders are interchangeable
CONFIG_NAME = "config.json"

# Per-channel latent statistics of the released Wan2.1 VAE (from its config).
WAN21_LATENTS_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                      0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]  # fmt: skip
WAN21_LATENTS_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                     3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]  # fmt: skip


@dataclass
class VAEConfig:
    base_dim: int = 96  # channels after the first conv; stage i has base_dim * dim_mult[i]
    decoder_base_dim: int | None = None  # decoder width if different from the encoder's (None: same)
    z_dim: int = 16  # latent channels
    dim_mult: list[int] = field(default_factory=lambda: [1, 2, 4, 4])  # width per stage; len-1 = spatial 2x downsamples
    num_res_blocks: int = 2  # residual blocks per encoder stage (decoder: +1)
    attn_scales: list[float] = field(default_factory=list)  # resolutions (1, 0.5, ...) with extra attention (Wan2.1: none)
    temporal_downsample: list[bool] = field(default_factory=lambda: [False, True, True])  # which downsamples also halve time
    dropout: float = 0.0
    latents_mean: list[float] | None = None  # per-channel mean of latents (normalize subtracts it); None: 0
    latents_std: list[float] | None = None  # per-channel std of latents (normalize divides by it); None: 1
    in_channels: int = 3  # the encoder's input channels: 3 * patch_size**2 with a patch
    out_channels: int = 3
    is_residual: bool = False  # Wan2.2: residual down/up blocks with space/time-to-channel shortcuts (AvgDown3D, DupUp3D)
    patch_size: int | None = None  # Wan2.2: pixels folded into channels (p x p) before the encoder and unfolded after the decoder
    frame_pack: int | None = None  # soraflow: frames encoded one by one, this many stacked per latent frame (module docstring)

    def __post_init__(self) -> None:
        self.dim_mult = list(self.dim_mult)
        self.attn_scales = list(self.attn_scales)
        self.temporal_downsample = list(self.temporal_downsample)
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise InputError(
                f"temporal_downsample has {len(self.temporal_downsample)} entries, expected len(dim_mult) - 1 = {len(self.dim_mult) - 1}"
            )
        if self.frame_pack is not None and self.frame_pack < 1:
            raise InputError(f"frame_pack must be a positive number of frames, got {self.frame_pack}")
        for name in ("latents_mean", "latents_std"):
            value = getattr(self, name)
            if value is not None and len(value) != self.latent_channels:
                raise InputError(f"{name} has {len(value)} entries, expected one per latent channel ({self.latent_channels})")
        if min(self.base_dim, self.z_dim, *self.dim_mult) <= 0:
            raise InputError("base_dim, z_dim and dim_mult must be positive")
        p = self.patch_size or 1
        if p < 1 or self.in_channels % (p * p) or self.out_channels % (p * p):
            raise InputError(f"in_channels {self.in_channels} and out_channels {self.out_channels} must be multiples of patch_size**2 = {p * p}")

    @property
    def temporal_factor(self) -> int:
        """Pixel frames per latent frame, as the rest of the system sees it."""
        return self.frame_pack or 2 ** sum(bool(v) for v in self.temporal_downsample)

    @property
    def latent_channels(self) -> int:
        """Channels of a latent frame: z_dim, times frame_pack for frame-wise latents."""
        return self.z_dim * (self.frame_pack or 1)

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.dim_mult) - 1) * (self.patch_size or 1)

    @property
    def pixel_channels(self) -> int:
        """Channels of the pixels the VAE takes and gives (the encoder's input before any patching)."""
        return self.in_channels // (self.patch_size or 1) ** 2

    # diffusers' AutoencoderKLWan config.json <-> VAEConfig
    def to_diffusers(self) -> dict:
        d = dataclasses.asdict(self)
        d["temperal_downsample"] = d.pop("temporal_downsample")  # diffusers' spelling
        if d["frame_pack"] is None:
            del d["frame_pack"]  # a soraflow extension: a folder without it is diffusers' own
        d.update(
            _class_name="AutoencoderKLWan",
            scale_factor_temporal=self.temporal_factor,
            scale_factor_spatial=self.spatial_factor,
        )
        return d

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "config") -> "VAEConfig":
        d = {k: v for k, v in d.items() if not k.startswith("_")}
        if "temperal_downsample" in d:
            d["temporal_downsample"] = d.pop("temperal_downsample")
        if d.get("patch_size") == 1:
            d["patch_size"] = None
        d.pop("scale_factor_temporal", None)
        d.pop("scale_factor_spatial", None)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise CheckpointError(f"{source}: unknown VAE config field(s) {', '.join(unknown)}")
        try:
            return cls(**d)
        except (TypeError, InputError) as err:
            raise CheckpointError(f"{source}: invalid VAE config: {err}") from None


def _preset(**kw) -> VAEConfig:
    return VAEConfig(**kw)


# Named configurations. "wan2.1" is the released Wan2.1 VAE's shape; "small" is the default world
# model's VAE: thin at full resolution, where conv3d time goes (107 GFLOP to decode 33 frames of
# 128x128, vs 4.6 TFLOP for "wan2.1"), wider at low resolution where width is cheap; "tiny" is for tests.
VAE_PRESETS = {
    "wan2.1": lambda: _preset(base_dim=96, z_dim=16, latents_mean=list(WAN21_LATENTS_MEAN), latents_std=list(WAN21_LATENTS_STD)),
    "small": lambda: _preset(base_dim=16, z_dim=16, dim_mult=[1, 2, 4, 8], num_res_blocks=1),
    "tiny": lambda: _preset(base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1),
}


def vae_config(preset: str, **overrides) -> VAEConfig:
    if preset not in VAE_PRESETS:
        raise InputError(f"unknown VAE preset {preset!r}; choose one of {', '.join(VAE_PRESETS)}")
    return dataclasses.replace(VAE_PRESETS[preset](), **overrides)


@dataclass
class DiagonalGaussian:
    """The KL posterior q(z | x): per-element mean and log-variance, (B, z_dim, T', H', W') each."""

    mean: torch.Tensor
    logvar: torch.Tensor

    @classmethod
    def from_moments(cls, moments: torch.Tensor) -> "DiagonalGaussian":
        mean, logvar = moments.chunk(2, dim=1)
        return cls(mean, logvar.clamp(-30.0, 20.0))  # clamp as in Wan/diffusers: keeps exp() finite

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) averaged over elements, per sample: (B,)."""
        kl = 0.5 * (self.mean.float() ** 2 + self.logvar.float().exp() - 1.0 - self.logvar.float())
        return kl.flatten(1).mean(1)


@dataclass
class Tiling:
    """Spatial tiling of large frames: tile and overlap in latent pixels (multiply by the spatial factor
    for pixels), the size above which ``tiled=None`` tiles in pixels per frame."""

    tile: int = 32  # latent tile side (256 px at sf = 8)
    overlap: int = 8  # latent overlap between neighbouring tiles, blended linearly (64 px at sf = 8)
    # Frames up to 720p are not tiled, as diffusers' AutoencoderKLWan does not tile unless asked: the
    # frames then equal diffusers' (tiles change them at the seams), and a 1-latent chunk of a 720p
    # frame fits the memory diffusers' own decode takes. Larger frames are tiled.
    max_pixels: int = 1280 * 720


# Pixels (frames x height x width) of one encode or decode chunk, at most, unless one latent frame
# alone is larger: 4 latent frames (16 pixel frames) a chunk up to 256x256, where fewer, larger
# convolutions are faster; 2 at 416x240; 1 (diffusers' granularity) at 480p and above, where 16
# full-size frames would hold 5-10 GB of the Wan2.1 VAE's activations (BENCHMARKS.md).
CHUNK_PIXELS = 16 * 256 * 256


class VideoVAE(nn.Module):
    """Causal 3D VAE: ``encode`` pixels to a :class:`DiagonalGaussian`, ``decode`` latents to pixels."""

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or VAEConfig()
        self.encoder = WanEncoder3d(
            in_channels=config.in_channels,
            dim=config.base_dim,
            z_dim=config.z_dim * 2,
            dim_mult=config.dim_mult,
            num_res_blocks=config.num_res_blocks,
            attn_scales=config.attn_scales,
            temperal_downsample=config.temporal_downsample,
            dropout=config.dropout,
            is_residual=config.is_residual,
        )
        self.quant_conv = WanCausalConv3d(config.z_dim * 2, config.z_dim * 2, 1)
        self.post_quant_conv = WanCausalConv3d(config.z_dim, config.z_dim, 1)
        self.decoder = WanDecoder3d(
            dim=config.decoder_base_dim or config.base_dim,
            z_dim=config.z_dim,
            dim_mult=config.dim_mult,
            num_res_blocks=config.num_res_blocks,
            attn_scales=config.attn_scales,
            temperal_upsample=config.temporal_downsample[::-1],
            dropout=config.dropout,
            out_channels=config.out_channels,
            is_residual=config.is_residual,
        )
        self.tiling = Tiling()
        self.channels_last = False
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """From-scratch init in which the input reaches the latents and the latents reach the pixels.

        PyTorch's default conv init shrinks the signal by ~1/sqrt(3) per plain conv (the down/up
        samplers have no skip path), while every RMS-normed residual branch adds an O(1) term that
        barely depends on it: at init the latents of different flat colours differed by ~10% of their
        size and the decoder's output by 0.2%, and training spent its first thousands of steps at
        a grey, hue-less reconstruction. So: every conv N(0, 1/fan_in) with zero bias (variance
        preserving), the last conv of each residual branch and each attention output zero (blocks
        start as the identity), and a narrow posterior (log-variance -6, std 0.05) so the decoder
        does not start on noise. On flat random colours this takes L1 after 120 steps from 0.54 to 0.12.
        Loaded weights (from_pretrained, load_state_dict) replace all of it.
        """
        from .vae_blocks import WanAttentionBlock, WanResidualBlock

        if self.quant_conv.weight.is_meta:
            # built to be loaded into (from_pretrained): nothing to fill, and random init of meta
            # tensors goes through torch's reference kernels, whose first use imports torch._dynamo (seconds of start-up)
            return
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                    nn.init.normal_(module.weight, 0.0, 1.0 / math.sqrt(module.weight[0].numel()))
                    if module.bias is not None:
                        module.bias.zero_()
            for module in self.modules():
                if isinstance(module, WanResidualBlock):
                    module.conv2.weight.zero_()
                elif isinstance(module, WanAttentionBlock):
                    module.proj.weight.zero_()
            self.quant_conv.bias[self.config.z_dim:].fill_(-6.0)

    # ------------------------------------------------------------------------------------------
    # Shapes and the frame-count policy

    @property
    def temporal_factor(self) -> int:
        return self.config.temporal_factor

    @property
    def spatial_factor(self) -> int:
        return self.config.spatial_factor

    def latent_frames(self, frames: int, frame_policy: str = "pad") -> int:
        """Latent frames for a clip of ``frames`` pixel frames under ``frame_policy``."""
        tf = self.temporal_factor
        rounded = math.ceil if frame_policy == "pad" else math.floor
        return 1 + rounded((frames - 1) / tf)

    def pixel_frames(self, latent_frames: int) -> int:
        return 1 + (latent_frames - 1) * self.temporal_factor

    def _check_pixels(self, x: torch.Tensor, frame_policy: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise InputError(f"expected a torch.Tensor video, got {type(x).__name__}")
        if x.ndim == 4:
            raise InputError(f"expected a video (B, C, T, H, W), got 4 dims {tuple(x.shape)}; add a time axis: x.unsqueeze(2)")
        if x.ndim != 5:
            raise InputError(f"expected a video (B, C, T, H, W), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise InputError(f"expected float pixels in [-1, 1], got dtype {x.dtype}; convert with x.float() / 127.5 - 1")
        if x.shape[1] != self.config.pixel_channels:
            raise InputError(f"expected {self.config.pixel_channels} channels (B, C, T, H, W), got {x.shape[1]} in shape {tuple(x.shape)}")
        sf = self.spatial_factor
        if x.shape[3] % sf or x.shape[4] % sf:
            raise InputError(f"height and width must be multiples of {sf}, got {x.shape[3]}x{x.shape[4]} (H x W)")
        t, tf = x.shape[2], self.temporal_factor
        if t == 0:
            raise InputError("video has no frames")
        extra = (t - 1) % tf
        if extra:
            if frame_policy == "pad":
                x = torch.cat([x, x[:, :, -1:].expand(-1, -1, tf - extra, -1, -1)], dim=2)
            elif frame_policy == "trim":
                x = x[:, :, : t - extra]
            elif frame_policy == "error":
                raise InputError(f"{t} frames is not 1 + {tf}k (e.g. {t - extra} or {t - extra + tf}); pad or trim the clip")
            else:
                raise InputError(f"unknown frame_policy {frame_policy!r}; use 'pad', 'trim' or 'error'")
        return x

    def _check_latents(self, z: torch.Tensor) -> None:
        if not isinstance(z, torch.Tensor) or z.ndim != 5:
            raise InputError(f"expected latents (B, C, T, H, W), got {getattr(z, 'shape', type(z).__name__)}")
        if not z.is_floating_point():
            raise InputError(f"expected float latents, got dtype {z.dtype}")
        if z.shape[1] != self.config.latent_channels:
            raise InputError(f"expected {self.config.latent_channels} latent channels, got {z.shape[1]} in shape {tuple(z.shape)}")

    def _param_dtype(self) -> torch.dtype:
        return self.quant_conv.weight.dtype

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self._param_dtype()) if not torch.is_autocast_enabled(x.device.type) else x
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return x

    # ------------------------------------------------------------------------------------------
    # Encode

    def encode(
        self,
        x: torch.Tensor,
        *,
        frame_policy: str = "pad",
        chunk_frames: int | None | str = "auto",
        tiled: bool | None = None,
    ) -> DiagonalGaussian:
        """x (B, 3, T, H, W) in [-1, 1] -> posterior over latents (B, z_dim, 1 + (T-1)/4, H/8, W/8).

        ``chunk_frames``: pixel frames per causal chunk after the first frame (a multiple of 4; None:
        the whole clip at once, what training uses; "auto": 16, fewer where 16 frames (or tiles) would
        exceed ``CHUNK_PIXELS``). ``tiled``: None tiles only frames of more than
        ``self.tiling.max_pixels`` pixels.
        """
        x = self._check_pixels(x, frame_policy)
        x = self._prepare(x)
        if self.config.frame_pack:
            return self._encode_framewise(x, tiled)
        sf = self.spatial_factor
        use_tiles = self._use_tiles(x.shape[3] // sf, x.shape[4] // sf, tiled)
        if chunk_frames == "auto":
            chunk_frames = self.temporal_factor * self._auto_chunk(x.shape[3] // sf, x.shape[4] // sf, use_tiles)
        if use_tiles:
            moments = self._tiled(x, sf, lambda tile: self._encode_moments(tile, chunk_frames), down=True)
        else:
            moments = self._encode_moments(x, chunk_frames)
        return DiagonalGaussian.from_moments(moments)

    FRAMES_PER_BATCH = 16  # frame-wise latents: frames encoded or decoded in one network call

    def _encode_framewise(self, x: torch.Tensor, tiled: bool | None) -> DiagonalGaussian:
        """Every frame as an image, FRAMES_PER_BATCH at a time, stacked frame_pack per latent frame."""
        b, c, t, h, w = x.shape
        sf, k = self.spatial_factor, self.config.frame_pack
        images = x.transpose(1, 2).reshape(b * t, c, 1, h, w)
        parts = []
        for s in range(0, b * t, self.FRAMES_PER_BATCH):
            part = images[s : s + self.FRAMES_PER_BATCH]
            if self._use_tiles(h // sf, w // sf, tiled):
                parts.append(self._tiled(part, sf, lambda tile: self._encode_moments(tile, None), down=True))
            else:
                parts.append(self._encode_moments(part, None))
        moments = torch.cat(parts).reshape(b, t, -1, h // sf, w // sf)  # (B, T, 2 z, h, w)
        mean, logvar = (m.transpose(1, 2) for m in moments.chunk(2, dim=2))  # (B, z, T, h, w) each
        return DiagonalGaussian(*(_pack(m, k) for m in (mean, logvar)))

    def _encode_moments(self, x: torch.Tensor, chunk_frames: int | None) -> torch.Tensor:
        x = self._patchify(x)
        if chunk_frames is None:
            return self.quant_conv(self.encoder(x))  # (B, 2 z_dim, T', H', W')
        tf = self.temporal_factor
        if not isinstance(chunk_frames, int) or chunk_frames <= 0 or chunk_frames % tf:
            raise InputError(f"chunk_frames must be a positive multiple of {tf}, None or 'auto', got {chunk_frames!r}")
        cache = CausalCache()
        outs = [self.encoder(x[:, :, :1], cache)]  # the first frame alone
        for s in range(1, x.shape[2], chunk_frames):
            outs.append(self.encoder(x[:, :, s : s + chunk_frames], cache))
        return self.quant_conv(torch.cat(outs, dim=2))

    # ------------------------------------------------------------------------------------------
    # Decode

    def decode(self, z: torch.Tensor, *, num_frames: int | None = None, chunk_latents: int | None | str = "auto",
               tiled: bool | None = None) -> torch.Tensor:
        """z (B, z_dim, T', H', W') -> pixels (B, 3, 1 + 4 (T'-1), 8 H', 8 W') clamped to [-1, 1].

        ``num_frames`` trims the output to that many frames (undoing ``frame_policy="pad"``).
        ``chunk_latents``: latent frames per causal chunk (None: all at once; "auto": 4, down to 1
        where 4 would exceed ``CHUNK_PIXELS``). ``tiled``: None tiles only frames of more than
        ``self.tiling.max_pixels`` pixels.
        """
        frames = list(self.decode_iter(z, chunk_latents=chunk_latents, tiled=tiled, num_frames=num_frames))
        return torch.cat(frames, dim=2)

    def decode_iter(
        self, z: torch.Tensor, *, chunk_latents: int | None | str = "auto", tiled: bool | None = None,
        num_frames: int | None = None,
    ) -> Iterator[torch.Tensor]:
        """Decode chunk by chunk, yielding pixel frames (B, 3, t, H, W) as they are ready.

        Memory stays bounded by one chunk (plus two cached frames per causal layer), whatever the
        clip length, so a long clip can be written to disk while it is decoded.
        """
        self._check_latents(z)
        if num_frames is not None and not 1 <= num_frames <= self.pixel_frames(z.shape[2]):
            raise InputError(f"num_frames={num_frames} outside 1..{self.pixel_frames(z.shape[2])} for {z.shape[2]} latent frames")
        if chunk_latents != "auto" and chunk_latents is not None and (not isinstance(chunk_latents, int) or chunk_latents <= 0):
            raise InputError(f"chunk_latents must be a positive integer, None or 'auto', got {chunk_latents!r}")
        # Checked above, run lazily below: a bad argument fails at the call, not at the first frame.
        if self.config.frame_pack:
            return self._decode_framewise(self._prepare(z), tiled, num_frames)
        return self._decode_chunks(self._prepare(z), chunk_latents, tiled, num_frames)

    def _decode_framewise(self, z: torch.Tensor, tiled: bool | None, num_frames: int | None) -> Iterator[torch.Tensor]:
        """Frame-wise latents: unstacked, then every frame decoded as an image, FRAMES_PER_BATCH at a time."""
        frames = _unpack(z, self.config.frame_pack)  # (B, z, T, h, w)
        b, c, t, h, w = frames.shape
        t = min(t, num_frames) if num_frames is not None else t
        per = max(self.FRAMES_PER_BATCH // b, 1)  # frames of every sample per call, so output stays in time order
        for s in range(0, t, per):
            part = frames[:, :, s : min(s + per, t)].transpose(1, 2).reshape(-1, c, 1, h, w)
            if self._use_tiles(h, w, tiled):
                out = self._tiled(part, 1, lambda tile, key: self._decode_chunk(tile, CausalCache()), down=False, sf=self.spatial_factor)
            else:
                out = self._decode_chunk(part, CausalCache())
            n = out.shape[0] // b
            yield out.reshape(b, n, *out.shape[1:]).squeeze(3).transpose(1, 2).clamp(-1.0, 1.0)  # (B, 3, n, H, W)

    def _decode_chunks(self, z: torch.Tensor, chunk_latents: int | None | str, tiled: bool | None,
                       num_frames: int | None) -> Iterator[torch.Tensor]:
        t_lat = z.shape[2]
        use_tiles = self._use_tiles(z.shape[3], z.shape[4], tiled)
        if chunk_latents == "auto":
            chunk_latents = self._auto_chunk(z.shape[3], z.shape[4], use_tiles)
        step = t_lat if chunk_latents is None else chunk_latents
        # First chunk: latent 0 alone (one pixel frame), unless decoding all at once.
        bounds = [(0, t_lat)] if chunk_latents is None else [(0, 1)] + [(s, min(s + step, t_lat)) for s in range(1, t_lat, step)]
        caches: dict = {}
        left = num_frames if num_frames is not None else self.pixel_frames(t_lat)
        for s, e in bounds:
            if left <= 0:
                break
            chunk = z[:, :, s:e]
            if use_tiles:
                out = self._tiled(chunk, 1, lambda tile, key: self._decode_chunk(tile, caches.setdefault(key, CausalCache())), down=False, sf=self.spatial_factor)
            else:
                out = self._decode_chunk(chunk, caches.setdefault(None, CausalCache()))
            out = out[:, :, :left]
            left -= out.shape[2]
            yield out.clamp(-1.0, 1.0)

    def _decode_chunk(self, z: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        return self._unpatchify(self.decoder(self.post_quant_conv(z), cache))  # (B, 3, t, H, W)

    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, C p p, T, H/p, W/p), diffusers' channel order (c, pw, ph)."""
        p = self.config.patch_size
        if not p:
            return x
        fmt, (b, c, t, h, w) = _format_of(x), x.shape
        x = x.reshape(b, c, t, h // p, p, w // p, p).permute(0, 1, 6, 4, 2, 3, 5)
        return x.reshape(b, c * p * p, t, h // p, w // p).contiguous(memory_format=fmt)

    def _unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        p = self.config.patch_size
        if not p:
            return x
        fmt, (b, cp, t, h, w) = _format_of(x), x.shape
        x = x.reshape(b, cp // (p * p), p, p, t, h, w).permute(0, 1, 4, 5, 3, 6, 2)
        return x.reshape(b, cp // (p * p), t, h * p, w * p).contiguous(memory_format=fmt)

    # ------------------------------------------------------------------------------------------
    # Spatial tiles

    def _use_tiles(self, h_lat: int, w_lat: int, tiled: bool | None) -> bool:
        if tiled is None:
            return h_lat * w_lat * self.spatial_factor**2 > self.tiling.max_pixels and max(h_lat, w_lat) > self.tiling.tile
        return tiled

    def _auto_chunk(self, h_lat: int, w_lat: int, tiled: bool) -> int:
        """Latent frames per chunk: 4 where they fit CHUNK_PIXELS, else fewer, at least 1."""
        if tiled:
            h_lat, w_lat = min(h_lat, self.tiling.tile), min(w_lat, self.tiling.tile)
        pixels = self.temporal_factor * h_lat * w_lat * self.spatial_factor**2  # one latent frame's pixel frames
        return max(1, min(4, CHUNK_PIXELS // pixels))

    def _tiled(self, x: torch.Tensor, step: int, fn, *, down: bool, sf: int | None = None) -> torch.Tensor:
        """Run ``fn`` on overlapping spatial tiles of ``x`` and blend the results linearly.

        Tile positions are chosen in latent units. For encoding ``step`` is the spatial factor
        (pixel tiles -> latent tiles); for decoding the input is latent and the output is
        ``sf`` times larger. A decode ``fn`` also takes a tile key so its causal cache persists.
        """
        tile, overlap = self.tiling.tile, self.tiling.overlap
        if not 0 <= overlap <= tile // 2:
            raise InputError(f"tile overlap {overlap} must be between 0 and half the tile size {tile}")
        h_lat, w_lat = x.shape[3] // step, x.shape[4] // step
        ys, xs = _tile_starts(h_lat, tile, overlap), _tile_starts(w_lat, tile, overlap)
        scale = 1 if down else sf  # output units per latent unit
        out = weight = None
        for i, y0 in enumerate(ys):
            for j, x0 in enumerate(xs):
                th, tw = min(tile, h_lat), min(tile, w_lat)
                patch = x[:, :, :, y0 * step : (y0 + th) * step, x0 * step : (x0 + tw) * step]
                y = fn(patch) if down else fn(patch, (i, j))  # (B, C, T, th*scale, tw*scale)
                if out is None:
                    shape = (y.shape[0], y.shape[1], y.shape[2], h_lat * scale, w_lat * scale)
                    out = y.new_zeros(shape, dtype=torch.float32)
                    weight = y.new_zeros((1, 1, 1, h_lat * scale, w_lat * scale), dtype=torch.float32)
                wy = _ramp(ys, i, th, h_lat, scale, y.device)
                wx = _ramp(xs, j, tw, w_lat, scale, y.device)
                w = wy[:, None] * wx[None, :]  # (th*scale, tw*scale)
                sl = (..., slice(y0 * scale, (y0 + th) * scale), slice(x0 * scale, (x0 + tw) * scale))
                out[sl] += y.float() * w
                weight[sl] += w
        return (out / weight).to(y.dtype)

    # ------------------------------------------------------------------------------------------
    # Whole round trip, latent normalisation

    def forward(self, x: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None,
                encoder_grad: bool = True):
        """Reconstruct x (training path: whole clip at once, no chunks). Returns (recon, posterior).
        ``encoder_grad=False`` encodes without autograd (decoder fine-tuning: about a third cheaper).
        Frame-wise latents (``frame_pack``) train the frames as a batch of images; the posterior is then
        per image, (B T, z_dim, 1, h, w)."""
        frames = x.shape[2]
        images = None
        if self.config.frame_pack:
            x = self._check_pixels(x, "pad")
            images = x.shape[:3]  # (B, C, T) after the padding
            x = x.transpose(1, 2).reshape(-1, x.shape[1], 1, *x.shape[3:])
        with torch.set_grad_enabled(encoder_grad and torch.is_grad_enabled()):
            if images is None:
                posterior = self.encode(x, chunk_frames=None, tiled=False)
            else:
                posterior = DiagonalGaussian.from_moments(self._encode_moments(self._prepare(x), None))
        z = posterior.sample(generator) if sample else posterior.mode()
        recon = self._unpatchify(self.decoder(self.post_quant_conv(z)))  # unclamped: clamping kills gradients
        if images is not None:
            recon = recon.reshape(images[0], images[2], *recon.shape[1:]).squeeze(3).transpose(1, 2)
        return recon[:, :, :frames], posterior

    def _stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        n = c.latent_channels
        mean = torch.tensor(c.latents_mean, dtype=z.dtype, device=z.device) if c.latents_mean else torch.zeros(n, dtype=z.dtype, device=z.device)
        std = torch.tensor(c.latents_std, dtype=z.dtype, device=z.device) if c.latents_std else torch.ones(n, dtype=z.dtype, device=z.device)
        return mean.view(1, -1, 1, 1, 1), std.view(1, -1, 1, 1, 1)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """VAE latents -> what the DiT sees: (z - mean) / std per channel."""
        mean, std = self._stats(z)
        return (z - mean) / std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(z)
        return z * std + mean

    # Settings that change only the decoder: two VAEs that differ in these encode alike.
    DECODER_ONLY = ("decoder_base_dim", "out_channels", "dropout")

    def encoder_fingerprint(self) -> str:
        """SHA-256 of what makes a latent: the encoder-side weights (fp32 bytes) and the settings that are
        not decoder-only. Two VAEs with the same fingerprint give the same latents, so a latent cache made
        with one is valid for the other (a decoder trained on a frozen encoder keeps its caches)."""
        import hashlib
        import json

        h = hashlib.sha256()
        settings = {k: v for k, v in dataclasses.asdict(self.config).items() if k not in self.DECODER_ONLY}
        h.update(json.dumps(settings, sort_keys=True).encode())
        for name, tensor in sorted(self.state_dict().items()):
            if name.startswith(("encoder.", "quant_conv.")):
                h.update(name.encode())
                h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()

    # ------------------------------------------------------------------------------------------
    # Fast CPU inference

    def to_fast(self, dtype: torch.dtype = torch.bfloat16) -> "VideoVAE":
        """bf16 weights and channels_last_3d activations: the fast CPU path (AMX), for inference."""
        self.to(dtype=dtype)
        return self.to_channels_last()

    def to_channels_last(self) -> "VideoVAE":
        """channels_last_3d conv kernels and activations, dtype unchanged. On a CPU this is faster in
        fp32 too: a training step of the small preset is 1.28x faster (benchmarks/bench_vae_train.py)."""
        for module in self.modules():
            if isinstance(module, nn.Conv3d):  # 2D convs and norms keep their layout
                module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last_3d)
        self.channels_last = True
        return self

    # ------------------------------------------------------------------------------------------
    # Saving and loading (diffusers folder layout)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write config.json + diffusion_pytorch_model.safetensors (also loadable by diffusers)."""
        from safetensors.torch import save_file

        from ..atomic import atomic_path, write_json

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
        write_json(directory / CONFIG_NAME, self.config.to_diffusers())
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, dtype: torch.dtype = torch.float32) -> "VideoVAE":
        """Load a folder written by :meth:`save_pretrained` or a diffusers ``AutoencoderKLWan`` folder.

        A diffusers model repo (with a ``vae/`` subfolder) also works.
        """
        directory = _vae_folder(directory)
        config = cls.config_from_pretrained(directory)
        with torch.device("meta"):  # no random init to overwrite: the parameters are the file's tensors
            model = cls(config)
        model.load_weights(directory / WEIGHTS_NAME, assign=True)
        return model.to(dtype=dtype)

    @staticmethod
    def config_from_pretrained(directory: str | os.PathLike) -> VAEConfig:
        """The :class:`VAEConfig` of a VAE folder, read and checked without building the model."""
        config_path = _vae_folder(directory) / CONFIG_NAME
        raw = read_json_object(config_path)
        if raw.get("_class_name", "AutoencoderKLWan") != "AutoencoderKLWan":
            raise CheckpointError(f"{config_path} describes a {raw['_class_name']}, not an AutoencoderKLWan")
        return VAEConfig.from_dict(raw, source=str(config_path))

    def load_weights(self, path: str | os.PathLike, *, assign: bool = False) -> None:
        """Load a safetensors state dict strictly; mismatches raise CheckpointError listing the keys.

        ``assign``: the parameters become the file's (memory-mapped) tensors instead of copies, so a
        page of weights is read only when used (a text-to-video run never reads the encoder), as
        diffusers loads; what :meth:`from_pretrained` does on a model built on the meta device."""
        state = read_safetensors(path)
        check_finite_file(path)  # reads the file, not the mapped tensors (which it would fault in)
        load_state_dict_checked(self, state, source=str(path), assign=assign, finite_checked=True)


def _vae_folder(directory: str | os.PathLike) -> Path:
    """The folder that holds the VAE's config.json: ``directory`` or its ``vae/`` (a diffusers repo)."""
    directory = Path(directory)
    if not (directory / CONFIG_NAME).is_file() and (directory / "vae" / CONFIG_NAME).is_file():
        directory = directory / "vae"
    if not (directory / CONFIG_NAME).is_file():
        raise CheckpointError(f"{directory} is not a VAE folder: {CONFIG_NAME} missing")
    return directory


def _pack(m: torch.Tensor, k: int) -> torch.Tensor:
    """Per-frame latents (B, z, 1 + k n, h, w) -> (B, k z, 1 + n, h, w): frame 0 takes a latent frame of its
    own (k copies), then every k frames one latent frame, slot-major channels (slot * z + channel)."""
    b, z, _, h, w = m.shape
    m = torch.cat([m[:, :, :1].expand(-1, -1, k, -1, -1), m[:, :, 1:]], dim=2)
    return m.reshape(b, z, -1, k, h, w).permute(0, 3, 1, 2, 4, 5).reshape(b, k * z, -1, h, w)


def _unpack(packed: torch.Tensor, k: int) -> torch.Tensor:
    """The inverse of :func:`_pack`; frame 0 is the mean of its k copies (equal when encoded, close when generated)."""
    b, kz, n, h, w = packed.shape
    m = packed.reshape(b, k, kz // k, n, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, kz // k, n * k, h, w)
    return torch.cat([m[:, :, :k].mean(dim=2, keepdim=True), m[:, :, k:]], dim=2)


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile start positions covering [0, size): stride tile - overlap, the last tile flush with the end."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return sorted(set(starts))


def _ramp(starts: list[int], i: int, length: int, size: int, scale: int, device) -> torch.Tensor:
    """Blend weights of tile ``i`` along one axis: rising over the overlap with the previous tile,
    falling over the overlap with the next, 1 elsewhere (in output units)."""
    n = length * scale
    w = torch.ones(n, device=device)
    pos = torch.arange(n, device=device, dtype=torch.float32) + 0.5
    s = starts[i]
    if i > 0:
        ov = (starts[i - 1] + length - s) * scale
        if ov > 0:
            w = torch.minimum(w, (pos / ov).clamp(max=1.0))
    if i < len(starts) - 1:
        ov = (s + length - starts[i + 1]) * scale
        if ov > 0:
            w = torch.minimum(w, ((n - pos) / ov).clamp(max=1.0))
    return w
