"""Read a prompt in SoraWorld's language back into a (partial) scene spec.

``parse("a red ball bouncing on grass")`` gives a :class:`~soraflow.world.spec.SceneSpec` whose
unstated fields are ``None``; :func:`~soraflow.world.spec.complete` fills them. The parser reads
both the long captions :mod:`~soraflow.world.captions` writes (the round trip
``complete(parse(long_caption(spec)), closed_world=True) == spec`` holds exactly) and free user
phrasing ("red ball bounces", "a blue cube moving to the left, camera pans right", "three yellow
stars", "a ball falls").

How it reads, in one paragraph: the text is cut into words and the longest known phrases
(:data:`~soraflow.world.vocab.LEXICON`, e.g. "to the upper left", "close-up") become tokens.
Determiners, numbers and adjectives collect in a pending noun phrase until its noun arrives: a
shape noun introduces objects ("two red balls") or, with "the", refers back to ones already
introduced ("the second red ball"); "pillar", "background", "sky", "camera" and "shot" nouns
take the phrase for themselves. Verbs and adverbs (motion, direction, speed, spin, growth,
trail, colour change) apply to the current subject: the objects named since the last verb
("a red ball and a blue box slide left" moves both). A noun phrase that never meets its noun is
a predicate of the current subject ("the ball is red"). Sentences reset the subject; "it" and
"they" pick the last objects named again.

Unknown words are ignored and reported: :func:`parse` warns (:class:`VocabularyWarning`) with the
list, :func:`parse_prompt` returns it. A prompt that names no object raises
:class:`OutOfGrammarError` listing the shapes and colours.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

from ..errors import InputError
from . import vocab
from .spec import (
    BACKGROUND_COLORS,
    COLORS,
    MAX_OBJECTS,
    BackgroundSpec,
    ObjectSpec,
    OccluderSpec,
    SceneSpec,
    ShotSpec,
    validate,
)


class OutOfGrammarError(InputError):
    """The prompt describes nothing SoraWorld can render: no known object, or too many objects."""


class VocabularyWarning(UserWarning):
    """Words of a prompt that the parser ignored (outside the vocabulary, or not representable)."""


@dataclass
class ParseResult:
    spec: SceneSpec  # partial: None = not stated
    unknown: list[str] = field(default_factory=list)  # words outside the vocabulary, in order
    notes: list[str] = field(default_factory=list)  # understood but not representable, e.g. "red background"

    @property
    def message(self) -> str:
        """One line describing what was ignored ('' when nothing was)."""
        parts = []
        if self.unknown:
            parts.append("ignored words outside the SoraWorld vocabulary: " + ", ".join(self.unknown))
        parts.extend(self.notes)
        return "; ".join(parts)


def vocabulary_summary() -> str:
    """The shapes and colours a prompt can name (for error messages)."""
    shapes = ", ".join(f"{s} ({'/'.join(p[0] for p in ps)})" if len(ps) > 1 else s
                       for s, ps in vocab.CAPTION_SHAPES.items())
    return f"shapes: {shapes}; colours: {', '.join(COLORS)}"


def parse(prompt: str) -> SceneSpec:
    """Parse ``prompt`` into a partial spec; warn (:class:`VocabularyWarning`) about ignored words.

    Raises :class:`~soraflow.errors.InputError` for an empty prompt and :class:`OutOfGrammarError`
    when no object is named or more than ``MAX_OBJECTS`` are.
    """
    result = parse_prompt(prompt)
    if result.message:
        warnings.warn(result.message, VocabularyWarning, stacklevel=2)
    return result.spec


def parse_prompt(prompt: str) -> ParseResult:
    """Like :func:`parse` but returns the ignored words instead of warning about them."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("empty prompt: describe a scene, e.g. 'a red ball bouncing on grass'")
    tokens, unknown = tokenize(prompt)
    reader = _Reader()
    for tok in tokens:
        reader.feed(tok)
    reader.end_sentence()
    unknown = list(dict.fromkeys(unknown))  # first occurrences, in order
    spec, notes = reader.build(prompt, unknown)
    return ParseResult(spec, unknown, reader.notes + notes)


