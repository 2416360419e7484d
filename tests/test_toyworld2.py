"""Tests for toy world 2 (toyworld/world2.py): scenes, captions, tokenizer, held-out and validation/test split,
the strict analyser (what it accepts and, as much, what it rejects) and the metrics.

Pure torch and seeded; about 15 s on one CPU thread.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from dice_testkit.tolerances import UNIT_ROUNDOFF, summation_error
from toyworld import world, world2

UNIT_ROUNDOFF_64 = 2.0**-53
# Coordinates are float32 values up to RES: a few operations on them are within this of the exact value.
COORDINATE_ROUNDING = 8 * UNIT_ROUNDOFF * world2.RES


def _tuples(rows: torch.Tensor) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in row) for row in rows}


def _analyse_scenes(scenes: torch.Tensor, seed: int, noise_std: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    objects = world2.sample_objects(scenes, g)
    images = world2.render_objects(**objects)
    if noise_std:
        images = images + noise_std * torch.randn(images.shape, generator=g)
    return objects, world2.analyse(images)


def _one_image(colours, shapes, centres, sizes=None, brightness=None) -> torch.Tensor:
    """One image with the listed objects, drawn by the world's own renderer."""
    k = len(colours)
    return world2.render_objects(torch.tensor([colours]), torch.tensor([shapes]), torch.tensor([centres], dtype=torch.float32),
                                 torch.tensor([sizes or [3.4] * k]), torch.tensor([brightness or [0.9] * k]))


def _reason(img: torch.Tensor) -> list[str]:
    return [world2.REJECT_REASONS[int(r)] for r in world2.analyse(img)["reason"]]


# ----------------------------------------------------------------------------- the world
def test_objects_never_overlap_and_stay_in_the_frame():
    assert world2.RES == 24 and world2.MIN_GAP > 2 and world2.MIN_BORDER > 1
    g = torch.Generator().manual_seed(0)
    scenes = world2.ALL_SCENES.repeat(4, 1)
    objects = world2.sample_objects(scenes, g)
    centre, size = objects["centre"], objects["size"]
    axis = scenes[:, 4]
    along = (centre[:, 1] - centre[:, 0]).gather(1, axis[:, None])[:, 0]
    gap = along - size.sum(1)  # between the bounding boxes, on the pair's axis
    assert gap.min() >= world2.MIN_GAP - COORDINATE_ROUNDING
    assert (centre - size[..., None]).min() >= world2.MIN_BORDER - COORDINATE_ROUNDING
    assert (centre + size[..., None]).max() <= world2.RES - world2.MIN_BORDER + COORDINATE_ROUNDING
    # no pixel is touched by both objects
    cover = [world2._coverage(objects["shape"][:, i], centre[:, i, 0], centre[:, i, 1], size[:, i], world2.RES) for i in (0, 1)]
    assert float((cover[0] * cover[1]).max()) == 0.0


def test_coverage_is_the_exact_area():
    r = 3.3
    cov = world2._coverage(torch.tensor([0, 1, 2]), torch.tensor([11.7] * 3), torch.tensor([12.2] * 3), torch.tensor([r] * 3),
                           world2.RES)
    area = cov.sum((1, 2)).double()
    exact = torch.tensor([(4 * 0.8 - 0.64) * r**2, 4 * r**2, 2 * r**2], dtype=torch.float64)
    # Square and cross: the 1-D overlaps telescope to the rounded edges, each within COORDINATE_ROUNDING, so a
    # rectangle's area is off by at most 2 * (2 r) * 2 * COORDINATE_ROUNDING (three rectangles make a cross),
    # plus a float32 sum of RES^2 terms.
    rounding = summation_error(world2.RES**2) * exact + 3 * 8 * r * COORDINATE_ROUNDING
    assert ((area - exact).abs()[:2] <= rounding[:2]).all()
    # Triangle: a strip's midpoint rule errs only where an edge crosses a pixel side, by at most (slope change 1/2) x
    # (strip height)^2 / 8, and each of the two edges crosses at most r + 2 sides
    strip = 1.0 / world2.TRIANGLE_SUB_ROWS
    assert abs(area[2] - exact[2]) <= 2 * (r + 2) * 0.5 * strip**2 / 8 + rounding[2]
    assert cov.min() >= 0 and cov.max() <= 1


