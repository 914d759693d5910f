"""Captions from specs and the parser back: round trips, paraphrases, free phrasing, bad prompts."""

from __future__ import annotations

import dataclasses
import random
import warnings

import pytest

from soraflow.errors import InputError
from soraflow.world import vocab
from soraflow.world.captions import long_caption, short_prompt
from soraflow.world.parser import OutOfGrammarError, VocabularyWarning, parse, parse_prompt
from soraflow.world.spec import (
    COLORS,
    SHAPES,
    BackgroundSpec,
    ObjectSpec,
    OccluderSpec,
    SceneSpec,
    ShotSpec,
    complete,
    random_spec,
)


def _stated_mismatches(partial: SceneSpec, spec: SceneSpec) -> list[str]:
    """Attributes ``partial`` states (not None) that differ from ``spec``."""
    if len(partial.objects) != len(spec.objects):
        return [f"{len(partial.objects)} objects, expected {len(spec.objects)}"]
    out = []
    for i, (p, s) in enumerate(zip(partial.objects, spec.objects)):
        for f in dataclasses.fields(ObjectSpec):
            if getattr(p, f.name) is not None and getattr(p, f.name) != getattr(s, f.name):
                out.append(f"object {i} {f.name}: {getattr(p, f.name)} != {getattr(s, f.name)}")
    if partial.background is not None:
        for f in ("kind", "name"):
            if getattr(partial.background, f) not in (None, getattr(spec.background, f)):
                out.append(f"background {f}")
    if partial.camera is not None and partial.camera != spec.camera:
        out.append(f"camera {partial.camera} != {spec.camera}")
    if partial.occluder is not None:
        if spec.occluder is None:
            out.append("occluder stated but absent")
        else:
            for f in ("color", "position"):
                if getattr(partial.occluder, f) not in (None, getattr(spec.occluder, f)):
                    out.append(f"occluder {f}")
    if partial.shots and partial.shots != spec.shots:
        out.append(f"shots {partial.shots} != {spec.shots}")
    return out


# ---------------------------------------------------------------- round trips


def test_long_caption_round_trip_1000_specs():
    failures = []
    for i in range(1000):
        spec = random_spec(i)
        caption = long_caption(spec, random.Random(i))
        result = parse_prompt(caption)
        assert result.unknown == [] and result.notes == [], (caption, result.message)
        back = complete(result.spec, random.Random(0), closed_world=True)
        if back != spec:
            failures.append((caption, spec, back))
    assert not failures, f"{len(failures)} of 1000 captions did not parse back; first: {failures[0]}"


def test_round_trip_covers_every_feature():
    """The 1,000 specs above exercise every part of the language, not just easy scenes."""
    seen = set()
    for i in range(1000):
        spec = random_spec(i)
        seen.add(len(spec.objects))
        seen.update(o.motion for o in spec.objects)
        seen.update(f"spin:{o.spin}" for o in spec.objects)
        seen.update(f"growth:{o.growth}" for o in spec.objects)
        seen.update("trail" for o in spec.objects if o.trail)
        seen.update("hit" for o in spec.objects if o.hit_color != "none")
        seen.add(spec.camera)
        seen.add("occluder" if spec.occluder else "no occluder")
        seen.add(len(spec.shots))
        seen.add(spec.background.kind)
        runs = [a == b for a, b in zip(spec.objects, spec.objects[1:])]
        seen.update("identical neighbours" for r in runs if r)
    for feature in (1, 2, 3, 4, "still", "move", "bounce", "spin:clockwise", "spin:counterclockwise",
                    "growth:growing", "growth:shrinking", "trail", "hit", "static", "pan-left", "zoom-in",
                    "occluder", "solid", "sky", "ground"):
        assert feature in seen, feature


def test_identical_objects_and_close_up_targets():
    """Identical objects are counted ('two red balls'); a close-up of the second one stays the second."""
    twin = ObjectSpec("box", "blue", "large", "move", "left", "slow", "none", "none", False, "none")
    other = ObjectSpec("ball", "red", "small", "bounce", "none", "normal", "clockwise", "none", False, "none")
    spec = SceneSpec([twin, dataclasses.replace(twin), other], BackgroundSpec("ground", "sand"), "static",
                     OccluderSpec("purple", "center"), [ShotSpec("wide"), ShotSpec("close-up", 1)])
    captions = {long_caption(spec, seed) for seed in range(60)}
    for caption in captions:
        assert complete(parse(caption), 0, closed_world=True) == spec, caption
    counted = [c for c in captions if "two large blue" in c.lower() or "two big blue" in c.lower()]
    assert counted, "identical neighbours should be counted in at least some captions"


