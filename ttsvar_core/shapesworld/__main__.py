"""python -m ttsvar_core.shapesworld grid OUT.png | check | splits"""

import argparse
import time

import numpy as np

from .data import sample_prompts
from .evaluate import aggregate, evaluate
from .grid import save_sample_grid
from .perturb import add_noise, box_blur, jpeg
from .prompts import test_items, test_prompts, train_prompts
from .render import render_prompt
from .vocab import CATEGORIES

DEGRADATIONS = {
    "clean": lambda img, rng: img,
    "blur3x3": lambda img, rng: box_blur(img),
    "noise8": lambda img, rng: add_noise(img, 8.0, rng),
    "blur+noise": lambda img, rng: add_noise(box_blur(img), 8.0, rng),
    "jpeg75": lambda img, rng: jpeg(img, 75),
}


def _split(name):
    return train_prompts() if name == "train" else test_prompts()


def cmd_grid(args):
    prompts = sample_prompts(args.n, args.seed, _split(args.split))
    path = save_sample_grid(args.out, prompts, seed=args.seed, texture=args.texture, columns=args.columns)
    print(f"wrote {path}")


def cmd_check(args):
    """Evaluate the world's own renders of test items under each degradation."""
    items = [item for item in test_items() for _ in range(args.repeat)]
    rng = np.random.default_rng(args.seed)
    for name, degrade in DEGRADATIONS.items():
        start = time.perf_counter()
        results = []
        for n, item in enumerate(items):
            img, _ = render_prompt(item.prompt, item.seed * 1000 + n % args.repeat, texture=args.texture)
            results.append(evaluate(degrade(img, rng), item.prompt))
        summary = aggregate(results)
        cats = " ".join(f"{c}={summary['per_category'][c]:.3f}" for c in CATEGORIES)
        print(f"{name:11s} overall={summary['overall']:.4f} {cats} ({time.perf_counter() - start:.1f}s)")


def cmd_splits(args):
    for category in CATEGORIES:
        train, test = train_prompts(category), test_prompts(category)
        print(f"{category:14s} train={len(train):5d} test={len(test):4d}  e.g. {test[0].text!r}")
    print(f"{'total':14s} train={len(train_prompts()):5d} test={len(test_prompts()):4d} "
          f"test_items={len(test_items())}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ttsvar_core.shapesworld")
    sub = parser.add_subparsers(dest="command", required=True)
    grid = sub.add_parser("grid", help="write a PNG of sample renders with their prompts")
    grid.add_argument("out")
    grid.add_argument("--split", choices=("train", "test"), default="test")
    grid.add_argument("--n", type=int, default=36)
    grid.add_argument("--columns", type=int, default=6)
    grid.add_argument("--seed", type=int, default=0)
    grid.add_argument("--texture", action="store_true")
    grid.set_defaults(run=cmd_grid)
    check = sub.add_parser("check", help="evaluator accuracy on the world's own renders of the test items")
    check.add_argument("--repeat", type=int, default=1, help="images per test item")
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--texture", action="store_true")
    check.set_defaults(run=cmd_check)
    splits = sub.add_parser("splits", help="prompt counts per category and split")
    splits.set_defaults(run=cmd_splits)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
