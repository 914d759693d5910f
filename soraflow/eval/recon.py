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


# ----------------------------------------------------------------------------------------------
# Evaluating a VAE on clips


def eval_size(height: int, width: int, max_side: int, multiple: int) -> tuple[int, int]:
    """Frame size to evaluate at: scaled so the long side is at most ``max_side``, rounded down to
    ``multiple`` (the VAE's spatial factor)."""
    scale = min(1.0, max_side / max(height, width))
    h, w = int(height * scale) // multiple * multiple, int(width * scale) // multiple * multiple
    return max(h, multiple), max(w, multiple)


def evaluate_vae(vae, data, *, size: tuple[int, int] | None = None, max_side: int = 256, frames: int = 17,
                 limit: int | None = None, precision: str = "bf16", progress: bool = True, report=print) -> dict:
    """Reconstruct every clip of ``data`` (SoraWorld folder, folder of clips, or one file) and return
    {"clips": n, "skipped": [...], "psnr": {...}, "ssim": {...}, "per_clip": [...]}.

    Each clip: its first ``frames`` frames (trimmed to 1 + 4k), resized to ``size`` (H, W) or its
    own size scaled to ``max_side``; encode (posterior mean) and decode with the streaming path.
    """
    from tqdm import tqdm

    from ..errors import DataError, InputError, VideoError
    from ..data import discover_clips
    from ..video import probe, read_video, to_tensor

    clips = discover_clips(data)[:limit]
    per_clip, skipped = [], []
    sf, tf = vae.spatial_factor, vae.temporal_factor
    for clip in tqdm(clips, desc=f"eval {data}", unit="clip", disable=not progress):
        try:
            info = probe(clip.path)
            hw = size or eval_size(info.height, info.width, max_side, sf)
            video = read_video(clip.path, size=hw, max_frames=frames)
        except (VideoError, InputError, OSError) as err:
            skipped.append(str(clip.path))
            report(f"skipping unreadable clip {clip.path}: {err}")
            continue
        t = 1 + (len(video) - 1) // tf * tf
        x = to_tensor(video[:t])[None]  # (1, 3, T, H, W) in [-1, 1]
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            z = vae.encode(x).mean
            y = vae.decode(z).float()
        # Score what a user gets: the reconstruction rounded to uint8 pixels.
        y = (((y + 1) * 127.5).round() / 127.5 - 1).clamp(-1, 1)
        per_clip.append({"path": str(clip.path), "frames": t, "height": hw[0], "width": hw[1],
                         "psnr": psnr(y, x).item(), "ssim": ssim(y, x).item()})  # fmt: skip
    if not per_clip:
        raise DataError(f"no readable clips in {data} ({len(skipped)} unreadable)")
    return {
        "data": str(data),
        "clips": len(per_clip),
        "skipped": skipped,
        "psnr": summarize([c["psnr"] for c in per_clip]),
        "ssim": summarize([c["ssim"] for c in per_clip]),
        "per_clip": per_clip,
    }
