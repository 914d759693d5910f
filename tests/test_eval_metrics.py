"""Every bench metric on simulator renders with known ground truth, and on videos built to fail."""

from __future__ import annotations

import numpy as np
import pytest

from soraflow.eval import metrics as M
from soraflow.eval.detector import detect_video
from soraflow.world import render_clip
from soraflow.world.render import draw_object
from soraflow.world.spec import BACKGROUND_COLORS, COLORS, BackgroundSpec, ObjectSpec, OccluderSpec, SceneSpec, ShotSpec


def _obj(shape, color, size="medium", motion="still", direction="none", speed="normal", trail=False, hit_color="none"):
    return ObjectSpec(shape, color, size, motion, direction, speed, "none", "none", trail, hit_color)


def _spec(objects, name="teal", kind="solid", camera="static", occluder=None, shots=None):
    return SceneSpec(objects, BackgroundSpec(kind, name), camera, occluder, shots or [ShotSpec("wide")])


def _seen(spec, frames, fps=8):
    vd = detect_video(frames, fps)
    return vd, M.match_objects(spec, M.object_tracks(vd))


def test_colour_shape_size_and_count_against_the_prompt():
    spec = _spec([_obj("ball", "red", "large", "move", "right"), _obj("star", "yellow", "small")])
    clip = render_clip(spec, (128, 128), 8, num_frames=9, seed=1)
    vd, matched = _seen(spec, clip.frames)
    assert M.color_accuracy(spec, matched) == 1.0
    assert M.shape_accuracy(spec, matched) == 1.0
    assert M.size_accuracy(spec, matched, 128) == 1.0
    assert M.count_accuracy(spec, vd) == 1.0
    # The prompt said blue: the red ball is the wrong colour (and a missing third object is a wrong count).
    wrong = SceneSpec.from_dict(spec.to_dict())
    wrong.objects[0].color, wrong.objects[1].shape, wrong.objects[1].size = "blue", "box", "large"
    wrong.objects.append(_obj("box", "green"))
    vd, matched = _seen(wrong, clip.frames)
    assert M.color_accuracy(wrong, matched) == pytest.approx(1 / 3)  # only the yellow object is right
    assert M.shape_accuracy(wrong, matched) == pytest.approx(1 / 3)  # only the ball
    assert M.size_accuracy(wrong, matched, 128) == pytest.approx(1 / 3)
    assert M.count_accuracy(wrong, vd) == 0.0


def test_direction_and_its_reversal():
    spec = _spec([_obj("box", "orange", "medium", "move", "down-right", "normal")], name="navy")
    clip = render_clip(spec, (128, 128), 8, num_frames=9, seed=2)
    _, matched = _seen(spec, clip.frames)
    assert M.direction_accuracy(spec, matched, 8, 128) == 1.0
    _, matched = _seen(spec, clip.frames[::-1])  # played backwards it goes up-left
    assert M.direction_accuracy(spec, matched, 8, 128) == 0.0


def _bounce_clip():
    spec = _spec([_obj("ball", "red", "medium", "bounce", "none", "normal")], name="beige")
    return spec, render_clip(spec, (128, 128), 8, num_frames=29, seed=4)


def test_gravity_fits_a_fall_and_rejects_an_upward_acceleration():
    spec, clip = _bounce_clip()
    _, matched = _seen(spec, clip.frames)
    fit = M.fall_fit(matched[0], 128)
    assert fit.plausible and fit.bounces >= 1 and fit.gravity > 0
    assert all(b < a for a, b in zip(fit.apex_heights, fit.apex_heights[1:]))
    assert M.gravity_plausibility(spec, matched, 128) == 1.0
    # Upside down: it "falls" upward, accelerating up, and bounces off the ceiling.
    _, matched = _seen(spec, clip.frames[:, ::-1].copy())
    fit = M.fall_fit(matched[0], 128)
    assert not fit.plausible and fit.gravity < 0
    # Backwards in time: each hop higher than the last.
    _, matched = _seen(spec, clip.frames[::-1].copy())
    assert M.gravity_plausibility(spec, matched, 128) == 0.0


