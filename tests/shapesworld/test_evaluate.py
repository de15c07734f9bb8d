"""The evaluator: exact on the world's own renders, robust to blur and noise, and it rejects images
that break the prompt (wrong count, colour, position, missing object), also when the extra or wrong
object is one the world never draws (off-palette, faded, small, two-tone, merged, unclassifiable)."""

import numpy as np
import pytest

from ttsvar_core import shapesworld as sw
from ttsvar_core.shapesworld.perturb import add_noise, box_blur, jpeg
from ttsvar_core.shapesworld.render import background, draw_coverage

PER_CATEGORY = 300


def _prompts(category, n, seed):
    """n prompts of a category, test and train alike (the evaluator must work on both)."""
    prompts = sw.all_prompts(category)
    return [prompts[k] for k in np.random.default_rng(seed).integers(len(prompts), size=n)]


@pytest.fixture(scope="module")
def sweep():
    """PER_CATEGORY renders per category: (prompt, image, layout); odd seeds get a textured background."""
    out = []
    for c, category in enumerate(sw.CATEGORIES):
        for n, prompt in enumerate(_prompts(category, PER_CATEGORY, c)):
            seed = 10_000 * c + n
            img, layout = sw.render_prompt(prompt, seed, texture=bool(n % 2))
            out.append((prompt, img, layout))
    return out


def _accuracy(sweep, degrade):
    rng = np.random.default_rng(0)
    results = [sw.evaluate(degrade(img, rng), prompt) for prompt, img, _ in sweep]
    return sw.aggregate(results)


def test_clean_renders_score_99(sweep):
    summary = _accuracy(sweep, lambda img, rng: img)
    assert summary["n"] == {c: PER_CATEGORY for c in sw.CATEGORIES}
    for category, acc in summary["per_category"].items():
        assert acc >= 0.99, (category, acc)


def test_blurred_renders_score_95(sweep):
    summary = _accuracy(sweep, lambda img, rng: box_blur(img))
    for category, acc in summary["per_category"].items():
        assert acc >= 0.95, (category, acc)


def test_noisy_renders_score_95(sweep):
    summary = _accuracy(sweep, lambda img, rng: add_noise(img, 8.0, rng))
    for category, acc in summary["per_category"].items():
        assert acc >= 0.95, (category, acc)


def test_detections_match_the_layout(sweep):
    """Stronger than prompt accuracy: every drawn object is found once, with its shape, colour and
    position (within a pixel), and nothing else is found."""
    wrong = 0
    for prompt, img, layout in sweep[::5]:
        dets = sorted(sw.detect(img), key=lambda d: (d.x, d.y))
        objs = sorted(layout.objects, key=lambda o: (o.x, o.y))
        ok = len(dets) == len(objs) and all(
            d.shape == o.shape and d.colour == o.colour and abs(d.x - o.x) <= 1 and abs(d.y - o.y) <= 1
            for d, o in zip(dets, objs))
        wrong += not ok
    assert wrong <= len(sweep[::5]) // 100


# ---- rejection: images that break the prompt must be scored incorrect, clean and blurred ----

def _other(values, value, rng):
    return values[(values.index(value) + 1 + rng.integers(len(values) - 1)) % len(values)]


def _wrong_count(prompt, rng):
    (obj,) = prompt.objects
    count = obj.count + 1 if obj.count < sw.MAX_COUNT else obj.count - 1
    if obj.count > 1 and rng.random() < 0.5:
        count = obj.count - 1
    return sw.make_prompt("counting", [sw.ObjectSpec(obj.shape, obj.colour, count)])


def _wrong_colour(prompt, rng):
    if prompt.category == "color_attr":  # swap the colours: right shapes, right colours, wrong binding
        a, b = prompt.objects
        return sw.make_prompt("color_attr", [sw.ObjectSpec(a.shape, b.colour), sw.ObjectSpec(b.shape, a.colour)])
    (obj,) = prompt.objects
    return sw.make_prompt("colors", [sw.ObjectSpec(obj.shape, _other(sw.COLOURS, obj.colour, rng))])


def _swapped_position(prompt, rng):
    i, rel, j = prompt.relation
    inverse = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}[rel]
    return sw.make_prompt("position", prompt.objects, (i, inverse, j))


