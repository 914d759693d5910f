"""Captions from a scene spec: a short user-style prompt and a long re-captioning-style caption.

* :func:`long_caption` states every attribute of a complete spec, in one of several sentence
  structures with synonyms and varied word order, so a text encoder sees paraphrases. It follows
  the closed-world rule: what it does not state does not happen (normal speed, no spin, no growth,
  no trail, no colour change, static camera, no pillar, one wide shot), so
  ``complete(parse(long_caption(spec, rng)), closed_world=True) == spec`` exactly.
* :func:`short_prompt` states a natural subset ("a red ball bouncing on grass"); every attribute
  it states is the spec's.

Both are deterministic for a given ``rng`` (a :class:`random.Random` or an int seed).
"""

from __future__ import annotations

import random
from dataclasses import astuple

from .spec import ObjectSpec, SceneSpec, validate
from .vocab import CAPTION_COLORS, CAPTION_SHAPES, CAPTION_SIZES, COUNT_WORDS, ORDINAL_WORDS

# ---------------------------------------------------------------- phrase tables
# Verbs are (singular, plural, participle).

_STILL = (("rests in place", "rest in place", "resting in place"),
          ("sits still", "sit still", "sitting still"),
          ("stays still", "stay still", "staying still"),
          ("remains motionless", "remain motionless", "remaining motionless"),
          ("does not move", "do not move", "not moving"),
          ("is at rest", "are at rest", "at rest"),
          ("stays put", "stay put", "staying put"),
          ("sits motionless", "sit motionless", "sitting motionless"))
_MOVE = (("moves", "move", "moving"), ("slides", "slide", "sliding"), ("drifts", "drift", "drifting"),
         ("glides", "glide", "gliding"), ("travels", "travel", "travelling"))
_ROLL = ("rolls", "roll", "rolling")
_BOUNCE = (("bounces", "bounce", "bouncing"),
           ("is dropped and bounces", "are dropped and bounce", "falling and bouncing"),
           ("falls and bounces", "fall and bounce", "dropping and bouncing"),
           ("hops", "hop", "hopping"))
_DIRECTION = {
    "left": ("to the left", "leftward", "toward the left"),
    "right": ("to the right", "rightward", "toward the right"),
    "up": ("upward", "up", "toward the top"),
    "down": ("downward", "down", "toward the bottom"),
    "up-left": ("up and to the left", "toward the upper left", "diagonally up-left", "toward the top left"),
    "up-right": ("up and to the right", "toward the upper right", "diagonally up-right", "toward the top right"),
    "down-left": ("down and to the left", "toward the lower left", "diagonally down-left",
                  "toward the bottom left"),
    "down-right": ("down and to the right", "toward the lower right", "diagonally down-right",
                   "toward the bottom right"),
}
_BOUNCE_DIRECTION = {
    "none": ("in place", "up and down", "on the spot", "straight up and down"),
    "left": ("to the left", "toward the left", "leftward", "along to the left"),
    "right": ("to the right", "toward the right", "rightward", "along to the right"),
}
_SPEED_ADVERB = {"slow": ("slowly", "gently"), "fast": ("quickly", "rapidly", "swiftly")}
_SPEED_PHRASE = {"slow": ("slowly", "gently", "at a slow pace", "at a leisurely pace"),
                 "fast": ("quickly", "rapidly", "fast", "at high speed", "swiftly")}
_SPIN = (("spins", "spin", "spinning"), ("rotates", "rotate", "rotating"), ("turns", "turn", "turning"))
_SPIN_SENSE = {"clockwise": ("clockwise",),
               "counterclockwise": ("counterclockwise", "anticlockwise", "counter-clockwise")}
_GROWTH = {"growing": (("grows larger", "grow larger", "growing larger"),
                       ("grows in size", "grow in size", "growing in size"),
                       ("gets bigger", "get bigger", "getting bigger"),
                       ("expands", "expand", "expanding")),
           "shrinking": (("shrinks", "shrink", "shrinking"),
                         ("gets smaller", "get smaller", "getting smaller"),
                         ("shrinks in size", "shrink in size", "shrinking in size"))}
