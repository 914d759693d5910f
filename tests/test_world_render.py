"""SoraWorld rendering: ground truth agrees with the pixels, cameras, occluders, trails, state changes."""

import numpy as np
import pytest

from soraflow.errors import InputError
from soraflow.world import render_clip
from soraflow.world.spec import COLORS, BackgroundSpec, ObjectSpec, OccluderSpec, SceneSpec, ShotSpec


def obj(shape="ball", color="red", motion="move", direction="right", size="medium", speed="normal", spin="none",
        trail=False, hit_color="none"):
    direction = "none" if motion == "still" else direction
    speed = "normal" if motion == "still" else speed
    return ObjectSpec(shape, color, size, motion, direction, speed, spin, "none", trail, hit_color)


def scene(*objects, bg=("solid", "white"), camera="static", occluder=None, shots=("wide",)):
    return SceneSpec(list(objects), BackgroundSpec(*bg), camera, occluder,
                     [ShotSpec(s) if isinstance(s, str) else ShotSpec(*s) for s in shots])


def colour_mask(frame, name, tol=45):
    return np.abs(frame.astype(int) - COLORS[name]).max(-1) < tol


def test_truth_positions_match_rendered_colour_centroids():
    spec = scene(obj("ball", "red", direction="right", spin="clockwise"), obj("box", "blue", direction="down-left",
                 spin="counterclockwise"), obj("star", "orange", direction="up", spin="clockwise"),
                 obj("triangle", "green", motion="still"))
    clip = render_clip(spec, (128, 160), fps=8, seconds=2, seed=5)
    checked = 0
    for frame, truth in zip(clip.frames, clip.truth.frames):
        for o in truth.objects:
            if o.in_frame < 0.999 or o.shape == "ball":  # the ball's darker band is off-colour
                continue
            ys, xs = np.nonzero(colour_mask(frame, o.color))
            assert xs.mean() + 0.5 == pytest.approx(o.pixel[0], abs=0.6)
            assert ys.mean() + 0.5 == pytest.approx(o.pixel[1], abs=0.6)
            x0, y0, x1, y1 = o.bbox
            assert xs.min() >= x0 - 1 and xs.max() + 1 <= x1 + 1 and ys.min() >= y0 - 1 and ys.max() + 1 <= y1 + 1
            checked += 1
    assert checked >= 30
    # The ball: its silhouette (colour or darker band) is centred on the truth too.
    for frame, truth in zip(clip.frames, clip.truth.frames):
        ball = truth.objects[0]
        if ball.in_frame < 0.999:
            continue
        red = (frame[..., 0] > 140) & (frame[..., 1] < 90) & (frame[..., 2] < 90)
        ys, xs = np.nonzero(red)
        assert (xs.mean() + 0.5, ys.mean() + 0.5) == pytest.approx(ball.pixel, abs=0.6)
        # and its area is the disc's area: the shape is the size the truth says
        assert red.sum() == pytest.approx(np.pi * (ball.size_px / 2) ** 2, rel=0.08)


def test_move_direction_dominates_the_first_second():
    for direction, (sx, sy) in {"right": (1, 0), "up-left": (-1, -1), "down": (0, 1)}.items():
        for seed in range(3):
            clip = render_clip(scene(obj(direction=direction, speed="fast")), (128, 128), fps=8, seconds=1, seed=seed)
            (x0, y0), (x1, y1) = clip.truth.frames[0].objects[0].pixel, clip.truth.frames[-1].objects[0].pixel
            assert (x1 - x0) * sx >= 0.8 * abs(x1 - x0) and (y1 - y0) * sy >= 0.8 * abs(y1 - y0) - 1e-9
            assert np.hypot(x1 - x0, y1 - y0) > 30  # clearly visible motion
            assert all(f.objects[0].in_frame > 0.95 for f in clip.truth.frames)


def test_visibility_flags_match_the_occluder_geometry():
    spec = scene(obj("ball", "red", direction="right", size="small", speed="fast"),
                 occluder=OccluderSpec("blue", "center"))
    clip = render_clip(spec, (96, 128), fps=15, seconds=3, seed=1)
    seen = {"hidden": 0, "clear": 0, "partial": 0}
    for frame, f in zip(clip.frames, clip.truth.frames):
        o = f.objects[0]
        ox0, ox1 = f.occluder_px
        r = o.size_px / 2
        left, right = o.pixel[0] - r, o.pixel[0] + r
        red = ((frame[..., 0] > 140) & (frame[..., 1] < 90) & (frame[..., 2] < 90)).sum()  # ball incl. its band
        # (1 px margins: anti-aliasing spreads an edge over one pixel)
        if ox0 + 1 <= left and right <= ox1 - 1:  # entirely behind the pillar
            assert o.occluded and o.visible < 0.01 and red == 0
            seen["hidden"] += 1
        elif right <= ox0 - 1 or left >= ox1 + 1:  # clear of it
            assert not o.occluded and o.visible == pytest.approx(o.in_frame) and red > 0.8 * np.pi * r * r
            seen["clear"] += 1
        elif ox0 + 1 <= o.pixel[0] <= ox1 - 1:  # centre behind the pillar: more than half hidden
            assert o.occluded and o.visible < 0.5
            seen["partial"] += 1
        else:  # edges overlap (at most a pixel away from the cases above)
            overlap = min(right, ox1) - max(left, ox0)
            assert o.visible <= o.in_frame
            if overlap > 1:
                assert o.visible < o.in_frame
            if overlap < r - 1:
                assert not o.occluded
    assert all(seen.values()), seen  # the ball went behind the pillar and came out