def test_palette_shapes_and_latent_map_are_world_ones():
    assert world2.COLOURS == world.COLOURS and world2.SHAPES == world.SHAPES and world2.PALETTE is world.PALETTE
    assert world2.rgb_to_latent is world.rgb_to_latent and world2.latent_to_rgb is world.latent_to_rgb
    img = world2.render(world2.ALL_SCENES[:8], torch.Generator().manual_seed(1))
    assert img.shape == (8, 3, 24, 24) and img.min() >= -1 and img.max() <= 1
    # a latent is a 3-term sum (|terms| <= 0.5 each) and back a 4-term sum of those (<= 0.75 each)
    rounding = summation_error(4) * 3 + 4 * 0.5 * summation_error(3) * 1.5
    assert (world2.latent_to_rgb(world2.rgb_to_latent(img)) - img).abs().max() <= rounding


# ----------------------------------------------------------------------------- captions and tokenizer
def _all_phrasings():
    return [world2.Phrasing(p, s, v, a, b) for p, s, v, a, b in itertools.product(
        range(len(world2.PREFIXES)), range(len(world2.SUFFIXES)), range(2), (False, True), (False, True))]


def test_captions_parse_back_in_every_phrasing():
    g = torch.Generator().manual_seed(2)
    specs = world2.specs_from_scenes(world2.ALL_SCENES, torch.rand(len(world2.ALL_SCENES), generator=g) < 0.5)
    specs = world2.omit_colours(specs, 0.3, g)
    phrasings = _all_phrasings()
    for i, spec in enumerate(specs):
        phrasing = phrasings[i % len(phrasings)]
        assert world2.parse_caption(world2.caption(spec, phrasing)) == tuple(int(v) for v in spec)
    assert world2.parse_caption("a red square left of a blue cross") == (0, 1, 0, 2, 0)
    assert world2.parse_caption("There is a square to the right of a small cyan triangle, on a black background!") == (-1, 1, 1, 5, 2)
    assert world2.parse_caption("a red square") is None and world2.parse_caption("a red dog left of a cross") is None
    with pytest.raises(ValueError):
        world2.caption_targets(["a red square left of a blue cross", "a purple square"])
    assert world2.caption_targets(["a red square under a blue cross"]).tolist() == [[0, 1, 3, 2, 0]]


def test_vocabulary_is_computed_from_the_word_lists():
    words = set()
    for spec, phrasing in itertools.product(([0, 1, 0, 2, 0], [-1, 2, 1, 5, 1], [3, 0, 2, -1, 2], [4, 1, 3, 1, 0]), _all_phrasings()):
        words.update(world2.caption(spec, phrasing).split())
    words.update(world2.COLOURS + world2.SHAPES)
    assert world2.WORDS == sorted(words)
    assert world2.VOCAB_SIZE == len(world2.SPECIAL_TOKENS) + len(words) == len(set(world2.VOCAB.values()))
    assert list(world2.VOCAB)[:4] == world.SPECIAL_TOKENS
    # SEQ_LEN is the longest caption the grammar makes, plus start and end: nothing is truncated, nothing wasted
    longest = max(len(world2.caption([0, 0, 1, 0, 0], p).split()) for p in _all_phrasings())
    assert world2.SEQ_LEN == longest + 2


