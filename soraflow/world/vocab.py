"""The words of SoraWorld's prompt language: what captions write and what the parser reads.

Two directions share one table so they cannot drift apart:

* ``CAPTION_*`` lists are the words :mod:`~soraflow.world.captions` writes for each canonical value
  (several per value, so a text encoder sees paraphrases);
* :data:`LEXICON` maps every word or phrase the parser understands to a ``(category, value)`` token.
  It holds every caption word plus extra words users type ("circle", "grey", "big", "anticlockwise").

Every caption synonym maps back to exactly one canonical value (a test checks it), so a caption
can be read back without loss.
"""

from __future__ import annotations

from .spec import BACKGROUND_COLORS, COLORS, DIRECTIONS

# ---------------------------------------------------------------- words captions write

#: shape -> (singular, plural) nouns.
CAPTION_SHAPES: dict[str, tuple[tuple[str, str], ...]] = {
    "ball": (("ball", "balls"), ("sphere", "spheres"), ("orb", "orbs")),
    "box": (("box", "boxes"), ("cube", "cubes"), ("block", "blocks")),
    "triangle": (("triangle", "triangles"),),
    "star": (("star", "stars"),),
}
CAPTION_COLORS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet"),
    "orange": ("orange",),
    "yellow": ("yellow", "golden"),
    "green": ("green", "emerald"),
    "blue": ("blue", "cobalt"),
    "purple": ("purple", "violet"),
    "pink": ("pink",),
    "cyan": ("cyan", "turquoise", "aqua"),
    "white": ("white",),
    "black": ("black",),
    "brown": ("brown",),
    "gray": ("gray", "grey"),
}
CAPTION_SIZES: dict[str, tuple[str, ...]] = {
    "small": ("small", "tiny", "little"),
    "medium": ("medium", "medium-sized", "mid-sized"),
    "large": ("large", "big"),
}
COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
ORDINAL_WORDS = {1: "first", 2: "second", 3: "third", 4: "fourth"}

# ---------------------------------------------------------------- the parser's lexicon

#: Words that carry no scene information; never reported as unknown.
STOPWORDS = frozenset("""
about above across after against along alongside also always am amid among any are
around at away back be been behind being below beneath beside besides between beyond by can
close clip clips colored coloured color colour colors colours continuous corner corners could did
direction directions do does done during edge edges else end ends entire even every everything
evenly eventually film filmed films finally for foreground frame frames from front full has have
having here however in inside into is it's itself just keeps keep kept later like looks made makes
meanwhile more most much near nearby next nothing now of off on once onto or other others our out
outside over part passes passing pass past per picture place placed rather really remain remains
returns return returning same scene scenes see seen show shows showing shown side sides so
something somewhere soon starts start starting such take takes taking than that there these
this those through throughout time to too under until upon us very video was we were what when
whenever where which who whole will within would yet you your animation animated render rendered
simple simply features feature featuring contains contain containing depicts depict depicting
opens opening begins beginning appears appear appearing stands stand standing tall thin vertical
collides collide collision collisions colliding hit hits hitting struck strikes striking impact
bumps bumped bump touches touched touch someone anything size surface alone entirely
mostly slightly somewhat directly diagonally straight overall area region wall walls gradient
way there's here's view views motion movement kind sort viewer isn't stays stay staying
remaining remained there dark bright clear light fresh stretch path if last finally followed
follow follows we us sight ever entire happens happen happening set edited edit
screen top bottom
""".split())

#: word or phrase (a tuple of words; hyphens split words) -> (category, value)
LEXICON: dict[tuple[str, ...], tuple[str, object]] = {}


def _add(words: str, category: str, value: object = None) -> None:
    key = tuple(words.replace("-", " ").split())
    LEXICON[key] = (category, value)


# objects: nouns (value: (shape, plural)); "generic" nouns name an object without its shape
for _shape, _pairs in CAPTION_SHAPES.items():
    for _one, _many in _pairs:
        _add(_one, "shape", (_shape, False))
        _add(_many, "shape", (_shape, True))
for _word, _shape in {"circle": "ball", "disc": "ball", "disk": "ball", "bubble": "ball",
                      "dot": "ball", "square": "box", "crate": "box", "brick": "box",
                      "cuboid": "box", "pyramid": "triangle", "wedge": "triangle"}.items():
    _add(_word, "shape", (_shape, False))
    _add(_word + ("es" if _word.endswith("x") else "s"), "shape", (_shape, True))
