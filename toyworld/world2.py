"""Toy world 2: two objects with attribute binding, captions of varying length, unspecified colours,
a strict analyser and distribution metrics. Pure torch (no ComfyUI imports), like world.py, which it
builds on and leaves unchanged (the demo model and its tests use world.py).

Images
    24x24 RGB on black in [-1, 1] (black = -1), layout (N, 3, H, W), with exactly two objects.
    Each object has a colour (world.PALETTE's 6) and a shape (world.SHAPES' 3: cross, square,
    triangle; a circle this size can be pixel-identical to a square). The pair lies on an axis:
    horizontal (a left and a right slot) or vertical (a top and a bottom slot).
    Nuisances per object: centre jitter of +-1 px in x and y around its slot, radius 3.0-3.8 px,
    brightness 0.8-1.0, all uniform and independent. Shapes are drawn by their exact pixel coverage
    (world.py's supersampling fixes centre and radius only to 0.25 px, too coarse for the metrics).

Why 24x24
    Objects keep world.py's radii, at which its analyser separates the three shapes exactly. Two
    of them side by side need 2 x 7.6 px, plus 2 x 1 px of jitter, plus a gap wide enough that
    they never touch: slots 12 px apart (at 6 and 18) leave a gap of at least MIN_GAP = 2.4 px
    and a margin of 1.2 px to the frame. 16 px would force radii near 2, where shapes blur into
    each other; 32 px costs 1.8x the pixels of 24 for the base model, which must train on
    2 CPU cores in under an hour.

Scenes and captions
    A scene is (colour1, shape1, colour2, shape2, axis), object 1 being the left/top one: 648
    scenes (two identical objects allowed). A caption names a subject, a relation and an object:
    "a red square left of a blue cross" (relations: left of, right of, above, below; the subject
    is named first), so each scene has two phrasings ("... left of ..." and "... right of ...").
    Training captions vary in length: an optional prefix ("there is", "a picture of", ...),
    the filler adjective "small", synonyms of each relation ("to the left of", "under", ...) and an
    optional suffix ("and nothing else", "on a black background", ...). A colour may be left
    unspecified ("a square left of a blue cross"): `render_specs` then draws it uniformly from
    the palette, so a negative prompt "red" has about 1/6 of images to act on.

Tokenizer
    CLIP layout like world.py: <start>, words, <end>, then <pad> to SEQ_LEN; unknown words map to
    <unk>. The vocabulary and SEQ_LEN are computed from the word lists below (SEQ_LEN = the longest
    caption the grammar makes, plus start and end), never counted by hand.

Held-out split (never in training images or captions)
    A scene is held out iff (colour1 + shape1 + colour2 + shape2 + axis) % 3 == 0 and object 1 has
    the larger object index (colour * 3 + shape) of the two. The second condition keeps the mirror
    image of each held-out scene in training: a held-out prompt names two familiar objects on a
    familiar axis in the order never seen together. Fixing any four of a held-out scene's five
    attributes still leaves a training scene, so every attribute pair (and triple, and quadruple)
    is seen in training. Held-out scenes are split by rule into VALIDATION and TEST: sorted by
    the sha256 of their plain caption, the first half validates, the rest tests. Both phrasings of
    a scene go to the same split, so no test scene is ever selected on.
    Training draws scenes uniformly from the others. Given the rest of a training caption, an
    omitted colour is therefore uniform over the colours that keep the scene in training (4 to 6 of
    the 6); over all training captions it is exactly uniform, because the rule tilts the two slots'
    colour marginals in mirror image and the subject is first or second at random (tested).

Analyser (`analyse`), on images before clamping
    Rejects, in this order: saturated images (more than MAX_SATURATED_FRACTION of the pixels out of
    [-1, 1] by more than SATURATION_MARGIN), flooded frames (more lit pixels than two of the largest
    objects can light), a wrong number of objects (lit 8-connected components of at least
    MIN_COMPONENT_AREA pixels; 0, 1, 3+ are wrong), poor template fits (soft IoU of the fitted
    template below MIN_IOU, or a residual above MAX_RESIDUAL of the object's energy), colours off
    the palette, and pairs on a diagonal (neither axis clearly dominant). Each object's shape comes
    from a bank of templates, its centre and radius from the fit refined between grid points, its
    brightness by least squares and its colour from its lit pixels; the pair is then ordered on its
    axis. `score` checks a caption's specified
    attributes (an unspecified colour is not scored) and binding.

Metrics
    `frechet_distance` (Gaussian fits of fitted-parameter vectors, exact, float64), `diversity`
    (mean per-prompt spread across seeds) and `saturation_rate`.

Latent map
    world.rgb_to_latent / world.latent_to_rgb, unchanged (re-exported here).

`python -m toyworld.world2` prints the world's computed figures and the analyser's measured margins.
"""
from __future__ import annotations

import functools
import hashlib
import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import world

RES = 24

COLOURS = world.COLOURS
PALETTE = world.PALETTE
SHAPES = world.SHAPES
TRIANGLE = SHAPES.index("triangle")
N_COLOURS, N_SHAPES = len(COLOURS), len(SHAPES)
N_OBJECT_KINDS = N_COLOURS * N_SHAPES  # object index = colour * N_SHAPES + shape

AXES = ["horizontal", "vertical"]
RELATIONS = ["left", "right", "above", "below"]  # relation // 2 is the axis; relation % 2 == 0: subject first
# Slot centres (x, y) of the first (left/top) and second (right/bottom) object for each axis.
SLOTS = torch.tensor([[[6.0, 12.0], [18.0, 12.0]], [[12.0, 6.0], [12.0, 18.0]]])
JITTER = 1.0  # uniform +-JITTER px per coordinate
SIZE_RANGE = (3.0, 3.8)
BRIGHTNESS_RANGE = (0.8, 1.0)
R_MAX = SIZE_RANGE[1]
SLOT_DISTANCE = float((SLOTS[0, 1] - SLOTS[0, 0]).norm())
MIN_GAP = SLOT_DISTANCE - 2 * JITTER - 2 * R_MAX  # between two objects' bounding boxes, on their axis
MIN_BORDER = float(SLOTS.min()) - JITTER - R_MAX  # between an object's bounding box and the frame

# Per-object parameters that the analyser fits: centre x, centre y, radius, brightness. Their
# standard deviations under the renderer (uniform widths / sqrt(12)), so that each nuisance weighs the
# same in the metrics once divided by them.
PARAMETER_NAMES = ("x", "y", "size", "brightness")
PARAMETER_SCALE = torch.tensor([2 * JITTER, 2 * JITTER, SIZE_RANGE[1] - SIZE_RANGE[0],
                                BRIGHTNESS_RANGE[1] - BRIGHTNESS_RANGE[0]]) / math.sqrt(12.0)