def test_permanence_passes_behind_the_pillar_and_fails_a_vanished_object():
    spec = _spec([_obj("box", "orange", "medium", "move", "right", "fast")], name="navy",
                 occluder=OccluderSpec("green", "center"))
    clip = render_clip(spec, (128, 128), 8, num_frames=24, seed=11)
    vd, _ = _seen(spec, clip.frames)
    assert any(f.objects[0].occluded for f in clip.truth.frames)
    assert M.permanence(vd, M.object_tracks(vd)) == 1.0
    # The same object vanishing in the open: paint the background over it from frame 10 on.
    plain = _spec([_obj("box", "orange", "medium", "move", "right", "normal")], name="navy")
    clip = render_clip(plain, (128, 128), 8, num_frames=24, seed=5)
    vd, _ = _seen(plain, clip.frames)
    assert M.permanence(vd, M.object_tracks(vd)) == 1.0
    frames = clip.frames.copy()
    for f, truth in zip(frames[10:], clip.truth.frames[10:]):
        x0, y0, x1, y1 = (int(v) for v in truth.objects[0].bbox)
        f[max(y0 - 2, 0):y1 + 2, max(x0 - 2, 0):x1 + 2] = BACKGROUND_COLORS["navy"]
    vd, _ = _seen(plain, frames)
    assert M.permanence(vd, M.object_tracks(vd)) == 0.0
    # An empty scene: nothing vanishes, but the prompt's object never shows up
    frames[:] = BACKGROUND_COLORS["navy"]
    vd, matched = _seen(plain, frames)
    tracks = M.object_tracks(vd)
    assert tracks == [] and matched == [None]
    assert M.permanence(vd, tracks) == 1.0  # no disappearance to explain...
    assert M.permanence(vd, tracks, missing=1) == 0.0  # ...but one object missing


def test_collisions_separate_and_objects_passing_through_each_other_fail():
    spec = _spec([_obj("ball", "red", "medium", "move", "right"), _obj("ball", "blue", "medium", "move", "left")],
                 name="beige")
    for seed in range(60):
        clip = render_clip(spec, (128, 128), 8, num_frames=25, seed=seed)
        if any(f.collisions for f in clip.truth.frames[2:-4]):
            break
    vd, matched = _seen(spec, clip.frames)
    assert M.collision_plausibility(vd, matched) == 1.0
    # Two balls that glide through each other: drawn by hand on a plain background.
    frames = []
    for k in range(20):
        img = np.full((96, 128, 3), BACKGROUND_COLORS["beige"], np.float32)
        draw_object(img, "ball", 20 + 4.5 * k, 48, 10, 0.0, COLORS["red"])
        draw_object(img, "ball", 108 - 4.5 * k, 48, 10, 0.0, COLORS["blue"])
        frames.append(img.round().astype(np.uint8))
    vd, matched = _seen(spec, np.stack(frames))
    assert M.collision_plausibility(vd, matched) == 0.0


def test_hit_colour_change(render_until_hit):
    spec = _spec([_obj("box", "red", "large", "still", hit_color="cyan"), _obj("ball", "yellow", "medium", "move", "left", "fast")],
                 name="beige")
    clip = render_until_hit(spec)
    _, matched = _seen(spec, clip.frames)
    assert M.hit_color_accuracy(spec, matched) == 1.0
    other = SceneSpec.from_dict(spec.to_dict())
    other.objects[0].hit_color = "green"  # the prompt said green
    _, matched = _seen(other, clip.frames)
    assert M.hit_color_accuracy(other, matched) == 0.0


@pytest.mark.parametrize("camera,name", [("pan-right", "day"), ("pan-up", "sunset"), ("zoom-in", "grass"), ("zoom-out", "teal"),
                                         ("static", "tiles")])