_TRAIL = (("leaves a trail of paint behind {it}", "leave trails of paint behind {it}",
           "leaving a trail of paint behind {it}"),
          ("leaves {a_color} paint trail", "leave {color} paint trails", "leaving {a_color} paint trail"),
          ("paints a trail along {its} path", "paint trails along {its} paths",
           "painting a trail along {its} path"),
          ("draws a line of paint on the ground", "draw lines of paint on the ground",
           "drawing a line of paint on the ground"))
_HIT_CLAUSE = (("turns {c} when hit", "turn {c} when hit", "turning {c} when hit"),
               ("changes colour to {c} on impact", "change colour to {c} on impact",
                "changing colour to {c} on impact"),
               ("becomes {c} when something hits {it}", "become {c} when something hits {it}",
                "becoming {c} when something hits {it}"))
_HIT_SENTENCE = ("When hit, {it} {turns} {c}.", "{It} {turns} {c} when struck.",
                 "If anything hits {it}, {it} {becomes} {c}.", "On impact, {it} {changes} colour to {c}.")

_SOLID = ("on a plain {n} background", "against a plain {n} backdrop", "in front of a solid {n} background",
          "against a flat {n} background", "on a uniform {n} backdrop")
_SKY = {"day": ("a clear daytime sky", "a bright day sky", "a blue daytime sky", "a sunny sky"),
        "sunset": ("a sunset sky", "an evening sky at sunset", "a dusk sky", "an orange sunset sky"),
        "night": ("a night sky", "a starry night sky", "a dark night sky", "the sky at night")}
_SKY_PREP = ("under", "beneath", "against")
_GROUND = {"grass": ("a grassy field", "green grass", "a lawn", "grass", "a grassy meadow"),
           "sand": ("a sandy beach", "sand", "sandy ground", "desert sand"),
           "snow": ("a snowy field", "snow", "snowy ground", "fresh snow"),
           "tiles": ("a tiled floor", "tiles", "a checkered tile floor", "tiled ground"),
           "lava": ("a lava field", "molten lava", "glowing lava", "lava")}
_CAMERA = {
    "static": ("The camera is static.", "The camera stays still.", "The camera does not move.",
               "A static camera films the scene.", "The camera is fixed."),
    "pan-left": ("The camera pans to the left.", "The camera pans left.", "The camera slowly pans leftward."),
    "pan-right": ("The camera pans to the right.", "The camera pans right.", "The camera slowly pans rightward."),
    "pan-up": ("The camera tilts upward.", "The camera pans up.", "The camera tilts up."),
    "pan-down": ("The camera tilts downward.", "The camera pans down.", "The camera tilts down."),
    "zoom-in": ("The camera zooms in.", "The camera slowly zooms in.", "The camera pushes in."),
    "zoom-out": ("The camera zooms out.", "The camera slowly zooms out.", "The camera pulls back."),
}
_PILLAR = ("pillar", "column", "post")
_POSITION = {"left": ("on the left", "on the left side", "at the left of the frame"),
             "center": ("in the center", "in the middle", "at the centre of the frame"),
             "right": ("on the right", "on the right side", "at the right of the frame")}


def _rng(rng) -> random.Random:
    return rng if isinstance(rng, random.Random) else random.Random(rng)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _form(triple: tuple[str, str, str], n: int, participle: bool) -> str:
    return triple[2] if participle else triple[0 if n == 1 else 1]


# ---------------------------------------------------------------- noun phrases


def _noun(r: random.Random, shape: str, plural: bool) -> str:
    return r.choice(CAPTION_SHAPES[shape])[1 if plural else 0]


def _color(r: random.Random, color: str) -> str:
    return r.choice(CAPTION_COLORS[color])