UNSPECIFIED = -1
SCENE_FIELDS = ("colour1", "shape1", "colour2", "shape2", "axis")
SPEC_FIELDS = ("subject_colour", "subject_shape", "relation", "object_colour", "object_shape")

# ---------------------------------------------------------------- caption grammar and vocabulary
ARTICLE = "a"
PREFIXES = ("", "there is", "a picture of", "an image with")
SUFFIXES = ("", "on black", "and nothing else", "on a black background")
FILLER_ADJECTIVE = "small"  # every object is small, so the word carries no information
RELATION_PHRASES = {
    "left": ("left of", "to the left of"),
    "right": ("right of", "to the right of"),
    "above": ("above", "over"),
    "below": ("below", "under"),
}

START, END, PAD, UNK = world.SPECIAL_TOKENS
SPECIAL_TOKENS = world.SPECIAL_TOKENS


def _phrase_words(phrases) -> list[str]:
    return [w for p in phrases for w in p.split()]


WORDS = sorted(set(
    _phrase_words(PREFIXES) + _phrase_words(SUFFIXES) + [ARTICLE, FILLER_ADJECTIVE] + COLOURS + SHAPES
    + _phrase_words(p for ps in RELATION_PHRASES.values() for p in ps)
))
VOCAB = {w: i for i, w in enumerate(SPECIAL_TOKENS + WORDS)}
VOCAB_SIZE = len(VOCAB)
START_ID, END_ID, PAD_ID, UNK_ID = (VOCAB[t] for t in SPECIAL_TOKENS)


def _most_words(phrases) -> int:
    return max(len(p.split()) for p in phrases)


OBJECT_PHRASE_WORDS = 4  # "a small red square"
MAX_CAPTION_WORDS = (_most_words(PREFIXES) + 2 * OBJECT_PHRASE_WORDS
                     + _most_words(p for ps in RELATION_PHRASES.values() for p in ps) + _most_words(SUFFIXES))
SEQ_LEN = MAX_CAPTION_WORDS + 2  # start and end: the longest caption fits exactly, without truncation


def tokenize(text: str) -> list[int]:
    """One caption -> SEQ_LEN token ids: start, words (at most SEQ_LEN - 2, unknown -> <unk>), end, pads."""
    words = world.split_words(text)[:MAX_CAPTION_WORDS]
    ids = [START_ID] + [VOCAB.get(w, UNK_ID) for w in words] + [END_ID]
    return ids + [PAD_ID] * (SEQ_LEN - len(ids))


def tokenize_batch(texts: list[str]) -> torch.Tensor:
    """Captions -> LongTensor (N, SEQ_LEN)."""
    return torch.tensor([tokenize(t) for t in texts], dtype=torch.long)


# ---------------------------------------------------------------- scenes, specs and captions
def object_index(colour, shape):
    return colour * N_SHAPES + shape


def scene_index(scenes: torch.Tensor) -> torch.Tensor:
    """(N, 5) scenes -> index in [0, N_SCENES), the row of ALL_SCENES."""
    c1, s1, c2, s2, axis = scenes.unbind(-1)
    return (object_index(c1, s1) * N_OBJECT_KINDS + object_index(c2, s2)) * len(AXES) + axis


