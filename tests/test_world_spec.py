"""SoraWorld scene specs: validation, serialisation, completion, the random training distribution."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from soraflow.errors import InputError
from soraflow.world.spec import (
    BACKGROUNDS,
    CLASHES,
    COLORS,
    MAX_OBJECTS,
    BackgroundSpec,
    ObjectSpec,
    OccluderSpec,
    SceneSpec,
    ShotSpec,
    complete,
    random_spec,
    validate,
)


def _ball(**kw) -> ObjectSpec:
    base = dict(shape="ball", color="red", size="small", motion="move", direction="left", speed="normal",
                spin="none", growth="none", trail=False, hit_color="none")
    return ObjectSpec(**{**base, **kw})


def _scene(*objects, **kw) -> SceneSpec:
    base = dict(background=BackgroundSpec("solid", "white"), camera="static", occluder=None,
                shots=[ShotSpec("wide")])
    return SceneSpec(list(objects) or [_ball()], **{**base, **kw})


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("spec,words", [
    (_scene(_ball(shape="hexagon")), ["object 1 shape", "'hexagon'", "ball, box, triangle, star"]),
    (_scene(_ball(), _ball(color="teal")), ["object 2 colour", "'teal'"]),
    (_scene(_ball(size="huge")), ["size", "'huge'"]),
    (_scene(_ball(motion="fly")), ["motion", "'fly'"]),
    (_scene(_ball(motion="bounce", direction="up")), ["direction", "'up'", "bounce"]),
    (_scene(_ball(motion="still", direction="left")), ["direction", "'left'"]),
    (_scene(_ball(motion="still", direction="none", speed="fast")), ["speed", "'fast'"]),
    (_scene(_ball(spin="sideways")), ["spin", "'sideways'"]),
    (_scene(_ball(growth="melting")), ["growth", "'melting'"]),
    (_scene(_ball(hit_color="beige")), ["colour on impact", "'beige'"]),
    (_scene(background=BackgroundSpec("sky", "grass")), ["sky background", "'grass'", "day, sunset, night"]),
    (_scene(background=BackgroundSpec("water", None)), ["background kind", "'water'"]),
    (_scene(camera="orbit"), ["camera", "'orbit'"]),
    (_scene(occluder=OccluderSpec("red", "top")), ["occluder position", "'top'"]),
    (_scene(shots=[ShotSpec("wide")] * 4), ["at most 3 shots", "got 4"]),
    (_scene(shots=[ShotSpec("close-up", 2)]), ["close-up of object 3", "1 objects"]),
    (_scene(shots=[ShotSpec("medium")]), ["shot 1 kind", "'medium'"]),
    (SceneSpec([]), ["1 to 4 objects", "got 0"]),
    (SceneSpec([_ball()] * 5), ["1 to 4 objects", "got 5"]),
])
def test_validate_rejects_bad_values_naming_them(spec, words):
    with pytest.raises(InputError) as info:
        validate(spec)
    for word in words:
        assert word in str(info.value)


def test_validate_accepts_partial_and_complete_specs():
    assert validate(SceneSpec([ObjectSpec()])).objects[0].shape is None
    spec = random_spec(3)
    assert validate(spec) is spec


# ---------------------------------------------------------------- serialisation


def test_to_dict_from_dict_round_trip_through_json():
    for i in range(200):
        spec = random_spec(i)
        data = json.loads(json.dumps(spec.to_dict()))
        assert SceneSpec.from_dict(data) == spec
    partial = SceneSpec([ObjectSpec(shape="star")], None, None, None, [])
    assert SceneSpec.from_dict(json.loads(json.dumps(partial.to_dict()))) == partial


def test_from_dict_rejects_unknown_fields():
    data = random_spec(0).to_dict()
    data["objects"][0]["texture"] = "wood"
    with pytest.raises(InputError, match="texture"):
        SceneSpec.from_dict(data)


# ---------------------------------------------------------------- completion


def test_complete_fills_everything_and_keeps_stated_values():
    partial = SceneSpec([ObjectSpec(shape="star", color="cyan"), ObjectSpec(motion="bounce", speed="fast")],
                        background=BackgroundSpec("ground", None), camera="zoom-out")
    for seed in range(50):
        full = complete(partial, seed)
        assert full.is_complete
        assert (full.objects[0].shape, full.objects[0].color) == ("star", "cyan")
        assert (full.objects[1].motion, full.objects[1].speed) == ("bounce", "fast")
        assert full.objects[1].direction in ("none", "left", "right")
        assert full.background.kind == "ground" and full.background.name in BACKGROUNDS["ground"]
        assert full.camera == "zoom-out"
    assert partial.objects[0].size is None, "complete() must not modify its argument"


def test_complete_is_deterministic_for_a_seed_and_varies_across_seeds():
    partial = SceneSpec([ObjectSpec(shape="ball")])
    assert complete(partial, 7) == complete(partial, random.Random(7))
    assert len({json.dumps(complete(partial, s).to_dict()) for s in range(20)}) > 10


def test_closed_world_completion_means_nothing_else_happens():
    partial = SceneSpec([ObjectSpec(shape="box", color="blue", size="large", motion="move", direction="up"),
                         ObjectSpec(shape="ball", color="red", size="small", motion="still")],
                        background=BackgroundSpec("sky", "night"))
    for seed in range(30):
        full = complete(partial, seed, closed_world=True)
        for o in full.objects:
            assert (o.speed, o.spin, o.growth, o.trail, o.hit_color) == ("normal", "none", "none", False, "none")
        assert full.objects[1].direction == "none"
        assert full.camera == "static" and full.occluder is None and full.shots == [ShotSpec("wide")]


def test_open_world_completion_adds_plausible_details():
    partial = SceneSpec([ObjectSpec(shape="box"), ObjectSpec(shape="ball", motion="move")])
    fulls = [complete(partial, s) for s in range(300)]
    assert any(f.camera != "static" for f in fulls)
    assert any(f.occluder is not None for f in fulls)
    assert any(len(f.shots) > 1 for f in fulls)
    assert any(o.spin != "none" for f in fulls for o in f.objects)
    # a close-up always frames an existing object; wide shots frame none
    for f in fulls:
        for s in f.shots:
            assert (s.target is None) == (s.kind == "wide")
            assert s.target is None or 0 <= s.target < len(f.objects)


def test_complete_validates_its_input():
    with pytest.raises(InputError, match="shape"):
        complete(SceneSpec([ObjectSpec(shape="cone")]), 0)


# ---------------------------------------------------------------- random specs


def test_random_specs_are_complete_valid_and_avoid_clashing_colours():
    counts = [0] * (MAX_OBJECTS + 1)
    for i in range(2000):
        spec = random_spec(i)
        assert spec.is_complete and validate(spec) is spec
        clashes = CLASHES.get(spec.background.name, ())
        for o in spec.objects:
            assert o.color not in clashes, (o.color, spec.background)
            assert o.hit_color not in clashes, (o.hit_color, spec.background)
            assert o.hit_color != o.color
            if o.hit_color != "none":
                assert o.shape == "box" and len(spec.objects) > 1
        if spec.occluder:
            assert spec.occluder.color not in clashes
            assert spec.occluder.color not in {o.color for o in spec.objects}
        counts[len(spec.objects)] += 1
    assert all(counts[1:]), "every object count 1..4 should occur"
    assert counts[1] > counts[4]


def test_random_spec_is_deterministic():
    assert random_spec(42) == random_spec(42)
    assert random_spec(42) != random_spec(43) or random_spec(42) != random_spec(44)
    assert dataclasses.asdict(random_spec(random.Random(1))) == dataclasses.asdict(random_spec(1))


def test_every_colour_is_drawn():
    colors = {o.color for i in range(1000) for o in random_spec(i).objects}
    assert colors == set(COLORS)


@pytest.mark.parametrize("stated,motions", [
    (dict(direction="left"), {"move", "bounce"}),
    (dict(direction="up-right"), {"move"}),
    (dict(direction="none"), {"still", "bounce"}),
    (dict(speed="fast"), {"move", "bounce"}),
])
def test_complete_draws_a_motion_the_stated_direction_and_speed_allow(stated, motions):
    """A partial spec validate() accepts always completes (a stated direction rules out some motions)."""
    drawn = set()
    for seed in range(120):
        full = complete(SceneSpec([ObjectSpec(**stated)]), seed)
        assert all(getattr(full.objects[0], k) == v for k, v in stated.items())
        drawn.add(full.objects[0].motion)
    assert drawn == motions
