"""The renderer draws exactly the prompt's objects, separated, inside the canvas, relations held."""

import itertools

import numpy as np
import pytest

from ttsvar_core import shapesworld as sw
from ttsvar_core.shapesworld import render


def _sample(category, n, seed=0):
    prompts = sw.all_prompts(category)
    rng = np.random.default_rng(seed)
    return [prompts[k] for k in rng.integers(len(prompts), size=n)]


@pytest.mark.parametrize("category", sw.CATEGORIES)
def test_layouts_satisfy_their_prompt(category):
    for n, prompt in enumerate(_sample(category, 100)):
        layout = sw.sample_layout(prompt, n)
        expected = sorted((o.shape, o.colour) for o in prompt.objects for _ in range(o.count))
        got = sorted((o.shape, o.colour if any(s.colour for s in prompt.objects) else None)
                     for o in layout.objects)
        assert got == expected, prompt.text
        for o in layout.objects:
            assert render.MIN_OBJECT <= o.size <= render.MAX_OBJECT
            assert o.size / 2 + render.EDGE_MARGIN <= o.x <= sw.IMAGE_SIZE - o.size / 2 - render.EDGE_MARGIN
            assert o.size / 2 + render.EDGE_MARGIN <= o.y <= sw.IMAGE_SIZE - o.size / 2 - render.EDGE_MARGIN
        for a, b in itertools.combinations(layout.objects, 2):
            gap = max(abs(a.x - b.x), abs(a.y - b.y)) - (a.size + b.size) / 2
            assert gap >= render.GAP
        if prompt.relation:
            i, rel, j = prompt.relation
            a, b = layout.objects[i], layout.objects[j]
            along, across = {"left of": (b.x - a.x, b.y - a.y), "right of": (a.x - b.x, b.y - a.y),
                             "above": (b.y - a.y, b.x - a.x), "below": (a.y - b.y, b.x - a.x)}[rel]
            assert along > 0 and abs(across) <= render.MAX_ACROSS * along


def test_renders_are_seeded():
    prompt = sw.test_prompts("counting")[0]
    a, layout_a = sw.render_prompt(prompt, 7)
    b, layout_b = sw.render_prompt(prompt, 7)
    c, _ = sw.render_prompt(prompt, 8)
    assert a.dtype == np.uint8 and a.shape == (64, 64, 3)
    assert np.array_equal(a, b) and layout_a == layout_b
    assert not np.array_equal(a, c)


def test_background_and_palette_pixels():
    prompt = sw.make_prompt("colors", [sw.ObjectSpec("square", "green")])
    img, layout = sw.render_prompt(prompt, 3)
    (obj,) = layout.objects
    assert tuple(img[0, 0]) == sw.BACKGROUND
    assert tuple(img[int(obj.y), int(obj.x)]) == sw.PALETTE["green"]


def test_texture_is_faint():
    prompt = sw.test_prompts("single_object")[0]
    plain, layout = sw.render_prompt(prompt, 5)
    textured, layout_t = sw.render_prompt(prompt, 5, texture=True)
    assert layout == layout_t
    bg = np.all(plain == sw.BACKGROUND, axis=-1)
    delta = np.abs(textured[bg].astype(int) - plain[bg].astype(int))
    assert 0 < delta.max() <= 20


def test_training_pairs_are_balanced_and_from_train():
    pairs = sw.sample_training_pairs(600, seed=1)
    train = set(sw.train_prompts())
    assert all(p in train for p, _ in pairs)
    counts = np.bincount([sw.CATEGORIES.index(p.category) for p, _ in pairs], minlength=6)
    assert counts.min() >= 70  # 100 expected per category
    # the same prompt drawn twice gets two different images
    by_text = {}
    for p, img in pairs:
        by_text.setdefault(p.text, []).append(img)
    repeated = next(imgs for imgs in by_text.values() if len(imgs) > 1)
    assert not np.array_equal(repeated[0], repeated[1])


def test_grid_png(tmp_path):
    from PIL import Image
    path = sw.save_sample_grid(tmp_path / "grid.png", sw.test_prompts()[:8], columns=4)
    with Image.open(path) as im:
        assert im.size[0] == 4 * (64 * 3 + 4)
        assert im.size[1] > 2 * 64 * 3


def test_cli_grid_and_splits(tmp_path, capsys):
    from ttsvar_core.shapesworld.__main__ import main
    main(["grid", str(tmp_path / "g.png"), "--n", "6", "--split", "train", "--texture"])
    assert (tmp_path / "g.png").stat().st_size > 0
    main(["splits"])
    out = capsys.readouterr().out
    assert f"test={len(sw.test_prompts()):4d}" in out
