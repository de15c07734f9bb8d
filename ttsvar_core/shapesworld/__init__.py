"""ShapesWorld: a synthetic GenEval-like text-to-image world of coloured shapes at 64x64.

prompts  structured prompt specs, wording, fixed train/test splits (see prompts.py for the grammar)
render   seeded ground-truth layouts for a prompt, drawn antialiased
evaluate exact parser of an image into objects and GenEval-style scoring per category
data     category-balanced (prompt, image) training pairs
grid     a contact sheet PNG of images with their prompts
"""

from .data import sample_prompts, sample_training_pairs
from .evaluate import (Detection, EvalResult, aggregate, detect, evaluate, evaluate_batch,
                       relation_holds, to_rgb_array)
from .grid import save_grid, save_sample_grid
from .prompts import (GENEVAL_COUNTS, HOLDOUT, ObjectSpec, Prompt, TestItem, all_prompts, make_prompt,
                      spec_key, test_items, test_prompts, train_prompts)
from .render import Layout, PlacedObject, render_layout, render_prompt, sample_layout
from .vocab import (BACKGROUND, CATEGORIES, COLOURS, IMAGE_SIZE, MAX_COUNT, PALETTE, RELATIONS,
                    SHAPES)

__all__ = [
    "BACKGROUND", "CATEGORIES", "COLOURS", "GENEVAL_COUNTS", "HOLDOUT", "IMAGE_SIZE", "MAX_COUNT",
    "PALETTE", "RELATIONS", "SHAPES",
    "Detection", "EvalResult", "Layout", "ObjectSpec", "PlacedObject", "Prompt", "TestItem",
    "aggregate", "all_prompts", "detect", "evaluate", "evaluate_batch", "make_prompt", "relation_holds",
    "render_layout", "render_prompt", "sample_layout", "sample_prompts", "sample_training_pairs",
    "save_grid", "save_sample_grid", "spec_key", "test_items", "test_prompts", "to_rgb_array",
    "train_prompts",
]