def _size(r: random.Random, size: str) -> str:
    return r.choice(CAPTION_SIZES[size])


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _intro(r: random.Random, o: ObjectSpec, n: int, *, another: bool = False) -> str:
    """'a small red ball', 'two large blue cubes', 'another medium-sized green star'."""
    words = f"{_size(r, o.size)} {_color(r, o.color)} {_noun(r, o.shape, n > 1)}"
    if n > 1:
        return f"{COUNT_WORDS[n]} {words}"
    return f"{'another' if another else _article(words)} {words}"


def _descriptors(objects: list[ObjectSpec], members: list[int]) -> list[tuple]:
    """(size, colour, shape) descriptor patterns (None = not said) that pick exactly ``members``."""
    out = []
    o = objects[members[0]]
    for pattern in ((None, None, o.shape), (None, o.color, o.shape), (o.size, None, o.shape),
                    (o.size, o.color, o.shape), (None, o.color, None), (o.size, o.color, None)):
        hits = [i for i, p in enumerate(objects) if _fits(p, pattern)]
        if hits == sorted(members):
            out.append(pattern)
    return out


def _fits(o: ObjectSpec, pattern: tuple) -> bool:
    return all(want is None or have == want for want, have in zip(pattern, (o.size, o.color, o.shape)))


def _say(r: random.Random, pattern: tuple, plural: bool) -> str:
    size, color, shape = pattern
    words = [w for w in (size and _size(r, size), color and _color(r, color)) if w]
    noun = _noun(r, shape, plural) if shape else ("objects" if plural else r.choice(("object", "shape")))
    return " ".join(words + [noun])


def _reference(r: random.Random, objects: list[ObjectSpec], i: int) -> str:
    """A definite reference the parser resolves to object ``i`` alone: 'the red ball', 'the second cube'."""
    if len(objects) == 1 and r.random() < 0.3:
        return "the object"
    patterns = _descriptors(objects, [i])
    if patterns and r.random() < 0.8:
        return "the " + _say(r, r.choice(patterns), False)
    o = objects[i]
    pattern = r.choice(((None, None, o.shape), (None, o.color, o.shape), (o.size, o.color, o.shape)))
    rank = [j for j, p in enumerate(objects) if _fits(p, pattern)].index(i)
    return f"the {ORDINAL_WORDS[rank + 1]} {_say(r, pattern, False)}"


# ---------------------------------------------------------------- verb phrases


def _motion(r: random.Random, o: ObjectSpec, n: int, participle: bool) -> str:
    if o.motion == "still":
        return _form(r.choice(_STILL), n, participle)
    if o.motion == "move":
        verbs = _MOVE + ((_ROLL,) if o.shape == "ball" and o.direction in ("left", "right") else ())
        verb = _form(r.choice(verbs), n, participle)
        where = r.choice(_DIRECTION[o.direction])
    else:
        verb = _form(r.choice(_BOUNCE), n, participle)
        where = r.choice(_BOUNCE_DIRECTION[o.direction])
    if o.speed == "normal":
        return f"{verb} {where}"
    if r.random() < 0.4 and " " not in verb:
        return f"{r.choice(_SPEED_ADVERB[o.speed])} {verb} {where}"
    if r.random() < 0.5:
        return f"{verb} {r.choice(_SPEED_PHRASE[o.speed])} {where}"
    return f"{verb} {where} {r.choice(_SPEED_PHRASE[o.speed])}"


def _modifiers(r: random.Random, o: ObjectSpec, n: int) -> list[str]:
    """Participle phrases for spin, growth and trail (what happens besides the motion)."""
    it, its = ("it", "its") if n == 1 else ("them", "their")
    out = []
    if o.spin != "none":
        out.append(f"{r.choice(_SPIN)[2]} {r.choice(_SPIN_SENSE[o.spin])}")
    if o.growth != "none":
        out.append(r.choice(_GROWTH[o.growth])[2])
    if o.trail:
        color = _color(r, o.color)
        out.append(r.choice(_TRAIL)[2].format(it=it, its=its, color=color, a_color=f"{_article(color)} {color}"))
    r.shuffle(out)
    return out


