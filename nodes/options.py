"""Widget choices, the inputs several nodes share, and the translation of typed-in values.

Every parser raises ValueError with a message that says what is wrong and how to write it instead; the
nodes show it as is.
"""
from __future__ import annotations

import re
from dataclasses import replace

from comfy_api.latest import io

from ..ttsvar_core.engine import MAX_SEED, BatchSchedule, DecodePolicy, preset
from ..ttsvar_core.engine.schedule import DECODE_CHOICES, DECODE_EFFECTS, FEATURE_MODES, PAPER_2B, PAPER_8B, POTENTIALS
from ..ttsvar_core.engine.text_inputs import parse_ints
from ..ttsvar_core.model.sampling import SamplingParams
from ..ttsvar_core.model.schedules import PIXEL_BUDGETS
from .types import Choice

CATEGORY = "TTS-VAR"
# Aspect-ratio templates of Infinity as width:height labels -> the template's height/width key.
ASPECT_RATIOS = {
    "1:1": "1.0", "4:5": "1.25", "5:4": "0.8", "3:4": "1.333", "4:3": "0.75", "2:3": "1.5", "3:2": "0.666",
    "4:7": "1.75", "7:4": "0.571", "1:2": "2.0", "2:1": "0.5", "2:5": "2.5", "5:2": "0.4", "1:3": "3.0",
    "3:1": "0.333",
}
PIXEL_BUDGET_CHOICES = list(PIXEL_BUDGETS)   # 1M is 1024x1024 at 1:1, 0.06M is 256x256
# Batch-schedule presets as artists read them -> the engine's preset names.
SCHEDULE_PRESETS = {
    "TTS-VAR paper (2B)": "tts-var-2b",
    "TTS-VAR paper (8B)": "tts-var-8b",
    "Best-of-N": "bon",
    "Importance sampling": "is",
    "Plain sampling": "raw",
}


def _schedule_words(paper) -> str:
    sizes = ",".join(str(b) for b in paper.base_sizes)
    return (f"{sizes} x N, clustering after scales {' and '.join(map(str, paper.cluster_scales))}, resampling "
            f"after {' and '.join(map(str, paper.resample_scales))}")


SCHEDULE_PRESET_TOOLTIP = (
    f"TTS-VAR paper (2B): the paper's schedule for {PAPER_2B.setting}, i.e. pixel budget 1M: "
    f"{_schedule_words(PAPER_2B)}. TTS-VAR paper (8B): the paper's Appendix B schedule for {PAPER_8B.setting}, "
    f"i.e. 0.25M: {_schedule_words(PAPER_8B)}. The paper gives no 8B schedule at 1M: there the 8B preset is the "
    "2B's 13-scale schedule (and the 2B preset at 0.25M is the 8B's). At 0.06M and 0.60M both are the 2B "
    "schedule rescaled, which is not in the paper. Paper presets decode candidates at full size for their "
    "selections, as the paper's code. Best-of-N: N whole images, the best by reward. Importance sampling: N "
    "whole images, one drawn by reward. Plain sampling: N images, nothing scored.")
SELECTION_DECODE_TOOLTIP = (
    "size at which selections decode candidates for the reward and feature models. "
    f"full size (paper): {DECODE_EFFECTS['paper']} 448 px: {DECODE_EFFECTS['448px']} "
    f"scale grid (fast): {DECODE_EFFECTS['scale-grid']} 32 px (ShapesWorld): the shipped small model's setting, "
    "its 64 px images hold no more for the scorers")
PICK_MODES = {"best": "best", "sample by reward": "sample", "first": "none"}
POTENTIAL_CHOICES = list(POTENTIALS)
FEATURE_MODE_CHOICES = list(FEATURE_MODES)
DTYPE_CHOICES = ["auto", "bf16", "fp16", "fp32"]
# How selections decode candidates for the reward and feature models, as artists read it -> the engine's
# DecodePolicy (the named choices of DECODE_CHOICES, and the shipped ShapesWorld model's own setting).
SELECTION_DECODES = {
    "full size (paper)": DECODE_CHOICES["paper"],
    "448 px": DECODE_CHOICES["448px"],
    "scale grid (fast)": DECODE_CHOICES["scale-grid"],
    # the shipped ShapesWorld model's setting (its sampling.json): its 64 px images hold no more for the scorers
    "32 px (ShapesWorld)": DecodePolicy(32),
}
# Side (px) at which the node-by-node selections decode candidates for reward and feature models, and at
# which the Step node decodes its preview: the same size, so a selection after a Step reuses that decode.
SELECTION_SIDE = DecodePolicy().side
SCALES_TOOLTIP = ("Optional. Token grids of a custom image schedule, coarse to fine, e.g. 1x1,2x2,4x4,8x8 "
                  "(height x width; a single number is a square). Each token is 16x16 pixels. Leave empty to "
                  "use the aspect ratio and pixel budget.")


# ---- inputs several nodes share ---------------------------------------------------------------------
# Tooltips are written for the person at the canvas: what changing the value does, and the usual value.
def sampling_inputs() -> list[io.Input]:
    return [
        io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True,
                     tooltip="which pictures you get: the same seed and settings give the same candidates again, "
                             "another seed other ones (each candidate draws from its own stream made from it)"),
        io.Float.Input("cfg", default=3.0, min=1.0, max=30.0, step=0.1,
                       tooltip="how closely the image follows the prompt (classifier-free guidance): 1 = off, 3 "
                               "as the released models; higher sticks to the words more but looks harsher"),
        io.Float.Input("tau", default=0.5, min=0.01, max=5.0, step=0.01,
                       tooltip="temperature: lower gives cleaner, safer images, higher more varied and riskier "
                               "ones; 0.5 as Infinity-2B's release, 1.0 as Infinity-8B's and the shipped "
                               "ShapesWorld model"),
        io.Int.Input("top_k", default=900, min=0, max=100000,
                     tooltip="Infinity draws every bit of its codes from two values, so any k of 2 or more leaves "
                             "the draw as it is (900 as the released models) and 1 always takes the likelier "
                             "value; 0 = off"),
        io.Float.Input("top_p", default=0.97, min=0.0, max=1.0, step=0.01,
                       tooltip="a bit whose likelier value is at least this sure takes that value instead of being "
                               "drawn: 0.97 as the released models; lower gives smoother, less varied images; "
                               "0 or 1 = off"),
    ]