def test_tokenizer_clip_layout_varying_lengths_and_unknown_words():
    v = world2.VOCAB
    ids = world2.tokenize("a red square left of a blue cross")
    assert len(ids) == world2.SEQ_LEN
    assert ids[:10] == [world2.START_ID, v["a"], v["red"], v["square"], v["left"], v["of"], v["a"], v["blue"], v["cross"], world2.END_ID]
    assert ids[10:] == [world2.PAD_ID] * (world2.SEQ_LEN - 10)
    assert world2.tokenize("a purple blob left of a cross")[2:4] == [world2.UNK_ID, world2.UNK_ID]
    long = world2.tokenize(" ".join(["red"] * 60))
    assert len(long) == world2.SEQ_LEN and long[0] == world2.START_ID and long[-1] == world2.END_ID
    batch = world2.train_batch(512, torch.Generator().manual_seed(3))
    lengths = (batch["tokens"] != world2.PAD_ID).sum(1)
    assert len(set(lengths.tolist())) >= 8  # captions of many lengths
    assert not (batch["tokens"] == world2.UNK_ID).any()  # the grammar only uses vocabulary words
    assert (lengths <= world2.SEQ_LEN).all() and (batch["tokens"][:, 0] == world2.START_ID).all()
    assert [world2.parse_caption(c) for c in batch["captions"]] == [tuple(s) for s in batch["specs"].tolist()]


# ----------------------------------------------------------------------------- held-out rule and the split
def test_held_out_rule_and_what_training_still_sees():
    scenes, held, train = world2.ALL_SCENES, world2.HELD_OUT_SCENES, world2.TRAIN_SCENES
    assert len(scenes) == 6 * 3 * 6 * 3 * 2 == len(_tuples(scenes))
    assert len(held) + len(train) == len(scenes) and not (_tuples(held) & _tuples(train))
    o = lambda c, s: c * 3 + s  # noqa: E731
    assert _tuples(held) == {t for t in _tuples(scenes) if sum(t) % 3 == 0 and o(t[0], t[1]) > o(t[2], t[3])}
    train_set = _tuples(train)
    # the mirror image of every held-out scene is a training scene
    for c1, s1, c2, s2, axis in _tuples(held):
        assert (c2, s2, c1, s1, axis) in train_set
    # every four of a held-out scene's five attributes (hence every pair and triple) occur in a training scene
    for scene in _tuples(held):
        for kept in itertools.combinations(range(5), 4):
            assert any(all(t[i] == scene[i] for i in kept) for t in train_set), (scene, kept)
    # every value pair of any two attribute slots occurs in training
    for i, j in itertools.combinations(range(5), 2):
        assert {(t[i], t[j]) for t in train_set} == {(t[i], t[j]) for t in _tuples(scenes)}


def test_no_held_out_scene_in_training_images_or_captions():
    g = torch.Generator().manual_seed(4)
    # caption noise alone, on many captions (no rendering): never names a held-out scene, and really applies
    clean = world2.specs_from_scenes(world2.sample_train_scenes(200_000, g), torch.rand(200_000, generator=g) < 0.5)
    clean = world2.omit_colours(clean, 0.2, g)
    noisy = world2.corrupt(clean, 0.3, g)
    assert not world2.names_held_out(noisy).any()
    assert (noisy != clean).any(1).float().mean() > 0.5
    assert torch.equal(noisy == world2.UNSPECIFIED, clean == world2.UNSPECIFIED)  # noise never fills or omits a colour
    # whole training batches: the images' scenes and the captions' text
    for _ in range(8):
        batch = world2.train_batch(2048, g)
        assert not world2.is_held_out(batch["scenes"]).any()
        assert not world2.names_held_out(world2.caption_targets(batch["captions"])).any()


def test_refiner_captions_are_distinct_seeded_training_captions():
    captions = world2.refiner_captions(128, seed=0)
    assert len(captions) == len(set(captions)) == 128
    assert captions == world2.refiner_captions(128, seed=0) and captions != world2.refiner_captions(128, seed=1)
    specs = world2.caption_targets(captions)
    assert not world2.names_held_out(specs).any()
    held_out_text = set(world2.VALIDATION_CAPTIONS) | set(world2.TEST_CAPTIONS)
    assert not held_out_text & set(captions)
    # phrasings vary, and some colours are left for the teacher to choose
    assert len({len(c.split()) for c in captions}) >= 5
    assert 0 < float((specs[:, [0, 3]] == world2.UNSPECIFIED).float().mean()) < 0.5

