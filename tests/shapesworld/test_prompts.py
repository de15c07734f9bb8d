"""Prompt grammar, spec keys and the fixed train/test splits."""

import collections

import pytest

from ttsvar_core import shapesworld as sw
from ttsvar_core.shapesworld.prompts import PLURALS


def test_split_sizes_meet_the_brief():
    test = sw.test_prompts()
    by_category = collections.Counter(p.category for p in test)
    assert len(test) >= 400
    assert set(by_category) == set(sw.CATEGORIES)
    for category in sw.CATEGORIES:
        assert sw.train_prompts(category), category


def test_splits_share_no_spec():
    test_keys = {p.key for p in sw.test_prompts()}
    train_keys = {p.key for p in sw.train_prompts()}
    assert not test_keys & train_keys
    # every wording of every spec sits in exactly one split, and the two splits cover the world
    assert len(sw.train_prompts()) + len(sw.test_prompts()) == len(sw.all_prompts())
    assert len({p.text for p in sw.all_prompts()}) == len(sw.all_prompts())


def test_holdout_counts_per_category():
    for category, held in sw.HOLDOUT.items():
        assert len({p.key for p in sw.test_prompts(category)}) == held


def test_splits_are_deterministic():
    # the splits are cached; rebuild them from scratch to check they do not depend on call order
    from ttsvar_core.shapesworld import prompts
    first = [p.text for p in sw.test_prompts()]
    prompts._split.cache_clear()
    assert [p.text for p in sw.test_prompts()] == first


def test_every_word_is_seen_in_training():
    words = collections.Counter(w for p in sw.train_prompts() for w in p.text.split())
    vocab = {*sw.SHAPES, *PLURALS.values(), *sw.COLOURS, "one", "two", "three", "four",
             "a", "and", "to", "the", "left", "right", "of", "above", "below"}
    assert set(words) == vocab


def test_test_items_follow_the_geneval_mix():
    items = sw.test_items()
    assert collections.Counter(i.prompt.category for i in items) == collections.Counter(sw.GENEVAL_COUNTS)
    assert len({i.seed for i in items}) == len(items)
    assert {i.prompt for i in items} <= set(sw.test_prompts())
    # position and color_attr items cover 100 distinct held-out specs each
    for category in ("position", "color_attr"):
        assert len({i.prompt.key for i in items if i.prompt.category == category}) == 100


@pytest.mark.parametrize("category, objects, relation, text", [
    ("single_object", [sw.ObjectSpec("circle")], None, "a circle"),
    ("colors", [sw.ObjectSpec("star", "red")], None, "a red star"),
    ("counting", [sw.ObjectSpec("cross", None, 3)], None, "three crosses"),
    ("counting", [sw.ObjectSpec("square", None, 1)], None, "one square"),
    ("two_object", [sw.ObjectSpec("circle"), sw.ObjectSpec("star")], None, "a circle and a star"),
    ("position", [sw.ObjectSpec("circle", "red"), sw.ObjectSpec("star", "blue")], (0, "left of", 1),
     "a red circle to the left of a blue star"),
    ("position", [sw.ObjectSpec("circle", "red"), sw.ObjectSpec("star", "blue")], (0, "below", 1),
     "a red circle below a blue star"),
    ("color_attr", [sw.ObjectSpec("circle", "red"), sw.ObjectSpec("square", "blue")], None,
     "a red circle and a blue square"),
])
def test_grammar(category, objects, relation, text):
    assert sw.make_prompt(category, objects, relation).text == text


def test_equivalent_wordings_share_a_key():
    a, b = sw.ObjectSpec("circle", "red"), sw.ObjectSpec("star", "blue")
    assert (sw.make_prompt("position", [a, b], (0, "left of", 1)).key
            == sw.make_prompt("position", [b, a], (0, "right of", 1)).key)
    assert (sw.make_prompt("position", [a, b], (0, "left of", 1)).key
            != sw.make_prompt("position", [a, b], (0, "right of", 1)).key)
    assert sw.make_prompt("color_attr", [a, b]).key == sw.make_prompt("color_attr", [b, a]).key


@pytest.mark.parametrize("bad", [
    lambda: sw.ObjectSpec("hexagon"),
    lambda: sw.ObjectSpec("circle", "pink"),
    lambda: sw.ObjectSpec("circle", None, 5),
    lambda: sw.make_prompt("colors", [sw.ObjectSpec("circle"), sw.ObjectSpec("star")]),
    lambda: sw.make_prompt("position", [sw.ObjectSpec("circle"), sw.ObjectSpec("star")]),
    lambda: sw.make_prompt("position", [sw.ObjectSpec("circle"), sw.ObjectSpec("star")], (0, "near", 1)),
])
def test_invalid_specs_are_refused(bad):
    with pytest.raises(ValueError):
        bad()