def test_short_prompts_state_only_true_attributes():
    stated = 0
    for i in range(1500):
        spec = random_spec(i)
        prompt = short_prompt(spec, random.Random(i))
        result = parse_prompt(prompt)
        assert result.unknown == [] and result.notes == [], (prompt, result.message)
        assert not _stated_mismatches(result.spec, spec), (prompt, _stated_mismatches(result.spec, spec))
        stated += sum(v is not None for o in result.spec.objects for v in dataclasses.astuple(o))
    assert stated > 1500 * 2, "short prompts should state several attributes on average"


def test_short_prompts_are_short_and_partial():
    prompts = [short_prompt(random_spec(i), i) for i in range(300)]
    partial = [p for p in prompts if not parse(p).is_complete]
    assert len(partial) == len(prompts)
    assert sum(len(p.split()) for p in prompts) / len(prompts) < 20
    assert "a red ball" in " ".join(prompts) or "a red sphere" in " ".join(prompts)


# ---------------------------------------------------------------- paraphrases


def test_paraphrase_variety_all_parse_back():
    spec = random_spec(11)
    while len(spec.objects) < 2:
        spec = random_spec(random.randrange(10**6))
    captions = [long_caption(spec, seed) for seed in range(40)]
    assert len(set(captions)) >= 35
    starts = {c.split()[0] for c in captions}
    assert len(starts) >= 4, f"sentence templates should vary: {starts}"
    for caption in captions:
        assert complete(parse(caption), 0, closed_world=True) == spec, caption


def test_synonyms_are_used_and_map_back_unambiguously():
    text = " ".join(long_caption(random_spec(i), i) for i in range(400)).lower()
    for shape, pairs in vocab.CAPTION_SHAPES.items():
        for one, many in pairs:
            assert vocab.LEXICON[(one,)] == ("shape", (shape, False))
            assert vocab.LEXICON[(many,)] == ("shape", (shape, True))
    for color, words in vocab.CAPTION_COLORS.items():
        for w in words:
            assert vocab.LEXICON[(w,)] == ("color", color)
    for size, words in vocab.CAPTION_SIZES.items():
        for w in words:
            assert vocab.LEXICON[tuple(w.replace("-", " ").split())] == ("size", size)
    for word in ("sphere", "orb", "cube", "block", "crimson", "turquoise", "tiny", "big"):
        assert f" {word} " in text, word


def test_captions_are_deterministic_for_a_seed():
    spec = random_spec(5)
    assert long_caption(spec, 9) == long_caption(spec, random.Random(9))
    assert short_prompt(spec, 9) == short_prompt(spec, random.Random(9))
    assert len({long_caption(spec, s) for s in range(10)}) > 1


def test_long_caption_needs_a_complete_spec():
    with pytest.raises(ValueError, match="complete"):
        long_caption(SceneSpec([ObjectSpec(shape="ball")]))


# ---------------------------------------------------------------- free phrasing