# ---------------------------------------------------------------- tokens

@dataclass
class Token:
    cat: str  # a LEXICON category, or "stop" (. ; ! ?) / "comma"
    value: object = None
    text: str = ""


_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|\d+|[.;!?]|[,:]")


def tokenize(prompt: str) -> tuple[list[Token], list[str]]:
    """Words -> tokens by longest phrase match; returns (tokens, unknown words)."""
    text = prompt.lower().replace("-", " ").replace("\u2019", "'")
    words = _WORD.findall(text)
    tokens: list[Token] = []
    unknown: list[str] = []
    i = 0
    while i < len(words):
        for n in range(min(vocab.MAX_PHRASE, len(words) - i), 0, -1):
            key = tuple(words[i:i + n])
            if key in vocab.LEXICON:
                cat, value = vocab.LEXICON[key]
                tokens.append(Token(cat, value, " ".join(key)))
                i += n
                break
        else:
            w = words[i]
            i += 1
            if w in ".;!?":
                tokens.append(Token("stop", None, w))
            elif w in ",:":
                tokens.append(Token("comma", None, w))
            elif w in vocab.STOPWORDS:
                continue
            elif w.endswith("'s") and w[:-2] in vocab.STOPWORDS:
                continue
            else:
                unknown.append(w)
    return _fold_camera_adjectives(tokens), unknown


def _fold_camera_adjectives(tokens: list[Token]) -> list[Token]:
    """'a static camera' is the camera's, 'a slow pan' has no object speed: fold such a word into
    the camera token after it, so it never lands on the object named before."""
    out: list[Token] = []
    for tok in tokens:
        if out and tok.cat in ("camera", "pan", "tilt", "zoom") and out[-1].cat in ("still", "speed"):
            prev = out.pop()
            if prev.cat == "still" and tok.cat == "camera":
                tok = Token("camera", "static", f"{prev.text} {tok.text}")
        out.append(tok)
    return out


# ---------------------------------------------------------------- the reader

# Tokens that describe what an object does; they apply to the current subject.
_OBJECT_ATTRS = {"still", "move", "bounce", "dir", "inplace", "speed", "spin", "spindir", "grow",
                 "trail", "notrail"}

# A colour word before "sky" names which sky.
_SKY_COLORS = {"blue": "day", "cyan": "day", "white": "day", "orange": "sunset", "red": "sunset",
               "pink": "sunset", "yellow": "sunset", "purple": "sunset", "black": "night",
               "navy": "night", "gray": "night"}

_COMBINE = {("up", "left"): "up-left", ("up", "right"): "up-right",
            ("down", "left"): "down-left", ("down", "right"): "down-right"}


@dataclass
class _Obj:
    shape: str | None = None
    color: str | None = None
    size: str | None = None
    motion: str | None = None
    horizontal: str | None = None  # left/right, from a direction
    vertical: str | None = None  # up/down
    diagonal: str | None = None  # an 8-way direction stated in one phrase
    inplace: bool = False
    speed: str | None = None
    spin: str | None = None
    spin_generic: bool = False  # "spinning" without a sense: read as clockwise
    growth: str | None = None
    trail: bool | None = None
    hit_color: str | None = None
    placeholder: bool = False  # from "three objects": filled by the next object introduced

    def matches(self, shape, color, size) -> bool:
        return ((shape is None or self.shape == shape) and (color is None or self.color == color)
                and (size is None or self.size == size))


