"""The bench detector against SoraWorld's ground truth: colours, shapes, sizes, positions, identities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from soraflow.eval import detector as D
from soraflow.eval.metrics import size_word
from soraflow.eval.suite import background_colors, detector_config
from soraflow.world import render_clip
from soraflow.world.render import draw_object
from soraflow.world.spec import COLORS, SHAPES, BackgroundSpec, ObjectSpec, OccluderSpec, SceneSpec, ShotSpec


def _obj(shape, color, size="medium", motion="still", direction="none", speed="normal", hit_color="none"):
    return ObjectSpec(shape, color, size, motion, direction, speed, "none", "none", False, hit_color)


def _spec(objects, kind="solid", name="teal", occluder=None, camera="static"):
    return SceneSpec(objects, BackgroundSpec(kind, name), camera, occluder, [ShotSpec("wide")])


def test_color_lookup_table_is_the_nearest_shade_within_tolerance():
    rng = np.random.default_rng(0)
    near = D._PROTO_RGB[rng.integers(0, len(D._PROTO_RGB), 4000)] + rng.normal(0, 20, (4000, 3))
    pixels = np.concatenate([rng.integers(0, 256, (4000, 3)), near.clip(0, 255)]).astype(np.uint8)
    fast = D.label_colors(pixels[:, None, :], 30.0)[:, 0]
    # The table quantises to 7 bits per channel: compare with the exact rule on the cell centres.
    exact = D._nearest((pixels >> 1).astype(np.float32) * 2 + 0.5, 30.0)
    np.testing.assert_array_equal(fast, exact)
    assert (fast >= 0).mean() > 0.3 and (fast == -1).mean() > 0.3  # both outcomes occur
    # Every named colour and its ball-band shade read as that colour; a far colour reads as none.
    for i, name in enumerate(D.COLOR_NAMES):
        c = np.array(COLORS[name], np.float32)
        frame = np.stack([c, c * 0.78]).round().astype(np.uint8)[None]
        assert (D.label_colors(frame, 30.0) == i).all(), name
    assert D.label_colors(np.array([[[128, 200, 20]]], np.uint8), 30.0)[0, 0] == -1  # lime is no named colour


@pytest.mark.parametrize("shape", SHAPES)
def test_shape_fit_recognises_each_shape_at_any_angle_and_size(shape):
    rng = np.random.default_rng(SHAPES.index(shape))
    for _ in range(6):
        img = np.full((64, 64, 3), 236.0, np.float32)
        radius, angle = rng.uniform(5.5, 16), rng.uniform(0, 2 * math.pi)
        draw_object(img, shape, 32.3, 31.7, radius, angle, COLORS["blue"])
        det = D.detect_frame(img.round().astype(np.uint8))
        assert len(det.objects) == 1
        d = det.objects[0]
        assert d.shape == shape, (shape, radius, angle, d.shape_scores)
        assert abs(d.center[0] - 32.3) < 1.0 and abs(d.center[1] - 31.7) < 1.0
        assert d.radius == pytest.approx(radius, rel=0.2)
    # Descriptors rank the shapes as their geometry says.
    assert (d.solidity < 0.8) == (shape == "star")
    assert d.corners == {"ball": 0, "box": 4, "triangle": 3, "star": 5}[shape] or shape == "ball"


@pytest.mark.parametrize("size", [(128, 128), (96, 160), (160, 96)])
def test_detections_match_the_ground_truth(size):
    spec = _spec([_obj("ball", "red", "small", "move", "right"), _obj("box", "yellow", "large", "bounce", "left"),
                  _obj("triangle", "purple", "medium", "move", "up"), _obj("star", "white", "medium")],
                 name="navy")
    clip = render_clip(spec, size, 8, num_frames=6, seed=3)
    vd = D.detect_video(clip.frames, 8)
    checked = 0
    for fd, truth in zip(vd.frames, clip.truth.frames):
        for o in truth.objects:
            if o.visible < 0.999:
                continue
            found = [d for d in fd.objects if d.color == o.color
                     and math.hypot(d.center[0] - o.pixel[0], d.center[1] - o.pixel[1]) < 1.5]
            assert len(found) == 1, (truth.index, o.color, o.pixel, [(d.color, d.center) for d in fd.objects])
            d = found[0]
            if d.clean:
                assert d.shape == o.shape
                assert size_word(d.radius, size[0]) == spec.objects[o.index].size
                checked += 1
    assert checked >= 12
    assert len(vd.tracks) == 4 and sorted(t.color for t in vd.tracks) == ["purple", "red", "white", "yellow"]


def test_background_colours_are_ignored_on_their_background():
    # Gray checkerboard tiles and white clouds read as named colours; on that background they are no objects.
    spec = _spec([_obj("star", "blue", "medium")], kind="ground", name="tiles")
    clip = render_clip(spec, (128, 128), 8, num_frames=1, seed=0)
    naive = D.detect_frame(clip.frames[0])
    assert len(naive.objects) > 3
    assert set(background_colors("tiles")) >= {"gray", "white"}
    entry = type("E", (), {"spec": spec})()
    cfg = detector_config(entry)
    det = D.detect_frame(clip.frames[0], config=cfg)
    assert [(d.color, d.shape) for d in det.objects] == [("blue", "star")]


def test_tracker_keeps_identity_behind_the_pillar():
    spec = _spec([_obj("box", "orange", "medium", "move", "right", "fast")], name="navy",
                 occluder=OccluderSpec("green", "center"))
    clip = render_clip(spec, (128, 128), 8, num_frames=24, seed=11)
    hidden = [f.index for f in clip.truth.frames if f.objects[0].visible < 0.05]
    assert hidden, "the scene must hide the object behind the pillar"
    vd = D.detect_video(clip.frames, 8)
    assert all(f.occluder is not None and f.occluder_color == "green" for f in vd.frames)
    assert len(vd.tracks) == 1  # one identity before, behind and after the pillar
    seen = vd.tracks[0].frames
    assert not set(hidden) & set(seen) and seen[0] < min(hidden) and seen[-1] > max(hidden)


def test_a_box_that_changes_colour_on_impact_keeps_its_track(render_until_hit):
    spec = _spec([_obj("box", "red", "large", "still", hit_color="cyan"), _obj("ball", "yellow", "medium", "move", "left", "fast")],
                 name="beige")
    clip = render_until_hit(spec)
    vd = D.detect_video(clip.frames, 8)
    boxes = [t for t in vd.tracks if t.shape == "box"]
    assert len(boxes) == 1 and boxes[0].colors == ["red", "cyan"]
