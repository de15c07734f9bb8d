"""Prompts of ShapesWorld: structured specs, their wording, and the fixed train/test splits.

Grammar (every word starts with a consonant, so the article is always "a"):
    single_object  "a circle"
    colors         "a red circle"
    counting       "one circle", "three stars" (1-4)
    two_object     "a circle and a star"
    position       "a red circle to the left of a blue star" (to the left of / to the right of / above / below)
    color_attr     "a red circle and a blue star"
Objects within a two_object, position or color_attr prompt have different shapes, and in position and
color_attr also different colours.

Splits are made on the canonical spec, not the text: "a circle and a star" and "a star and a circle"
are one spec, as are "A to the left of B" and "B to the right of A"; all wordings of a spec land in the
same split. Within each category the specs are ranked by a SHA-256 of their key (stable across
machines and library versions) and the first HOLDOUT[category] of them are the test split.
"""

import hashlib
import itertools
from dataclasses import dataclass
from functools import lru_cache

from .vocab import (CATEGORIES, COLOURS, INVERSE, MAX_COUNT, NUMBER_WORDS, PLURALS, RELATION_WORDS,
                    RELATIONS, SHAPES)

# Canonical specs held out for the test split, per category (out of 6, 36, 24, 15, 1800, 450).
HOLDOUT = {"single_object": 2, "colors": 12, "counting": 8, "two_object": 5,
           "position": 100, "color_attr": 100}
# GenEval's number of prompts per category; test_items() reproduces this mix.
GENEVAL_COUNTS = {"single_object": 80, "two_object": 99, "counting": 80, "colors": 94,
                  "position": 100, "color_attr": 100}


@dataclass(frozen=True)
class ObjectSpec:
    shape: str
    colour: str | None = None
    count: int = 1

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {SHAPES}")
        if self.colour is not None and self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; expected one of {COLOURS}")
        if not 1 <= self.count <= MAX_COUNT:
            raise ValueError(f"count {self.count} outside 1..{MAX_COUNT}")

    def words(self) -> str:
        """The noun phrase without its article or number: "red circle", "circle"."""
        return f"{self.colour} {self.shape}" if self.colour else self.shape


@dataclass(frozen=True)
class Prompt:
    text: str
    category: str
    objects: tuple[ObjectSpec, ...]
    relation: tuple[int, str, int] | None = None  # (i, "left of", j): objects[i] is left of objects[j]

    @property
    def key(self) -> str:
        """Canonical spec key: equal for all wordings of the same scene constraints."""
        return spec_key(self.category, self.objects, self.relation)


def prompt_text(category: str, objects, relation=None) -> str:
    if category == "counting":
        (obj,) = objects
        noun = PLURALS[obj.shape] if obj.count > 1 else obj.shape
        colour = f"{obj.colour} " if obj.colour else ""
        return f"{NUMBER_WORDS[obj.count]} {colour}{noun}"
    if category == "position":
        i, rel, j = relation
        return f"a {objects[i].words()} {RELATION_WORDS[rel]} a {objects[j].words()}"
    return " and ".join(f"a {obj.words()}" for obj in objects)


def make_prompt(category: str, objects, relation=None) -> Prompt:
    """Build a Prompt with its canonical text; the only way prompts are made, so text and spec agree."""
    objects = tuple(objects)
    _check(category, objects, relation)
    return Prompt(prompt_text(category, objects, relation), category, objects,
                  tuple(relation) if relation is not None else None)


def _check(category, objects, relation):
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")
    expected = 1 if category in ("single_object", "colors", "counting") else 2
    if len(objects) != expected:
        raise ValueError(f"{category} needs {expected} object(s), got {len(objects)}")
    if (relation is not None) != (category == "position"):
        raise ValueError("a relation is given exactly for position prompts")
    if relation is not None and (relation[1] not in RELATIONS or {relation[0], relation[2]} != {0, 1}):
        raise ValueError(f"bad relation {relation!r}")