@dataclass
class _Phrase:
    """A noun phrase being read: everything before its noun."""

    definite: bool = False
    every: bool = False  # "both", "all"
    count: int | None = None
    ordinal: int | None = None
    colors: list[str] = field(default_factory=list)
    sizes: list[str] = field(default_factory=list)
    plain: bool = False
    mods: list[Token] = field(default_factory=list)  # "a bouncing ball": attributes before the noun

    @property
    def has_content(self) -> bool:
        return bool(self.colors or self.sizes or self.plain or self.mods)


class _Reader:
    def __init__(self):
        self.objs: list[_Obj] = []
        self.subject: list[int] = []  # objects the next verb applies to
        self.subject_open = False  # no verb applied yet: "a ball and a box" -> both
        self.subject_refs = False  # the subject was named by references back ("the ball")
        self.last: list[int] = []  # objects of the last noun phrase ("it", post-nominal adjectives)
        self.target: str | None = None  # what predicates describe: obj/camera/occluder/bg/sky/shots
        self.np: _Phrase | None = None
        self.expect: str | None = None  # "turn" (a colour change) or "pan"/"tilt" waiting for a direction
        self.negate = False
        self.loose_pos: str | None = None  # "on the left, a pillar ..."
        self.camera: str | None = None
        self.occluder: dict | None = None
        self.solid = self.sky = self.ground = self.bg_kind = None
        self.shots: list[list] = []
        self.notes: list[str] = []

    # ------------------------------------------------------------ token dispatch
    def feed(self, tok: Token) -> None:
        cat = tok.cat
        if cat == "stop":
            self.end_sentence()
        elif cat == "comma":
            if self.expect != "turn":  # "when hit, it turns green" keeps waiting for the colour
                self.expect = None
            self.negate = False
        elif cat == "and":
            self.flush()
            self.expect = None
            self.negate = False
        elif cat == "article":
            self.flush()
            self.np = _Phrase(count=1)
        elif cat == "def":
            self.flush()
            self.np = _Phrase(definite=True)
        elif cat == "all":
            self.flush()
            self.np = _Phrase(definite=True, every=True)
        elif cat == "count":
            if self.np is None or self.np.has_content or self.np.count is not None:
                self.flush()
                self.np = _Phrase()
            self.np.count = tok.value
        elif cat == "ordinal":
            if self.np is None or self.np.has_content:
                self.flush()
                self.np = _Phrase()
            self.np.ordinal = tok.value
        elif cat == "pronoun":
            self.flush()
            if self.last:
                self.subject, self.subject_open, self.target = list(self.last), False, "obj"
        elif cat == "color":
            self.color(tok.value)
        elif cat == "size":
            self._np().sizes.append(tok.value)
        elif cat == "plain":
            self._np().plain = True
        elif cat == "shape":
            self.mention(*tok.value)
        elif cat == "generic":
            self.mention(None, tok.value)
        elif cat == "turn":
            self.expect = "turn"
        elif cat == "not":
            self.negate = True
        elif cat in _OBJECT_ATTRS:
            self.attribute(tok)
        elif cat == "pos":
            if self.target == "occluder":
                self.occluder["position"] = tok.value
            else:
                self.loose_pos = tok.value
        elif cat == "camera":
            self.take_np()
            if tok.value == "static":
                self.camera = "static"
            self.target = "camera"
        elif cat in ("pan", "tilt"):
            self.expect, self.target = cat, "camera"
        elif cat == "zoom":
            if tok.value is None:
                self.notes.append(f"'{tok.text}' without in/out read as zoom in")
            self.camera, self.target = f"zoom-{tok.value or 'in'}", "camera"
        elif cat == "occluder":
            np = self.take_np()
            self.occluder = self.occluder or {"color": None, "position": None}
            if np and np.colors:
                self.occluder["color"] = self.object_color(np.colors[-1], "pillar")
            if self.loose_pos:
                self.occluder["position"], self.loose_pos = self.loose_pos, None
            self.target = "occluder"
        elif cat == "bg":
            np = self.take_np()
            if np:
                self.background_phrase(np)
            self.target = "bg"
        elif cat == "skynoun":
            np = self.take_np()
            for c in np.colors if np else ():
                self.sky = self.sky or _SKY_COLORS.get(c)
            self.bg_kind = self.bg_kind or "sky"
            self.target = "sky"  # "the sky is orange"
        elif cat == "sky":
            self.sky = tok.value
        elif cat == "ground":
            self.take_np()
            self.ground = tok.value
        elif cat == "groundnoun":
            self.take_np()
            self.bg_kind = "ground"
        elif cat in ("wide", "closeup"):
            self.take_np()
            self.shots.append(["wide" if cat == "wide" else "close-up", None])
            self.target = "shots"
        elif cat == "shotnoun":
            self.take_np()
            self.target = "shots"
        # "filler" tokens ("leaves", "behind it") carry no meaning on their own

    # ------------------------------------------------------------ helpers
    def _np(self) -> _Phrase:
        if self.np is None:
            self.np = _Phrase()
        return self.np

    def take_np(self) -> _Phrase | None:
        """Hand the pending phrase to a non-object noun; attributes it cannot use go to the subject."""
        np, self.np = self.np, None
        if np is not None:
            for m in np.mods:
                self.apply(m, self.subject)
        return np

    def end_sentence(self) -> None:
        self.flush()
        self.target, self.subject, self.subject_open = None, [], False
        self.expect, self.negate, self.loose_pos = None, False, None

    def color(self, c: str) -> None:
        if self.expect == "turn" and self.subject and self.np is None:
            # "turns green": a colour change on impact (not "turns from red to green"'s first colour)
            objs = [self.objs[i] for i in self.subject]
            if all(o.color == c for o in objs):
                return
            for o in objs:
                o.hit_color = self.object_color(c, "colour change")
                o.placeholder = False
            self.expect = None
            self.subject_open = False
            return
        self._np().colors.append(c)

    def object_color(self, c: str, what: str) -> str | None:
        if c in COLORS:
            return c
        alias = {"navy": "blue", "teal": "cyan", "beige": "brown"}[c]
        self.notes.append(f"'{c}' {what} read as {alias} (object colours: {', '.join(COLORS)})")
        return alias

    def background_phrase(self, np: _Phrase) -> None:
        if np.plain:
            self.bg_kind = "solid"
        for c in np.colors:
            name = vocab.BACKGROUND_COLOR_ALIASES.get(c)
            if name is None:
                self.notes.append(f"no {c} background (solid backgrounds: {', '.join(BACKGROUND_COLORS)})")
            else:
                if name != c:
                    self.notes.append(f"'{c} background' read as {name}")
                self.solid = name

    def flush(self) -> None:
        """A phrase that met no noun is a predicate: 'the ball is red', 'the background is beige'."""
        np, self.np = self.np, None
        if np is None or not np.has_content:
            return
        if self.target == "bg":
            self.background_phrase(np)
        elif self.target == "sky":
            for c in np.colors:
                self.sky = _SKY_COLORS.get(c, self.sky)
        elif self.target == "occluder" and np.colors:
            self.occluder["color"] = self.object_color(np.colors[-1], "pillar")
        elif self.target == "camera":
            if any(m.cat == "still" for m in np.mods):
                self.camera = "static"
        else:
            for c in np.colors:
                self.color_predicate(c)
            for s in np.sizes:
                for i in self.last:
                    self.objs[i].size = self.objs[i].size or s
            for m in np.mods:
                self.apply(m, self.subject)

    def color_predicate(self, c: str) -> None:
        objs = [self.objs[i] for i in self.last]
        if objs and all(o.color in (None, c) for o in objs) and c in COLORS:
            for o in objs:
                o.color = c
        elif c in BACKGROUND_COLORS and self.solid is None:
            self.solid = c  # "a red ball on white"
        elif objs:
            self.notes.append(f"ignored colour '{c}' (the object is already {objs[0].color})")

    # ------------------------------------------------------------ objects
    def mention(self, shape: str | None, plural: bool) -> None:
        np, self.np = self.np or _Phrase(), None
        color = np.colors[-1] if np.colors else None
        if color is not None and color not in COLORS:
            color = self.object_color(color, "object")
        size = np.sizes[-1] if np.sizes else None
        if self.target == "shots":
            # "a close-up of the red ball": a reference, never a new object
            found = self.resolve(np, shape, color, size, plural)
            closeups = [s for s in self.shots if s[0] == "close-up"]
            if found and closeups and closeups[-1][1] is None:
                closeups[-1][1] = found[0]
            return
        chosen: list[int] = []
        bare = shape is None and color is None and size is None and not np.mods
        if bare and (np.definite or np.ordinal is not None):
            # "the first object", "the objects": a reference, placeholders included
            chosen = list(range(len(self.objs)))
            if np.ordinal is not None:
                chosen = chosen[np.ordinal - 1:np.ordinal - 1 + (np.count or 1)]
            elif not (np.every or plural):
                chosen = chosen[-1:]
            if not chosen:
                return
        elif bare and np.count is None:
            return  # "objects can pass behind it": no particular objects
        elif np.definite or np.ordinal is not None:
            chosen = self.resolve(np, shape, color, size, plural)
        referred = bool(chosen)
        if not chosen:
            count = np.count if np.count is not None else (2 if plural else 1)
            chosen = self.create(count, placeholder=bare)
            for i in chosen:
                o = self.objs[i]
                o.shape, o.color, o.size = shape, color, size
                if not bare:
                    o.placeholder = False
        # "a ball and a box slide": one subject; but in "two balls and a star, the balls bounce"
        # the reference starts a new one
        if self.subject_open and self.target == "obj" and self.subject_refs == referred:
            self.subject = self.subject + [i for i in chosen if i not in self.subject]
        else:
            self.subject = list(chosen)
        self.subject_open, self.subject_refs, self.last, self.target = True, referred, list(chosen), "obj"
        for m in np.mods:
            self.apply(m, chosen)

    def resolve(self, np: _Phrase, shape, color, size, plural) -> list[int]:
        matches = [i for i, o in enumerate(self.objs)
                   if not (o.placeholder and o.shape is None and o.color is None)
                   and o.matches(shape, color, size)]
        if np.ordinal is not None:
            start = np.ordinal - 1
            return matches[start:start + (np.count or 1)]
        if np.every or (plural and np.count is None):
            return matches
        return matches[:np.count or 1]

    def create(self, count: int, placeholder: bool) -> list[int]:
        out = []
        for _ in range(count):
            free = [i for i, o in enumerate(self.objs)
                    if o.placeholder and o.shape is None and o.color is None and i not in out]
            if free and not placeholder:
                out.append(free[0])
            else:
                self.objs.append(_Obj(placeholder=placeholder))
                out.append(len(self.objs) - 1)
        return out

    def attribute(self, tok: Token) -> None:
        if self.expect == "turn":
            self.expect = None  # "turning clockwise": a spin, not a colour change
        if tok.cat == "dir" and self.expect in ("pan", "tilt"):
            self.pan(tok.value)
            return
        if self.target == "camera":
            if tok.cat == "still" or (tok.cat == "move" and self.negate):
                self.camera = "static"
            elif tok.cat == "dir":
                self.pan(tok.value)
            return
        if self.target == "occluder" and tok.cat == "dir" and tok.value in ("left", "right"):
            self.occluder["position"] = tok.value
            return
        if tok.cat == "trail" and self.np is not None and not self.np.mods and not self.np.sizes:
            self.np = None  # "a (red) trail": the phrase is the trail itself
        if self.np is not None and (self.np.has_content or self.np.count or self.np.definite):
            self.np.mods.append(tok)  # "a bouncing red ball": waits for its noun
            return
        self.apply(tok, self.subject)

    def pan(self, d: str) -> None:
        self.expect = None
        if d in ("left", "right", "up", "down"):
            self.camera = f"pan-{d}"
        else:
            self.camera = f"pan-{d.split('-')[1]}"
            self.notes.append(f"diagonal camera pan '{d}' read as pan-{d.split('-')[1]}")

    def apply(self, tok: Token, idxs: list[int]) -> None:
        negate, self.negate = self.negate, False
        if not idxs:
            return
        self.subject_open = False
        for i in idxs:
            o = self.objs[i]
            o.placeholder = False
            cat, v = tok.cat, tok.value
            if cat == "still" or (cat == "move" and negate):
                o.motion = "still"
            elif cat == "move":
                o.motion = "move"
                if v:
                    o.vertical = v  # "rises"
            elif cat == "bounce":
                o.motion = "bounce"
            elif cat == "dir":
                if "-" in v:
                    o.diagonal = v
                elif v in ("left", "right"):
                    o.horizontal = v
                else:
                    o.vertical = v
            elif cat == "inplace":
                o.inplace = True
            elif cat == "speed":
                o.speed = v
            elif cat == "spin":
                if negate:
                    o.spin = "none"
                o.spin_generic = True
            elif cat == "spindir":
                o.spin = v
            elif cat == "grow":
                o.growth = "none" if negate else v
            elif cat == "trail":
                o.trail = not negate
            elif cat == "notrail":
                o.trail = False

    # ------------------------------------------------------------ the spec
    def build(self, prompt: str, unknown: list[str]) -> tuple[SceneSpec, list[str]]:
        notes: list[str] = []
        if not self.objs:
            ignored = f" (unknown words: {', '.join(unknown)})" if unknown else ""
            raise OutOfGrammarError(
                f"no object understood in {prompt!r}{ignored}; name one of the SoraWorld "
                f"{vocabulary_summary()} (e.g. 'a red ball bouncing on grass')")
        if len(self.objs) > MAX_OBJECTS:
            raise OutOfGrammarError(f"a SoraWorld scene holds at most {MAX_OBJECTS} objects, "
                                    f"the prompt names {len(self.objs)}")
        objects = [self.object_spec(o, notes) for o in self.objs]
        background = None
        if self.ground:
            background = BackgroundSpec("ground", self.ground)
        elif self.solid:
            background = BackgroundSpec("solid", self.solid)
        elif self.sky:
            background = BackgroundSpec("sky", self.sky)
        elif self.bg_kind:
            background = BackgroundSpec(self.bg_kind, None)
        occluder = OccluderSpec(**self.occluder) if self.occluder else None
        shots = [ShotSpec(k, t if k == "close-up" else None) for k, t in self.shots]
        spec = SceneSpec(objects=objects, background=background, camera=self.camera,
                         occluder=occluder, shots=shots)
        return validate(spec), notes

    @staticmethod
    def object_spec(o: _Obj, notes: list[str]) -> ObjectSpec:
        motion = o.motion
        if motion is None and (o.horizontal or o.vertical or o.diagonal or o.speed in ("slow", "fast")):
            motion = "move"  # "a ball to the left", "a fast box": it moves
        direction = None
        if motion == "move":
            direction = o.diagonal or _COMBINE.get((o.vertical, o.horizontal)) or o.vertical or o.horizontal
        elif motion == "bounce":
            horizontal = o.horizontal or (o.diagonal.split("-")[1] if o.diagonal else None)
            direction = horizontal or ("none" if o.inplace else None)
        speed = o.speed
        if motion == "still" and speed not in (None, "normal"):
            notes.append(f"ignored speed '{speed}' of an object at rest")
            speed = None
        spin = o.spin or ("clockwise" if o.spin_generic else None)
        return ObjectSpec(shape=o.shape, color=o.color, size=o.size, motion=motion,
                          direction=direction, speed=speed, spin=spin, growth=o.growth,
                          trail=o.trail, hit_color=o.hit_color)
