"""soraflow: text (and image or video) to video, built the way Sora's report describes.

A causal 3D VAE compresses video, spacetime patches become tokens, and a diffusion transformer
trained with rectified flow generates them. See README.md and docs/.

    from soraflow import SoraPipeline
    pipe = SoraPipeline.from_pretrained("model/")
    pipe("a red ball bouncing on grass", seconds=4, seed=0).save("ball.mp4")

``import soraflow`` stays light (no torch): the pipeline classes load on first use.
"""

__version__ = "0.1.0"

from .errors import CheckpointError, DataError, InputError, SoraflowError, VideoError  # noqa: E402

# Public names that live in modules importing torch: resolved lazily by __getattr__ below.
_LAZY = {
    "SoraPipeline": "soraflow.pipeline",
    "PipelineConfig": "soraflow.pipeline",
    "GenerationResult": "soraflow.pipeline",
    "Generation": "soraflow.pipeline",
    "StepInfo": "soraflow.pipeline",
}

__all__ = ["__version__", "SoraflowError", "InputError", "VideoError", "CheckpointError", "DataError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'soraflow' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