def _join_modifiers(r: random.Random, mods: list[str]) -> str:
    if not mods:
        return ""
    if len(mods) == 1:
        return r.choice((", ", " while ", ", ")) + mods[0]
    return ", " + ", ".join(mods[:-1]) + r.choice((" and ", ", ")) + mods[-1]


def _hit_sentence(r: random.Random, o: ObjectSpec, n: int) -> str:
    it = "it" if n == 1 else "they"
    verbs = {"turns": "turns" if n == 1 else "turn", "becomes": "becomes" if n == 1 else "become",
             "changes": "changes" if n == 1 else "change"}
    obj = "it" if n == 1 else "them"
    s = r.choice(_HIT_SENTENCE)
    # "If anything hits it, it becomes red": the object pronoun after "hits" differs from the subject
    s = s.replace("hits {it}", f"hits {obj}")
    return _cap(s.format(it=it, It=_cap(it), c=_color(r, o.hit_color), **verbs))


def _predicate(r: random.Random, o: ObjectSpec, n: int, participle: bool) -> tuple[str, str]:
    """(verb phrase, extra sentence) for a group of ``n`` identical objects."""
    vp = _motion(r, o, n, participle) + _join_modifiers(r, _modifiers(r, o, n))
    extra = ""
    if o.hit_color != "none":
        if r.random() < 0.5:
            it = "it" if n == 1 else "them"
            clause = r.choice(_HIT_CLAUSE)
            vp += r.choice((", and ", " and ")) + _form(clause, n, participle).format(
                c=_color(r, o.hit_color), it=it)
        else:
            extra = _hit_sentence(r, o, n)
    return vp, extra


# ---------------------------------------------------------------- scene parts


def _background(r: random.Random, spec: SceneSpec) -> str:
    """A prepositional phrase: 'on a grassy field', 'under a sunset sky'."""
    bg = spec.background
    if bg.kind == "solid":
        name = "grey" if bg.name == "gray" and r.random() < 0.5 else bg.name
        return r.choice(_SOLID).format(n=name)
    if bg.kind == "sky":
        return f"{r.choice(_SKY_PREP)} {r.choice(_SKY[bg.name])}"
    return f"on {r.choice(_GROUND[bg.name])}"


def _background_sentence(r: random.Random, spec: SceneSpec) -> str:
    bg = spec.background
    if bg.kind == "solid" and r.random() < 0.4:
        return r.choice(("The background is plain {n}.", "The backdrop is a plain {n}.")).format(n=bg.name)
    return r.choice(("The scene takes place {p}.", "Everything happens {p}.", "The scene is set {p}.",
                     "All of this happens {p}.")).format(p=_background(r, spec))


def _occluder_sentence(r: random.Random, spec: SceneSpec) -> str:
    occ = spec.occluder
    pillar = f"{_color(r, occ.color)} {r.choice(_PILLAR)}"
    pos = r.choice(_POSITION[occ.position])
    return r.choice((f"A tall {pillar} stands in the foreground {pos}.",
                     f"In the foreground, a tall {pillar} stands {pos}, and objects can pass behind it.",
                     f"{_cap(_article(pillar))} {pillar} rises in front of the scene {pos}.",
                     f"{_cap(pos)}, a tall {pillar} stands in the foreground.")).replace("  ", " ")


