"""SoraWorld physics: gravity and bounces, elastic collisions, walls, bodies at rest."""

import math

import pytest

from soraflow.world import render_clip
from soraflow.world.physics import GROUND_RESTITUTION, Arena, Body, Physics
from soraflow.world.spec import BackgroundSpec, ObjectSpec, SceneSpec, ShotSpec


def _apex_heights(ys, floor_y):
    """Heights (above the resting height) of the local tops of a trajectory, after the first landing."""
    landed = next(i for i, y in enumerate(ys) if y >= floor_y - 1e-9)
    return [floor_y - ys[i] for i in range(landed + 1, len(ys) - 1) if ys[i] < ys[i - 1] and ys[i] <= ys[i + 1]]


def test_dropped_ball_bounce_heights_decrease_by_restitution_squared():
    arena = Arena(0.0, 2.0, 0.0, 1.0)
    ball = Body(1.0, 0.2, base_radius=0.05, gravity=2.6)
    sim = Physics([ball], arena)
    ys = []
    for k in range(1, 6 * 240):
        sim.advance_to(k / 240)
        ys.append(ball.y)
    heights = _apex_heights(ys, arena.floor - ball.radius)
    assert len(heights) >= 4
    assert all(b < a for a, b in zip(heights, heights[1:]))
    # Energy lost per bounce: the height ratio is e^2 (up to the integrator's step error).
    for a, b in zip(heights, heights[1:3]):
        assert b / a == pytest.approx(GROUND_RESTITUTION**2, abs=0.04)
    # Without restitution loss the first apex would be the drop height 0.75; it must be lower.
    assert heights[0] < 0.75 * GROUND_RESTITUTION**2 + 0.03


def test_rendered_bouncing_ball_truth_shows_decreasing_bounces():
    spec = SceneSpec([ObjectSpec("ball", "red", "small", "bounce", "none", "normal", "none", "none", False, "none")],
                     BackgroundSpec("ground", "grass"), "static", None, [ShotSpec("wide")])
    clip = render_clip(spec, (64, 64), fps=30, seconds=5, seed=3)
    ys = [f.objects[0].world[1] for f in clip.truth.frames]
    rest = max(ys)
    heights = _apex_heights(ys, rest)
    assert len(heights) >= 3
    assert all(b < a for a, b in zip(heights, heights[1:]))


@pytest.mark.parametrize("r_a, r_b, offset", [(0.05, 0.05, 0.0), (0.05, 0.09, 0.0), (0.06, 0.08, 0.04)])
def test_collisions_conserve_momentum_and_kinetic_energy(r_a, r_b, offset):
    a = Body(0.5, 0.5, vx=0.4, vy=0.05 if offset else 0.0, base_radius=r_a)
    b = Body(1.2, 0.5 + offset, vx=-0.3, vy=0.0, base_radius=r_b)
    sim = Physics([a, b], Arena(-5, 5, -5, 5))

    def momentum():
        return (a.mass * a.vx + b.mass * b.vx, a.mass * a.vy + b.mass * b.vy)

    def energy():
        return 0.5 * (a.mass * (a.vx**2 + a.vy**2) + b.mass * (b.vx**2 + b.vy**2))

    p0, e0, va0, vb0 = momentum(), energy(), (a.vx, a.vy), (b.vx, b.vy)
    sim.advance_to(2.0)
    assert len(sim.collisions) == 1, "the bodies must have met exactly once"
    assert momentum() == pytest.approx(p0, abs=1e-12)
    assert energy() == pytest.approx(e0, rel=1e-12)
    assert (a.vx, a.vy) != pytest.approx(va0)  # something was exchanged
    if r_a == r_b and offset == 0:
        # Equal masses, head on: the bodies swap their velocities along the line of centres.
        assert a.vx == pytest.approx(vb0[0]) and b.vx == pytest.approx(va0[0])


def test_body_at_rest_does_not_move_when_hit_and_reflects_the_other():
    still = Body(1.0, 0.5, base_radius=0.08, fixed=True)
    ball = Body(0.5, 0.5, vx=0.5, base_radius=0.05)
    sim = Physics([still, ball], Arena(0, 2, 0, 1))
    sim.advance_to(1.5)
    assert (still.x, still.y) == (1.0, 0.5)
    assert ball.vx == pytest.approx(-0.5) and ball.x < 1.0
    assert sim.collisions and sim.collisions[0].t == pytest.approx((1.0 - 0.13 - 0.5) / 0.5, abs=0.01)


def test_walls_reflect_without_losing_speed():
    ball = Body(0.5, 0.5, vx=0.7, vy=-0.4, base_radius=0.05)
    sim = Physics([ball], Arena(0, 1, 0, 1))
    speed = math.hypot(ball.vx, ball.vy)
    for k in range(1, 200):
        sim.advance_to(k / 30)
        assert 0.05 - 1e-9 <= ball.x <= 0.95 + 1e-9 and 0.05 - 1e-9 <= ball.y <= 0.95 + 1e-9
    assert math.hypot(ball.vx, ball.vy) == pytest.approx(speed)


def test_sub_steps_make_the_trajectory_independent_of_the_frame_rate():
    def final(fps):
        body = Body(0.3, 0.2, vx=0.2, base_radius=0.05, gravity=2.0)
        sim = Physics([body], Arena(0, 2, 0, 1))
        for k in range(1, fps * 2 + 1):
            sim.advance_to(k / fps)
        return body.x, body.y

    assert final(8) == pytest.approx(final(24), abs=2e-3)


def test_growing_object_at_rest_on_the_ground_stays_on_it():
    spec = SceneSpec([ObjectSpec("box", "red", "medium", "still", "none", "normal", "none", "growing", False, "none")],
                     BackgroundSpec("ground", "sand"), "static", None, [ShotSpec("wide")])
    clip = render_clip(spec, (64, 64), fps=8, seconds=2, seed=0)
    floor = clip.truth.arena["floor"]
    sizes = [f.objects[0].size_px for f in clip.truth.frames]
    assert sizes[-1] > 1.3 * sizes[0]
    for f in clip.truth.frames:
        o = f.objects[0]
        assert o.world[1] + o.size_px / 2 / f.camera.scale == pytest.approx(floor)