def _all_scenes() -> torch.Tensor:
    idx = torch.arange(N_OBJECT_KINDS * N_OBJECT_KINDS * len(AXES))
    axis = idx % len(AXES)
    o2 = (idx // len(AXES)) % N_OBJECT_KINDS
    o1 = idx // (len(AXES) * N_OBJECT_KINDS)
    return torch.stack([o1 // N_SHAPES, o1 % N_SHAPES, o2 // N_SHAPES, o2 % N_SHAPES, axis], 1)


def is_held_out(scenes: torch.Tensor) -> torch.Tensor:
    """The documented held-out rule on (N, 5) scenes: attribute sum % 3 == 0 and object 1 > object 2."""
    c1, s1, c2, s2, axis = scenes.unbind(-1)
    return ((c1 + s1 + c2 + s2 + axis) % 3 == 0) & (object_index(c1, s1) > object_index(c2, s2))


def specs_from_scenes(scenes: torch.Tensor, subject_second: torch.Tensor) -> torch.Tensor:
    """(N, 5) scenes -> (N, 5) caption specs; subject_second picks the phrasing ("... right of ...", "... below ...")."""
    c1, s1, c2, s2, axis = scenes.unbind(-1)
    second = subject_second.long()
    relation = axis * 2 + second
    first_is_subject = second == 0
    return torch.stack([torch.where(first_is_subject, c1, c2), torch.where(first_is_subject, s1, s2), relation,
                        torch.where(first_is_subject, c2, c1), torch.where(first_is_subject, s2, s1)], 1)


def scenes_from_specs(specs: torch.Tensor) -> torch.Tensor:
    """(N, 5) caption specs -> (N, 5) scenes; an unspecified colour stays UNSPECIFIED."""
    sc, ss, relation, oc, os_ = specs.unbind(-1)
    first = relation % 2 == 0
    return torch.stack([torch.where(first, sc, oc), torch.where(first, ss, os_), torch.where(first, oc, sc),
                        torch.where(first, os_, ss), relation // 2], 1)


def is_fully_specified(specs: torch.Tensor) -> torch.Tensor:
    return (specs[:, 0] != UNSPECIFIED) & (specs[:, 3] != UNSPECIFIED)


def names_held_out(specs: torch.Tensor) -> torch.Tensor:
    """Whether each caption spec names a held-out scene. A caption with an unspecified colour names none:
    its completions always include training scenes (at most 2 of a colour's 6 values are held out)."""
    return is_fully_specified(specs) & is_held_out(scenes_from_specs(specs).clamp(min=0))


@dataclass(frozen=True)
class Phrasing:
    """How a caption spec is worded: indices into PREFIXES, SUFFIXES and the relation's synonyms, and
    whether each object phrase carries the filler adjective. The default is the plain caption."""

    prefix: int = 0
    suffix: int = 0
    relation_variant: int = 0
    subject_filler: bool = False
    object_filler: bool = False


PLAIN = Phrasing()


def _object_phrase(colour: int, shape: int, filler: bool) -> list[str]:
    words = [ARTICLE] + ([FILLER_ADJECTIVE] if filler else [])
    return words + ([COLOURS[colour]] if colour != UNSPECIFIED else []) + [SHAPES[shape]]


def caption(spec, phrasing: Phrasing = PLAIN) -> str:
    """A caption spec (5 ints: subject colour, subject shape, relation, object colour, object shape) -> text."""
    sc, ss, relation, oc, os_ = (int(v) for v in spec)
    relation_phrase = RELATION_PHRASES[RELATIONS[relation]][phrasing.relation_variant]
    words = (PREFIXES[phrasing.prefix].split() + _object_phrase(sc, ss, phrasing.subject_filler)
             + relation_phrase.split() + _object_phrase(oc, os_, phrasing.object_filler) + SUFFIXES[phrasing.suffix].split())
    return " ".join(words)


def _alternatives(phrases) -> str:
    return "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True) if p)


_RELATION_OF_PHRASE = {p: RELATIONS.index(r) for r, ps in RELATION_PHRASES.items() for p in ps}
_OBJECT_RE = rf"{ARTICLE}(?: {FILLER_ADJECTIVE})?(?: ({'|'.join(COLOURS)}))? ({'|'.join(SHAPES)})"
_CAPTION_RE = re.compile(
    rf"^(?:(?:{_alternatives(PREFIXES)}) )?{_OBJECT_RE} ({_alternatives(_RELATION_OF_PHRASE)}) {_OBJECT_RE}"
    rf"(?: (?:{_alternatives(SUFFIXES)}))?$"
)


def parse_caption(text: str) -> tuple[int, int, int, int, int] | None:
    """Inverse of caption() for any phrasing: the spec (UNSPECIFIED for an omitted colour), or None when the
    text is not a caption of this world."""
    m = _CAPTION_RE.match(" ".join(world.split_words(text)))
    if m is None:
        return None
    sc, ss, rel, oc, os_ = m.groups()
    colour = lambda c: COLOURS.index(c) if c else UNSPECIFIED  # noqa: E731
    return colour(sc), SHAPES.index(ss), _RELATION_OF_PHRASE[rel], colour(oc), SHAPES.index(os_)


def caption_targets(texts: list[str]) -> torch.Tensor:
    """Captions -> (N, 5) LongTensor of specs, the targets `score` takes; raises on a caption the world cannot draw."""
    specs = [parse_caption(t) for t in texts]
    bad = [t for t, s in zip(texts, specs) if s is None]
    if bad:
        raise ValueError(f"not a toy world 2 caption: {bad[:3]}")
    return torch.tensor(specs, dtype=torch.long)


ALL_SCENES = _all_scenes()
N_SCENES = len(ALL_SCENES)
HELD_OUT_SCENES = ALL_SCENES[is_held_out(ALL_SCENES)]
TRAIN_SCENES = ALL_SCENES[~is_held_out(ALL_SCENES)]


def _both_phrasings(scenes: torch.Tensor) -> list[str]:
    out = []
    for scene in scenes:
        for second in (False, True):
            out.append(caption(specs_from_scenes(scene[None], torch.tensor([second]))[0]))
    return out


def _split_held_out() -> tuple[torch.Tensor, torch.Tensor]:
    """The documented rule: held-out scenes sorted by the sha256 of their plain subject-first caption; the first
    half is validation. Independent of any RNG, so it is the same on every machine and torch version."""
    first_phrasings = [caption(s) for s in specs_from_scenes(HELD_OUT_SCENES, torch.zeros(len(HELD_OUT_SCENES)))]
    order = sorted(range(len(first_phrasings)), key=lambda i: hashlib.sha256(first_phrasings[i].encode()).hexdigest())
    half = len(order) // 2
    return HELD_OUT_SCENES[order[:half]], HELD_OUT_SCENES[order[half:]]


VALIDATION_SCENES, TEST_SCENES = _split_held_out()
VALIDATION_CAPTIONS = _both_phrasings(VALIDATION_SCENES)
TEST_CAPTIONS = _both_phrasings(TEST_SCENES)


# ---------------------------------------------------------------- rendering
def _overlap(low: torch.Tensor, high: torch.Tensor, size: int) -> torch.Tensor:
    """Length of [low, high] inside each unit cell [i, i+1), i < size: (M,) edges -> (M, size) in [0, 1]."""
    cells = torch.arange(size, dtype=torch.float32)
    return (torch.minimum(cells + 1, high[:, None]) - torch.maximum(cells, low[:, None])).clamp(0, 1)


def _rectangle(cx: torch.Tensor, cy: torch.Tensor, half_x: torch.Tensor, half_y: torch.Tensor, size: int) -> torch.Tensor:
    """Exact area coverage (M, size, size) of axis-aligned rectangles: the product of the two 1-D overlaps."""
    return _overlap(cy - half_y, cy + half_y, size)[:, :, None] * _overlap(cx - half_x, cx + half_x, size)[:, None, :]


TRIANGLE_SUB_ROWS = 8


def _triangle(cx: torch.Tensor, cy: torch.Tensor, r: torch.Tensor, size: int) -> torch.Tensor:
    """Coverage (M, size, size) of world.py's triangle (apex (cx, cy - r), base y = cy + r, half-width r at the base):
    each pixel row cut into TRIANGLE_SUB_ROWS strips, each strip clipped to the triangle's rows and given the exact
    horizontal overlap of the triangle's width at its middle. Exact up to the strips in which an edge crosses a
    pixel's side (a kink of a piecewise-linear integrand, under 1e-3 of a pixel there)."""
    d = 1.0 / TRIANGLE_SUB_ROWS
    strip = torch.arange(size * TRIANGLE_SUB_ROWS, dtype=torch.float32) * d
    top, bottom = (cy - r)[:, None], (cy + r)[:, None]
    low, high = torch.maximum(strip, top), torch.minimum(strip + d, bottom)
    height = (high - low).clamp(min=0)
    half_width = ((low + high) / 2 - top).clamp(min=0) / 2
    cells = torch.arange(size, dtype=torch.float32)
    left, right = (cx[:, None] - half_width)[..., None], (cx[:, None] + half_width)[..., None]
    across = (torch.minimum(cells + 1, right) - torch.maximum(cells, left)).clamp(0, 1)  # (M, strips, size)
    return (across * height[..., None]).view(len(cx), size, TRIANGLE_SUB_ROWS, size).sum(2)


def _coverage(shape: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, r: torch.Tensor, size: int) -> torch.Tensor:
    """Anti-aliased coverage (M, size, size) in [0, 1] of M of world.py's shapes on a size x size grid (pixel i spans
    [i, i+1)). Square and cross (a square of half-side r; a plus of arms 0.8 r wide, as the union of two bars) are
    exact; the triangle is exact to about 1e-3 (see _triangle). world.py supersamples 4x4 instead, which fixes
    centre and radius only to its 0.25 px sub-sample grid: too coarse for the metrics, which compare fitted values."""
    arm = 0.4 * r
    square = _rectangle(cx, cy, r, r, size)
    cross = _rectangle(cx, cy, r, arm, size) + _rectangle(cx, cy, arm, r, size) - _rectangle(cx, cy, arm, arm, size)
    triangle = _triangle(cx, cy, r, size)
    s = shape[:, None, None]
    return torch.where(s == 0, cross, torch.where(s == 1, square, triangle))


def render_objects(colour: torch.Tensor, shape: torch.Tensor, centre: torch.Tensor, size: torch.Tensor,
                   brightness: torch.Tensor) -> torch.Tensor:
    """Any number K of objects per image: colour, shape (N, K) long; centre (N, K, 2) as (x, y) px; size (radius)
    and brightness (N, K) -> images (N, 3, RES, RES) in [-1, 1]. Overlapping objects take the brighter channel."""
    n, k = colour.shape
    if k == 0:
        return -torch.ones(n, 3, RES, RES)
    cov = torch.cat([_coverage(s, c[:, 0], c[:, 1], r, RES)
                     for s, c, r in zip(shape.reshape(-1).split(1024), centre.reshape(-1, 2).split(1024),
                                        size.reshape(-1).float().split(1024))]).view(n, k, RES, RES)
    rgb = PALETTE[colour] * brightness[..., None]  # (N, K, 3)
    img = (cov[:, :, None] * rgb[..., None, None]).amax(1)
    return img * 2 - 1


def sample_objects(scenes: torch.Tensor, generator: torch.Generator | None = None) -> dict:
    """Draws the nuisances of (N, 5) scenes: the arguments of render_objects, object 1 the left/top one."""
    n = scenes.shape[0]
    slots = SLOTS[scenes[:, 4]]  # (N, 2, 2)
    centre = slots + JITTER * (2 * torch.rand(n, 2, 2, generator=generator) - 1)
    low, high = SIZE_RANGE
    size = low + (high - low) * torch.rand(n, 2, generator=generator)
    low, high = BRIGHTNESS_RANGE
    brightness = low + (high - low) * torch.rand(n, 2, generator=generator)
    return {"colour": scenes[:, [0, 2]], "shape": scenes[:, [1, 3]], "centre": centre, "size": size, "brightness": brightness}


def render(scenes: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, 5) scenes -> images (N, 3, RES, RES) in [-1, 1]."""
    return render_objects(**sample_objects(scenes, generator))


def fill_unspecified(specs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each unspecified colour drawn uniformly from the palette: the world's answer to such a caption."""
    out = specs.clone()
    for col in (0, 3):
        todo = out[:, col] == UNSPECIFIED
        out[todo, col] = torch.randint(0, N_COLOURS, (int(todo.sum()),), generator=generator)
    return out


def render_specs(specs: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 5) caption specs -> (images, the scenes drawn); unspecified colours are uniform over the palette."""
    scenes = scenes_from_specs(fill_unspecified(specs, generator))
    return render(scenes, generator), scenes


# ---------------------------------------------------------------- training data
def sample_train_scenes(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    return TRAIN_SCENES[torch.randint(0, len(TRAIN_SCENES), (n,), generator=generator)]


def omit_colours(specs: torch.Tensor, omit_p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each of a caption's two colours independently left unspecified with probability omit_p."""
    out = specs.clone()
    for col in (0, 3):
        out[torch.rand(len(out), generator=generator) < omit_p, col] = UNSPECIFIED
    return out


def corrupt(specs: torch.Tensor, noise_p: float, generator: torch.Generator | None = None,
            max_tries: int = 20) -> torch.Tensor:
    """Caption noise: each specified attribute (colours, shapes, relation) independently replaced by a uniform
    draw with probability noise_p. Rows whose noisy caption would name a held-out scene are redrawn, and after
    max_tries fall back to the clean caption (never held out when the input is a training caption)."""
    sizes = (N_COLOURS, N_SHAPES, len(RELATIONS), N_COLOURS, N_SHAPES)
    out = specs.clone()
    todo = torch.ones(len(specs), dtype=torch.bool)
    for _ in range(max_tries):
        rows = todo.nonzero()[:, 0]
        if len(rows) == 0:
            break
        new = specs[rows].clone()
        for col, k in enumerate(sizes):
            flip = (torch.rand(len(rows), generator=generator) < noise_p) & (new[:, col] != UNSPECIFIED)
            new[:, col] = torch.where(flip, torch.randint(0, k, (len(rows),), generator=generator), new[:, col])
        out[rows] = new
        todo = torch.zeros_like(todo)
        todo[rows] = names_held_out(new)
    out[todo] = specs[todo]
    return out


def random_phrasing(generator: torch.Generator | None = None, filler_p: float = 0.3) -> Phrasing:
    draw = torch.rand(5, generator=generator).tolist()
    return Phrasing(prefix=int(draw[0] * len(PREFIXES)), suffix=int(draw[1] * len(SUFFIXES)),
                    relation_variant=int(draw[2] * 2), subject_filler=draw[3] < filler_p, object_filler=draw[4] < filler_p)


def train_batch(n: int, generator: torch.Generator | None = None, noise_p: float = 0.30, omit_p: float = 0.2) -> dict:
    """A training batch: images of training scenes, and for each a caption in a random phrasing and subject
    order, with colours omitted (omit_p each) and then caption noise (noise_p per specified attribute).
    Returns images (n, 3, RES, RES), scenes (n, 5) (the truth), specs (n, 5) (what each caption says),
    captions (n strings) and tokens (n, SEQ_LEN)."""
    scenes = sample_train_scenes(n, generator)
    images = render(scenes, generator)
    subject_second = torch.rand(n, generator=generator) < 0.5
    specs = corrupt(omit_colours(specs_from_scenes(scenes, subject_second), omit_p, generator), noise_p, generator)
    captions = [caption(s, random_phrasing(generator)) for s in specs]
    return {"images": images, "scenes": scenes, "specs": specs, "captions": captions, "tokens": tokenize_batch(captions)}



def refiner_captions(n: int, seed: int = 0, omit_p: float = 0.2) -> list[str]:
    """n distinct captions of training scenes for a DICE refiner's prompt list, seeded: random phrasing and
    subject order, colours omitted with omit_p as in base training, and no caption noise (the teacher
    follows whatever a caption says, so noise would only teach the refiner wrong captions). Never a held-out
    scene, so validation and test captions stay unseen by the refiner too."""
    g = torch.Generator().manual_seed(seed)
    out: list[str] = []
    while len(out) < n:
        scenes = sample_train_scenes(n, g)
        specs = omit_colours(specs_from_scenes(scenes, torch.rand(n, generator=g) < 0.5), omit_p, g)
        for spec in specs:
            text = caption(spec, random_phrasing(g))
            if text not in out and len(out) < n:
                out.append(text)
    return out


def training_check_captions(n_scenes: int = 51, seed: int = 7) -> list[str]:
    """Both plain phrasings of n_scenes training scenes, seeded, as many as each held-out split has: whether a base
    model follows captions it was trained on, apart from whether it generalises to held-out ones."""
    picks = torch.randperm(len(TRAIN_SCENES), generator=torch.Generator().manual_seed(seed))[:n_scenes]
    return _both_phrasings(TRAIN_SCENES[picks])

# ---------------------------------------------------------------- the latent map: world.py's, unchanged
LATENT_CHANNELS = world.LATENT_CHANNELS
LATENT_MAP = world.LATENT_MAP
rgb_to_latent = world.rgb_to_latent
latent_to_rgb = world.latent_to_rgb

# ---------------------------------------------------------------- strict analyser
# Out of range means beyond [-1, 1] by more than SATURATION_MARGIN (in image units, 10% of the range): a margin,
# so that mild noise around black (std 0.05 puts a channel there with probability 3e-5) is not saturation,
# while CFG's over-driven colours are. An image with more than MAX_SATURATED_FRACTION such pixels is rejected:
# measured by `python -m toyworld.world2`, noise of std 0.05 leaves at most 0.35% of a render's pixels out,
# std 0.08 up to 3.8%, so this analyser takes noise up to about std 0.05 and calls heavier noise saturation.
SATURATION_MARGIN = 0.2
MAX_SATURATED_FRACTION = 0.02
LIT_THRESHOLD = 0.5  # of the max channel in [0, 1] units, world.py's
MIN_COMPONENT_AREA = 4  # smaller lit specks are ignored; the smallest rendered object lights 12 (printed by __main__)
# Two of the largest objects light at most 2 * (2 R_MAX + 1)^2 pixels: more is a flooded frame.
MAX_LIT_FRACTION = 2 * (2 * R_MAX + 1) ** 2 / RES**2
# A fit is accepted with a soft IoU (template coverage vs the coverage the pixels show) >= MIN_IOU and a residual
# <= MAX_RESIDUAL of the object's energy. Measured by `python -m toyworld.world2` (seeded): renders with noise of
# std 0.08 stay above IoU 0.88 and below residual 0.016; random blobs stay below IoU 0.79 and above residual 0.10.
# The thresholds sit between the two.
MIN_IOU = 0.85
MAX_RESIDUAL = 0.05
# Colour: the lit pixels' mean RGB divided by its max channel, within COLOUR_TOLERANCE (Euclidean) of a palette
# entry; palette entries are at least 1 apart, so 0.25 accepts noise and rejects mixtures such as orange.
COLOUR_TOLERANCE = 0.25
# A pair is on an axis when its centre offset along it is at least twice the offset across it (renders: 10 vs 2).
AXIS_DOMINANCE = 2.0
REGION_GROWTH = 2  # px around the lit pixels that still belong to the object (anti-aliased edges, a triangle's tip)

REJECT_REASONS = ("ok", "saturated", "flooded", "object_count", "poor_fit", "off_palette", "diagonal")
REASON = {name: i for i, name in enumerate(REJECT_REASONS)}

# Template bank: per shape, radii on a 0.1 px grid and centroids on a 0.25 px sub-pixel grid, in a window of
# FIT_WINDOW px; each object is matched at 3x3 integer shifts of a window placed on its centroid.
FIT_WINDOW = 14
FIT_RADII = torch.arange(26, 45) / 10.0  # 2.6 .. 4.4 px
FIT_PHASES = torch.arange(4) / 4.0
_SHIFTS = torch.tensor([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
_FIT_CHUNK = 512


def _centroid_offset(shape: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """How far below its bounding-box centre a shape's area centroid lies: r/3 for the triangle, else 0."""
    return torch.where(shape == TRIANGLE, r / 3, torch.zeros_like(r))


@functools.lru_cache(maxsize=1)
def _template_bank() -> tuple[torch.Tensor, torch.Tensor]:
    """(K, FIT_WINDOW^2) templates, centroid at (W/2 + phase_x, W/2 + phase_y), and their (K, 4) parameters
    (shape, radius, phase_x, phase_y); K = shapes x radii x phases^2, in that order."""
    grid = torch.cartesian_prod(torch.arange(N_SHAPES).float(), FIT_RADII, FIT_PHASES, FIT_PHASES)
    shape, r, px, py = grid.unbind(1)
    shape = shape.long()
    half = FIT_WINDOW / 2
    t = _coverage(shape, half + px, half + py - _centroid_offset(shape, r), r, FIT_WINDOW)
    return t.reshape(len(grid), -1), grid


def _out_of_range(img: torch.Tensor, margin: float) -> torch.Tensor:
    """(N, 3, H, W) -> (N, H, W) bool: pixels with a channel outside [-1 - margin, 1 + margin]."""
    return (img.float().abs() > 1 + margin).any(1)


def saturation_rate(img: torch.Tensor, margin: float = SATURATION_MARGIN) -> torch.Tensor:
    """(N, 3, H, W) before clamping -> (N,) fraction of pixels with a channel outside [-1 - margin, 1 + margin]."""
    return _out_of_range(img, margin).float().mean((1, 2))


def saturation_sites(img: torch.Tensor, margin: float = SATURATION_MARGIN) -> dict:
    """Where an image's out-of-range pixels are (saturation_rate's pixels): (N,) shares of all pixels that are out
    of range and lit (on an object) or unlit (background), and (N,) the largest channel value. CFG's side effect
    in this world is over-driven objects, not a background pushed below black, and this tells the two apart."""
    img = img.float()
    out = _out_of_range(img, margin)
    lit = ((img + 1) / 2).amax(1) > LIT_THRESHOLD
    return {"on_objects": (out & lit).float().mean((1, 2)), "on_background": (out & ~lit).float().mean((1, 2)),
            "peak": img.amax((1, 2, 3))}


def _components(lit: torch.Tensor) -> torch.Tensor:
    """8-connected components: (N, H, W) bool -> (N, H, W) long, 0 off the mask, else the largest flat pixel
    index + 1 within the component (unique per image)."""
    n, h, w = lit.shape
    mask = lit.float()
    labels = (torch.arange(1, h * w + 1, dtype=torch.float32).view(1, h, w) * mask).expand(n, h, w).contiguous()
    while True:  # label propagation; at most the longest path in a component, float-exact labels (h*w < 2**24)
        grown = F.max_pool2d(labels[:, None], 3, 1, 1)[:, 0] * mask
        if torch.equal(grown, labels):
            return labels.long()
        labels = grown


def _grow(labels: torch.Tensor, steps: int) -> torch.Tensor:
    """Extends each labelled region into unlabelled neighbours, steps times (8-connected)."""
    for _ in range(steps):
        grown = F.max_pool2d(labels[:, None].float(), 3, 1, 1)[:, 0].long()
        labels = torch.where(labels == 0, grown, labels)
    return labels


def _crops(planes: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, shifts: torch.Tensor = _SHIFTS) -> torch.Tensor:
    """(M, H, W) planes -> (M, S, FIT_WINDOW^2) windows whose top-left corner is (oy, ox) + each of the S shifts."""
    pad = FIT_WINDOW + 2
    padded = F.pad(planes, (pad, pad, pad, pad))
    ar = torch.arange(FIT_WINDOW)
    rows = (oy[:, None] + shifts[None, :, 0] + pad)[..., None] + ar  # (M, 9, W)
    cols = (ox[:, None] + shifts[None, :, 1] + pad)[..., None] + ar
    m = torch.arange(len(planes))[:, None, None, None]
    return padded[m, rows[..., :, None], cols[..., None, :]].reshape(len(planes), len(shifts), -1)


def _parabola_peak(left: torch.Tensor, centre: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Offset in [-0.5, 0.5] grid steps of the vertex of the parabola through three samples around a maximum."""
    curvature = left - 2 * centre + right
    step = 0.5 * (left - right) / torch.where(curvature < 0, curvature, torch.full_like(curvature, -1.0))
    return torch.where(curvature < 0, step, torch.zeros_like(step)).clamp(-0.5, 0.5)


def _refine(explained: torch.Tensor, shape: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sub-grid peak of the fit, per object: explained (M, shapes, radii, Y, X) -> fractional (radius, y, x) indices
    for the given shape, by a parabola through the best grid cell and its neighbours along each axis (none at an
    edge of the grid)."""
    m = len(explained)
    grid = explained[torch.arange(m), shape]  # (M, R, Y, X)
    flat = grid.reshape(m, -1).argmax(1)
    dims = grid.shape[1:]
    index = torch.stack(torch.unravel_index(flat, dims), 1)  # (M, 3)
    out = []
    for axis, size in enumerate(dims):
        low, high = index.clone(), index.clone()
        low[:, axis] = (index[:, axis] - 1).clamp(min=0)
        high[:, axis] = (index[:, axis] + 1).clamp(max=size - 1)
        at = lambda i: grid[torch.arange(m), i[:, 0], i[:, 1], i[:, 2]]  # noqa: E731
        inside = (index[:, axis] > 0) & (index[:, axis] < size - 1)
        step = _parabola_peak(at(low), at(index), at(high))
        out.append(index[:, axis].float() + torch.where(inside, step, torch.zeros_like(step)))
    return out[0], out[1], out[2]


def _fit_objects(v: torch.Tensor) -> dict:
    """Template fit of M objects, each alone in its plane v (M, H, W): brightness in [0, 1] units, not clamped. The shape is the best of the bank (at 3x3 integer shifts of a window on
    the centroid); centre and radius are refined between grid points; brightness is the least-squares scale of the
    template drawn at the refined centre and radius, which also gives the IoU and the residual."""
    bank, params = _template_bank()
    bank_norm2 = (bank * bank).sum(1)
    m, h, w = v.shape
    ys = torch.arange(h, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(w, dtype=torch.float32)[None, :] + 0.5
    mass = v.clamp(min=0).sum((1, 2)).clamp(min=1e-6)
    cx, cy = (v.clamp(min=0) * xs).sum((1, 2)) / mass, (v.clamp(min=0) * ys).sum((1, 2)) / mass
    half = FIT_WINDOW // 2
    ox, oy = cx.floor().long() - half, cy.floor().long() - half  # the centroid sits in [half, half + 1) of the window
    dots = _crops(v, oy, ox) @ bank.T  # (M, 9 shifts, K)
    explained = dots.clamp(min=0) ** 2 / bank_norm2
    # onto one grid of centroid offsets per axis, shift + phase in [-1, 2) in steps of 1 / phases
    phases, radii, shifts = len(FIT_PHASES), len(FIT_RADII), 3
    explained = explained.view(m, shifts, shifts, N_SHAPES, radii, phases, phases)  # dy, dx, shape, r, px, py
    explained = explained.permute(0, 3, 4, 1, 6, 2, 5).reshape(m, N_SHAPES, radii, shifts * phases, shifts * phases)
    shape = explained.amax((2, 3, 4)).argmax(1)
    ri, yi, xi = _refine(explained, shape)
    step = float(FIT_RADII[1] - FIT_RADII[0])
    r = float(FIT_RADII[0]) + ri * step
    y = oy.float() + half - 1 + yi / phases - _centroid_offset(shape, r)  # window position -> image px; bbox centre
    x = ox.float() + half - 1 + xi / phases
    template = _coverage(shape, x - ox, y - oy, r, FIT_WINDOW)  # in the window at (oy, ox)
    window = _crops(v, oy, ox, torch.zeros(1, 2, dtype=torch.long)).view(m, FIT_WINDOW, FIT_WINDOW)
    t2 = (template * template).sum((1, 2)).clamp(min=1e-6)
    vt = (window * template).sum((1, 2))
    brightness = vt / t2
    energy = (v * v).sum((1, 2))
    residual = (energy - 2 * brightness * vt + brightness**2 * t2) / energy.clamp(min=1e-12)
    # IoU of the object's coverage as the pixels show it (brightness divided out) and the template's: the soft
    # (fuzzy) IoU, sum of minima over sum of maxima, so that a pixel near the lit threshold cannot flip it
    shown = (window / brightness.clamp(min=1e-6)[:, None, None]).clamp(0, 1)
    outside = (v.clamp(min=0).sum((1, 2)) - window.clamp(min=0).sum((1, 2))) / brightness.clamp(min=1e-6)
    inter = torch.minimum(shown, template).sum((1, 2))
    union = torch.maximum(shown, template).sum((1, 2)) + outside.clamp(min=0)
    return {"shape": shape, "size": r, "brightness": brightness, "centre": torch.stack([x, y], 1),
            "iou": inter / union.clamp(min=1), "residual": residual}


def _colours(x: torch.Tensor, lit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Palette index and distance of the lit pixels' mean colour, normalised by its max channel; x (M, 3, H, W)."""
    litf = lit.float()[:, None]
    mean = (x * litf).sum((2, 3)) / litf.sum((2, 3)).clamp(min=1)
    normalised = mean / mean.amax(1, keepdim=True).clamp(min=1e-6)
    distance = torch.cdist(normalised, PALETTE)
    d, idx = distance.min(1)
    return idx, d


@torch.no_grad()
def analyse(img: torch.Tensor) -> dict:
    """img (N, 3, RES, RES), in [-1, 1] nominally and NOT clamped -> per image:
    valid (N,) bool; reason (N,) index into REJECT_REASONS (0 = ok); n_objects (N,); saturation (N,) the
    saturation_rate; axis (N,) 0 horizontal, 1 vertical; and per object, ordered left/top first on that axis:
    colour, shape (N, 2) long; centre (N, 2, 2) (x, y) px; size (radius, px), brightness, iou, residual (N, 2).
    Objects of invalid images are -1 (long) or NaN (float); images with two objects keep their fit even when
    rejected for it, so a test can see why."""
    img = img.float()
    if img.ndim != 4 or tuple(img.shape[1:]) != (3, RES, RES):
        raise ValueError(f"analyse takes (N, 3, {RES}, {RES}) images, got {tuple(img.shape)}")
    n = img.shape[0]
    saturation = saturation_rate(img)
    x = (img + 1) / 2  # [0, 1] units, not clamped: a fit on clamped pixels would be biased by noise around black
    lit = x.amax(1) > LIT_THRESHOLD
    labels = _components(lit)
    # components as (image, label) pairs across the batch
    key = torch.arange(n)[:, None, None] * (RES * RES + 1) + labels
    comp_keys, inverse, area = torch.unique(key[lit], return_inverse=True, return_counts=True)
    objects = area >= MIN_COMPONENT_AREA
    image_of_component = comp_keys // (RES * RES + 1)
    n_objects = torch.bincount(image_of_component[objects], minlength=n)
    pair_images = (n_objects == 2).nonzero()[:, 0]
    # drop specks, then let each object claim its anti-aliased edge
    keep = torch.zeros_like(labels)
    keep[lit] = torch.where(objects[inverse], labels[lit], torch.zeros_like(labels[lit]))
    regions = _grow(keep, REGION_GROWTH)

    out = {
        "n_objects": n_objects, "saturation": saturation, "axis": torch.full((n,), -1, dtype=torch.long),
        "colour": torch.full((n, 2), -1, dtype=torch.long), "shape": torch.full((n, 2), -1, dtype=torch.long),
        "centre": torch.full((n, 2, 2), float("nan")), **{k: torch.full((n, 2), float("nan"))
                                                             for k in ("size", "brightness", "iou", "residual")},
    }
    colour_distance = torch.full((n, 2), float("nan"))
    if len(pair_images):
        pair_keys = comp_keys[objects & (n_objects[image_of_component] == 2)]
        image_of = pair_keys // (RES * RES + 1)  # each pair image twice, adjacent (unique sorts)
        label_of = pair_keys % (RES * RES + 1)
        fits = {k: [] for k in ("shape", "size", "brightness", "centre", "iou", "residual", "colour", "colour_distance")}
        for chunk in torch.arange(len(image_of)).split(_FIT_CHUNK):
            own = regions[image_of[chunk]] == label_of[chunk][:, None, None]
            own_lit = own & lit[image_of[chunk]]
            colour, distance = _colours(x[image_of[chunk]], own_lit)
            # brightness along the object's own palette colour: linear in the pixels, so noise does not bias it
            # (the max channel would: the max of three noisy blacks is above black on average)
            palette = PALETTE[colour]
            along = torch.einsum("mchw,mc->mhw", x[image_of[chunk]], palette) / palette.square().sum(1)[:, None, None]
            fit = _fit_objects(along * own)
            fit["colour"], fit["colour_distance"] = colour, distance
            for k in fits:
                fits[k].append(fit[k])
        fits = {k: torch.cat(vals).view(len(pair_images), 2, *vals[0].shape[1:]) for k, vals in fits.items()}
        offset = fits["centre"][:, 1] - fits["centre"][:, 0]
        axis = (offset[:, 1].abs() > offset[:, 0].abs()).long()
        swap = offset.gather(1, axis[:, None])[:, 0] < 0  # along its axis, object 2 before object 1
        order = torch.stack([swap.long(), 1 - swap.long()], 1)
        out["axis"][pair_images] = axis
        for k in ("colour", "shape", "size", "brightness", "iou", "residual"):
            out[k][pair_images] = fits[k].gather(1, order)
        out["centre"][pair_images] = fits["centre"].gather(1, order[..., None].expand(-1, -1, 2))
        colour_distance[pair_images] = fits["colour_distance"]

    offset = out["centre"][:, 1] - out["centre"][:, 0]
    along, across = offset.abs().amax(1), offset.abs().amin(1)
    reason = torch.zeros(n, dtype=torch.long)
    checks = [  # the last matching check wins, so list them from the least to the most fundamental
        ("diagonal", ~(along >= AXIS_DOMINANCE * across)),
        ("off_palette", ~(colour_distance <= COLOUR_TOLERANCE).all(1)),
        ("poor_fit", ~((out["iou"] >= MIN_IOU) & (out["residual"] <= MAX_RESIDUAL)).all(1)),
        ("object_count", n_objects != 2),
        ("flooded", lit.float().mean((1, 2)) > MAX_LIT_FRACTION),
        ("saturated", saturation > MAX_SATURATED_FRACTION),
    ]
    for name, failed in checks:
        reason = torch.where(failed, torch.full_like(reason, REASON[name]), reason)
    out["reason"] = reason
    out["valid"] = reason == 0
    return out


def score(analysis: dict, specs: torch.Tensor) -> dict:
    """Per image (N,) bools of an analysis against (N, 5) caption specs; an unspecified colour is not scored.
    valid: the analyser accepted the image. relation: valid and the pair on the relation's axis.
    colour / shape: valid and the objects at the subject's and the object's side (per the relation) have the
    specified colours / shapes. correct: all of it. binding: valid and the two objects are the caption's two
    (colour, shape) pairs, bound as the caption binds them, wherever they stand."""
    specs = torch.as_tensor(specs).long()
    valid = analysis["valid"]
    relation = specs[:, 2]
    subject_first = relation % 2 == 0
    subject_at = torch.where(subject_first, 0, 1)[:, None]
    colour, shape = analysis["colour"], analysis["shape"]
    at_subject = colour.gather(1, subject_at)[:, 0], shape.gather(1, subject_at)[:, 0]
    at_object = colour.gather(1, 1 - subject_at)[:, 0], shape.gather(1, 1 - subject_at)[:, 0]

    def colour_ok(got, want):
        return (want == UNSPECIFIED) | (got == want)

    colours = colour_ok(at_subject[0], specs[:, 0]) & colour_ok(at_object[0], specs[:, 3])
    shapes = (at_subject[1] == specs[:, 1]) & (at_object[1] == specs[:, 4])

    def is_pair(got, want_colour, want_shape):
        return colour_ok(got[0], want_colour) & (got[1] == want_shape)

    subject, obj = (specs[:, 0], specs[:, 1]), (specs[:, 3], specs[:, 4])
    binding = ((is_pair(at_subject, *subject) & is_pair(at_object, *obj))
               | (is_pair(at_object, *subject) & is_pair(at_subject, *obj)))
    on_axis = analysis["axis"] == relation // 2
    return {"valid": valid, "relation": valid & on_axis, "colour": valid & colours, "shape": valid & shapes,
            "binding": valid & binding, "correct": valid & on_axis & colours & shapes}


# ---------------------------------------------------------------- metrics
def object_parameters(analysis: dict, normalise: bool = True) -> torch.Tensor:
    """(N, 8) fitted parameters of the valid images, object 1's (x, y, size, brightness) then object 2's;
    divided by PARAMETER_SCALE when normalise, so each nuisance has unit spread under the renderer."""
    params = torch.cat([analysis["centre"], analysis["size"][..., None], analysis["brightness"][..., None]], 2)
    if normalise:
        params = params / PARAMETER_SCALE
    return params.reshape(len(params), -1)[analysis["valid"]]


def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix, by eigh (negative rounding -> 0)."""
    eigenvalues, vectors = torch.linalg.eigh(m)
    return (vectors * eigenvalues.clamp(min=0).sqrt()) @ vectors.T


def _gaussian_fit(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(x).double()
    if x.ndim != 2 or len(x) < 2 or not torch.isfinite(x).all():
        raise ValueError(f"need at least two finite rows of shape (N, D), got {tuple(x.shape)}")
    mean = x.mean(0)
    centred = x - mean
    return mean, centred.T @ centred / (len(x) - 1)


def frechet_distance(params_a: torch.Tensor, params_b: torch.Tensor) -> float:
    """The Fréchet distance between Gaussian fits (mean, unbiased covariance) of two sets of parameter vectors,
    exactly as FID defines it, in float64: |mu_a - mu_b|^2 + tr(A + B - 2 (A^1/2 B A^1/2)^1/2). The product
    is taken in its symmetric form A^1/2 B A^1/2, whose square root is real and found by eigh, rather than as
    sqrtm(A B), which is not symmetric and needs a general (complex) matrix square root."""
    mu_a, cov_a = _gaussian_fit(params_a)
    mu_b, cov_b = _gaussian_fit(params_b)
    root_a = _sqrtm_psd(cov_a)
    product = root_a @ cov_b @ root_a
    cross = torch.linalg.eigvalsh((product + product.T) / 2).clamp(min=0).sqrt().sum()
    value = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    return float(value.clamp(min=0))


def diversity(params: torch.Tensor, groups: torch.Tensor) -> float:
    """Mean over groups (e.g. prompts) with at least two members (e.g. seeds) of the spread of their parameter
    vectors: sqrt of the trace of the group's unbiased covariance, i.e. the RMS distance to the group mean."""
    params = torch.as_tensor(params).double()
    groups = torch.as_tensor(groups).long()
    _, group, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(counts), params.shape[1], dtype=torch.float64).index_add_(0, group, params)
    means = sums / counts[:, None]
    squares = torch.zeros(len(counts), dtype=torch.float64).index_add_(0, group, (params - means[group]).square().sum(1))
    several = counts >= 2
    if not several.any():
        raise ValueError("diversity needs a group with at least two members")
    return float((squares[several] / (counts[several] - 1)).sqrt().mean())


# ---------------------------------------------------------------- negative controls for the analyser
def random_blobs(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n images, each with two irregular blobs (unions of 2-4 discs of radius 1.2-2.8 px scattered around a slot,
    std 1.5 px) of random palette colours on a random axis: two objects where the world expects them, but of no
    shape of the world. A strict analyser should reject most of them."""
    axis = torch.randint(0, len(AXES), (n,), generator=generator)
    lin = torch.arange(RES, dtype=torch.float32) + 0.5
    y, x = torch.meshgrid(lin, lin, indexing="ij")
    img = torch.zeros(n, 3, RES, RES)
    for slot in range(2):
        discs = torch.randint(2, 5, (n,), generator=generator)
        centre = SLOTS[axis, slot][:, None] + 1.5 * torch.randn(n, 4, 2, generator=generator)
        radius = 1.2 + 1.6 * torch.rand(n, 4, generator=generator)
        inside = ((x - centre[..., 0, None, None]) ** 2 + (y - centre[..., 1, None, None]) ** 2) <= radius[..., None, None] ** 2
        inside &= (torch.arange(4) < discs[:, None])[..., None, None]
        blob = inside.any(1).float()
        colour = PALETTE[torch.randint(0, N_COLOURS, (n,), generator=generator)]
        img = torch.maximum(img, blob[:, None] * colour[..., None, None])
    return img * 2 - 1


def _print_summary() -> None:
    """The world's computed figures and the analyser's measured margins, as toyworld/README.md quotes them."""
    g = torch.Generator().manual_seed(0)
    print(f"resolution {RES}x{RES}; min gap between objects {MIN_GAP:.1f} px, min border {MIN_BORDER:.1f} px")
    print(f"vocabulary {VOCAB_SIZE} tokens ({len(WORDS)} words + {len(SPECIAL_TOKENS)} special); SEQ_LEN {SEQ_LEN}")
    print(f"scenes {N_SCENES}: {len(TRAIN_SCENES)} training, {len(HELD_OUT_SCENES)} held out "
          f"({len(VALIDATION_SCENES)} validation, {len(TEST_SCENES)} test scenes; "
          f"{len(VALIDATION_CAPTIONS)} validation and {len(TEST_CAPTIONS)} test captions)")
    lengths = [len(world.split_words(c)) for c in train_batch(4096, g)["captions"]]
    print(f"training caption length: {min(lengths)}-{max(lengths)} words, mean {sum(lengths) / len(lengths):.1f}")
    scenes = ALL_SCENES.repeat(2, 1)
    objects = sample_objects(scenes, g)
    images = render_objects(**objects)
    specs = specs_from_scenes(scenes, torch.zeros(len(scenes)))
    coverage = _coverage(objects["shape"].reshape(-1), objects["centre"].reshape(-1, 2)[:, 0],
                         objects["centre"].reshape(-1, 2)[:, 1], objects["size"].reshape(-1), RES)
    lit = (coverage * objects["brightness"].reshape(-1)[:, None, None] > LIT_THRESHOLD).sum((1, 2))
    print(f"lit pixels per rendered object: {int(lit.min())}-{int(lit.max())} (specks under {MIN_COMPONENT_AREA} ignored)")
    for std in (0.0, 0.05, 0.08):
        a = analyse(images + std * torch.randn(images.shape, generator=g))
        s = score(a, specs)
        errors = {k: (a[k] - objects[k]).abs().max().item() for k in ("centre", "size", "brightness")}
        reasons = torch.bincount(a["reason"], minlength=len(REJECT_REASONS))
        print(f"renders, noise std {std}: {len(images)} images, correct {s['correct'].float().mean():.4f} "
              f"({', '.join(f'{name} {int(c)}' for name, c in zip(REJECT_REASONS, reasons) if c)}); "
              f"min IoU {a['iou'].min():.3f}, max residual {a['residual'].max():.4f}, "
              f"max saturation {a['saturation'].max():.4f}; largest error: centre {errors['centre']:.3f} px, "
              f"size {errors['size']:.3f} px, brightness {errors['brightness']:.3f}")
    blobs = analyse(random_blobs(600, torch.Generator().manual_seed(0)))
    counts = torch.bincount(blobs["reason"], minlength=len(REJECT_REASONS))
    print("600 random blobs: " + ", ".join(f"{name} {int(c)}" for name, c in zip(REJECT_REASONS, counts)))
    two = blobs["n_objects"] == 2
    print(f"  the {int(two.sum())} with two objects: max IoU {blobs['iou'][two].amin(1).max():.3f}, "
          f"min residual {blobs['residual'][two].amax(1).min():.4f} (worse object of each image)")


if __name__ == "__main__":
    _print_summary()