def _shots_sentence(r: random.Random, spec: SceneSpec) -> str:
    items = []
    for i, s in enumerate(spec.shots):
        if s.kind == "wide":
            again = i > 0 and any(p.kind == "wide" for p in spec.shots[:i])
            items.append(r.choice(("a wide shot", "a wide view of the scene", "a wide shot"))
                         + (" again" if again else ""))
        else:
            items.append(f"a close-up of {_reference(r, spec.objects, s.target)}")
    if len(items) == 1:
        return r.choice(("The whole clip is {x}.", "It is filmed as one continuous shot: {x}.",
                         "The clip is a single shot, {x}.")).format(x=items[0])
    n = COUNT_WORDS[len(items)]
    if r.random() < 0.5:
        listed = items[0] + "".join(r.choice((", then ", ", followed by ", "; then ")) + x for x in items[1:])
        return r.choice(("The clip cuts between {n} shots: {x}.", "The video has {n} shots: {x}.",
                         "It is edited into {n} shots: {x}.")).format(n=n, x=listed)
    listed = items[0] + "".join(r.choice((" and then cuts to ", ", then cuts to ")) + x for x in items[1:])
    return r.choice(("The clip opens on {x}.", "The video starts with {x}.")).format(x=listed)


# ---------------------------------------------------------------- object sections, three structures


def _runs(objects: list[ObjectSpec]) -> list[tuple[int, int]]:
    """(start, count) of runs of consecutive identical objects."""
    runs: list[tuple[int, int]] = []
    for i, o in enumerate(objects):
        if runs and astuple(objects[runs[-1][0]]) == astuple(o):
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


def _objects_as_sentences(r: random.Random, spec: SceneSpec, lead: str) -> list[str]:
    """One sentence per run: 'A small red ball bounces in place, spinning clockwise.'"""
    out: list[str] = []
    runs = _runs(spec.objects)
    k = 0
    while k < len(runs):
        start, n = runs[k]
        o = spec.objects[start]
        another = any(p.shape == o.shape for p in spec.objects[:start]) and r.random() < 0.5
        np = _intro(r, o, n, another=another)
        if r.random() < 0.15:
            vp, extra = _predicate(r, o, n, participle=True)
            sentence = f"there {'is' if n == 1 else 'are'} {np} {vp}"
        else:
            vp, extra = _predicate(r, o, n, participle=False)
            sentence = f"{np} {vp}"
        if k == 0 and lead:
            sentence = f"{lead}, {sentence}"
        # join two runs with "while" now and then
        if not extra and k + 1 < len(runs) and r.random() < 0.25:
            s2, n2 = runs[k + 1]
            o2 = spec.objects[s2]
            vp2, extra2 = _predicate(r, o2, n2, participle=False)
            sentence += f", while {_intro(r, o2, n2)} {vp2}"
            extra = extra2
            k += 1
        out.append(_cap(sentence) + ".")
        if extra:
            out.append(extra)
        k += 1
    return out


def _objects_enumerated(r: random.Random, spec: SceneSpec, lead: str) -> list[str]:
    """'There are three objects. The first is a small red ball that bounces in place. ...'"""
    total = len(spec.objects)
    out = []
    if total > 1 and r.random() < 0.6:
        objs = "objects" if r.random() < 0.7 else "shapes"
        head = r.choice((f"there are {COUNT_WORDS[total]} {objs}", f"the scene contains {COUNT_WORDS[total]} {objs}"))
        out.append(_cap(f"{lead}, {head}" if lead else head) + ".")
        lead = ""
    for start, n in _runs(spec.objects):
        o = spec.objects[start]
        if n == 1:
            ordinal = ORDINAL_WORDS[start + 1]
            if total == 1:
                head = r.choice(("there is", "the scene shows"))
            else:
                head = r.choice((f"the {ordinal} is", f"the {ordinal} object is", f"{ordinal}, there is"))
        else:
            head = r.choice(("next, there are", "then come", "after that, there are")) if start else "there are"
        if lead:
            head, lead = f"{lead}, {head}", ""
        np = _intro(r, o, n)
        if r.random() < 0.5:
            vp, extra = _predicate(r, o, n, participle=False)
            out.append(_cap(f"{head} {np} that {vp}") + ".")
        else:
            vp, extra = _predicate(r, o, n, participle=True)
            out.append(_cap(f"{head} {np}, {vp}") + ".")
        if extra:
            out.append(extra)
    return out