def _shift(a, b, axis, max_shift=40):
    """Sub-pixel shift s such that b[x] ~ a[x - s] along ``axis`` (SSD search + parabola fit)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    n = a.shape[axis]
    costs = []
    for s in range(-max_shift, max_shift + 1):
        lo, hi = max(0, s), min(n, n + s)
        sa = np.take(a, range(lo - s, hi - s), axis=axis)
        sb = np.take(b, range(lo, hi), axis=axis)
        costs.append(((sa - sb) ** 2).mean())
    k = int(np.argmin(costs))
    c0, c1, c2 = costs[max(k - 1, 0)], costs[k], costs[min(k + 1, len(costs) - 1)]
    frac = 0.5 * (c0 - c2) / (c0 - 2 * c1 + c2) if c0 - 2 * c1 + c2 > 0 else 0.0
    return k - max_shift + frac


@pytest.mark.parametrize("camera, bg, axis", [("pan-right", ("solid", "gray"), 1), ("pan-left", ("ground", "tiles"), 1),
                                              ("pan-up", ("sky", "day"), 0), ("static", ("solid", "navy"), 1)])
def test_pan_moves_the_background_by_the_camera_offset(camera, bg, axis):
    spec = scene(obj("box", "red", size="small", motion="still"), camera=camera, bg=bg)
    clip = render_clip(spec, (128, 128), fps=8, seconds=2, seed=2)
    f0, f1 = clip.truth.frames[0], clip.truth.frames[8]
    key = "cx" if axis == 1 else "cy"
    expected = -(getattr(f1.camera, key) - getattr(f0.camera, key)) * f0.camera.scale  # content moves against the camera
    a, b = clip.frames[0].mean(-1), clip.frames[8].mean(-1)
    # Use a band of the background away from the object.
    oy = int(f0.objects[0].pixel[1]) if axis == 1 else int(f0.objects[0].pixel[0])
    band = slice(0, 40) if oy > 64 else slice(88, 128)
    a, b = (a[band], b[band]) if axis == 1 else (a[:, band], b[:, band])
    measured = _shift(a, b, axis)
    assert measured == pytest.approx(expected, abs=0.35)
    if camera != "static":
        assert abs(expected) > 10


def test_zoom_scales_objects_and_background_together():
    clip = render_clip(scene(obj("box", "red", motion="still", size="small"), camera="zoom-in"), (128, 128), fps=8,
                       seconds=3, seed=0)
    first, last = clip.truth.frames[0], clip.truth.frames[-1]
    ratio = last.camera.zoom / first.camera.zoom
    assert ratio > 1.3
    assert last.objects[0].size_px / first.objects[0].size_px == pytest.approx(ratio)
    red0, red1 = colour_mask(clip.frames[0], "red").sum(), colour_mask(clip.frames[-1], "red").sum()
    assert red1 / red0 == pytest.approx(ratio**2, rel=0.12)


def test_paint_trail_stays_where_it_was_laid():
    spec = scene(obj("ball", "purple", direction="right", speed="fast", trail=True), bg=("solid", "white"),
                 camera="pan-left")
    clip = render_clip(spec, (128, 128), fps=8, seconds=2, seed=4)
    plain = render_clip(scene(obj("ball", "purple", direction="right", speed="fast")), (128, 128), fps=8,
                        seconds=2, seed=4)
    start = clip.truth.frames[1].objects[0].world  # where the ball was early on
    for k in (6, 10, 15):  # later frames, the ball long gone from there, the camera moved
        f = clip.truth.frames[k]
        x, y = f.camera.world_to_pixel(*start, 128, 128)
        assert abs(f.objects[0].pixel[0] - x) > 30
        pixel = clip.frames[k][int(y), int(x)].astype(int)
        assert np.abs(pixel - COLORS["purple"]).max() < 60, pixel  # paint is there
        # ... and without a trail the same spot is background
        fp = plain.truth.frames[k]
        xp, yp = fp.camera.world_to_pixel(*start, 128, 128)
        assert np.abs(plain.frames[k][int(yp), int(xp)].astype(int) - COLORS["purple"]).max() > 100


def test_box_changes_colour_at_the_collision_frame():
    spec = scene(obj("ball", "red", direction="right", speed="fast"),
                 obj("box", "blue", motion="still", size="large", hit_color="yellow"))
    for seed in range(40):
        clip = render_clip(spec, (64, 128), fps=8, seconds=3, seed=seed)
        hit = [f.index for f in clip.truth.frames if (0, 1) in f.collisions]
        if hit:
            break
    else:
        pytest.fail("no seed made the ball hit the box")
    k = hit[0]
    assert k > 0
    for f, frame in zip(clip.truth.frames, clip.frames):
        box = f.objects[1]
        want = "blue" if f.index < k else "yellow"
        assert box.color == want
        x, y = box.pixel
        assert np.abs(frame[int(y), int(x)].astype(int) - COLORS[want]).max() < 30


def test_multi_shot_cuts_at_equal_fractions_and_close_up_frames_its_target():
    spec = scene(obj("ball", "red", size="small"), obj("star", "green", motion="bounce", direction="none"),
                 shots=("wide", ("close-up", 1), "wide"))
    clip = render_clip(spec, (96, 96), fps=8, seconds=3, seed=0)
    shots = [f.shot for f in clip.truth.frames]
    assert shots == [0] * 8 + [1] * 8 + [2] * 8
    for f in clip.truth.frames:
        if f.shot == 1:
            assert f.camera.kind == "close-up" and f.camera.zoom > 1.5
            star = f.objects[1]
            assert abs(star.pixel[0] - 48) < 20 and abs(star.pixel[1] - 48) < 30
            assert star.size_px > 1.5 * clip.truth.frames[0].objects[1].size_px
        else:
            assert f.camera.kind == "wide" and f.camera.zoom == 1
    image = render_clip(spec, (96, 96), fps=8, num_frames=1, seed=0)
    assert image.truth.frames[0].shot == 0  # an image shows the first shot


def test_same_seed_same_bytes_different_seed_different_clip():
    spec = scene(obj("star", "pink", spin="clockwise", trail=True), obj("ball", "cyan", motion="bounce", direction="left"),
                 bg=("ground", "grass"), camera="pan-right", occluder=OccluderSpec("brown", "left"))
    a = render_clip(spec, (64, 96), fps=8, seconds=1, seed=11)
    b = render_clip(spec, (64, 96), fps=8, seconds=1, seed=11)
    c = render_clip(spec, (64, 96), fps=8, seconds=1, seed=12)
    assert a.frames.tobytes() == b.frames.tobytes()
    assert a.truth.to_dict() == b.truth.to_dict()
    assert np.abs(a.frames.astype(int) - c.frames).mean() > 1


def test_one_frame_is_an_image_and_every_background_renders():
    for kind, name in [("solid", "beige"), ("sky", "night"), ("sky", "sunset"), ("ground", "sand"), ("ground", "snow")]:
        clip = render_clip(scene(obj(), bg=(kind, name)), (64, 80), fps=8, num_frames=1, seed=0)
        assert clip.frames.shape == (1, 64, 80, 3) and clip.frames.dtype == np.uint8
        assert clip.frames.std() > 5


def test_truth_round_trips_through_json():
    import json

    from soraflow.world.truth import ClipTruth

    clip = render_clip(scene(obj(), obj("box", "blue", motion="bounce"), occluder=OccluderSpec("green", "left")),
                       (64, 64), fps=8, seconds=1, seed=0)
    data = json.loads(json.dumps(clip.to_dict()))
    back = ClipTruth.from_dict(data["truth"])
    assert back.to_dict() == data["truth"]
    assert back.frames[3].objects[1].pixel == pytest.approx(clip.truth.frames[3].objects[1].pixel, abs=1e-3)


@pytest.mark.parametrize("kwargs", [dict(size=(100, 128)), dict(size=(64, 528)), dict(size=(48, 64)),
                                    dict(fps=3), dict(fps=31), dict(seconds=0), dict(seconds=60.5),
                                    dict(num_frames=0)])
def test_bad_render_arguments_raise_input_error(kwargs):
    kwargs = {"size": (64, 64), "fps": 8, **kwargs}
    with pytest.raises(InputError):
        render_clip(scene(obj()), **kwargs)


def test_encode_decode_lossless_equals_the_render(tmp_path):
    from soraflow.video import read_video, write_image, read_image, write_video

    clip = render_clip(scene(obj("star", "yellow", spin="clockwise"), bg=("ground", "grass"), camera="zoom-out"),
                       (64, 96), fps=8, seconds=1, seed=0)
    write_video(tmp_path / "c.mp4", clip.frames, 8, lossless=True)
    assert np.array_equal(read_video(tmp_path / "c.mp4"), clip.frames)
    write_image(tmp_path / "c.png", clip.frames[0])
    assert np.array_equal(read_image(tmp_path / "c.png"), clip.frames[0])