def _turned_position(prompt, rng):
    i, rel, j = prompt.relation
    turned = ("above", "below") if rel in ("left of", "right of") else ("left of", "right of")
    return sw.make_prompt("position", prompt.objects, (i, turned[rng.integers(2)], j))


def _missing_object(prompt, rng):
    keep = prompt.objects[rng.integers(2)]
    return sw.make_prompt("colors" if keep.colour else "single_object", [keep])


def _wrong_shape(prompt, rng):
    (obj,) = prompt.objects
    return sw.make_prompt(prompt.category, [sw.ObjectSpec(_other(sw.SHAPES, obj.shape, rng), obj.colour)])


CASES = [
    ("counting", _wrong_count),
    ("colors", _wrong_colour),
    ("color_attr", _wrong_colour),
    ("position", _swapped_position),
    ("position", _turned_position),
    ("two_object", _missing_object),
    ("color_attr", _missing_object),
    ("position", _missing_object),
    ("single_object", _wrong_shape),
    ("colors", _wrong_shape),
]


@pytest.mark.parametrize("category, corrupt", CASES, ids=[f"{c}-{f.__name__[1:]}" for c, f in CASES])
def test_broken_images_are_rejected(category, corrupt):
    rng = np.random.default_rng(sw.CATEGORIES.index(category))
    accepted = []
    for n, prompt in enumerate(_prompts(category, 40, seed=99)):
        wrong = corrupt(prompt, rng)
        img, _ = sw.render_prompt(wrong, 500 + n)
        for image in (img, box_blur(img)):
            result = sw.evaluate(image, prompt)
            assert result.category == category
            if result.correct:
                accepted.append((prompt.text, wrong.text))
    assert not accepted


# ---- the scoring rules on hand-made layouts ----

def _image(*objects):
    return sw.render_layout(sw.Layout(tuple(sw.PlacedObject(*o) for o in objects)))


def test_extra_objects_do_not_fail_object_prompts():
    img = _image(("circle", "red", 16, 32, 18), ("star", "blue", 48, 32, 18))
    assert sw.evaluate(img, sw.make_prompt("single_object", [sw.ObjectSpec("circle")])).correct
    assert sw.evaluate(img, sw.make_prompt("colors", [sw.ObjectSpec("star", "blue")])).correct
    assert sw.evaluate(img, sw.make_prompt("counting", [sw.ObjectSpec("circle", None, 1)])).correct
    assert not sw.evaluate(img, sw.make_prompt("counting", [sw.ObjectSpec("circle", None, 2)])).correct


def test_counting_is_exact():
    img = _image(("square", "red", 14, 14, 16), ("square", "cyan", 50, 14, 16), ("square", "red", 14, 50, 16))
    counts = [sw.evaluate(img, sw.make_prompt("counting", [sw.ObjectSpec("square", None, n)])).correct
              for n in (1, 2, 3, 4)]
    assert counts == [False, False, True, False]
    # the non-counting categories ask for at least one
    assert sw.evaluate(img, sw.make_prompt("single_object", [sw.ObjectSpec("square")])).correct


def test_a_duplicate_on_the_wrong_side_fails_position():
    prompt = sw.make_prompt("position", [sw.ObjectSpec("circle", "red"), sw.ObjectSpec("star", "blue")],
                            (0, "left of", 1))
    assert sw.evaluate(_image(("circle", "red", 12, 32, 16), ("star", "blue", 32, 32, 16)), prompt).correct
    both_sides = _image(("circle", "red", 12, 32, 16), ("star", "blue", 32, 32, 16), ("circle", "red", 52, 32, 16))
    assert not sw.evaluate(both_sides, prompt).correct


