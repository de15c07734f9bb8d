"""Training data: (prompt, image) pairs sampled from the world."""

import numpy as np

from .prompts import Prompt, train_prompts
from .render import render_prompt
from .vocab import CATEGORIES


def sample_prompts(n: int, seed: int = 0, prompts=None) -> list[Prompt]:
    """n prompts drawn with replacement: a category uniformly, then a prompt of it uniformly, so the
    six categories are equally frequent although their prompt counts differ by a factor of 850
    (train split by default)."""
    prompts = train_prompts() if prompts is None else tuple(prompts)
    by_category = {c: [p for p in prompts if p.category == c] for c in CATEGORIES}
    present = [c for c in CATEGORIES if by_category[c]]
    rng = np.random.default_rng(seed)
    picked = []
    for _ in range(n):
        pool = by_category[present[rng.integers(len(present))]]
        picked.append(pool[rng.integers(len(pool))])
    return picked


def sample_training_pairs(n: int, seed: int = 0, prompts=None,
                          texture: bool = False) -> list[tuple[Prompt, np.ndarray]]:
    """n (prompt, uint8 [64, 64, 3] image) pairs; every image has its own layout and colours, so a
    prompt drawn several times gets several different images."""
    image_seeds = np.random.default_rng([seed, 1]).integers(2**31, size=n)
    return [(p, render_prompt(p, int(s), texture=texture)[0])
            for p, s in zip(sample_prompts(n, seed, prompts), image_seeds)]