def test_training_check_captions_are_training_scenes_in_both_phrasings():
    captions = world2.training_check_captions()
    assert len(captions) == len(world2.VALIDATION_CAPTIONS) and captions == world2.training_check_captions()
    specs = world2.caption_targets(captions)
    assert not world2.names_held_out(specs).any() and not (specs == world2.UNSPECIFIED).any()
    scenes = world2.scenes_from_specs(specs)
    assert torch.equal(scenes[0::2], scenes[1::2])  # each scene twice: subject first, then second

def test_validation_and_test_split_the_held_out_set():
    val, test = _tuples(world2.VALIDATION_SCENES), _tuples(world2.TEST_SCENES)
    assert not (val & test) and val | test == _tuples(world2.HELD_OUT_SCENES)
    assert abs(len(val) - len(test)) <= 1
    for captions, scenes in ((world2.VALIDATION_CAPTIONS, val), (world2.TEST_CAPTIONS, test)):
        specs = world2.caption_targets(captions)
        assert len(captions) == 2 * len(scenes) == len(set(captions))
        assert world2.is_fully_specified(specs).all() and world2.names_held_out(specs).all()
        assert _tuples(world2.scenes_from_specs(specs)) == scenes  # both phrasings of a scene in the same split
        assert set(specs[:, 2].tolist()) == {0, 1, 2, 3}


# ----------------------------------------------------------------------------- the analyser accepts right images
@pytest.mark.parametrize("noise_std", [0.0, 0.05])
def test_analyser_is_exact_on_every_scene(noise_std):
    scenes = world2.ALL_SCENES.repeat(2, 1)
    objects, a = _analyse_scenes(scenes, seed=5, noise_std=noise_std)
    for second in (False, True):  # either phrasing
        specs = world2.specs_from_scenes(scenes, torch.full((len(scenes),), second))
        s = world2.score(a, specs)
        for key in ("valid", "correct", "binding", "relation", "colour", "shape"):
            assert bool(s[key].all()), (key, noise_std, int((~s[key]).sum()))
    # the fitted parameters, in the renderer's order (object 1 left/top); python -m toyworld.world2 prints the largest
    # errors at noise std 0.05 (another seed): 0.072 px (centre), 0.070 px (size), 0.032 (brightness)
    assert (a["centre"] - objects["centre"]).abs().max() < 0.1
    assert (a["size"] - objects["size"]).abs().max() < 0.1
    assert (a["brightness"] - objects["brightness"]).abs().max() < 0.04
    assert a["iou"].min() >= world2.MIN_IOU and a["residual"].max() <= world2.MAX_RESIDUAL


def test_unspecified_colours_come_out_uniform():
    n = 3000
    g = torch.Generator().manual_seed(6)
    spec = torch.tensor([[world2.UNSPECIFIED, 1, 0, world2.UNSPECIFIED, 0]]).repeat(n, 1)  # "a square left of a cross"
    images, _ = world2.render_specs(spec, g)
    a = world2.analyse(images)
    assert a["valid"].all() and world2.score(a, spec)["correct"].all()
    p = 1 / world2.N_COLOURS
    # each colour's count is Binomial(n, 1/6); 5 standard deviations: a two-sided tail of 6e-7 per count
    bound = 5 * math.sqrt(n * p * (1 - p))
    for slot in (0, 1):
        counts = torch.bincount(a["colour"][:, slot], minlength=world2.N_COLOURS).double()
        assert (counts - n * p).abs().max() <= bound, (slot, counts.tolist(), bound)
    # so a negative "red" has about 1/6 of the images to act on
    red = (a["colour"] == 0).any(1).float().mean().item()
    assert abs(red - (1 - (1 - p) ** 2)) <= 5 * math.sqrt(red * (1 - red) / n)


