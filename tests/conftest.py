"""Shared test fixtures. Tests use tiny random configs in temp dirs; nothing is downloaded."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The CPU speed probe (soraflow.hardware) caches its figures; tests and the CLI processes they start
# share one cache of their own instead of writing to the user's home.
os.environ.setdefault("SORAFLOW_CACHE_DIR", tempfile.mkdtemp(prefix="soraflow-test-cache-"))

REAL_VIDEOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real_videos"


@pytest.fixture
def real_videos() -> Path:
    """The folder of real clips (../shared/data/real_videos); skipped in a user's checkout without it."""
    if not REAL_VIDEOS.is_dir():
        pytest.skip("../shared/data/real_videos is absent (only the project's machines have it)")
    return REAL_VIDEOS.resolve()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run several times faster on one torch thread than on two busy cores (thread
    wake-ups and barriers dominate). Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def render_until_hit():
    """render_until_hit(spec) -> a 24-frame 128x128 clip of ``spec`` in which object 0 has changed
    colour on impact by the last frame (the first of 40 seeds where it does)."""
    from soraflow.world import render_clip

    def render(spec):
        for seed in range(40):
            clip = render_clip(spec, (128, 128), 8, num_frames=24, seed=seed)
            if clip.truth.frames[-1].objects[0].color == spec.objects[0].hit_color:
                return clip
        pytest.fail("no seed with a hit")

    return render
