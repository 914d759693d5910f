"""The CLIP image encoder of Wan2.1 I2V / FLF2V: images -> the token features the DiT's image branch reads.

What diffusers' ``WanImageToVideoPipeline.encode_image`` computes: the folder's ``CLIPImageProcessor``
(resize, centre crop, normalise) and ``CLIPVisionModel``'s second-to-last hidden states, every token.
Local folders only (``image_encoder/`` and ``image_processor/`` of a diffusers pipeline folder).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from ..offload import execution_device


class ImageEncoder:
    def __init__(self, model, processor, reference: str):
        self.model = model.eval().requires_grad_(False)
        self.processor = processor
        self.reference = reference
        self.dim = int(model.config.hidden_size)
        self.execution_device: torch.device | None = None  # set while CPU offload is on (soraflow.offload)

    @torch.no_grad()
    def __call__(self, images: list[np.ndarray]) -> torch.Tensor:
        """uint8 images (H, W, 3) -> (len(images), tokens, dim) float32."""
        from PIL import Image

        inputs = self.processor(images=[Image.fromarray(im) for im in images], return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, self.model.dtype)
        return self.model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2].float()

    @property
    def device(self) -> torch.device:
        return execution_device(self)

    def to(self, device=None, dtype=None) -> "ImageEncoder":
        self.model.to(device=device, dtype=dtype)
        return self


def load_image_encoder(encoder_dir: str | os.PathLike, processor_dir: str | os.PathLike, *, device="cpu",
                       dtype: torch.dtype = torch.float32) -> ImageEncoder:
    """A CLIP vision encoder and its processor from local folders (nothing is downloaded)."""
    from transformers import CLIPImageProcessor, CLIPVisionModel

    encoder_dir, processor_dir = Path(encoder_dir), Path(processor_dir)
    for folder in (encoder_dir, processor_dir):
        if not folder.is_dir():
            raise CheckpointError(f"image encoder folder {folder} does not exist")
    try:
        model = CLIPVisionModel.from_pretrained(encoder_dir, local_files_only=True, torch_dtype=dtype)
        processor = CLIPImageProcessor.from_pretrained(processor_dir, local_files_only=True)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot load the CLIP image encoder from {encoder_dir}: {str(err).splitlines()[0]}") from None
    return ImageEncoder(model.to(device), processor, str(encoder_dir))


__all__ = ["ImageEncoder", "load_image_encoder"]