def test_training_omits_colours_at_the_rate_the_rule_implies():
    n = 60_000
    g = torch.Generator().manual_seed(7)
    scenes = world2.sample_train_scenes(n, g)
    subject_second = torch.rand(n, generator=g) < 0.5  # as train_batch draws the phrasing
    specs = world2.omit_colours(world2.specs_from_scenes(scenes, subject_second), 0.2, g)
    truth = world2.specs_from_scenes(scenes, subject_second)
    # The colour an omitted caption leaves open follows the training scenes' colour marginals. The held-out rule
    # tilts each slot's marginal (held-out scenes have the larger object first), but the two slots mirror each other,
    # so with the subject first or second at random the open colour is uniform: enumerated over the training scenes.
    first = torch.bincount(world2.TRAIN_SCENES[:, 0], minlength=6).double() / len(world2.TRAIN_SCENES)
    second = torch.bincount(world2.TRAIN_SCENES[:, 2], minlength=6).double() / len(world2.TRAIN_SCENES)
    expected = (first + second) / 2
    assert (expected - 1 / 6).abs().max() <= 8 * UNIT_ROUNDOFF_64
    for col in (0, 3):
        omitted = specs[:, col] == world2.UNSPECIFIED
        m = int(omitted.sum())
        assert abs(m - 0.2 * n) <= 5 * math.sqrt(n * 0.2 * 0.8)
        counts = torch.bincount(truth[omitted, col], minlength=6).double()
        assert ((counts - m * expected).abs() <= 5 * (m * expected * (1 - expected)).sqrt()).all(), counts.tolist()


# ----------------------------------------------------------------------------- the analyser rejects wrong images
def test_rejects_wrong_object_counts_and_a_flooded_frame():
    one = _one_image([0], [1], [[6.0, 12.0]])
    three = _one_image([0, 2, 3], [1, 0, 2], [[6.0, 6.0], [18.0, 6.0], [12.0, 18.0]])
    empty = -torch.ones(1, 3, 24, 24)
    red_frame = torch.tensor([1.0, -1.0, -1.0])[None, :, None, None].expand(1, 3, 24, 24).clone()
    assert _reason(one) == ["object_count"] and _reason(three) == ["object_count"] and _reason(empty) == ["object_count"]
    assert _reason(red_frame) == ["flooded"]
    a = world2.analyse(torch.cat([one, three, empty]))
    assert a["n_objects"].tolist() == [1, 3, 0] and not a["valid"].any()
    assert (a["colour"] == -1).all() and torch.isnan(a["centre"]).all()
    with pytest.raises(ValueError):
        world2.analyse(torch.zeros(1, 3, 16, 16))  # a world.py image


def test_rejects_overlapping_and_touching_objects():
    for distance in (3.0, 5.0, 6.5):  # from overlapping to edges just touching (2 x 3.4 = 6.8)
        img = _one_image([0, 2], [1, 0], [[9.0, 12.0], [9.0 + distance, 12.0]])
        assert _reason(img) == ["object_count"], distance
        assert world2.analyse(img)["n_objects"].item() == 1


def test_a_speck_is_not_an_object():
    img = _one_image([0, 2], [1, 0], [[6.0, 12.0], [18.0, 12.0]])
    specked = img.clone()
    specked[0, :, 2, 2] = 1.0  # one white pixel in a corner
    a = world2.analyse(specked)
    assert a["valid"].item() and a["n_objects"].item() == 2


def test_rejects_random_blobs():
    a = world2.analyse(world2.random_blobs(600, torch.Generator().manual_seed(8)))
    # measured: none of 600 (python -m toyworld.world2); two objects were found in most, so it is the fit that rejects
    assert a["valid"].float().mean() < 0.05
    assert (a["n_objects"] == 2).float().mean() > 0.5
    assert (a["reason"] == world2.REASON["poor_fit"]).float().mean() > 0.5


def test_rejects_over_saturated_images_before_clamping():
    scenes = world2.ALL_SCENES[:64]
    g = torch.Generator().manual_seed(9)
    img = world2.render(scenes, g)
    lit = img.amax(1, keepdim=True) > 0
    over_driven = torch.where(lit, img * 1.5, img)  # CFG-style: lit channels pushed past 1 (and past -1)
    assert _reason(over_driven) == ["saturated"] * 64
    # the same images clamped look valid: only the unclamped pixels show the saturation
    assert world2.analyse(over_driven.clamp(-1, 1))["valid"].all()
    assert (world2.saturation_rate(over_driven) > world2.MAX_SATURATED_FRACTION).all()
    assert (world2.saturation_rate(img) == 0).all()


