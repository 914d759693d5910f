"""Reconstruction metrics: PSNR and SSIM for videos, and the SSIM loss the VAE trains with.

Inputs are pixel tensors (B, 3, T, H, W) in [-1, 1] (the models' convention); metrics are computed
on [0, 1] intensities, per frame, and averaged. SSIM is the standard one (Wang et al. 2004):
Gaussian window of std 1.5 (11 taps), C1 = (0.01)^2, C2 = (0.03)^2, averaged over RGB channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

_C1, _C2 = 0.01**2, 0.03**2


def _frames01(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) in [-1, 1] -> (B*T, C, H, W) in [0, 1], float32."""
    return rearrange((x.float() + 1.0) * 0.5, "b c t h w -> (b t) c h w")


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()  # depthwise (C, 1, k, k)


def ssim_map(a: torch.Tensor, b: torch.Tensor, *, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM of frame batches a, b (N, C, H, W) in [0, 1]; 'valid' region only."""
    window = min(window, a.shape[-1], a.shape[-2])
    w = _gaussian_window(window, sigma, a.shape[1], a.device, a.dtype)
    conv = lambda t: F.conv2d(t, w, groups=a.shape[1])  # noqa: E731
    mu_a, mu_b = conv(a), conv(b)
    var_a = conv(a * a) - mu_a**2
    var_b = conv(b * b) - mu_b**2
    cov = conv(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + _C1) * (2 * cov + _C2)) / ((mu_a**2 + mu_b**2 + _C1) * (var_a + var_b + _C2))


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per video: x, y (B, 3, T, H, W) in [-1, 1] -> (B,)."""
    _check_pair(x, y)
    m = ssim_map(_frames01(x), _frames01(y))  # (B*T, C, h, w)
    return m.flatten(1).mean(1).view(x.shape[0], -1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per video over all its pixels (peak 1 on [0, 1]): x, y (B, 3, T, H, W) -> (B,).

    Identical videos give +inf.
    """
    _check_pair(x, y)
    mse = ((x.float() - y.float()) * 0.5).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse)


def ssim_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - SSIM averaged over the batch: a differentiable structural loss for training."""
    return 1.0 - ssim_map(_frames01(recon), _frames01(target)).mean()


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    from ..errors import InputError

    if x.shape != y.shape or x.ndim != 5:
        raise InputError(f"metrics need two videos (B, 3, T, H, W) of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")


def summarize(values: list[float]) -> dict[str, float]:
    """Mean / min / max of finite values (an exact reconstruction's infinite PSNR is capped at 100 dB)."""
    vals = [min(v, 100.0) for v in values if not math.isnan(v)]
    if not vals:
        return {"mean": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals)}