def test_relation_rule():
    def det(x, y, size=16):
        return sw.Detection("circle", "red", x, y, size, size, size * size, 0.0)
    a = det(20, 32)
    assert sw.relation_holds(a, "left of", det(40, 32))
    assert sw.relation_holds(a, "left of", det(40, 45))           # 20 across, 13 down: more across
    assert not sw.relation_holds(a, "left of", det(40, 55))       # 20 across, 23 down: below instead
    assert sw.relation_holds(a, "above", det(40, 55))
    assert not sw.relation_holds(a, "left of", det(22, 32))       # 2 px is within the margin (3.2 px)
    assert sw.relation_holds(det(40, 32), "right of", a)
    assert sw.relation_holds(det(20, 50), "below", a)
    rng = np.random.default_rng(0)
    for _ in range(500):  # the four relations are mutually exclusive
        b = det(*rng.uniform(0, 64, 2))
        assert sum(sw.relation_holds(a, rel, b) for rel in sw.RELATIONS) <= 1


def test_unknown_blobs_match_nothing():
    # a long bar and two merged circles are no shape of the world
    bar = np.full((64, 64, 3), sw.BACKGROUND, np.uint8)
    bar[28:38, 8:56] = sw.PALETTE["red"]
    merged = _image(("circle", "blue", 24, 32, 20), ("circle", "blue", 38, 32, 20))
    for img in (bar, merged):
        dets = sw.detect(img)
        assert len(dets) == 1 and dets[0].shape is None
        for shape in sw.SHAPES:
            assert not sw.evaluate(img, sw.make_prompt("single_object", [sw.ObjectSpec(shape)])).correct


def test_blank_and_noise_images_have_no_objects():
    blank = np.full((64, 64, 3), sw.BACKGROUND, np.uint8)
    assert sw.detect(blank) == ()
    assert sw.detect(add_noise(blank, 12.0, 0)) == ()


def test_input_formats_agree():
    torch = pytest.importorskip("torch")
    from PIL import Image
    prompt = sw.test_prompts("color_attr")[0]
    img, _ = sw.render_prompt(prompt, 11)
    reference = sw.detect(img)
    assert len(reference) == 2
    assert sw.detect(torch.from_numpy(img)) == reference
    assert sw.detect(torch.from_numpy(img).permute(2, 0, 1).float() / 255) == reference
    assert sw.detect(Image.fromarray(img)) == reference
    batch = torch.from_numpy(np.stack([img, img]))
    assert [r.correct for r in sw.evaluate_batch(batch, [prompt, prompt])] == [True, True]


def test_larger_canvas():
    """Renders at 128x128 (coordinates reported in the 64x64 frame) are scored the same."""
    for n, prompt in enumerate(_prompts("position", 30, seed=5)):
        img, _ = sw.render_prompt(prompt, n, canvas=128)
        assert sw.evaluate(img, prompt).correct, prompt.text


def test_aggregate_is_the_mean_of_category_accuracies():
    results = ([sw.EvalResult(True, "counting")] * 3 + [sw.EvalResult(False, "counting")]
               + [sw.EvalResult(True, "position")])
    summary = sw.aggregate(results)
    assert summary["per_category"] == {"counting": 0.75, "position": 1.0}
    assert summary["overall"] == pytest.approx(0.875)
    assert summary["image_accuracy"] == pytest.approx(0.8)
    assert summary["n"] == {"counting": 4, "position": 1}


# ---- adversarial images: every object a person would count is counted ----
# Hand-painted with the renderer's own coverage maps; colours may be off the palette, shapes faded
# (alpha < 1) or painted only where a mask allows (two-tone objects). Every test here but the last holds
# images that the evaluator judged wrongly while it saw palette colours only.

Y, X = np.mgrid[0:64, 0:64] + 0.5  # pixel centres
# off-palette colours; the palette masks used to drop the first five and read ORANGE and PINK as red
GREY, BROWN, TEAL, DARK, KHAKI = (120, 120, 120), (150, 90, 40), (20, 130, 130), (60, 60, 60), (200, 200, 120)
ORANGE, PINK = (235, 110, 35), (230, 60, 120)


def _blend(img, shape, colour, x, y, size, alpha=1.0, where=True):
    """One shape blended like render_layout, at `alpha` strength, on the pixels the boolean mask `where`
    allows; colour is a palette name or an RGB triple."""
    rgb = np.asarray(sw.PALETTE.get(colour, colour), np.float32)
    a = (draw_coverage(shape, x, y, size) * alpha * where)[..., None]
    return img * (1 - a) + rgb * a