def test_saturation_rate_counts_pixels_beyond_the_margin():
    img = -torch.ones(2, 3, 4, 4)  # 16 pixels: the fractions below are exact in float32
    img[0, 1, 0, :3] = 1.5  # 3 pixels over
    img[0, :, 1, 0] = -1.5  # 1 pixel under, in all channels: still one pixel
    img[0, 0, 2, 0] = 1 + world2.SATURATION_MARGIN / 2  # within the margin
    assert world2.saturation_rate(img).tolist() == [4 / 16, 0.0]
    assert world2.saturation_rate(img, margin=0.0).tolist() == [5 / 16, 0.0]


def test_saturation_sites_split_saturation_between_objects_and_background():
    img = -torch.ones(2, 3, 4, 4)  # 16 pixels: the fractions below are exact in float32
    img[0, 0, 0, :3] = 1.6  # 3 lit pixels driven over
    img[0, 0, 0, 3] = 0.9  # a lit pixel in range
    img[0, 1, 1, :2] = -1.5  # 2 background pixels pushed under black
    sites = world2.saturation_sites(img)
    assert sites["on_objects"].tolist() == [3 / 16, 0.0]
    assert sites["on_background"].tolist() == [2 / 16, 0.0]
    assert sites["peak"].tolist() == [pytest.approx(1.6), -1.0]
    assert torch.equal(sites["on_objects"] + sites["on_background"], world2.saturation_rate(img))


def test_rejects_colours_off_the_palette_and_diagonal_pairs():
    img = _one_image([0, 2], [1, 0], [[6.0, 12.0], [18.0, 12.0]])
    orange = img.clone()
    first = orange[0, 0] > 0  # the red object's pixels
    orange[0, 1][first] = orange[0, 0][first] * 0.5 - 0.5  # green at half the red: orange
    assert _reason(orange) == ["off_palette"]
    diagonal = _one_image([0, 2], [1, 0], [[7.0, 7.0], [17.0, 17.0]])
    assert _reason(diagonal) == ["diagonal"]


def test_swapped_bindings_are_binding_errors():
    # the caption: a red square left of a blue cross
    spec = torch.tensor([[0, 1, 0, 2, 0]])
    right = _one_image([0, 2], [1, 0], [[6.0, 12.0], [18.0, 12.0]])
    colours_swapped = _one_image([2, 0], [1, 0], [[6.0, 12.0], [18.0, 12.0]])  # a blue square left of a red cross
    mirrored = _one_image([2, 0], [0, 1], [[6.0, 12.0], [18.0, 12.0]])  # a blue cross left of a red square
    stacked = _one_image([0, 2], [1, 0], [[12.0, 6.0], [12.0, 18.0]])  # a red square above a blue cross
    s = {name: world2.score(world2.analyse(img), spec) for name, img in
         (("right", right), ("colours_swapped", colours_swapped), ("mirrored", mirrored), ("stacked", stacked))}
    flags = {name: {k: bool(v) for k, v in r.items()} for name, r in s.items()}
    assert all(flags["right"].values())
    assert flags["colours_swapped"] == {"valid": True, "relation": True, "colour": False, "shape": True,
                                        "binding": False, "correct": False}
    # the right objects in the wrong order: bound correctly, but the relation is not the caption's
    assert flags["mirrored"] == {"valid": True, "relation": True, "colour": False, "shape": False,
                                 "binding": True, "correct": False}
    assert flags["stacked"]["binding"] and not flags["stacked"]["relation"] and not flags["stacked"]["correct"]
    # the same picture described from the other object: "a blue cross right of a red square"
    assert all(bool(v) for v in world2.score(world2.analyse(right), torch.tensor([[2, 0, 1, 0, 1]])).values())
    # an unspecified colour is not scored, a specified one is
    assert bool(world2.score(world2.analyse(colours_swapped), torch.tensor([[-1, 1, 0, -1, 0]]))["correct"])
    assert not bool(world2.score(world2.analyse(colours_swapped), torch.tensor([[-1, 1, 0, 2, 0]]))["binding"])


