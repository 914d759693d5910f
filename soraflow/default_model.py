"""Where the default model lives: ``soraflow/assets/default/`` inside the package (no torch import here).

It is the model ``soraflow generate`` and ``SoraPipeline.from_pretrained()`` use when no folder is
given; ``scripts/build_default_model.py`` trains and exports it, MODEL_CARD.md describes it.
"""

from __future__ import annotations

from pathlib import Path

from .errors import SoraflowError


def default_model_dir() -> Path:
    """The model folder shipped in the package (soraflow/assets/default/)."""
    return Path(__file__).resolve().parent / "assets" / "default"


def require_default_model() -> Path:
    """The shipped model's folder, or a one-line error saying what to do when it is missing."""
    folder = default_model_dir()
    if not (folder / "config.json").is_file():
        raise SoraflowError(
            f"no default model is installed ({folder} is empty); pass a model folder (--model DIR), e.g. one made "
            "by scripts/make_random_model.py, trained with `soraflow train dit`, or built by scripts/build_default_model.py"
        )
    return folder