for _word in ("object", "shape", "thing", "item", "body"):
    _add(_word, "generic", False)
    _add(_word + "s", "generic", True)
_add("bodies", "generic", True)

for _color, _words in CAPTION_COLORS.items():
    for _w in _words:
        _add(_w, "color", _color)
for _w, _color in {"gold": "yellow", "lime": "green", "magenta": "pink",
                   "rose": "pink", "violet": "purple", "lilac": "purple", "indigo": "purple",
                   "maroon": "red", "teal": "teal", "navy": "navy", "beige": "beige",
                   "cream": "beige", "tan": "beige", "silver": "gray", "charcoal": "gray"}.items():
    _add(_w, "color", _color)
for _size, _words in CAPTION_SIZES.items():
    for _w in _words:
        _add(_w, "size", _size)
for _w, _size in {"huge": "large", "giant": "large", "mid sized": "medium", "medium size": "medium",
                  "mini": "small", "small sized": "small"}.items():
    _add(_w, "size", _size)

# determiners, numbers, ordinals, pronouns
for _w in ("a", "an", "another"):
    _add(_w, "article", 1)
_add("single", "count", 1)
_add("the", "def")
for _w in ("both", "all", "all the", "all of the", "both the", "both of the"):
    _add(_w, "all")
for _n, _w in COUNT_WORDS.items():
    _add(_w, "count", _n)
    _add(str(_n), "count", _n)
for _n, _w in {5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten", 12: "dozen",
               100: "many", 20: "hundreds", 1000: "thousands", 50: "dozens"}.items():
    _add(_w, "count", _n)
for _n in range(5, 21):
    _add(str(_n), "count", _n)
for _w, _n in {"a pair of": 2, "pair of": 2, "a couple of": 2, "couple of": 2, "some": 2,
               "several": 3, "a few": 3, "few": 3, "a trio of": 3}.items():
    _add(_w, "count", _n)
_add("again", "filler")
for _n, _w in ORDINAL_WORDS.items():
    _add(_w, "ordinal", _n)
for _w in ("it", "they", "them", "its", "their", "each", "each one", "each of them"):
    _add(_w, "pronoun")

# motion
for _w in ("still", "stationary", "motionless", "static", "fixed", "unmoving", "immobile", "idle",
           "rests", "rest", "resting", "sits", "sit", "sitting", "at rest", "stays put", "stay put",
           "staying put", "does not move", "do not move", "doesn't move", "don't move", "not moving",
           "never moves", "locked off", "lies", "lying"):
    _add(_w, "still")
for _w in ("move", "moves", "moving", "moved", "slide", "slides", "sliding", "drift", "drifts",
           "drifting", "glide", "glides", "gliding", "travel", "travels", "travelling", "traveling",
           "roll", "rolls", "rolling", "fly", "flies", "flying", "float", "floats", "floating",
           "head", "heads", "heading", "go", "goes", "going", "race", "races", "racing",
           "shoot", "shoots", "shooting", "cruise", "cruises", "cruising", "wander", "wanders"):
    _add(_w, "move")
for _w, _d in {"rise": "up", "rises": "up", "rising": "up", "ascend": "up", "ascends": "up",
               "ascending": "up", "sink": "down", "sinks": "down", "sinking": "down",
               "descend": "down", "descends": "down", "descending": "down"}.items():
    _add(_w, "move", _d)
for _w in ("bounce", "bounces", "bouncing", "bounced", "bouncy", "hop", "hops", "hopping",
           "fall", "falls", "falling", "drop", "drops", "dropping", "dropped", "dribble",
           "dribbles", "dribbling", "is dropped", "are dropped", "jump", "jumps", "jumping"):
    _add(_w, "bounce")

# directions (value: one of DIRECTIONS); "to the left" is one token so "the" is no determiner there
_AXIS_WORDS = {"left": ("left", "leftward", "leftwards", "west"),
               "right": ("right", "rightward", "rightwards", "east"),
               "up": ("up", "upward", "upwards", "upwardly", "north", "skyward", "skywards"),
               "down": ("down", "downward", "downwards", "south")}
for _d, _ws in _AXIS_WORDS.items():
    for _w in _ws:
        _add(_w, "dir", _d)
    for _prep in ("to the", "toward the", "towards the", "to its", "toward its", "towards its"):
        _add(f"{_prep} {_d}", "dir", _d)
for _prep in ("to the", "toward the", "towards the"):
    _add(f"{_prep} top", "dir", "up")
    _add(f"{_prep} bottom", "dir", "down")
