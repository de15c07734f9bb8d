"""`python -m ttsvar_core evaluate`: prompts x strategies x N x seeds on a ShapesWorld model, judged by the
world's exact evaluator.

    python -m ttsvar_core evaluate --prompts geneval --strategies raw,is,bon,tts-var --n 1,2,4,8 --seeds 1 \
        --out DIR [--limit K] [--procs P]

Reports per-category accuracy with Wilson 95% intervals, the GenEval-style overall mean (mean of the category
accuracies; interval: normal approximation with each category's Wilson half-width as its error), the reward of the picked image, oracle accuracy (any final
candidate correct), diversity of the final candidates (mean pairwise cosine distance of the reward model's
image embeddings), and compute: transformer token-passes (one token through the network, guidance rows
counted) and wall time. Writes results.json, results.md and accuracy_vs_n.png into --out; with --save-images
also every picked image (--out/images), which `compare` pairs by PSNR.

Prompts are grouped into fixed chunks (each one run_search call, seeded by chunk), and processes
(torch.distributed: gloo on CPU, NCCL on GPUs) take whole chunks, so results do not depend on --procs.
Every finished chunk is appended to a journal in --out: rerunning the same command resumes, and
--summarize aggregates what an interrupted run finished.
Importance sampling uses the candidates of the Best-of-N run of the same N and seed: both schedules sample
the same candidates from the same streams and differ only in the final pick, which is redone here with the
engine's own final-pick rule (resampling_weights / resample on the stream derive_seed(seed, "final", p)).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..engine.text_inputs import parse_ints

STRATEGIES = ("raw", "is", "bon", "tts-var")
Z95 = 1.959964


@dataclass(frozen=True)
class Item:
    index: int
    prompt: object        # shapesworld Prompt
    seed: int


def eval_items(which: str, limit: int | None) -> list[Item]:
    """geneval: the 553 test items in GenEval's category mix; test: the 432 held-out prompts once each."""
    from .prompts import test_items, test_prompts

    if which == "geneval":
        items = [Item(i, t.prompt, t.seed) for i, t in enumerate(test_items())]
    elif which == "test":
        items = [Item(i, p, i) for i, p in enumerate(test_prompts())]
    else:
        raise ValueError(f"unknown prompt set {which!r}; choose geneval or test")
    if limit:
        items = spread(items, limit)
    return items


def spread(items: list[Item], limit: int) -> list[Item]:
    """`limit` items taken round-robin over the categories (each category's first ones), so a short run
    still covers every category; returned in their original order."""
    if limit >= len(items):
        return items
    by_category: dict[str, list[Item]] = {}
    for item in items:
        by_category.setdefault(item.prompt.category, []).append(item)
    picked, k = [], 0
    while len(picked) < limit:
        for group in by_category.values():
            if k < len(group) and len(picked) < limit:
                picked.append(group[k])
        k += 1
    return sorted(picked, key=lambda item: item.index)