# ----------------------------------------------------------------------------- metrics
def _with_moments(mean: torch.Tensor, cov: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n float64 samples whose sample mean and unbiased covariance are exactly (to rounding) mean and cov."""
    x = torch.randn(n, len(mean), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x - x.mean(0)
    whiten = torch.linalg.inv(torch.linalg.cholesky(x.T @ x / (n - 1)))
    return x @ whiten.T @ torch.linalg.cholesky(cov).T + mean


def _frechet_tolerance(*covs: torch.Tensor) -> float:
    """Rounding bound for frechet_distance on D x D covariances in float64. Symmetric eigensolvers are backward
    stable: computed eigenvalues are within about D * u * ||M|| of exact ones (Golub & Van Loan, 8.4), and the
    matrix products before them add D * u * ||M|| each. The square roots turn an eigenvalue error e of
    A^1/2 B A^1/2 into e / (2 sqrt(lambda)) <= e / (2 lambda_min(A)^1/2 lambda_min(B)^1/2), and the trace sums D of
    them, doubled. Also the samples' own moments are set by a whitening step with relative error about D * u * kappa.
    The constant 16 covers the few such steps; the bound is still around 1e-12 for the matrices below."""
    d = covs[0].shape[0]
    top = max(float(torch.linalg.eigvalsh(c).max()) for c in covs)
    low = min(float(torch.linalg.eigvalsh(c).min()) for c in covs)
    return 16 * d * d * UNIT_ROUNDOFF_64 * top * (top / low)


def test_frechet_distance_is_zero_on_identical_sets_and_symmetric():
    cov = torch.tensor([[2.0, 0.3, 0.1], [0.3, 1.0, -0.2], [0.1, -0.2, 0.5]], dtype=torch.float64)
    a = _with_moments(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), cov, 400, seed=10)
    assert world2.frechet_distance(a, a) <= _frechet_tolerance(cov)
    b = torch.randn(300, 3, generator=torch.Generator().manual_seed(11), dtype=torch.float64) * 1.3 + 0.2
    b_cov = torch.cov(b.T)
    d_ab, d_ba = world2.frechet_distance(a, b), world2.frechet_distance(b, a)
    assert d_ab > 0.1 and abs(d_ab - d_ba) <= _frechet_tolerance(cov, b_cov) * max(1.0, d_ab)
    with pytest.raises(ValueError):
        world2.frechet_distance(a[:1], b)
    with pytest.raises(ValueError):
        world2.frechet_distance(torch.full((3, 3), float("nan")), b)


def test_frechet_distance_matches_closed_forms():
    f64 = dict(dtype=torch.float64)
    # 1-D: (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2
    a = _with_moments(torch.tensor([1.5], **f64), torch.tensor([[4.0]], **f64), 200, seed=12)
    b = _with_moments(torch.tensor([-0.5], **f64), torch.tensor([[0.25]], **f64), 300, seed=13)
    tol = _frechet_tolerance(torch.tensor([[4.0]], **f64), torch.tensor([[0.25]], **f64))
    assert abs(world2.frechet_distance(a, b) - ((1.5 + 0.5) ** 2 + (2.0 - 0.5) ** 2)) <= tol
    # diagonal: the per-dimension sum
    va, vb = torch.tensor([1.0, 2.0, 0.5, 3.0], **f64), torch.tensor([0.5, 2.0, 2.0, 1.0], **f64)
    ma, mb = torch.tensor([0.0, 1.0, 2.0, -1.0], **f64), torch.tensor([0.5, 1.0, 0.0, -1.0], **f64)
    a = _with_moments(ma, torch.diag(va), 500, seed=14)
    b = _with_moments(mb, torch.diag(vb), 500, seed=15)
    want = float((ma - mb).square().sum() + (va.sqrt() - vb.sqrt()).square().sum())
    assert abs(world2.frechet_distance(a, b) - want) <= _frechet_tolerance(torch.diag(va), torch.diag(vb))
    # 2-D covariances that do not commute: tr (A^1/2 B A^1/2)^1/2 = sqrt(tr(AB) + 2 sqrt(det A det B))
    ca = torch.tensor([[2.0, 0.0], [0.0, 0.5]], **f64)
    angle = torch.tensor(0.6, **f64)
    rot = torch.stack([torch.stack([angle.cos(), -angle.sin()]), torch.stack([angle.sin(), angle.cos()])])
    cb = rot @ torch.diag(torch.tensor([3.0, 0.2], **f64)) @ rot.T
    assert not torch.allclose(ca @ cb, cb @ ca)
    a = _with_moments(torch.zeros(2, **f64), ca, 400, seed=16)
    b = _with_moments(torch.tensor([1.0, 1.0], **f64), cb, 400, seed=17)
    cross = math.sqrt(float((ca @ cb).trace()) + 2 * math.sqrt(float(torch.linalg.det(ca) * torch.linalg.det(cb))))
    want = 2.0 + float(ca.trace() + cb.trace()) - 2 * cross
    assert abs(world2.frechet_distance(a, b) - want) <= _frechet_tolerance(ca, cb)


def test_frechet_distance_of_analysed_renders():
    # two seeds of the same scenes are one distribution; a shifted renderer is another
    scenes = world2.ALL_SCENES.repeat(2, 1)
    _, a1 = _analyse_scenes(scenes, seed=18)
    _, a2 = _analyse_scenes(scenes, seed=19)
    p1, p2 = world2.object_parameters(a1), world2.object_parameters(a2)
    assert p1.shape == (len(scenes), 8)
    same = world2.frechet_distance(p1, p2)
    assert same < 0.1
    # Dimming every object by one PARAMETER_SCALE moves the mean by s and leaves the covariance, so the distance
    # becomes exactly same + |s|^2 + 2 s . (mu_1 - mu_2); in float64 up to the rounding _frechet_tolerance bounds,
    # plus that of the mean terms (D products of values about |mu|)
    p1, p2 = p1.double(), p2.double()
    s = torch.zeros(8, dtype=torch.float64)
    s[[3, 7]] = 1.0  # both objects' brightness, in units of PARAMETER_SCALE
    want = same + float(s.square().sum() + 2 * (s * (p1.mean(0) - p2.mean(0))).sum())
    scale = float(p1.mean(0).square().sum() + p2.mean(0).square().sum())
    tolerance = _frechet_tolerance(torch.cov(p1.T), torch.cov(p2.T)) + 16 * 8 * UNIT_ROUNDOFF_64 * scale
    assert abs(world2.frechet_distance(p1, p2 - s) - want) <= tolerance
    assert world2.frechet_distance(p1, p2 - s) > 1.5


def test_diversity_is_the_mean_spread_per_group():
    f64 = dict(dtype=torch.float64)
    params = torch.tensor([[0.0, 0.0], [2.0, 0.0],  # group 5: distance 2, spread sqrt(2)
                           [1.0, 1.0], [1.0, 1.0], [1.0, 1.0],  # group 7: no spread
                           [9.0, 9.0]], **f64)  # group 8: a single member, not counted
    groups = torch.tensor([5, 5, 7, 7, 7, 8])
    assert abs(world2.diversity(params, groups) - math.sqrt(2) / 2) <= 4 * UNIT_ROUNDOFF_64
    with pytest.raises(ValueError):
        world2.diversity(params[:1], groups[:1])
    # on analysed renders: many seeds of one prompt are diverse, identical images are not
    scenes = world2.ALL_SCENES[:4].repeat_interleave(16, 0)
    _, a = _analyse_scenes(scenes, seed=20)
    prompts = torch.arange(4).repeat_interleave(16)
    diverse = world2.diversity(world2.object_parameters(a), prompts)
    collapsed = world2.object_parameters(a).view(4, 16, 8)[:, :1].expand(4, 16, 8).reshape(-1, 8)
    # under the renderer each of the 8 normalised parameters has unit variance, so the spread is about sqrt(8)
    assert 2.0 < diverse < 3.6 and world2.diversity(collapsed, prompts) == 0.0
