"""soraflow: text (and image or video) to video, built the way Sora's report describes.

A causal 3D VAE compresses video, spacetime patches become tokens, and a diffusion transformer
trained with rectified flow generates them. See README.md and docs/.
"""

__version__ = "0.1.0"

from .errors import CheckpointError, DataError, InputError, SoraflowError, VideoError  # noqa: E402

__all__ = ["__version__", "SoraflowError", "InputError", "VideoError", "CheckpointError", "DataError"]