for _v, _vwords in {"up": ("up", "upper", "top"), "down": ("down", "lower", "bottom")}.items():
    for _h in ("left", "right"):
        _d = f"{_v}-{_h}"
        assert _d in DIRECTIONS
        for _vw in _vwords:
            _add(f"{_vw} {_h}", "dir", _d)
            for _prep in ("to the", "toward the", "towards the"):
                _add(f"{_prep} {_vw} {_h}", "dir", _d)
        _add(f"{_h} {_v}", "dir", _d)  # "left-up"
        for _mid in ("and to the", "and", "and toward the", "and towards the"):
            _add(f"{_v} {_mid} {_h}", "dir", _d)
            _add(f"{_v}ward {_mid} {_h}", "dir", _d)
        _add(f"{_h}ward and {_v}ward", "dir", _d)
        _add(f"{_h} and {_v}", "dir", _d)
for _a, _b in (("left", "right"), ("right", "left"), ("top", "bottom"), ("bottom", "top")):
    _to = {"top": "up", "bottom": "down"}.get(_b, _b)
    for _the in ("", "the "):
        _add(f"from {_the}{_a} to {_the}{_b}", "dir", _to)
for _w in ("in place", "on the spot", "up and down", "straight up and down", "vertically",
           "on the same spot", "in the same place"):
    _add(_w, "inplace")

# occluder positions ("on the left"); plain "left" after a pillar also works
for _p in ("left", "right"):
    for _prep in ("on the", "at the", "on its", "on the far", "at the far"):
        _add(f"{_prep} {_p}", "pos", _p)
for _w in ("center", "centre", "middle"):
    _add(_w, "pos", "center")
    for _prep in ("in the", "at the", "on the"):
        _add(f"{_prep} {_w}", "pos", "center")
_add("central", "pos", "center")
_add("centrally", "pos", "center")

# speed
for _w in ("slowly", "slow", "gently", "leisurely", "lazily", "unhurriedly", "sluggishly",
           "at a slow pace", "at a leisurely pace", "at a gentle pace", "slow moving"):
    _add(_w, "speed", "slow")
for _w in ("quickly", "quick", "fast", "rapidly", "rapid", "swiftly", "speedily", "briskly",
           "at high speed", "at a fast pace", "at a quick pace", "at a rapid pace", "fast moving"):
    _add(_w, "speed", "fast")
for _w in ("at normal speed", "at a normal speed", "at a moderate pace", "at a steady pace",
           "at moderate speed", "at a moderate speed", "steadily", "normal speed"):
    _add(_w, "speed", "normal")

# spin; "turns" is a spin verb before "clockwise" and a colour change before a colour
for _w in ("spin", "spins", "spinning", "rotate", "rotates", "rotating", "twirl", "twirls",
           "twirling", "whirl", "whirls", "whirling", "revolving", "revolves"):
    _add(_w, "spin")
for _w in ("clockwise",):
    _add(_w, "spindir", "clockwise")
for _w in ("counterclockwise", "counter clockwise", "anticlockwise", "anti clockwise"):
    _add(_w, "spindir", "counterclockwise")
for _w in ("turn", "turns", "turning", "become", "becomes", "becoming", "change", "changes",
           "changing", "switch", "switches", "switching", "flash", "flashes", "flashing",
           "changes colour to", "changes color to", "change colour to", "change color to",
           "changing colour to", "changing color to"):
    _add(_w, "turn")

# growth
for _w in ("grow", "grows", "growing", "expand", "expands", "expanding", "swell", "swells",
           "swelling", "bigger", "larger", "inflate", "inflates", "inflating", "enlarges",
           "enlarging", "grows larger", "growing larger", "grows bigger", "growing bigger",
           "gets bigger", "getting bigger", "gets larger", "getting larger", "grows in size",
           "growing in size"):
    _add(_w, "grow", "growing")
for _w in ("shrink", "shrinks", "shrinking", "contract", "contracts", "contracting", "smaller",
           "dwindle", "dwindles", "dwindling", "deflate", "deflates", "deflating",
           "gets smaller", "getting smaller", "shrinks in size", "shrinking in size"):
    _add(_w, "grow", "shrinking")

# trail
for _w in ("trail", "trails", "paint", "painting", "paints", "streak", "streaks", "track",
           "tracks", "paint trail", "trail of paint", "line of paint", "painted line", "smear",
           "trailing", "trailing paint"):
    _add(_w, "trail")
