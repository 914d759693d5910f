"""SoraWorld: a procedural world simulator that renders captioned clips with ground truth.

    from soraflow.world import render_clip, random_spec
    clip = render_clip(random_spec(7), size=(128, 128), fps=8, seconds=2, seed=7)
    clip.frames            # (16, 128, 128, 3) uint8
    clip.truth.frames[0]   # positions, boxes, visibility, colours, camera, shot of frame 0

Modules: spec (what a caption can state), scene (spec + seed -> world), physics (fixed-step
simulation), render (world -> pixels), truth (ground truth), clip (the frame loop), dataset
(the multi-process dataset writer), captions and parser (spec <-> text).
"""

from .clip import Clip, check_render_args, frames_for, render_clip
from .spec import SceneSpec, complete, random_spec, validate
from .truth import CameraTruth, ClipTruth, FrameTruth, ObjectTruth

__all__ = ["render_clip", "Clip", "check_render_args", "frames_for", "SceneSpec", "complete", "random_spec",
           "validate", "ClipTruth", "FrameTruth", "ObjectTruth", "CameraTruth"]