FREE = [
    ("a red ball bouncing on grass", [dict(shape="ball", color="red", motion="bounce")],
     dict(background=BackgroundSpec("ground", "grass"))),
    ("red ball bounces", [dict(shape="ball", color="red", motion="bounce")], {}),
    ("a blue cube moving to the left, camera pans right",
     [dict(shape="box", color="blue", motion="move", direction="left")], dict(camera="pan-right")),
    ("three yellow stars", [dict(shape="star", color="yellow")] * 3, {}),
    ("a ball falls", [dict(shape="ball", motion="bounce")], {}),
    ("two boxes sliding left on a white background", [dict(shape="box", motion="move", direction="left")] * 2,
     dict(background=BackgroundSpec("solid", "white"))),
    ("a grey orb moving upper left", [dict(shape="ball", color="gray", direction="up-left")], {}),
    ("a cube drifting up-left", [dict(shape="box", direction="up-left")], {}),
    ("a star heading top-right quickly", [dict(shape="star", direction="up-right", speed="fast")], {}),
    ("a big blue box that turns red when hit and a small ball rolling right",
     [dict(shape="box", size="large", color="blue", hit_color="red"),
      dict(shape="ball", size="small", motion="move", direction="right", hit_color=None)], {}),
    ("two red balls and a green triangle, the balls bounce and the triangle spins anticlockwise",
     [dict(motion="bounce", spin=None)] * 2 + [dict(shape="triangle", motion=None, spin="counterclockwise")], {}),
    ("a spinning purple star growing slowly", [dict(color="purple", spin="clockwise", growth="growing")], {}),
    ("a box stays still while a ball rolls left leaving a paint trail",
     [dict(shape="box", motion="still", trail=None), dict(shape="ball", direction="left", trail=True)], {}),
    ("A small red ball rolling to the right behind a gray pillar in the middle, zooming out",
     [dict(size="small", direction="right")], dict(occluder=OccluderSpec("gray", "center"), camera="zoom-out")),
    ("a yellow star at night, the camera tilts up", [dict(color="yellow")],
     dict(background=BackgroundSpec("sky", "night"), camera="pan-up")),
    ("a red ball and a blue box, then a close-up of the box", [dict(shape="ball"), dict(shape="box")],
     dict(shots=[ShotSpec("close-up", 1)])),
    ("Two cubes slide left. They turn green when hit.", [dict(direction="left", hit_color="green")] * 2, {}),
    ("a ball bouncing in place on a sandy beach", [dict(motion="bounce", direction="none")],
     dict(background=BackgroundSpec("ground", "sand"))),
    ("a red ball bouncing on grass, static camera", [dict(motion="bounce")], dict(camera="static")),
    ("a ball rolling left, slow zoom in", [dict(direction="left", speed=None)], dict(camera="zoom-in")),
    ("a ball moving from left to right across the screen", [dict(motion="move", direction="right")], {}),
    ("a star. The sky is orange.", [dict(shape="star")], dict(background=BackgroundSpec("sky", "sunset"))),
]


@pytest.mark.parametrize("prompt,objects,scene", FREE, ids=[f[0][:40] for f in FREE])
def test_free_phrasing(prompt, objects, scene):
    spec = parse(prompt)
    assert len(spec.objects) == len(objects)
    for got, want in zip(spec.objects, objects):
        for key, value in want.items():
            assert getattr(got, key) == value, (key, got)
    for key, value in scene.items():
        assert getattr(spec, key) == value, key
    complete(spec, 0)  # any parse completes into a renderable spec


def test_unknown_words_warn_and_are_listed():
    with pytest.warns(VocabularyWarning, match="dancing, happily") as record:
        spec = parse("a red ball dancing happily in the scene")
    assert spec.objects[0].color == "red"
    assert str(record[0].message).endswith(": dancing, happily")  # stop words ("in", "the") not listed
    assert parse_prompt("a red ball dancing happily in the scene").unknown == ["dancing", "happily"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a prompt fully in the vocabulary warns about nothing
        parse("a red ball bouncing on grass")


def test_unrepresentable_phrases_are_reported():
    result = parse_prompt("a red ball on a red background")
    assert result.spec.background is None
    assert "red background" in result.message and "beige" in result.message


def test_no_object_error_lists_the_vocabulary():
    with pytest.raises(OutOfGrammarError) as info:
        parse("a cat walking on the beach")
    message = str(info.value)
    assert isinstance(info.value, InputError)
    for word in SHAPES + tuple(COLORS):
        assert word in message
    assert "cat" in message


@pytest.mark.parametrize("prompt", ["", "   ", "\n"])
def test_empty_prompt_is_an_input_error(prompt):
    with pytest.raises(InputError, match="empty prompt"):
        parse(prompt)


def test_too_many_objects_is_an_error():
    with pytest.raises(OutOfGrammarError, match="at most 4 objects.*names 5"):
        parse("five red balls")


def test_articles_agree_with_the_next_word():
    import re

    text = " ".join(long_caption(random_spec(i), i) + " " + short_prompt(random_spec(i), i) for i in range(800))
    assert not set(re.findall(r"\b[aA] [aeio]\w+", text)), "'a' before a vowel"
    assert not set(re.findall(r"\b[aA]n [^aeiou\s]\w+", text)), "'an' before a consonant"


def test_random_word_salad_never_crashes_the_parser():
    """Any sequence of known words parses into a spec complete() accepts, or raises a clear InputError."""
    words = [" ".join(k) for k in vocab.LEXICON] + sorted(vocab.STOPWORDS)[:80] + [".", ",", "cat", "and"]
    r = random.Random(0)
    parsed = 0
    for i in range(3000):
        prompt = " ".join(r.choice(words) for _ in range(r.randint(1, 14)))
        try:
            spec = parse_prompt(prompt).spec
        except OutOfGrammarError:
            continue
        complete(spec, i)
        complete(spec, i, closed_world=True)
        parsed += 1
    assert parsed > 500
