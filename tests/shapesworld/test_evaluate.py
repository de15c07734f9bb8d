"""The evaluator: exact on the world's own renders, robust to blur and noise, and it rejects images
that break the prompt (wrong count, colour, position, missing object)."""

import numpy as np
import pytest

from ttsvar_core import shapesworld as sw
from ttsvar_core.shapesworld.perturb import add_noise, box_blur

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