def _paint(*strokes):
    """A uint8 image of _blend strokes on the plain background."""
    img = background()
    for stroke in strokes:
        img = _blend(img, *stroke)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _prompt(category, *objects, relation=None):
    """objects: (shape, colour or None, count) tuples, trailing fields optional."""
    return sw.make_prompt(category, [sw.ObjectSpec(*o) for o in objects], relation)


def _counting(shape, n):
    return _prompt("counting", (shape, None, n))


def _verdicts(img, *prompts):
    return [sw.evaluate(img, p).correct for p in prompts]


@pytest.mark.parametrize("colour", [GREY, BROWN, TEAL, DARK, KHAKI])
def test_a_third_object_in_an_off_palette_colour_is_counted(colour):
    img = _paint(("circle", "red", 14, 14, 18), ("circle", "blue", 48, 14, 18), ("circle", colour, 31, 46, 18))
    assert _verdicts(img, _counting("circle", 2), _counting("circle", 3)) == [False, True]


def test_an_off_palette_colour_is_not_the_named_colour():
    for colour, near in ((ORANGE, "red"), (PINK, "red"), ((110, 200, 110), "green")):
        img = _paint(("circle", colour, 20, 32, 20), ("square", "blue", 46, 32, 18))
        assert _verdicts(img, _prompt("colors", ("circle", near)), _prompt("single_object", ("circle",)),
                         _prompt("color_attr", ("circle", near), ("square", "blue"))) == [False, True, False]


@pytest.mark.parametrize("alpha", [0.25, 0.4, 0.6])
def test_a_faded_third_object_is_counted(alpha):
    """At alpha 0.25 the blue square is ~57 RGB units off the background: faint, but plainly a square."""
    img = _paint(("square", "red", 14, 14, 18), ("square", "green", 48, 14, 18),
                 ("square", "blue", 31, 46, 18, alpha))
    assert _verdicts(img, _counting("square", 2), _counting("square", 3)) == [False, True]
    # a faded blue is no longer the palette's blue
    faded = _paint(("square", "blue", 31, 32, 18, alpha))
    assert _verdicts(faded, _prompt("colors", ("square", "blue")), _prompt("single_object", ("square",))) == \
        [False, True]


@pytest.mark.parametrize("size", [5, 6, 7])
def test_a_small_third_object_is_counted(size):
    """A 5..7 px triangle covers 14..27 px, below the smallest object the world draws (~84 px)."""
    img = _paint(("triangle", "red", 14, 14, 18), ("triangle", "green", 48, 14, 18),
                 ("triangle", "blue", 31, 46, size))
    assert not sw.evaluate(img, _counting("triangle", 2)).correct


def test_one_object_is_wrong_when_three_are_drawn():
    touching = _paint(("triangle", "red", 14, 14, 18), ("triangle", "blue", 30, 46, 18),
                      ("triangle", "blue", 46, 46, 18))
    faint_and_small = _paint(("triangle", "red", 14, 14, 18), ("triangle", "blue", 46, 46, 18, 0.3),
                             ("triangle", "green", 48, 14, 6))
    off_palette = _paint(("triangle", "red", 14, 14, 18), ("triangle", GREY, 46, 46, 18),
                         ("triangle", BROWN, 14, 46, 18))
    for img in (touching, faint_and_small, off_palette):
        assert not sw.evaluate(img, _counting("triangle", 1)).correct


def test_a_two_tone_object_is_one_object_of_no_colour():
    half_and_half = _paint(("circle", "red", 14, 14, 18), ("circle", "green", 48, 14, 18),
                           ("circle", "red", 32, 46, 20, 1.0, X < 32), ("circle", "blue", 32, 46, 20, 1.0, X >= 32))
    assert _verdicts(half_and_half, _counting("circle", 2), _counting("circle", 3),
                     _prompt("colors", ("circle", "blue"))) == [False, True, False]
    # a cross with a red bar and blue arms: the arms alone look like two blue squares
    cross = _paint(("star", "green", 14, 14, 18), ("cross", "red", 40, 40, 24, 1.0, abs(X - 40) < 4.1),
                   ("cross", "blue", 40, 40, 24, 1.0, abs(X - 40) >= 4.1))
    assert _verdicts(cross, _prompt("single_object", ("square",)), _prompt("two_object", ("square",), ("star",)),
                     _prompt("colors", ("square", "blue")), _counting("square", 2),
                     _prompt("single_object", ("cross",)), _prompt("colors", ("cross", "red"))) == \
        [False, False, False, False, True, False]


