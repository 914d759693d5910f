"""Shared test fixtures. Tests use tiny random configs in temp dirs; nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REAL_VIDEOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real_videos"


@pytest.fixture
def real_videos() -> Path:
    """The folder of real clips (../shared/data/real_videos); skipped in a user's checkout without it."""
    if not REAL_VIDEOS.is_dir():
        pytest.skip("../shared/data/real_videos is absent (only the project's machines have it)")
    return REAL_VIDEOS.resolve()