def spec_key(category, objects, relation=None) -> str:
    parts = [f"{o.colour or '-'}:{o.shape}:{o.count}" for o in objects]
    if category == "position":
        i, rel, j = relation
        if rel in ("right of", "below"):  # say it the other way round: one key per scene constraint
            i, rel, j = j, INVERSE[rel], i
        return f"{category}|{parts[i]}|{rel}|{parts[j]}"
    if category in ("two_object", "color_attr"):
        parts = sorted(parts)
    return "|".join([category, *parts])


def _enumerate(category):
    if category == "single_object":
        return [make_prompt(category, [ObjectSpec(s)]) for s in SHAPES]
    if category == "colors":
        return [make_prompt(category, [ObjectSpec(s, c)]) for c in COLOURS for s in SHAPES]
    if category == "counting":
        return [make_prompt(category, [ObjectSpec(s, None, n)]) for s in SHAPES for n in NUMBER_WORDS]
    if category == "two_object":
        return [make_prompt(category, [ObjectSpec(a), ObjectSpec(b)])
                for a, b in itertools.permutations(SHAPES, 2)]
    pairs = [(ObjectSpec(sa, ca), ObjectSpec(sb, cb))
             for sa, sb in itertools.permutations(SHAPES, 2) for ca, cb in itertools.permutations(COLOURS, 2)]
    if category == "color_attr":
        return [make_prompt(category, pair) for pair in pairs]
    return [make_prompt(category, pair, (0, rel, 1)) for pair in pairs for rel in RELATIONS]


def _rank(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@lru_cache(maxsize=None)
def _split(category: str):
    """(test, train) prompts of one category; test is ordered so that its first len(keys) prompts
    cover every held-out spec once (alternating wordings), the rest follow."""
    by_key = {}
    for prompt in _enumerate(category):
        by_key.setdefault(prompt.key, []).append(prompt)
    keys = sorted(by_key, key=_rank)
    test_keys, train_keys = keys[:HOLDOUT[category]], keys[HOLDOUT[category]:]
    first, rest = [], []
    for n, key in enumerate(test_keys):
        wordings = sorted(by_key[key], key=lambda p: p.text)
        pick = n % len(wordings)
        first.append(wordings[pick])
        rest.extend(w for k, w in enumerate(wordings) if k != pick)
    train = [p for key in sorted(train_keys) for p in sorted(by_key[key], key=lambda p: p.text)]
    return tuple(first + rest), tuple(train)


def all_prompts(category: str | None = None) -> tuple[Prompt, ...]:
    cats = CATEGORIES if category is None else (category,)
    return tuple(p for c in cats for p in _split(c)[0] + _split(c)[1])


def test_prompts(category: str | None = None) -> tuple[Prompt, ...]:
    """Held-out prompts, every wording of every held-out spec (432 in all)."""
    cats = CATEGORIES if category is None else (category,)
    return tuple(p for c in cats for p in _split(c)[0])


def train_prompts(category: str | None = None) -> tuple[Prompt, ...]:
    """Every prompt whose canonical spec is not held out."""
    cats = CATEGORIES if category is None else (category,)
    return tuple(p for c in cats for p in _split(c)[1])


@dataclass(frozen=True)
class TestItem:
    __test__ = False  # not a pytest test class despite the name
    prompt: Prompt
    seed: int


def test_items(counts=None) -> tuple[TestItem, ...]:
    """A GenEval-sized evaluation set (553 items, GenEval's category mix): each category cycles through
    its test prompts. Small categories have few distinct prompts (2 single_object, 12 colors), so
    their prompts repeat; every item has its own seed, so repeats still get different samples."""
    counts = GENEVAL_COUNTS if counts is None else counts
    items = []
    for category in CATEGORIES:
        prompts = _split(category)[0]
        for n in range(counts[category]):
            items.append(TestItem(prompts[n % len(prompts)], len(items)))
    return tuple(items)


# pytest collects module-level functions named test_*; these two are library functions, not tests.
test_prompts.__test__ = False
test_items.__test__ = False