def wilson(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


# ---- one chunk of prompts under one (strategy, N, seed) --------------------------------------------------
def token_passes(trace: dict, schedule, guided: bool) -> int:
    """Tokens pushed through the transformer: live candidates at every scale times its tokens."""
    per_scale = [h * w for h, w in schedule]
    return sum(s["live"] * per_scale[s["scale"]] for s in trace["scales"]) * (2 if guided else 1)


def importance_picks(result, seed: int, lam: float) -> list[int]:
    """The final pick of the "is" schedule on the candidates of a Best-of-N run (see the module docstring)."""
    from ..engine.selection import resample, resampling_weights
    from ..engine.streams import Stream, derive_seed

    picks = []
    for p in range(len(result.picks)):
        idx = (result.prompt_of == p).nonzero().squeeze(1).tolist()
        weights, _ = resampling_weights(result.scores[idx], lam)
        picks.append(idx[resample(weights, 1, Stream(derive_seed(seed, "final", p)).generator("cpu"))[0]])
    return picks


def diversity(embeddings: torch.Tensor) -> float:
    """Mean pairwise cosine distance; NaN for a single image."""
    if embeddings.shape[0] < 2:
        return float("nan")
    e = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    sim = e @ e.T
    n = e.shape[0]
    return float((1 - sim)[~torch.eye(n, dtype=torch.bool)].mean())


def item_records(shipped, chunk: list[Item], result, picks, strategy: str, n: int, seed: int, seconds: float,
                 passes: int) -> list[dict]:
    from .evaluate import evaluate

    records = []
    for p, item in enumerate(chunk):
        idx = (result.prompt_of == p).nonzero().squeeze(1).tolist()
        finals = result.images[idx]
        pick = result.images[picks[p]]
        verdicts = [evaluate(im.numpy(), item.prompt).correct for im in finals]
        score = result.scores[picks[p]]
        reward = float(score) if not torch.isnan(score) else float(shipped.reward.score(pick[None], item.prompt.text)[0])
        records.append(dict(item=item.index, category=item.prompt.category, prompt=item.prompt.text,
                            strategy=strategy, n=n, seed=seed,
                            correct=bool(evaluate(pick.numpy(), item.prompt).correct),
                            oracle=bool(any(verdicts)), reward=reward,
                            diversity=diversity(shipped.extractor.extract(finals).pooled),
                            token_passes=passes / len(chunk), seconds=seconds / len(chunk)))
    return records


def run_chunk(shipped, chunk: list[Item], chunk_id: int, runs, seed: int, decode: str = "shipped",
              images: Path | None = None) -> list[dict]:
    """All requested (strategy, N) of one chunk; "is" reuses the Best-of-N run of its N. With `images` (a
    folder), every picked image is kept there (save_picks) for an image-level comparison of two runs."""
    from .demo import run_strategy
    from ..engine import schedule_for
    from ..engine.streams import derive_seed

    lam = schedule_for("is", 1, len(shipped.schedule)).lam  # the temperature the "is" schedule picks with

    texts = [item.prompt.text for item in chunk]
    run_seed = derive_seed(seed, "chunk", chunk_id, *[item.seed for item in chunk])
    guided = shipped.params().guided(len(shipped.schedule))
    records = []
    for engine_strategy, n, wanted in runs:
        result, seconds = run_strategy(shipped, texts, engine_strategy, n, run_seed,
                                       decode=evaluation_decode(decode, shipped.settings["selection_side"]))
        passes = token_passes(result.trace, shipped.schedule, guided)
        for strategy in wanted:
            picks = importance_picks(result, run_seed, lam) if strategy == "is" else result.picks
            records += item_records(shipped, chunk, result, picks, strategy, n, seed, seconds, passes)
            if images is not None:
                save_picks(images, chunk, chunk_id, result, picks, strategy, n, seed)
    return records


def save_picks(folder: Path, chunk: list[Item], chunk_id: int, result, picks, strategy: str, n: int, seed: int):
    """One chunk's picked images (uint8 HWC, keyed by item index) in folder/{strategy}-n{n}-seed{seed}-chunk{id}.npz:
    one file per journal entry, so a resumed run rewrites only what it reruns."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / f"{strategy}-n{n}-seed{seed}-chunk{chunk_id}.npz",
                        **{str(item.index): result.images[picks[p]].numpy() for p, item in enumerate(chunk)})


def load_picks(folder: Path, strategy: str, n: int) -> dict[tuple[int, int], np.ndarray]:
    """(item, seed) -> picked image of every chunk save_picks wrote for (strategy, N); empty when none."""
    picks = {}
    for path in sorted(Path(folder).glob(f"{strategy}-n{n}-seed*-chunk*.npz")):
        seed = int(path.name.removeprefix(f"{strategy}-n{n}-seed").split("-chunk")[0])
        with np.load(path) as saved:
            picks.update({(int(item), seed): saved[item] for item in saved.files})
    return picks


def paired_psnr(a: dict, b: dict) -> dict:
    """PSNR (dB, 8-bit peak) of A's picked images against B's over the shared (item, seed) keys. Identical
    pairs (infinite PSNR) are counted apart and left out of the mean, which is over the pairs that differ;
    `pooled` is the PSNR of the mean squared error over all pairs, identical ones included."""
    shared = sorted(set(a) & set(b))
    mse = np.array([np.mean((a[k].astype(np.float64) - b[k].astype(np.float64)) ** 2) for k in shared])
    differ = mse[mse > 0]
    return dict(pairs=len(shared), identical=int((mse == 0).sum()),
                mean=float(np.mean(10 * np.log10(255 ** 2 / differ))) if len(differ) else math.inf,
                pooled=float(10 * np.log10(255 ** 2 / mse.mean())) if mse.any() else math.inf)


EVALUATION_DECODES = ("shipped", "full", "grid", "grid-floor16")


def evaluation_decode(name: str, shipped_side: int | None):
    """The DecodePolicy of an --selection-decode choice. ShapesWorld's 64 px images stand for Infinity's 1024 px:
    the shipped 32 px plays the part of 448 px, and a 16 px floor that of a 224 px one (the scorers' view)."""
    from ..engine.schedule import DecodePolicy

    policies = {"shipped": DecodePolicy(shipped_side), "full": DecodePolicy(None),
                "grid": DecodePolicy(shipped_side, "scale"), "grid-floor16": DecodePolicy(shipped_side, "scale", 16)}
    if name not in policies:
        raise ValueError(f"unknown selection decode {name!r}; choose one of {EVALUATION_DECODES}")
    return policies[name]


def plan_runs(strategies, ns) -> list[tuple[str, int, tuple[str, ...]]]:
    """(engine strategy, N, strategies reported from that run). Plain sampling runs at N = 1 only: its
    result is the first candidate whatever N is."""
    runs = []
    if "raw" in strategies:
        runs.append(("raw", 1, ("raw",)))
    for n in ns:
        shared = tuple(s for s in ("bon", "is") if s in strategies)
        if shared:
            runs.append(("bon", n, shared))
        if "tts-var" in strategies:
            runs.append(("tts-var", n, ("tts-var",)))
    return runs


# ---- aggregation and output ------------------------------------------------------------------------------
def summarize(records: list[dict]) -> list[dict]:
    from .vocab import CATEGORIES

    rows = []
    keys = sorted({(r["strategy"], r["n"]) for r in records}, key=lambda k: (STRATEGIES.index(k[0]), k[1]))
    for strategy, n in keys:
        group = [r for r in records if r["strategy"] == strategy and r["n"] == n]
        cats, variance = {}, 0.0
        for c in CATEGORIES:
            hits = [r["correct"] for r in group if r["category"] == c]
            if hits:
                acc = float(np.mean(hits))
                cats[c] = dict(acc=acc, n=len(hits), ci=wilson(int(sum(hits)), len(hits)))
                # each category's Wilson half-width as its standard error: unlike p(1-p)/n it does not
                # vanish when a category scores 0 or 1
                variance += ((cats[c]["ci"][1] - cats[c]["ci"][0]) / (2 * Z95)) ** 2
        overall = float(np.mean([v["acc"] for v in cats.values()]))
        half = Z95 * math.sqrt(variance) / len(cats)
        divs = [r["diversity"] for r in group if not math.isnan(r["diversity"])]
        rows.append(dict(strategy=strategy, n=n, items=len(group), overall=overall,
                         overall_ci=(max(0.0, overall - half), min(1.0, overall + half)), categories=cats,
                         oracle=float(np.mean([r["oracle"] for r in group])),
                         reward=float(np.mean([r["reward"] for r in group])),
                         diversity=float(np.mean(divs)) if divs else float("nan"),
                         token_passes=float(np.mean([r["token_passes"] for r in group])),
                         seconds=float(np.mean([r["seconds"] for r in group]))))
    return rows


def comparison_pairs(keys: set) -> list[tuple[tuple[str, int], tuple[str, int]]]:
    """The comparisons the results are about: TTS-VAR and Best-of-N against each other and plain sampling at
    every N, TTS-VAR at N = 2 against Best-of-N at N = 8 (the paper's headline), TTS-VAR at N = 8 against 4."""
    ns = sorted({n for _, n in keys})
    wanted = []
    for n in ns:
        wanted += [(("tts-var", n), ("bon", n)), (("bon", n), ("raw", 1)), (("tts-var", n), ("raw", 1))]
    wanted += [(("tts-var", 2), ("bon", 8)), (("tts-var", 8), ("tts-var", 4))]
    return [(a, b) for a, b in wanted if a in keys and b in keys and a != b]


def paired_comparison(records: list[dict], a: tuple[str, int], b: tuple[str, int], resamples: int = 4000,
                      seed: int = 0) -> dict:
    """A minus B on the same prompts and seeds: the difference of GenEval-style overall accuracy with a
    95% paired bootstrap interval (prompts resampled within each category, as the overall score weighs
    categories equally), and McNemar's exact test on the prompts where exactly one of the two is correct."""
    from scipy.stats import binomtest

    from .vocab import CATEGORIES

    def verdicts(strategy, n):
        return {(r["item"], r["seed"]): (r["category"], r["correct"]) for r in records
                if r["strategy"] == strategy and r["n"] == n}

    va, vb = verdicts(*a), verdicts(*b)
    shared = sorted(set(va) & set(vb))
    by_category = {c: np.array([[va[k][1], vb[k][1]] for k in shared if va[k][0] == c], dtype=float)
                   for c in CATEGORIES}
    by_category = {c: v for c, v in by_category.items() if len(v)}
    diff = float(np.mean([v[:, 0].mean() - v[:, 1].mean() for v in by_category.values()]))
    rng = np.random.default_rng(seed)
    boot = np.zeros(resamples)
    for v in by_category.values():
        picks = rng.integers(0, len(v), size=(resamples, len(v)))
        boot += (v[picks, 0] - v[picks, 1]).mean(axis=1)
    boot /= len(by_category)
    only_a = sum(1 for k in shared if va[k][1] and not vb[k][1])
    only_b = sum(1 for k in shared if vb[k][1] and not va[k][1])
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    low, high = np.quantile(boot, [0.025, 0.975])
    return dict(a=list(a), b=list(b), pairs=len(shared), diff=diff, ci=(float(low), float(high)),
                only_a=only_a, only_b=only_b, mcnemar_p=float(p))


def comparisons_table(comparisons: list[dict]) -> str:
    lines = ["| A | B | A - B (overall) [95% paired bootstrap CI] | only A correct | only B correct | "
             "McNemar p |", "|---|---|---|---|---|---|"]
    for c in comparisons:
        lines.append(f"| {c['a'][0]} N={c['a'][1]} | {c['b'][0]} N={c['b'][1]} | {c['diff']:+.3f} "
                     f"[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}] | {c['only_a']} | {c['only_b']} | "
                     f"{c['mcnemar_p']:.3g} |")
    return "\n".join(lines) + "\n"


def markdown_table(rows: list[dict]) -> str:
    from .vocab import CATEGORIES

    # "items right": every item counted alike (the overall weighs each category alike, so a 2-prompt category
    # moves it as much as a 200-prompt one)
    head = ["strategy", "N", "overall [95% CI]", "items right", *CATEGORIES, "oracle", "reward", "diversity",
            "token-passes/prompt", "s/prompt"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        right = round(sum(v["acc"] * v["n"] for v in r["categories"].values()))
        cells = [r["strategy"], str(r["n"]), f"{r['overall']:.3f} [{r['overall_ci'][0]:.3f}, {r['overall_ci'][1]:.3f}]",
                 f"{right}/{r['items']}"]
        for c in CATEGORIES:
            v = r["categories"].get(c)
            cells.append(f"{v['acc']:.2f} [{v['ci'][0]:.2f}, {v['ci'][1]:.2f}]" if v else "–")
        div = "–" if math.isnan(r["diversity"]) else f"{r['diversity']:.3f}"
        cells += [f"{r['oracle']:.3f}", f"{r['reward']:.4f}", div, f"{r['token_passes']:.0f}", f"{r['seconds']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


PLOT_COLOURS = {"raw": (120, 120, 120), "is": (230, 150, 30), "bon": (40, 90, 220), "tts-var": (210, 40, 40)}


def plot(rows: list[dict], path: Path) -> Path:
    """Overall accuracy vs N (log2 axis) per strategy with 95% intervals, drawn with Pillow."""
    from PIL import Image, ImageDraw, ImageFont

    width, height, left, right, top, bottom = 640, 420, 60, 120, 30, 50
    ns = sorted({r["n"] for r in rows})
    lo = max(0.0, min(r["overall_ci"][0] for r in rows) - 0.05)
    hi = min(1.0, max(r["overall_ci"][1] for r in rows) + 0.05)
    im = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(im), ImageFont.load_default()
    span = max(math.log2(max(ns)), 1.0)
    x_of = lambda n: left + (width - left - right) * math.log2(n) / span  # noqa: E731
    y_of = lambda a: top + (height - top - bottom) * (hi - a) / (hi - lo)  # noqa: E731
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for n in ns:
        draw.text((x_of(n) - 4, height - bottom + 6), str(n), fill="black", font=font)
    for k in range(6):
        a = lo + (hi - lo) * k / 5
        draw.text((8, y_of(a) - 6), f"{a:.2f}", fill="black", font=font)
    draw.text((width // 2 - 60, height - 20), "N (log scale)", fill="black", font=font)
    draw.text((left, 8), "GenEval-style overall accuracy (95% CI)", fill="black", font=font)
    for k, strategy in enumerate(s for s in STRATEGIES if any(r["strategy"] == s for r in rows)):
        colour = PLOT_COLOURS[strategy]
        points = sorted((r["n"], r["overall"], r["overall_ci"]) for r in rows if r["strategy"] == strategy)
        if strategy == "raw":  # plain sampling does not depend on N: a flat line
            points = [(n, points[0][1], points[0][2]) for n in ns]
        xy = [(x_of(n), y_of(a)) for n, a, _ in points]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for (n, a, (c0, c1)), (x, y) in zip(points, xy):
            draw.line([(x, y_of(c0)), (x, y_of(c1))], fill=colour, width=1)
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.text((width - right + 10, top + 16 * k), strategy, fill=colour, font=font)
    im.save(path)
    return path


def write_outputs(out: Path, config: dict, records: list[dict]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(records)
    keys = {(r["strategy"], r["n"]) for r in records}
    comparisons = [paired_comparison(records, a, b) for a, b in comparison_pairs(keys)]
    table = markdown_table(rows) + "\nPaired comparisons (same prompts and seeds):\n\n" + comparisons_table(comparisons)
    (out / "results.json").write_text(json.dumps(dict(config=config, summary=rows, comparisons=comparisons,
                                                      records=records), indent=1))
    (out / "results.md").write_text(f"Command: `{config['command']}`\n\n{table}")
    plot(rows, out / "accuracy_vs_n.png")
    return dict(rows=rows, table=table)


# ---- comparing finished runs (same prompts and seeds, one setting changed) -----------------------------------
def paired_reward_difference(ra: dict, rb: dict, resamples: int = 4000, seed: int = 0) -> dict:
    """Mean reward of A's picks minus B's over the shared (item, seed) keys, with a 95% paired bootstrap."""
    shared = sorted(set(ra) & set(rb))
    d = np.array([ra[k] - rb[k] for k in shared])
    boot = d[np.random.default_rng(seed).integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    low, high = np.quantile(boot, [0.025, 0.975])
    return dict(diff=float(d.mean()), ci=(float(low), float(high)))


def load_runs(folders: list[Path]) -> list[dict]:
    """The results.json of each finished evaluate run."""
    return [json.loads((Path(folder) / "results.json").read_text()) for folder in folders]


def compare_runs(folders: list[Path], baseline: int = 0) -> str:
    """Markdown: every run's records against the baseline run's, per (strategy, N) both hold: accuracy
    (paired_comparison), picked reward (paired bootstrap), seconds per prompt and, where both runs saved
    their picked images (--save-images), the PSNR between them (paired_psnr). Runs are named by the setting
    they differ in (their --selection-decode or --weight-storage; their folder names when neither tells them
    apart, e.g. two models; the paths as given when the folder names are alike too, e.g. v2/raw and
    v3/raw), and must cover the same prompts and seeds."""
    loaded = load_runs(folders)
    names = [Path(folder).name for folder in folders]
    if len(set(names)) < len(names):
        names = [str(folder) for folder in folders]
    for setting, default in (("selection_decode", None), ("weight_storage", "as computed")):
        named = [str(data["config"].get(setting) or default) for data in loaded]
        if len(set(named)) == len(named):
            names = named
            break
    runs = [(name, data["records"]) for name, data in zip(names, loaded)]
    base_name, base_records = runs[baseline]
    lines = [f"Against `{base_name}` (A = the run named, B = `{base_name}`; same prompts and seeds):", "",
             "| run | strategy | N | pairs | accuracy A - B [95% paired bootstrap CI] | only A | only B | McNemar p "
             "| reward A - B [95% CI] | s/prompt A / B | PSNR A vs B, dB: mean of differing (pooled) [identical] |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    base_folder = Path(folders[baseline])
    for index, (folder, (name, records)) in enumerate(zip(folders, runs)):
        if index == baseline:
            continue
        keys = sorted({(r["strategy"], r["n"]) for r in records} & {(r["strategy"], r["n"]) for r in base_records})
        for strategy, n in keys:
            mine = [dict(r, strategy="A") for r in records if (r["strategy"], r["n"]) == (strategy, n)]
            theirs = [dict(r, strategy="B") for r in base_records if (r["strategy"], r["n"]) == (strategy, n)]
            acc = paired_comparison(mine + theirs, ("A", n), ("B", n))
            rewards = [{(r["item"], r["seed"]): r["reward"] for r in part} for part in (mine, theirs)]
            reward = paired_reward_difference(*rewards)
            seconds = [np.mean([r["seconds"] for r in part]) for part in (mine, theirs)]
            lines.append(f"| {name} | {strategy} | {n} | {acc['pairs']} | {acc['diff']:+.3f} [{acc['ci'][0]:+.3f}, "
                         f"{acc['ci'][1]:+.3f}] | {acc['only_a']} | {acc['only_b']} | {acc['mcnemar_p']:.3g} | "
                         f"{reward['diff']:+.4f} [{reward['ci'][0]:+.4f}, {reward['ci'][1]:+.4f}] | "
                         f"{seconds[0] / seconds[1]:.2f} | {psnr_cell(Path(folder), base_folder, strategy, n)} |")
    return "\n".join(lines) + "\n"


def psnr_cell(folder: Path, base: Path, strategy: str, n: int) -> str:
    mine, theirs = (load_picks(f / "images", strategy, n) for f in (folder, base))
    if not mine or not theirs:
        return "–"
    psnr = paired_psnr(mine, theirs)
    return f"{psnr['mean']:.1f} ({psnr['pooled']:.1f}) [{psnr['identical']}/{psnr['pairs']}]"


# what runs must share to be merged into one evaluation
MERGE_FIELDS = ("prompts", "limit", "chunk", "assets", "selection_decode", "weight_storage")


def merge_runs(folders: list[Path], out: Path) -> dict:
    """One evaluation from finished runs of the same model, prompts, selection decode and weight storage that
    measured different strategies or N (e.g. N = 8 run later): their records together, with the summary, the
    paired comparisons between them and the plot written to `out` as evaluate writes them."""
    loaded = load_runs(folders)
    for field in MERGE_FIELDS:
        values = {json.dumps(data["config"].get(field)) for data in loaded}
        if len(values) > 1:
            raise SystemExit(f"cannot merge runs that differ in {field} ({', '.join(sorted(values))}): "
                             "use compare without --merge to pair runs of different settings")
    records, seen = [], set()
    for folder, data in zip(folders, loaded):
        # a merged folder has no chunk counts: its parts were finished
        if data["config"].get("chunks_done", 0) < data["config"].get("chunks_total", 0):
            raise SystemExit(f"{folder} is unfinished ({data['config']['chunks_done']} of "
                             f"{data['config']['chunks_total']} chunks): rerun its command to finish it first")
        for r in data["records"]:
            key = (r["strategy"], r["n"], r["item"], r["seed"])
            if key in seen:
                raise SystemExit(f"{folder} measures {r['strategy']} at N = {r['n']} again: merge runs of "
                                 "different strategies or N only")
            seen.add(key)
            records.append(r)
    shared = {field: loaded[0]["config"].get(field) for field in MERGE_FIELDS}
    # seeds and processes may differ between the runs: each run's own command says them
    config = dict(shared, command=f"python -m ttsvar_core compare --merge {out} " + " ".join(map(str, folders)),
                  merged=[data["config"]["command"] for data in loaded],
                  strategies=sorted({r["strategy"] for r in records}), n=sorted({r["n"] for r in records}))
    return write_outputs(Path(out), config, records)


def add_compare_parser(sub):
    p = sub.add_parser("compare", help="paired comparison of finished ShapesWorld evaluate runs that differ in "
                                       "one setting (e.g. --selection-decode or --weight-storage), or with --merge "
                                       "their union")
    p.add_argument("runs", nargs="+", help="evaluate output folders; the first is the baseline")
    p.add_argument("--merge", metavar="OUT", default=None,
                   help="instead: write the runs' records as one evaluation to OUT (same model, prompts and "
                        "decode; different strategies or N), with the paired comparisons between them")
    p.set_defaults(func=run_compare)
    return p


def run_compare(args) -> int:
    if args.merge:
        print(merge_runs([Path(r) for r in args.runs], Path(args.merge))["table"])
    else:
        print(compare_runs([Path(r) for r in args.runs]))
    return 0


# ---- processes -------------------------------------------------------------------------------------------
def run_key(args) -> str:
    """What a journal line must match to be reused: the prompt set, chunking, strategies, N, model, the
    selection decode and the weight storage."""
    return json.dumps([args.prompts, args.limit, args.chunk, sorted(args.strategies), list(args.n),
                       str(Path(args.assets).resolve()), args.selection_decode, args.weight_storage])


def read_journal(out: Path, key: str) -> dict[tuple[int, int], list[dict]]:
    """(chunk, seed) -> records of every finished chunk of this configuration, from all ranks' journals."""
    done = {}
    for path in sorted(out.glob("journal-rank*.jsonl")):
        for line in path.read_text().splitlines():
            entry = json.loads(line) if line.strip() else None
            if entry and entry["key"] == key:
                done[(entry["chunk"], entry["seed"])] = entry["records"]
    return done


def chunk_order(count: int) -> list[int]:
    """A fixed shuffle of the chunks: an interrupted run has done a random subset of them, not the first
    categories only (chunks follow the category order of the prompt set)."""
    return np.random.default_rng(0).permutation(count).tolist()


def work(rank: int, world: int, args) -> None:
    """Runs this process's chunks (every world-th of chunk_order), appending each finished (chunk, seed)
    to out/journal-rank{rank}.jsonl; chunks already in a journal are skipped, so a rerun resumes."""
    from .demo import load_shipped

    out, key = Path(args.out), run_key(args)
    out.mkdir(parents=True, exist_ok=True)
    done = read_journal(out, key)
    device = f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
    shipped = load_shipped(args.assets, device=device, weight_storage=args.weight_storage)
    items = eval_items(args.prompts, args.limit)
    chunks = [items[i:i + args.chunk] for i in range(0, len(items), args.chunk)]
    runs = plan_runs(args.strategies, args.n)
    mine = chunk_order(len(chunks))[rank::world]
    with open(out / f"journal-rank{rank}.jsonl", "a") as journal:
        for count, chunk_id in enumerate(mine, 1):
            for seed in range(args.seeds):
                if (chunk_id, seed) in done:
                    continue
                records = run_chunk(shipped, chunks[chunk_id], chunk_id, runs, seed, args.selection_decode,
                                    out / "images" if args.save_images else None)
                journal.write(json.dumps(dict(key=key, chunk=chunk_id, seed=seed, records=records)) + "\n")
                journal.flush()
            if args.verbose:
                print(f"rank {rank}: chunk {count}/{len(mine)} done", flush=True)


def distributed_worker(rank: int, world: int, args, init_method: str) -> None:
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(rank % torch.cuda.device_count())
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world)
    try:
        work(rank, world, args)
        dist.barrier()  # every rank's journal is complete
        if rank == 0:
            finish(args)
    finally:
        dist.destroy_process_group()


def finish(args) -> None:
    """Aggregates every finished chunk of this configuration found in the journals."""
    done = read_journal(Path(args.out), run_key(args))
    records = [r for part in done.values() for r in part]
    records.sort(key=lambda r: (r["strategy"], r["n"], r["seed"], r["item"]))
    total = -(-len(eval_items(args.prompts, args.limit)) // args.chunk) * args.seeds
    config = dict(command=args.command_line, prompts=args.prompts, limit=args.limit, strategies=list(args.strategies),
                  n=list(args.n), seeds=args.seeds, chunk=args.chunk, procs=args.procs, assets=str(args.assets),
                  selection_decode=args.selection_decode, weight_storage=args.weight_storage,
                  chunks_done=len(done), chunks_total=total)
    written = write_outputs(Path(args.out), config, records)
    print(written["table"])
    print(f"{len(done)}/{total} chunks; wrote {Path(args.out) / 'results.md'}, results.json, accuracy_vs_n.png")


def add_evaluate_parser(sub):
    from ..model.checkpoints import WEIGHT_STORAGE
    from .demo import ASSETS
    p = sub.add_parser("evaluate", help="accuracy of plain / IS / Best-of-N / TTS-VAR on ShapesWorld test prompts")
    p.add_argument("--prompts", choices=("geneval", "test"), default="geneval",
                   help="geneval: 553 test items in GenEval's category mix; test: the 432 held-out prompts")
    p.add_argument("--strategies", default="raw,is,bon,tts-var")
    p.add_argument("--n", type=lambda text: parse_ints(text, "--n"), default=(1, 2, 4, 8), help="comma-separated N values")
    p.add_argument("--seeds", type=int, default=1, help="seeds per prompt (0..S-1)")
    p.add_argument("--limit", type=int, default=None, help="only this many prompts, spread over the set")
    p.add_argument("--chunk", type=int, default=8, help="prompts per run_search call")
    p.add_argument("--procs", type=int, default=1, help="processes (torch.distributed, gloo on CPU, NCCL on GPU)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process")
    p.add_argument("--assets", default=str(ASSETS))
    p.add_argument("--selection-decode", choices=EVALUATION_DECODES, default="shipped",
                   help="how selections decode: shipped: at the shipped selection_side (32 px); full: full size "
                        "(64 px); grid: at each scale's token grid (at most the shipped side); grid-floor16: the "
                        "same, never below 16 px")
    p.add_argument("--weight-storage", choices=list(WEIGHT_STORAGE), default=None,
                   help="store the transformer blocks' matmul weights narrower than the shipped fp32, upcast layer "
                        "by layer (bf16, fp16 or fp8 = float8 e4m3fn); default: stored as they compute")
    p.add_argument("--save-images", action="store_true",
                   help="keep every picked image in --out/images (compare then reports the PSNR between two runs)")
    p.add_argument("--out", required=True)
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--summarize", action="store_true",
                   help="run nothing: aggregate the chunks finished so far (an interrupted run's journal)")
    p.set_defaults(func=run_evaluate)
    return p


def run_evaluate(args) -> int:
    import sys

    args.strategies = tuple(s for s in args.strategies.split(",") if s)
    unknown = set(args.strategies) - set(STRATEGIES)
    if unknown:
        raise SystemExit(f"unknown strategies {sorted(unknown)}; choose from {STRATEGIES}")
    # the command that produces these results (--summarize only re-aggregates them)
    words = [w for w in sys.argv[1:] if w != "--summarize"] if sys.argv[1:2] == ["evaluate"] else ["evaluate"]
    args.command_line = "python -m ttsvar_core " + " ".join(words)
    if args.summarize:
        finish(args)
    elif "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # launched by torchrun
        distributed_worker(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), args, "env://")
    elif args.procs > 1:
        import tempfile

        import torch.multiprocessing as mp
        with tempfile.TemporaryDirectory() as tmp:
            mp.spawn(distributed_worker, args=(args.procs, args, f"file://{tmp}/rendezvous"), nprocs=args.procs)
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        work(0, 1, args)
        finish(args)
    return 0