def _objects_introduced(r: random.Random, spec: SceneSpec, background: str) -> list[str]:
    """'The scene shows a small red ball and two blue cubes on grass. The red ball bounces ...'"""
    objects = spec.objects
    parts = []
    for start, n in _runs(objects):
        another = any(astuple(p)[:3] == astuple(objects[start])[:3] for p in objects[:start])
        parts.append(_intro(r, objects[start], n, another=another))
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    heads = ("the scene shows", "the clip shows", "we see", "the scene contains")
    head = r.choice(heads + (("in view are",) if len(objects) > 1 else ()))
    out = [_cap(f"{head} {listed}{' ' + background if background else ''}") + "."]
    # one sentence per group of identical objects, referred back to
    groups: dict[tuple, list[int]] = {}
    for i, o in enumerate(objects):
        groups.setdefault(astuple(o), []).append(i)
    for members in groups.values():
        o = objects[members[0]]
        patterns = _descriptors(objects, members)
        if patterns:
            n = len(members)
            pattern = r.choice(patterns)
            if n == 1:
                subject = "the " + _say(r, pattern, False)
            else:
                lead = r.choice(("the", "both the" if n == 2 else f"all {COUNT_WORDS[n]}", "the"))
                subject = f"{lead} {_say(r, pattern, True)}"
            vp, extra = _predicate(r, o, n, participle=False)
            out.append(_cap(f"{subject} {vp}") + ".")
            if extra:
                out.append(extra)
        else:
            for i in members:
                vp, extra = _predicate(r, o, 1, participle=False)
                out.append(_cap(f"{_reference(r, objects, i)} {vp}") + ".")
                if extra:
                    out.append(extra)
    return out


# ---------------------------------------------------------------- public


def long_caption(spec: SceneSpec, rng: random.Random | int | None = None) -> str:
    """A detailed caption stating every attribute of the complete ``spec`` (closed world)."""
    if not spec.is_complete:
        raise ValueError("long_caption needs a complete spec; use spec.complete() first")
    validate(spec)
    r = _rng(rng)
    style = r.random()
    bg_mode = r.random()  # where the background goes: its own sentence, or inside the objects' part
    lead = ""
    if style < 0.34:
        if bg_mode < 0.35:
            lead = _background(r, spec)
        body = _objects_as_sentences(r, spec, lead)
    elif style < 0.67:
        if bg_mode < 0.35:
            lead = _background(r, spec)
        body = _objects_enumerated(r, spec, lead)
    else:
        if bg_mode < 0.5:
            lead = _background(r, spec)
        body = _objects_introduced(r, spec, lead)
    extras = []
    if not lead:
        extras.append(_background_sentence(r, spec))
    if spec.camera != "static" or r.random() < 0.3:
        extras.append(r.choice(_CAMERA[spec.camera]))
    if spec.occluder is not None:
        extras.append(_occluder_sentence(r, spec))
    r.shuffle(extras)
    split = r.randint(0, len(extras))
    sentences = extras[:split] + body + extras[split:]
    if len(spec.shots) > 1 or spec.shots[0].kind != "wide" or r.random() < 0.15:
        sentences.append(_shots_sentence(r, spec))  # last: it refers to objects already named
    return " ".join(sentences)