def pixel_budget_input() -> Choice:
    return Choice("pixel_budget", options=PIXEL_BUDGET_CHOICES, default="1M",
                  tooltip="the image size, which also sets the number of scales: 1M is 1024x1024 at 1:1 (13 "
                          "scales), 0.60M 768x768 (12), 0.25M 512x512 (10), 0.06M 256x256 (7) for Infinity; the "
                          "shipped ShapesWorld model draws 64x64 at 0.06M")


def potential_input() -> Choice:
    return Choice("potential", options=POTENTIAL_CHOICES, default="value",
                  tooltip="what resampling weighs each candidate by: value, its reward now (the paper); diff, how "
                          "much its reward rose since it was last scored; max, its best reward so far; sum, its "
                          "rewards so far added up")


def feature_mode_input() -> Choice:
    return Choice("feature_mode", options=FEATURE_MODE_CHOICES, default="pca",
                  tooltip="what clustering compares: pca, the layout (the main pattern across the image's patch "
                          "features, as the paper); pool, the average patch feature; global, the extractor's one "
                          "summary feature of the image")


def lam_input(tooltip: str) -> io.Float.Input:
    return io.Float.Input("lam", default=10.0, min=0.0, max=1000.0, step=0.1, tooltip=tooltip)


def aspect_ratio_input(tooltip: str) -> Choice:
    return Choice("aspect_ratio", options=list(ASPECT_RATIOS), default="1:1", tooltip=tooltip)


def custom_scales_input() -> io.String.Input:
    return io.String.Input("custom_scales", default="", optional=True, tooltip=SCALES_TOOLTIP)


def sampling(cfg: float, tau: float, top_k: int, top_p: float) -> SamplingParams:
    return SamplingParams(cfg=cfg, tau=tau, top_k=top_k, top_p=top_p)


# ---- typed-in values -> engine values ---------------------------------------------------------------
def image_schedule(pipeline, aspect_ratio: str, pixel_budget: str, custom) -> tuple[tuple[int, int], ...]:
    return tuple(pipeline.schedule(ASPECT_RATIOS[aspect_ratio], pixel_budget, list(custom) if custom else None))


def num_scales(pixel_budget: str, custom: tuple | None) -> int:
    if custom:
        return len(custom)
    if pixel_budget not in PIXEL_BUDGETS:
        raise ValueError(f"unknown pixel budget {pixel_budget!r}; choose one of {list(PIXEL_BUDGETS)}")
    return PIXEL_BUDGETS[pixel_budget]


def schedule_from_widgets(preset_label: str, n: int, scales: int, batch_sizes: str = "", cluster_scales: str = "",
                         resample_scales: str = "", potential: str = "value", lam: float = 10.0,
                         feature_mode: str = "pca", selection_decode: str = "full size (paper)") -> BatchSchedule:
    """A preset for `scales` scales with the user's edits. Empty text keeps the preset's value; 'none'
    removes every clustering (or resampling) scale. Scale numbers count from 0, the 1x1 scale, as in the
    paper."""
    if preset_label not in SCHEDULE_PRESETS:
        raise ValueError(f"unknown schedule preset {preset_label!r}; choose one of {list(SCHEDULE_PRESETS)}")
    if selection_decode not in SELECTION_DECODES:
        raise ValueError(f"unknown selection decode {selection_decode!r}; choose one of {list(SELECTION_DECODES)}")
    schedule = preset(SCHEDULE_PRESETS[preset_label], n=n, num_scales=scales)
    policy = SELECTION_DECODES[selection_decode]
    edits: dict = {"potential": potential, "lam": float(lam), "feature_mode": feature_mode,
                   "selection_side": policy.side, "selection_resolution": policy.resolution}
    if batch_sizes.strip():
        sizes = parse_ints(batch_sizes, "batch sizes")
        if len(sizes) != scales:
            raise ValueError(f"batch sizes: {len(sizes)} values given but the image schedule has {scales} scales; "
                             f"give one size per scale (scale 0 to {scales - 1})")
        edits["base_sizes"] = sizes
    for field, text in (("cluster_scales", cluster_scales), ("resample_scales", resample_scales)):
        if text.strip().lower() == "none":
            edits[field] = ()
        elif text.strip():
            edits[field] = parse_ints(text, field.replace("_", " "))
    return replace(schedule, **edits).validate(scales)


KEEP_SYNTAX = "candidate numbers separated by commas, xN for N copies, e.g. 0,3,5x2"


def parse_keep(text: str) -> tuple[int, ...]:
    """'0,3,5x2' -> (0, 3, 5, 5): the candidates a Keep Candidates node keeps, in order ('' -> ())."""
    kept = []
    for part in text.replace(" ", "").replace("×", "x").lower().split(","):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)(?:x(\d+))?", part)
        if match is None:
            raise ValueError(f"keep: {part!r} is not a candidate; write {KEEP_SYNTAX}")
        copies = int(match[2] or 1)
        if copies < 1:
            raise ValueError(f"keep: {part!r} asks for no copies; leave candidate {match[1]} out instead")
        kept += [int(match[1])] * copies
    return tuple(kept)