def test_camera_motion_direction(camera, name):
    kind = {"day": "sky", "sunset": "sky", "grass": "ground", "teal": "solid", "tiles": "ground"}[name]
    spec = _spec([_obj("star", "red", "medium", "move", "left", "slow")], name=name, kind=kind, camera=camera)
    clip = render_clip(spec, (96, 128), 8, num_frames=17, seed=0)
    vd = detect_video(clip.frames, 8, shapes=False)  # only the object boxes matter (weighted out)
    assert M.camera_motion(clip.frames, vd, 8).label == camera
    opposite = {"pan-right": "pan-left", "pan-up": "pan-down", "zoom-in": "zoom-out", "zoom-out": "zoom-in",
                "static": "static"}[camera]
    reversed_frames = clip.frames[::-1].copy()
    assert M.camera_motion(reversed_frames, detect_video(reversed_frames, 8, shapes=False), 8).label == opposite


def test_trail_present_only_when_painted():
    spec = _spec([_obj("box", "blue", "medium", "move", "right", "normal", trail=True)], name="white")
    clip = render_clip(spec, (96, 160), 8, num_frames=17, seed=1)
    _, matched = _seen(spec, clip.frames)
    assert M.trail_presence(spec, matched, clip.frames) == 1.0
    dry = SceneSpec.from_dict(spec.to_dict())
    dry.objects[0].trail = False
    clip = render_clip(dry, (96, 160), 8, num_frames=17, seed=1)
    _, matched = _seen(spec, clip.frames)
    assert M.trail_presence(spec, matched, clip.frames) == 0.0


def test_cuts_seams_and_first_frame():
    objs = [_obj("ball", "red", "medium", "move", "right"), _obj("box", "yellow", "medium")]
    two = render_clip(_spec(objs, shots=[ShotSpec("wide"), ShotSpec("close-up", 0)]), (128, 128), 8, num_frames=17, seed=0)
    one = render_clip(_spec(objs), (128, 128), 8, num_frames=17, seed=0)
    assert M.count_cuts(two.frames) == 1 and M.count_cuts(one.frames) == 0
    # Extension seam at frame 9: continuous in the simulator, a jump when the rest comes from elsewhere.
    assert M.seam_ratio(one.frames, [9]) <= M.SEAM_OK
    other = render_clip(_spec([_obj("star", "green", "large")], name="navy"), (128, 128), 8, num_frames=17, seed=3)
    spliced = np.concatenate([one.frames[:9], other.frames[9:]])
    assert M.seam_ratio(spliced, [9]) > 10 * M.SEAM_OK
    # Loop seam (last -> first): a clip played there and back loops; a plain clip jumps.
    pingpong = np.concatenate([one.frames, one.frames[-2:0:-1]])
    assert M.seam_ratio(pingpong, [0]) <= M.SEAM_OK < M.seam_ratio(one.frames, [0])
    assert M.psnr(one.frames[0], one.frames[0]) == M.PSNR_CAP
    noisy = np.clip(one.frames[0].astype(int) + np.random.default_rng(0).integers(-8, 9, one.frames[0].shape), 0, 255)
    assert 25 < M.psnr(one.frames[0], noisy) < 35


def test_consistency_and_flicker():
    spec = _spec([_obj("ball", "red", "medium", "move", "right"), _obj("box", "yellow", "medium")])
    clip = render_clip(spec, (128, 128), 8, num_frames=17, seed=0)
    vd, matched = _seen(spec, clip.frames)
    assert M.flicker(clip.frames) == 0.0
    assert M.consistency(spec, vd, matched, clip.frames, scale_changes=False) == 1.0
    flashing = clip.frames.astype(np.int16)
    flashing[::3] += 60  # every third frame much brighter
    flashing = flashing.clip(0, 255).astype(np.uint8)
    assert M.flicker(flashing) > 0.2
    vd, matched = _seen(spec, flashing)
    assert M.consistency(spec, vd, matched, flashing, scale_changes=False) < 0.9


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (20000, 1))
    y = rng.normal(3, 2, (20000, 1))
    # 1-D Gaussians: (m1 - m2)^2 + (s1 - s2)^2 = 9 + 1.
    assert M.frechet_distance(x, y) == pytest.approx(10.0, rel=0.03)
    assert M.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    a = rng.normal(0, 1, (500, 4))
    assert M.frechet_distance(a, a + 1.0) == pytest.approx(4.0, rel=1e-3)  # shifted means only
