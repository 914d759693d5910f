"""Building blocks of the causal 3D VAE, in the module layout of diffusers' ``AutoencoderKLWan``.

Module and parameter names match diffusers one for one (``encoder.down_blocks.3.resample.1.weight``,
``decoder.up_blocks.0.upsamplers.0.time_conv.weight``, ...), so a diffusers state dict loads with
``load_state_dict(strict=True)`` and no key mapping.

Causality and streaming. Every temporal operation looks only at the past. A :class:`CausalCache`
carries, per layer, what that layer needs from earlier frames (the last two input frames of each
temporal convolution, whether a resampler has already passed its first frame). Feeding a video in
chunks with one cache gives the same result as feeding it whole, so encode and decode can run over
time in bounded memory. The one special frame is the first: at each temporal down/upsampler it
passes through on its own (that is what makes an image a one-frame video), exactly as in Wan2.1.

Tensors are (B, C, T, H, W) throughout; every layer keeps the memory format it is given, so the
fast CPU path can run in ``torch.channels_last_3d``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

# Frames of history each temporal 3-tap convolution needs (kernel 3, causal).
CACHE_T = 2


class CausalCache:
    """Per-stream state of the causal layers; one per video (and per spatial tile) being processed."""

    def __init__(self) -> None:
        self._state: dict[nn.Module, object] = {}

    def get(self, layer: nn.Module):
        return self._state.get(layer)

    def set(self, layer: nn.Module, value) -> None:
        """Remember ``value`` (a tensor is copied: a slice would keep its whole chunk alive).

        A tensor is copied into the layer's previous buffer when the shapes agree, so streaming
        allocates no new long-lived memory per chunk (which would fragment the heap over a long clip).
        """
        old = self._state.get(layer)
        if isinstance(value, torch.Tensor):
            if isinstance(old, torch.Tensor) and old.shape == value.shape and old.dtype == value.dtype and old.stride() == value.stride():
                old.copy_(value)
                return
            value = value.clone()
        self._state[layer] = value

    def __len__(self) -> int:
        return len(self._state)


class WanCausalConv3d(nn.Conv3d):
    """3D convolution that pads time on the past side only (2 * padding_t frames), space symmetrically.

    With a cache, the past frames come from the previous chunk instead of zeros, so chunked
    evaluation equals whole-sequence evaluation.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0)
        pad = (padding,) * 3 if isinstance(padding, int) else tuple(padding)
        self.time_pad = 2 * pad[0]
        # Spatial zero padding is the conv's own (no extra copy); temporal padding is done by hand.
        self.padding = (0, pad[1], pad[2])

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        if not self.time_pad:
            return super().forward(x)
        buf, new, seen = self.padded_input(x, cache)
        new.copy_(x)  # autograd carries the gradient back through the copy
        return self.forward_padded(buf, seen, cache)

    def padded_input(self, like: torch.Tensor, cache: CausalCache | None) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The padded input of a call on a tensor shaped as ``like``: (buffer, its new-frame view, real
        frames in it).

        The past (cached frames, zeros before them) is filled in; the caller writes the new frames into
        the view (a norm's output, say) and runs :meth:`forward_padded`. Without autograd this replaces
        ``self(f(x))``, which holds f(x) and its padded copy at once.
        """
        past = cache.get(self) if cache is not None else None
        have = 0 if past is None else past.shape[2]
        pad, t = self.time_pad, like.shape[2]
        buf = torch.empty((*like.shape[:2], pad + t, *like.shape[3:]), dtype=like.dtype, device=like.device,
                          memory_format=_format_of(like))
        if have < pad:
            buf[:, :, : pad - have].zero_()
        if have:
            buf[:, :, pad - have : pad].copy_(past)
        return buf, buf[:, :, pad:], have + t

    def forward_padded(self, buf: torch.Tensor, seen: int, cache: CausalCache | None) -> torch.Tensor:
        """The convolution of a buffer from :meth:`padded_input` (its new frames written; ``seen``: the
        real frames it holds, as :meth:`padded_input` said). Only real frames are cached: after frame 0
        alone, caching its padding zero too held a frame of every causal layer (half of all cached
        memory) through the next chunk."""
        if cache is not None and self.time_pad:
            cache.set(self, buf[:, :, -min(self.time_pad, seen):])
        return super().forward(buf)


class WanRMS_norm(nn.Module):
    """RMS norm over channels: x / ||x||_2 * sqrt(C) * gamma (computed in fp32 for low-precision input)."""

    def __init__(self, dim: int, images: bool = True) -> None:
        super().__init__()
        self.scale = dim**0.5
        # Parameter shape as in diffusers so weights load unchanged.
        self.gamma = nn.Parameter(torch.ones(dim, 1, 1) if images else torch.ones(dim, 1, 1, 1))

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``out``: where no autograd records the op, the result is written there (a view into a conv's
        padded input), so a full-resolution activation is not held twice."""
        # The norm accumulates in fp32 without materialising an fp32 copy of x (memory-bound on CPU).
        n = torch.linalg.vector_norm(x, dim=1, keepdim=True, dtype=torch.float32)  # (B, 1, ...)
        s = (self.scale / n.clamp_min(1e-12)).to(x.dtype)
        g = self.gamma.to(x.dtype)
        if torch.is_grad_enabled():
            return x * s * g
        return (x * s if out is None else torch.mul(x, s, out=out)).mul_(g)


def _per_frame(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D op to every frame: (B, C, T, H, W) -> (B*T, C, H, W) -> op -> (B, C', T, H', W').

    For channels_last_3d input both reshapes are free views (NDHWC memory is (B*T)HWC).
    """
    b = x.shape[0]
    y = fn(rearrange(x, "b c t h w -> (b t) c h w"))
    return rearrange(y, "(b t) c h w -> b c t h w", b=b)


class WanResample(nn.Module):
    """Spatial 2x down/upsampling per frame, plus 2x in time for the '3d' modes.

    downsample3d: frame 0 passes alone; later frames are merged in pairs by a stride-2 temporal conv
                  whose window also sees the last frame of the previous pair.
    upsample3d:   frame 0 passes alone; every later frame becomes two (a causal temporal conv doubles
                  the channels, which are then interleaved in time).
    """

    def __init__(self, dim: int, mode: str, upsample_out_dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.mode = mode
        out_dim = dim // 2 if upsample_out_dim is None else upsample_out_dim
        # nn.Sequential with the conv at index 1 reproduces diffusers' keys ("resample.1.weight").
        if mode in ("upsample2d", "upsample3d"):
            self.resample = nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest-exact"), nn.Conv2d(dim, out_dim, 3, padding=1))
        elif mode in ("downsample2d", "downsample3d"):
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        else:
            raise ValueError(f"unknown resample mode {mode!r}")
        if mode == "upsample3d":
            self.time_conv = WanCausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = WanCausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=0)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        if self.mode == "upsample3d":
            x = self._time_upsample(x, cache)  # (B, C, 2T - first, H, W)
        x = _per_frame(self.resample, x)  # (B, C', T, H*2 or H/2, W*2 or W/2)
        if self.mode == "downsample3d":
            x = self._time_downsample(x, cache)  # (B, C, first + (T - first) / 2, H, W)
        return x

    def _time_upsample(self, x: torch.Tensor, cache: CausalCache | None) -> torch.Tensor:
        started = cache is not None and cache.get(self) is not None
        first, rest = (x[:, :, :0], x) if started else (x[:, :, :1], x[:, :, 1:])
        if cache is not None:
            cache.set(self, True)
        if rest.shape[2] == 0:
            return first
        # The temporal conv starts from zeros after frame 0 (Wan2.1's "Rep" behaviour), then
        # continues from its cache across chunks.
        rest = self.time_conv(rest, cache)  # (B, 2C, T, H, W)
        rest = rearrange(rest, "b (two c) t h w -> b c (t two) h w", two=2)
        if first.shape[2] == 0:
            return rest.contiguous(memory_format=_format_of(x))
        return torch.cat([first, rest.contiguous(memory_format=_format_of(x))], dim=2)

    def _time_downsample(self, x: torch.Tensor, cache: CausalCache | None) -> torch.Tensor:
        last = cache.get(self) if cache is not None else None
        if last is not None:
            # Windows (last, x0, x1), (x1, x2, x3), ...: continue the pairing of the previous chunk.
            out = self.time_conv(torch.cat([last, x], dim=2))
        elif x.shape[2] == 1:
            out = x
        else:
            # Frame 0 alone, then windows (x0, x1, x2), (x2, x3, x4), ...
            out = torch.cat([x[:, :, :1], self.time_conv(x)], dim=2)
        if cache is not None:
            cache.set(self, x[:, :, -1:])  # after use: set() may overwrite `last` in place
        return out


def _silu(x: torch.Tensor) -> torch.Tensor:
    # In place saves a full activation copy at inference; autograd needs the input kept.
    return F.silu(x) if torch.is_grad_enabled() else F.silu(x, inplace=True)


def _format_of(x: torch.Tensor) -> torch.memory_format:
    if x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous():
        return torch.channels_last_3d
    return torch.contiguous_format


class WanResidualBlock(nn.Module):
    """norm -> SiLU -> causal conv -> norm -> SiLU -> dropout -> causal conv, plus a (1x1x1) shortcut."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = WanRMS_norm(in_dim, images=False)
        self.conv1 = WanCausalConv3d(in_dim, out_dim, 3, padding=1)
        self.norm2 = WanRMS_norm(out_dim, images=False)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = WanCausalConv3d(out_dim, out_dim, 3, padding=1)
        self.conv_shortcut = WanCausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        h = self.conv_shortcut(x)  # (B, C_out, T, H, W)
        if torch.is_grad_enabled():
            x = self.conv1(_silu(self.norm1(x)), cache)
            x = self.conv2(self.dropout(_silu(self.norm2(x))), cache)
            return x + h
        # Inference: each norm writes straight into its conv's padded input, and conv1's output is
        # dropped once normalised. Holding a norm's output beside its padded copy (and conv1's output
        # through conv2) cost one to two full-resolution activations at the decoder's peak.
        buf, new, seen = self.conv1.padded_input(x, cache)
        _silu(self.norm1(x, out=new))
        x = self.conv1.forward_padded(buf, seen, cache)
        del buf, new
        buf, new, seen = self.conv2.padded_input(x, cache)
        _silu(self.norm2(x, out=new))
        if self.dropout.p and self.training:
            F.dropout(new, self.dropout.p, training=True, inplace=True)
        del x, new
        return self.conv2.forward_padded(buf, seen, cache).add_(h)


class WanAttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no attention across time)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = WanRMS_norm(dim)
        # 1x1 convs in diffusers' layout; applied as linear layers on tokens.
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(rearrange(x, "b c t h w -> (b t) c h w"))
        tokens = rearrange(y, "n c h w -> n (h w) c")  # (B*T, H*W, C)
        qkv = F.linear(tokens, self.to_qkv.weight.flatten(1), self.to_qkv.bias)  # (B*T, H*W, 3C)
        q, k, v = qkv.unsqueeze(1).chunk(3, dim=-1)  # each (B*T, 1, H*W, C)
        y = F.scaled_dot_product_attention(q, k, v).squeeze(1)  # (B*T, H*W, C)
        y = F.linear(y, self.proj.weight.flatten(1), self.proj.bias)
        y = rearrange(y, "(b t) (h w) c -> b c t h w", b=b, h=h)
        return x + y.contiguous(memory_format=_format_of(x))


class WanMidBlock(nn.Module):
    """resnet -> (attention -> resnet) x num_layers at the lowest resolution."""

    def __init__(self, dim: int, dropout: float = 0.0, num_layers: int = 1) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([WanResidualBlock(dim, dim, dropout) for _ in range(num_layers + 1)])
        self.attentions = nn.ModuleList([WanAttentionBlock(dim) for _ in range(num_layers)])

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        x = self.resnets[0](x, cache)
        for attn, resnet in zip(self.attentions, self.resnets[1:]):
            x = resnet(attn(x), cache)
        return x


class AvgDown3D(nn.Module):
    """Shortcut of a Wan2.2 residual down block: time and space folded into channels (the first frame
    with a zero frame before it, so frames pair as the main path's do), then groups of channels averaged.
    Each input frame reaches the output through it directly, whatever the main path keeps."""

    def __init__(self, in_channels: int, out_channels: int, factor_t: int, factor_s: int = 1) -> None:
        super().__init__()
        factor = factor_t * factor_s * factor_s
        if in_channels * factor % out_channels:
            raise ValueError(f"in_channels {in_channels} x factor {factor} is not a multiple of out_channels {out_channels}")
        self.out_channels, self.factor_t, self.factor_s = out_channels, factor_t, factor_s
        self.group_size = in_channels * factor // out_channels

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        fmt, ft, fs = _format_of(x), self.factor_t, self.factor_s
        pad_t = (ft - x.shape[2] % ft) % ft  # a chunk that starts the clip is 1 + 2k frames long, later ones 2k
        x = F.pad(x, (0, 0, 0, 0, pad_t, 0))
        b, c, t, h, w = x.shape
        x = x.reshape(b, c, t // ft, ft, h // fs, fs, w // fs, fs).permute(0, 1, 3, 5, 7, 2, 4, 6)
        x = x.reshape(b, self.out_channels, self.group_size, t // ft, h // fs, w // fs).mean(dim=2)
        return x.contiguous(memory_format=fmt)


class DupUp3D(nn.Module):
    """Shortcut of a Wan2.2 residual up block: channels repeated, then unfolded into time and space;
    at the start of a clip the frames before the first one are dropped (the main path's frame 0 passes alone)."""

    def __init__(self, in_channels: int, out_channels: int, factor_t: int, factor_s: int = 1) -> None:
        super().__init__()
        self.out_channels, self.factor_t, self.factor_s = out_channels, factor_t, factor_s
        factor = factor_t * factor_s * factor_s
        if out_channels * factor % in_channels:
            raise ValueError(f"out_channels {out_channels} x factor {factor} is not a multiple of in_channels {in_channels}")
        self.repeats = out_channels * factor // in_channels

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        fmt, ft, fs = _format_of(x), self.factor_t, self.factor_s
        first = cache is None or cache.get(self) is None
        if cache is not None:
            cache.set(self, True)
        b, _, t, h, w = x.shape
        x = x.repeat_interleave(self.repeats, dim=1).reshape(b, self.out_channels, ft, fs, fs, t, h, w)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, self.out_channels, t * ft, h * fs, w * fs)
        if first:
            x = x[:, :, ft - 1:]
        return x.contiguous(memory_format=fmt)


class WanResidualDownBlock(nn.Module):
    """Wan2.2: residual blocks and a downsampler, plus an :class:`AvgDown3D` shortcut around them."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float, num_res_blocks: int, temperal_downsample: bool = False,
                 down_flag: bool = False) -> None:
        super().__init__()
        self.avg_shortcut = AvgDown3D(in_dim, out_dim, factor_t=2 if temperal_downsample else 1, factor_s=2 if down_flag else 1)
        self.resnets = nn.ModuleList([WanResidualBlock(in_dim if j == 0 else out_dim, out_dim, dropout) for j in range(num_res_blocks)])
        mode = "downsample3d" if temperal_downsample else "downsample2d"
        self.downsampler = WanResample(out_dim, mode=mode) if down_flag else None

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        shortcut = self.avg_shortcut(x, cache)
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.downsampler is not None:
            x = self.downsampler(x, cache)
        return x + shortcut


class WanResidualUpBlock(nn.Module):
    """Wan2.2: residual blocks and an upsampler, plus a :class:`DupUp3D` shortcut around them."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float = 0.0, temperal_upsample: bool = False,
                 up_flag: bool = False) -> None:
        super().__init__()
        self.avg_shortcut = DupUp3D(in_dim, out_dim, factor_t=2 if temperal_upsample else 1, factor_s=2) if up_flag else None
        self.resnets = nn.ModuleList([WanResidualBlock(in_dim if j == 0 else out_dim, out_dim, dropout) for j in range(num_res_blocks + 1)])
        mode = "upsample3d" if temperal_upsample else "upsample2d"
        self.upsampler = WanResample(out_dim, mode=mode, upsample_out_dim=out_dim) if up_flag else None

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        shortcut = self.avg_shortcut(x, cache) if self.avg_shortcut is not None else None
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.upsampler is not None:
            x = self.upsampler(x, cache)
        return x if shortcut is None else x + shortcut


class WanEncoder3d(nn.Module):
    """Pixels (B, 3, T, H, W) -> moments (B, 2*z_dim, 1 + (T-1)/tf, H/sf, W/sf)."""

    def __init__(
        self,
        in_channels: int = 3,
        dim: int = 96,
        z_dim: int = 32,
        dim_mult=(1, 2, 4, 4),
        num_res_blocks: int = 2,
        attn_scales=(),
        temperal_downsample=(False, True, True),
        dropout: float = 0.0,
        is_residual: bool = False,
    ) -> None:
        super().__init__()
        dims = [dim * u for u in [1, *dim_mult]]
        self.conv_in = WanCausalConv3d(in_channels, dims[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        scale = 1.0
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            last = i == len(dim_mult) - 1
            if is_residual:  # Wan2.2: one block per stage, its downsampler inside, a shortcut around it
                self.down_blocks.append(WanResidualDownBlock(in_dim, out_dim, dropout, num_res_blocks,
                                                             temperal_downsample=not last and temperal_downsample[i], down_flag=not last))
                continue
            for _ in range(num_res_blocks):
                self.down_blocks.append(WanResidualBlock(in_dim, out_dim, dropout))
                if scale in attn_scales:
                    self.down_blocks.append(WanAttentionBlock(out_dim))
                in_dim = out_dim
            if i != len(dim_mult) - 1:
                mode = "downsample3d" if temperal_downsample[i] else "downsample2d"
                self.down_blocks.append(WanResample(out_dim, mode=mode))
                scale /= 2.0
        self.mid_block = WanMidBlock(out_dim, dropout, num_layers=1)
        self.norm_out = WanRMS_norm(out_dim, images=False)
        self.conv_out = WanCausalConv3d(out_dim, z_dim, 3, padding=1)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        x = self.conv_in(x, cache)  # (B, dim, T, H, W)
        for layer in self.down_blocks:
            x = layer(x, cache)  # down to (B, dim*mult[-1], T', H/sf, W/sf)
        x = self.mid_block(x, cache)
        return self.conv_out(_silu(self.norm_out(x)), cache)  # (B, z_dim, T', H/sf, W/sf)


class WanUpBlock(nn.Module):
    """num_res_blocks + 1 residual blocks, then an optional upsampler (Wan2.1 layout)."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float = 0.0, upsample_mode: str | None = None) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [WanResidualBlock(in_dim if j == 0 else out_dim, out_dim, dropout) for j in range(num_res_blocks + 1)]
        )
        self.upsamplers = nn.ModuleList([WanResample(out_dim, mode=upsample_mode)]) if upsample_mode else None

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, cache)
        return x


class WanDecoder3d(nn.Module):
    """Latents (B, z_dim, T', H', W') -> pixels (B, 3, 1 + (T'-1)*tf, H'*sf, W'*sf), not yet clamped."""

    def __init__(
        self,
        dim: int = 96,
        z_dim: int = 16,
        dim_mult=(1, 2, 4, 4),
        num_res_blocks: int = 2,
        attn_scales=(),
        temperal_upsample=(True, True, False),
        dropout: float = 0.0,
        out_channels: int = 3,
        is_residual: bool = False,
    ) -> None:
        super().__init__()
        dims = [dim * u for u in [dim_mult[-1], *dim_mult[::-1]]]
        self.conv_in = WanCausalConv3d(z_dim, dims[0], 3, padding=1)
        self.mid_block = WanMidBlock(dims[0], dropout, num_layers=1)
        self.up_blocks = nn.ModuleList()
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            up_flag = i != len(dim_mult) - 1
            if is_residual:  # Wan2.2: the upsampler keeps the channels, a shortcut goes around the block
                self.up_blocks.append(WanResidualUpBlock(in_dim, out_dim, num_res_blocks, dropout,
                                                         temperal_upsample=up_flag and temperal_upsample[i], up_flag=up_flag))
                continue
            if i > 0:
                in_dim = in_dim // 2  # Wan2.1: each upsampler halves the channels it hands on
            mode = None
            if up_flag:
                mode = "upsample3d" if temperal_upsample[i] else "upsample2d"
            self.up_blocks.append(WanUpBlock(in_dim, out_dim, num_res_blocks, dropout, mode))
        self.norm_out = WanRMS_norm(out_dim, images=False)
        self.conv_out = WanCausalConv3d(out_dim, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        x = self.conv_in(x, cache)  # (B, dim*mult[-1], T', H', W')
        x = self.mid_block(x, cache)
        for block in self.up_blocks:
            x = block(x, cache)  # up to (B, dim, T, H, W)
        if torch.is_grad_enabled():
            return self.conv_out(_silu(self.norm_out(x)), cache)  # (B, 3, T, H, W)
        buf, new, seen = self.conv_out.padded_input(x, cache)
        _silu(self.norm_out(x, out=new))
        del x, new
        return self.conv_out.forward_padded(buf, seen, cache)
