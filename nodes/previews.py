"""Candidate grids: what the preview event `ttsvar.candidates` carries (plain data, no ComfyUI imports).

One payload describes the candidates a node saw at one scale:

    {"stage": "step" | "cluster" | "resample" | "final" | "keep" | "vary" | "image" | "score",
     "scale": 2, "scales": 13,            # the last generated scale (0 = the 1x1 scale) and the total;
                                          # None for "score" (images from anywhere, not candidates)
     "size": [H, W],                      # pixel size of the decoded images the grid was made from
     "prompts": ["a red car"],            # plain text; the page shows it as text, never as HTML
     "note": "potential value, lambda 10",
     "candidates": [{"index": 0,          # position among the candidates the node received
                     "prompt": 0,         # which prompt it belongs to
                     "origin": 5,         # the initial candidate it descends from
                     "status": "live" | "kept" | "dropped" | "duplicated" | "picked" | "finalist",
                     "copies": 1,         # how many candidates continue from it (0 = dropped)
                     "score": 0.31 | None,
                     "image": {"filename": "...png", "subfolder": "ttsvar", "type": "temp"} | None}],
     "hidden": 0}                         # candidates left out of the grid (more than MAX_THUMBNAILS)

Which candidates a grid shows decides what a click on it may do in the page: "step", "final" and "image"
grids show the node's output, "cluster", "resample", "keep" and "vary" grids the node's input.

"image" is whatever the `save` function given to the grid builders returns for a thumbnail: the nodes save
small PNGs into ComfyUI's temp folder and send references the page loads through /view, so the prompt
history stays small.
"""
from __future__ import annotations

import math
from collections import Counter

import torch
from PIL import Image

MAX_THUMBNAILS = 64
THUMBNAIL_SIDE = 128


def thumbnail(image: torch.Tensor, side: int = THUMBNAIL_SIDE) -> Image.Image:
    """A small copy of one uint8 [H, W, 3] image, aspect ratio kept."""
    picture = Image.fromarray(image.cpu().numpy())
    picture.thumbnail((side, side), Image.BILINEAR)
    return picture


def _score(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _payload(stage, scale, scales, images, prompts, entries, note, save) -> dict:
    for entry in entries[:MAX_THUMBNAILS]:
        entry["image"] = save(images[entry["index"]])
    for entry in entries[MAX_THUMBNAILS:]:
        entry["image"] = None
    return {"stage": stage, "scale": scale, "scales": scales,
            "size": [int(images.shape[1]), int(images.shape[2])], "prompts": list(prompts), "note": note,
            "candidates": entries, "hidden": max(len(entries) - MAX_THUMBNAILS, 0)}


def _grid(stage, state, images, prompts, entries, note, save) -> dict:
    return _payload(stage, int(state.scale) - 1, int(state.geometry.num_scales), images, prompts, entries, note,
                    save)


def _fate(copies: int) -> str:
    return "dropped" if copies == 0 else "kept" if copies == 1 else "duplicated"


def _entry(state, i: int, status: str, copies: int, score) -> dict:
    return {"index": i, "prompt": int(state.prompt_of[i]), "origin": int(state.origin[i]), "status": status,
            "copies": copies, "score": None if score is None else _score(score)}


def step_grid(state, vae, prompts, side, save, should_stop=None) -> dict:
    """The live candidates after stepping, with the reward of this scale where one was recorded.
    `side`: decode size limit; the selection that may follow decodes at the same size and reuses it.
    `should_stop()` runs before every decode chunk and raises to cancel (this decode is the grid's own)."""
    images = state.decode(vae, max_side=side, should_stop=should_stop)
    scores = state.scores[:, state.scale - 1]
    entries = [_entry(state, i, "live", 1, scores[i]) for i in range(state.num_candidates)]
    return _grid("step", state, images, prompts, entries, "", save)


def selection_grid(stage: str, before, vae, prompts, record: dict, side, save) -> dict:
    """The candidates a clustering or resampling node received, marked kept / dropped / duplicated.

    `before` is the state the selection ran on and `side` the size it decoded at: the decoded images are
    memoised in the state, so this costs no decode."""
    images = before.decode(vae, max_side=side)
    copies = Counter(record.kept)
    scores = record.scores_by_candidate()
    entries = []
    for i in range(before.num_candidates):
        count = copies.get(i, 0)
        entries.append(_entry(before, i, _fate(count), count, scores.get(i)))
    note = f"potential {record.potential}, lambda {record.lam:g}" if stage == "resample" else ""
    return _grid(stage, before, images, prompts, entries, note, save)


def final_grid(state, vae, prompts, record: dict, save) -> dict:
    """Every finalist with its final reward; the pick of each prompt marked."""
    images = state.decode(vae)
    picks = set(record.picks)
    scores = state.scores[:, state.scale - 1]
    entries = [_entry(state, i, "picked" if i in picks else "finalist", 1, scores[i])
               for i in range(state.num_candidates)]
    return _grid("final", state, images, prompts, entries, f"mode {record.mode}", save)


def chosen_grid(stage: str, before, vae, prompts, chosen, note: str, side, save) -> dict:
    """The candidates a Keep Candidates ("keep") or Vary from Scale ("vary") node received, marked by what the
    artist chose: kept, dropped or duplicated, with the reward of their scale where one was recorded. The
    decode at `side` is the one a Step node before it made for its own grid (memoised in the state)."""
    images = before.decode(vae, max_side=side)
    copies = Counter(chosen)
    scores = before.scores[:, before.scale - 1]
    entries = [_entry(before, i, _fate(copies.get(i, 0)), copies.get(i, 0), scores[i])
               for i in range(before.num_candidates)]
    return _grid(stage, before, images, prompts, entries, note, save)


def image_grid(state, vae, prompts, note: str, side, save, should_stop=None) -> dict:
    """Candidates started from an image: until they are stepped they are all the image's first scales, so
    one decode and one thumbnail serve every cell. `should_stop` as in step_grid."""
    first = state.select([0], capacity_scales=state.scale).decode(vae, max_side=side, should_stop=should_stop)
    shared = save(first[0])
    entries = [_entry(state, i, "live", 1, None) for i in range(state.num_candidates)]
    return _grid("image", state, first.expand(state.num_candidates, -1, -1, -1), prompts, entries, note,
                 lambda _image: shared)


def score_grid(images: torch.Tensor, prompt: str, scores: torch.Tensor, save) -> dict:
    """Images from anywhere in a graph (uint8 [N, H, W, 3]) with their rewards, in input order; the best
    marked picked. No scale: they are not candidates of a search."""
    finite = torch.where(torch.isnan(scores), -torch.inf, scores)
    best = int(finite.argmax())
    entries = [{"index": i, "prompt": 0, "origin": i, "status": "picked" if i == best else "finalist",
                "copies": 1, "score": _score(scores[i])} for i in range(images.shape[0])]
    return _payload("score", None, None, images, [prompt], entries, "", save)
