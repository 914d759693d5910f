"""Pixels <-> the DiT's latents: the one encode and the one decode that generation, training's latent
cache and sample videos, and the evaluations all use.

Latents are *normalized* (the VAE's per-channel mean and std taken out), as the DiT sees them.
"""

from __future__ import annotations

import numpy as np
import torch

from . import video as video_io
from .offload import execution_device


@torch.no_grad()
def encode_frames(vae, frames: np.ndarray, *, autocast: bool = False, frame_policy: str = "pad") -> torch.Tensor:
    """uint8 frames (T, H, W, 3) -> normalized latents (1, C, T', H/8, W/8), float32 on the VAE's device:
    the posterior mean.

    ``autocast`` runs a CPU encode under bf16 autocast (the latent cache, where that is faster); otherwise
    the VAE runs in its own dtype. ``frame_policy`` says what a length other than 1 + 4k does
    (:meth:`VideoVAE.encode`): generation passes "error", since its plans only ever encode such lengths.
    """
    return encode_pixels(vae, video_io.to_tensor(frames)[None], autocast=autocast, frame_policy=frame_policy)


@torch.no_grad()
def encode_pixels(vae, x: torch.Tensor, *, autocast: bool = False, frame_policy: str = "pad") -> torch.Tensor:
    """:func:`encode_frames` for pixels already a tensor (1, 3, T, H, W) in [-1, 1], where values that
    are no uint8 level matter (Wan's image-to-video condition: an image, then zeros)."""
    device = execution_device(vae)
    x = x.to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast and device.type == "cpu"):
        z = vae.encode(x, frame_policy=frame_policy).mode()
    return vae.normalize(z.float())


@torch.no_grad()
def decode_latents(vae, z: torch.Tensor) -> np.ndarray:
    """Normalized latents (1, C, T', h, w) -> uint8 frames (1 + 4 (T'-1), H, W, 3)."""
    return video_io.from_tensor(vae.decode(vae.denormalize(z)))


__all__ = ["encode_frames", "encode_pixels", "decode_latents"]