def test_touching_objects():
    # two circles of one colour run into one blob: that blob could hold circles, so "two circles" fails
    img = _paint(("circle", "red", 12, 12, 16), ("circle", "blue", 52, 12, 16),
                 ("circle", "green", 24, 46, 16), ("circle", "green", 40, 46, 16))
    assert not sw.evaluate(img, _counting("circle", 2)).correct
    # a faded circle pressed against a palette circle: one object in pieces, of no known shape, that
    # could be circles
    img = _paint(("circle", "red", 12, 12, 16), ("circle", "blue", 24, 46, 16), ("circle", "blue", 40, 46, 16, 0.35))
    assert not sw.evaluate(img, _counting("circle", 2)).correct
    # objects of different colours that touch stay two objects with their colours
    img = _paint(("circle", "red", 22, 32, 18), ("square", "blue", 40, 32, 18))
    assert _verdicts(img, _prompt("color_attr", ("circle", "red"), ("square", "blue")), _counting("circle", 1),
                     _counting("square", 1)) == [True, True, True]


def test_an_unclassifiable_blob_counts_against_exclusion_and_helps_nothing():
    stars = _paint(("star", "red", 14, 14, 18), ("star", "blue", 48, 14, 18))
    el = stars.copy()
    el[(abs(X - 30) < 9) & (abs(Y - 52) < 3) | (abs(X - 24) < 3) & (abs(Y - 44) < 9)] = sw.PALETTE["yellow"]
    bar = stars.copy()
    bar[(abs(X - 32) < 14) & (abs(Y - 48) < 3)] = GREY
    for img in (el, bar):
        dets = sw.detect(img)
        assert sorted(d.shape or "?" for d in dets) == ["?", "star", "star"]
        assert not sw.evaluate(img, _counting("star", 2)).correct
        for shape in sw.SHAPES:
            if shape != "star":
                assert not sw.evaluate(img, _prompt("single_object", (shape,))).correct
                assert not sw.evaluate(img, _prompt("two_object", ("star",), (shape,))).correct


def test_a_possible_duplicate_on_the_wrong_side_fails_position():
    prompt = _prompt("position", ("circle", "red"), ("star", "blue"), relation=(0, "left of", 1))
    assert sw.evaluate(_paint(("circle", "red", 12, 32, 16), ("star", "blue", 32, 32, 16)), prompt).correct
    for extra in (("circle", ORANGE, 52, 32, 16), ("circle", "red", 52, 32, 16, 0.4), ("circle", "red", 52, 32, 5)):
        img = _paint(("circle", "red", 12, 32, 16), ("star", "blue", 32, 32, 16), extra)
        assert not sw.evaluate(img, prompt).correct, extra


@pytest.mark.parametrize("name, degrade", [
    ("blur+noise8", lambda img, rng: add_noise(box_blur(img), 8.0, rng)),
    ("noise12", lambda img, rng: add_noise(img, 12.0, rng)),
    ("jpeg75+noise8", lambda img, rng: jpeg(add_noise(img, 8.0, rng), 75)),
])
def test_degraded_renders_hold_nothing_extra(name, degrade):
    """Noise, blur and JPEG never make the stricter detection see objects that are not drawn: every
    render, textured or not, yields at most its own objects, and the blurred or noisy ones are correct."""
    rng = np.random.default_rng(1)
    extra, wrong = [], []
    for c, category in enumerate(sw.CATEGORIES):
        for n, prompt in enumerate(_prompts(category, 30, seed=40 + c)):
            img, layout = sw.render_prompt(prompt, 7000 + 100 * c + n, texture=bool(n % 2))
            img = degrade(img, rng)
            dets = sw.detect(img)
            if len(dets) > len(layout.objects):
                extra.append((prompt.text, dets))
            if not name.startswith("jpeg") and not sw.evaluate(img, prompt).correct:
                wrong.append(prompt.text)
    assert not extra
    assert len(wrong) <= 1, wrong