def short_prompt(spec: SceneSpec, rng: random.Random | int | None = None) -> str:
    """A short user-style prompt stating a natural subset of the complete ``spec``
    ("a red ball bouncing on grass")."""
    if not spec.is_complete:
        raise ValueError("short_prompt needs a complete spec; use spec.complete() first")
    validate(spec)
    r = _rng(rng)
    say_color = r.random() < 0.85
    say_size = r.random() < 0.25
    say_motion = r.random() < 0.75
    say_direction = r.random() < 0.7
    say_speed = r.random() < 0.4

    def motion(o: ObjectSpec) -> str:
        if o.motion == "still":
            return r.choice(("at rest", "sitting still", "resting", "standing still"))
        if o.motion == "move":
            rolls = o.shape == "ball" and (o.direction in ("left", "right") or not say_direction)
            vp = r.choice(("moving", "sliding", "drifting", "gliding") + (("rolling",) if rolls else ()))
            if say_direction and o.direction:
                vp += " " + r.choice(_DIRECTION[o.direction] + (o.direction,))
        else:
            vp = r.choice(("bouncing", "bouncing", "falling and bouncing", "hopping"))
            if say_direction and o.direction:
                vp += " " + r.choice(_BOUNCE_DIRECTION[o.direction])
        if say_speed and o.speed in ("slow", "fast"):
            if r.random() < 0.5:
                vp = f"{r.choice(_SPEED_ADVERB[o.speed])} {vp}"
            else:
                vp = f"{vp} {r.choice(('slowly',) if o.speed == 'slow' else ('fast', 'quickly'))}"
        return vp

    def mention(o: ObjectSpec, n: int, extras_ok: bool) -> str:
        words = []
        if say_size and o.size:
            words.append(_size(r, o.size))
        if say_color and o.color:
            words.append(_color(r, o.color))
        words.append(_noun(r, o.shape, n > 1))
        np = " ".join(words)
        np = (COUNT_WORDS[n] if n > 1 else _article(np)) + " " + np
        if say_motion and o.motion:
            np += " " + motion(o)
        # extras only where a verb already closed the mention (or it is the only one), so they
        # cannot spread to the objects named before ("a ball and a box spinning" spins both)
        if extras_ok and r.random() < 0.5:
            extra = []
            if o.spin not in (None, "none"):
                extra.append(f"spinning {r.choice(_SPIN_SENSE[o.spin])}")
            if o.growth not in (None, "none"):
                extra.append(o.growth)
            if o.trail:
                extra.append(r.choice(("leaving a trail", "leaving a paint trail")))
            if o.hit_color not in (None, "none"):
                extra.append(f"turning {_color(r, o.hit_color)} when hit")
            if extra:
                np += (" while " if say_motion else " ") + " and ".join(extra)
        return np

    runs = []
    for i, o in enumerate(spec.objects):
        key = (o.shape, o.color if say_color else None, o.size if say_size else None,
               (o.motion, o.direction, o.speed) if say_motion else None, o.spin, o.growth, o.trail,
               o.hit_color)
        if runs and runs[-1][0] == key:
            runs[-1][2] += 1
        else:
            runs.append([key, o, 1])
    mentions = [mention(o, n, say_motion or len(runs) == 1) for _, o, n in runs]
    text = mentions[0] if len(mentions) == 1 else ", ".join(mentions[:-1]) + " and " + mentions[-1]
    if spec.background and spec.background.name and r.random() < 0.55:
        text += " " + _short_background(r, spec)
    if spec.camera and spec.camera != "static" and r.random() < 0.35:
        text += r.choice((", camera ", ", the camera ")) + {
            "pan-left": "pans left", "pan-right": "pans right", "pan-up": "tilts up", "pan-down": "tilts down",
            "zoom-in": "zooms in", "zoom-out": "zooms out"}[spec.camera]
    if spec.occluder and spec.occluder.color and r.random() < 0.35:
        color = _color(r, spec.occluder.color)
        text += f", with {_article(color)} {color} pillar"
        if spec.occluder.position and r.random() < 0.5:
            text += " " + _POSITION[spec.occluder.position][0]
    return text


_SHORT_BACKGROUND = {
    "day": ("under a blue sky", "in daylight"), "sunset": ("at sunset", "under a sunset sky"),
    "night": ("at night", "under a night sky"), "grass": ("on grass", "on the grass", "on a lawn"),
    "sand": ("on sand", "on the beach"), "snow": ("in the snow", "on snow"),
    "tiles": ("on a tiled floor", "on tiles"), "lava": ("on lava", "over a lava field"),
}


def _short_background(r: random.Random, spec: SceneSpec) -> str:
    bg = spec.background
    if bg.kind == "solid":
        return f"on a {bg.name} background"
    return r.choice(_SHORT_BACKGROUND[bg.name])
