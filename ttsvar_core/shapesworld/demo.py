"""`python -m ttsvar_core demo`: TTS-VAR on the shipped ShapesWorld model, on a CPU, in seconds.

Loads the shipped weights through the same loaders as the real model (InfinityPipeline.load, load_reward,
load_feature_extractor), runs plain sampling, Best-of-N and TTS-VAR on a few held-out prompts, and writes
a grid (rows: prompts, columns: strategies; each image captioned with its reward and the exact
evaluator's verdict) plus a short table on stdout.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "shapesworld"
MODEL_FILE, VAE_FILE, T5_DIR, CLIP_DIR = ("shapesworld_infinity.safetensors", "shapesworld_vae.safetensors",
                                          "t5", "clip")
SAMPLING_FILE = "sampling.json"       # sampling settings chosen on training prompts (see docs)
# Which prompts the demo shows is a rule, fixed before looking at any result: the first held-out prompt
# of every GenEval category, in the split's own (SHA-256) order.
DEMO_RULE = "the first held-out prompt of each GenEval category (test split, SHA-256 order)"
DEMO_STRATEGIES = ("raw", "bon", "tts-var")


@dataclass
class Shipped:
    """The loaded pack parts of a ShapesWorld model folder."""

    pipe: object
    reward: object
    extractor: object
    settings: dict
    schedule: list

    def params(self, cfg=None, tau=None):
        from ..model.sampling import SamplingParams
        s = self.settings
        return SamplingParams(cfg=s["cfg"] if cfg is None else cfg, tau=s["tau"] if tau is None else tau,
                              top_k=s["top_k"], top_p=s["top_p"]).validate(len(self.schedule))


def read_settings(folder: Path) -> dict:
    defaults = {"cfg": 3.0, "tau": 1.0, "top_k": 900, "top_p": 0.97, "pixel_budget": "0.06M", "reward_scale": 1.0,
                "selection_side": None}
    path = Path(folder) / SAMPLING_FILE
    return {**defaults, **(json.loads(path.read_text()) if path.exists() else {})}


def load_shipped(folder=ASSETS, device="cpu", model=None, vae=None, text_encoder=None, clip=None,
                 weight_storage=None) -> Shipped:
    """The model, reward and features of `folder` (default: the shipped ones); single paths may be overridden.
    `weight_storage`: the transformer blocks' matmul weights stored narrower than fp32 (InfinityPipeline.load)."""
    from ..model.pipeline import InfinityPipeline
    from ..scorers import load_feature_extractor, load_reward

    folder = Path(folder)
    settings = read_settings(folder)
    pipe = InfinityPipeline.load(model or folder / MODEL_FILE, vae or folder / VAE_FILE,
                                 text_encoder or folder / T5_DIR, device=device, dtype="fp32",
                                 weight_storage=weight_storage)
    clip = clip or folder / CLIP_DIR
    reward = load_reward("clip", clip, device=device, max_batch=64, scale=settings["reward_scale"])
    extractor = load_feature_extractor("clip-vision", clip, device=device, max_batch=64)
    return Shipped(pipe, reward, extractor, settings, pipe.schedule(1.0, settings["pixel_budget"]))


def run_strategy(shipped: Shipped, prompts: list[str], strategy: str, n: int, seed: int, params=None,
                 decode=None):
    """One run_search call over all prompts; returns the engine's SearchResult and its wall time. `decode`: how
    selections decode (a DecodePolicy; default: the shipped setting, every selection at its selection_side)."""
    from ..engine import Scorers, SearchRequest, run_search, schedule_for
    from ..engine.schedule import DecodePolicy

    decode = decode or DecodePolicy(shipped.settings["selection_side"])
    batch = schedule_for(strategy, n, len(shipped.schedule)).decoding(decode).validate(len(shipped.schedule))
    request = SearchRequest(shipped.pipe.encode(list(prompts)), tuple(shipped.schedule),
                            params or shipped.params(), batch, seed=seed,
                            scorers=Scorers(shipped.reward, shipped.extractor))
    start = time.perf_counter()
    result = run_search(shipped.pipe.model, shipped.pipe.vae, request)
    return result, time.perf_counter() - start


def add_demo_parser(sub):
    p = sub.add_parser("demo", help="plain sampling vs Best-of-N vs TTS-VAR on the shipped ShapesWorld model")
    p.add_argument("--out", default="ttsvar_demo", help="output folder for the grid (default ./ttsvar_demo)")
    p.add_argument("--n", type=int, default=2, help="N of Best-of-N and TTS-VAR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompt", action="append", default=None, help="repeat for several prompts")
    p.add_argument("--assets", default=str(ASSETS), help="folder of the model, VAE, t5/ and clip/")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=run_demo)
    return p


def run_demo(args) -> int:
    from .evaluate import evaluate
    from .grid import save_grid

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    shipped = load_shipped(args.assets)
    texts = args.prompt or demo_prompts()
    print(f"prompts: {'given with --prompt' if args.prompt else DEMO_RULE}; every strategy at seed {args.seed}")
    rows, images, captions = [], [], []
    outcomes = {}
    for strategy in DEMO_STRATEGIES:
        result, seconds = run_strategy(shipped, texts, strategy, 1 if strategy == "raw" else args.n, args.seed)
        outcomes[strategy] = (result, seconds)
    for p, text in enumerate(texts):
        spec = parse_prompt(text)
        for strategy in DEMO_STRATEGIES:
            result, seconds = outcomes[strategy]
            image = result.images[result.picks[p]]
            reward = float(shipped.reward.score(image[None], text)[0])
            verdict = evaluate(image.numpy(), spec).correct if spec is not None else None
            mark = {True: "correct", False: "wrong", None: "?"}[verdict]
            images.append(image.numpy())
            captions.append(f"{strategy}: r={reward:.3f} {mark}" + (f" | {text}" if strategy == "raw" else ""))
            rows.append((text, strategy, reward, mark, seconds))
    grid = save_grid(Path(args.out) / "demo_grid.png", images, captions, columns=len(DEMO_STRATEGIES), scale=3)
    print_table(rows, args.n)
    judged = [r for r in rows if r[3] != "?"]
    if judged:
        print("correct (corrected evaluator): " + ", ".join(
            f"{s} {sum(r[3] == 'correct' for r in judged if r[1] == s)}/{len(judged) // len(DEMO_STRATEGIES)}"
            for s in DEMO_STRATEGIES))
    print(f"grid: {grid}  (total {time.perf_counter() - start:.1f} s)")
    return 0


def demo_prompts() -> list[str]:
    from .prompts import test_prompts
    from .vocab import CATEGORIES
    return [test_prompts(category)[0].text for category in CATEGORIES]


def parse_prompt(text: str):
    """The spec of a prompt written in the world's grammar (train or test split), else None."""
    from .prompts import all_prompts
    return next((p for p in all_prompts() if p.text == text), None)


def print_table(rows, n: int) -> None:
    print(f"{'prompt':45s} {'strategy':9s} {'reward':>7s} {'evaluator':>9s}")
    for text, strategy, reward, mark, _ in rows:
        label = strategy if strategy == "raw" else f"{strategy}@{n}"
        print(f"{text[:45]:45s} {label:9s} {reward:7.3f} {mark:>9s}")
    times = {s: t for _, s, _, _, t in rows}
    print("search time: " + ", ".join(f"{s} {t:.1f} s" for s, t in times.items()))