for _w in ("no trail", "without a trail", "without trail", "leaves no trail", "no paint"):
    _add(_w, "notrail")
for _w in ("leave", "leaves", "leaving", "draw", "draws", "drawing", "behind it",
           "behind them", "behind itself", "in its wake", "in their wake"):
    _add(_w, "filler")

_add("not", "not")
_add("never", "not")
_add("doesn't", "not")
_add("don't", "not")

# background
for _w in ("background", "backdrop", "backgrounds", "canvas", "setting"):
    _add(_w, "bg")
for _w in ("plain", "solid", "flat", "uniform", "blank", "empty", "single colour", "single color"):
    _add(_w, "plain")
for _w in ("sky", "skies", "heavens"):
    _add(_w, "skynoun")
for _name, _ws in {"day": ("day", "daytime", "daylight", "sunny", "midday", "noon", "clear day",
                           "during the day", "in daylight", "by day", "bright day", "day time"),
                   "sunset": ("sunset", "dusk", "twilight", "evening", "sundown", "at sunset",
                              "at dusk", "sunrise", "dawn"),
                   "night": ("night", "nighttime", "night time", "starry", "midnight", "at night",
                             "by night", "moonlit", "starlit")}.items():
    for _w in _ws:
        _add(_w, "sky", _name)
for _name, _ws in {"grass": ("grass", "grassy", "lawn", "meadow", "turf", "pasture"),
                   "sand": ("sand", "sandy", "beach", "desert", "dunes", "dune"),
                   "snow": ("snow", "snowy", "snowfield", "snow covered", "ice", "icy"),
                   "tiles": ("tiles", "tiled", "tile", "tiling", "checkered", "checkerboard",
                             "chequered"),
                   "lava": ("lava", "molten lava", "magma", "lava field", "volcanic ground")}.items():
    for _w in _ws:
        _add(_w, "ground", _name)
for _w in ("ground", "floor", "field", "ground plane", "terrain", "landscape", "plane"):
    _add(_w, "groundnoun")

# camera
for _w in ("camera", "cameras", "cam", "viewpoint", "shot is static"):
    _add(_w, "camera")
for _w in ("pan", "pans", "panning", "panned", "pan shot"):
    _add(_w, "pan")
for _w in ("tilt", "tilts", "tilting", "tilted"):
    _add(_w, "tilt")
for _w in ("zoom", "zooms", "zooming", "zoomed"):
    for _way in ("in", "out"):
        _add(f"{_w} {_way}", "zoom", _way)
        _add(f"{_w} slowly {_way}", "zoom", _way)
        _add(f"{_w} {_way}ward", "zoom", _way)
    _add(_w, "zoom", None)
for _w in ("dolly in", "dollies in", "push in", "pushes in", "pushing in"):
    _add(_w, "zoom", "in")
for _w in ("dolly out", "dollies out", "pull out", "pulls out", "pulling out", "pulls back",
           "pulling back"):
    _add(_w, "zoom", "out")

# occluder
for _w in ("pillar", "pillars", "column", "columns", "post", "posts", "pole", "poles",
           "occluder", "occluders", "barrier", "tower", "obstacle", "obstacles"):
    _add(_w, "occluder")

# shots
for _w in ("wide", "wide shot", "wide view", "wide angle", "wide angle shot", "wide angle view",
           "establishing shot", "full view", "full shot", "long shot", "wide framing",
           "wide shots", "wide views"):
    _add(_w, "wide")
for _w in ("close up", "closeup", "close shot", "close view", "close ups", "closeups",
           "close up shot", "close up view", "closeup shot", "detail shot"):
    _add(_w, "closeup")
for _w in ("shot", "shots", "cut", "cuts", "cutting", "cut to", "cuts to", "cutting to",
           "cuts back to", "cut back to", "camera angles", "angles", "angle"):
    _add(_w, "shotnoun")

# joiners: end a clause (a colour before them is a predicate, "the ball is red and ...")
for _w in ("and", "while", "as", "but", "then", "whereas", "with"):
    _add(_w, "and")

#: longest phrase in the lexicon, in words
MAX_PHRASE = max(len(k) for k in LEXICON)

#: Solid background names, and the object colour words that may name one.
BACKGROUND_COLOR_ALIASES = {name: name for name in BACKGROUND_COLORS}
BACKGROUND_COLOR_ALIASES.update({"blue": "navy", "cyan": "teal", "green": "teal"})

ALL_OBJECT_COLORS = tuple(COLORS)
