"""Search nodes: encode prompts, start candidates, step scales, cluster, resample, decode, pick, or all in one.

Scale numbers count from 0 (the 1x1 scale) to the last scale (12 at 1M), as in the TTS-VAR paper: the paper's
schedule clusters after scales 2 and 5 and resamples after scales 6 and 9.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ..ttsvar_core.engine import (DecodePolicy, ScaleDone, Scorers, SearchDone, SearchRequest, SearchState,
                                  SelectionDone, cluster_step, final_pick, resample_step, run_search)
from ..ttsvar_core.engine.text_inputs import parse_scales
from ..ttsvar_core.model.sampling import SamplingParams
from . import comfy_glue as glue
from . import previews
from .options import (ASPECT_RATIOS, FEATURE_MODE_CHOICES, PICK_MODES, PIXEL_BUDGET_CHOICES, POTENTIAL_CHOICES,
                      SCALES_TOOLTIP, SCHEDULE_PRESETS, SELECTION_DECODES, num_scales, schedule_from_widgets)
from .types import CONDITIONING, FEATURES, IMAGE, MODEL, REWARD, SCHEDULE, STATE, Candidates, SearchSchedule

CATEGORY = "TTS-VAR"
MAX_SEED = 2 ** 63 - 1
# Side (px) at which the node-by-node selections decode candidates for reward and feature models, and at
# which the Step node decodes its preview: the same size, so a selection after a Step reuses that decode.
SELECTION_SIDE = DecodePolicy().side


def to_image(uint8_images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> ComfyUI's float IMAGE batch."""
    return uint8_images.float().div(255.0)


def sampling_inputs() -> dict:
    return {
        "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True}),
        "cfg": ("FLOAT", {"default": 3.0, "min": 1.0, "max": 30.0, "step": 0.1,
                          "tooltip": "classifier-free guidance scale (1 = off)"}),
        "tau": ("FLOAT", {"default": 0.5, "min": 0.01, "max": 5.0, "step": 0.01,
                          "tooltip": "sampling temperature of the bits"}),
        "top_k": ("INT", {"default": 900, "min": 0, "max": 100000, "tooltip": "0 = off"}),
        "top_p": ("FLOAT", {"default": 0.97, "min": 0.0, "max": 1.0, "step": 0.01}),
    }


def image_schedule(pipeline, aspect_ratio: str, pixel_budget: str, custom) -> list[tuple[int, int]]:
    if aspect_ratio not in ASPECT_RATIOS:
        raise ValueError(f"unknown aspect ratio {aspect_ratio!r}; choose one of {list(ASPECT_RATIOS)}")
    return pipeline.schedule(ASPECT_RATIOS[aspect_ratio], pixel_budget, list(custom) if custom else None)


def selection_options(state: SearchState) -> dict:
    """Selection options of the node-by-node search: decode at SELECTION_SIDE, and give the selected
    candidates a cache without room to grow (the next Step node allocates what it needs).

    The input's cache is kept (no release_input): ComfyUI keeps the input state as a cached node output and
    hands it to this node again when only the selection's settings change; a released cache would then be
    rebuilt with room for the whole schedule, several GB per candidate at 1024 px."""
    return {"decode_side": SELECTION_SIDE, "capacity_scales": state.scale}


def run_selection(stage: str, candidates: Candidates, scorer, selection) -> dict:
    """A Cluster or Resample node's work: `selection(state, vae)` with the scorer on the device, then the
    candidate grid of what it chose from (the decode it scored, reused)."""
    check_started(candidates, {"cluster": "clustering", "resample": "resampling"}[stage])
    glue.check_interrupt()
    with glue.scorer_on_device(scorer):
        state, record = selection(candidates.state, candidates.vae)
    grid = previews.selection_grid(stage, candidates.state, candidates.vae, candidates.prompts, record,
                                   SELECTION_SIDE, glue.save_thumbnail)
    return {"ui": glue.send_candidates(grid), "result": (replace(candidates, state=state),)}


def check_started(candidates: Candidates, action: str) -> None:
    if candidates.scales_done == 0:
        raise ValueError(f"{action} needs generated images: put a TTS-VAR Step node before this one")


class TTSVARTextEncode:
    CATEGORY = CATEGORY
    DESCRIPTION = "Encodes the prompt (and an optional negative prompt) with the model's T5 text encoder."
    RETURN_TYPES = (CONDITIONING,)
    RETURN_NAMES = ("conditioning",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL,),
            "prompt": ("STRING", {"multiline": True, "default": "", "dynamicPrompts": False}),
            "negative_prompt": ("STRING", {"multiline": True, "default": "", "dynamicPrompts": False,
                                           "tooltip": "optional; empty uses the model's learned unconditional "
                                                      "text for guidance"}),
        }}

    def encode(self, model, prompt, negative_prompt):
        if not prompt.strip():
            raise ValueError("the prompt is empty: type what the image should show")
        with glue.text_encoder_on_device(model):
            prompts = model.encode([prompt], negative_prompt.strip() or None)
        return (prompts.to(model.model.device),)


class TTSVARStart:
    CATEGORY = CATEGORY
    DESCRIPTION = ("Creates N candidates for the prompt at the chosen size. Nothing is generated yet: connect "
                   "a Step node.")
    RETURN_TYPES = (STATE,)
    RETURN_NAMES = ("candidates",)
    FUNCTION = "start"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL,),
            "conditioning": (CONDITIONING,),
            "aspect_ratio": (list(ASPECT_RATIOS), {"default": "1:1", "tooltip": "width:height template"}),
            "pixel_budget": (PIXEL_BUDGET_CHOICES, {"default": "1M", "tooltip": "1M: 1024x1024 at 1:1 (13 "
                                                    "scales); 0.25M: 512x512 (10); 0.06M: 256x256 (7)"}),
            **sampling_inputs(),
            "candidates": ("INT", {"default": 8, "min": 1, "max": 256, "tooltip": "N: how many candidates start"}),
        }, "optional": {
            "custom_scales": ("STRING", {"default": "", "tooltip": SCALES_TOOLTIP}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, custom_scales=""):
        if custom_scales is None:
            return True  # linked: checked when the node runs
        try:
            parse_scales(custom_scales)
        except ValueError as e:
            return str(e)
        return True

    def start(self, model, conditioning, aspect_ratio, pixel_budget, seed, cfg, tau, top_k, top_p, candidates,
              custom_scales=""):
        if conditioning.channels != model.model.cfg.text_channels:
            raise ValueError(f"the conditioning has {conditioning.channels}-channel text features but this model "
                             f"takes {model.model.cfg.text_channels}: encode the prompt with the same model")
        schedule = image_schedule(model, aspect_ratio, pixel_budget, parse_scales(custom_scales))
        params = SamplingParams(cfg=cfg, tau=tau, top_k=top_k, top_p=top_p)
        # no KV-cache room yet: each Step node allocates room for exactly the scales it generates
        state = SearchState.start(model.model, conditioning.features, list(conditioning.lens), schedule, params,
                                  candidates, seed=seed, negative=conditioning.negative, capacity_scales=1)
        return (Candidates(state, model, conditioning.texts),)


class TTSVARStep:
    CATEGORY = CATEGORY
    DESCRIPTION = "Generates the next scales of every candidate, up to and including the chosen scale."
    RETURN_TYPES = (STATE,)
    RETURN_NAMES = ("candidates",)
    FUNCTION = "step"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "candidates": (STATE,),
            "to_scale": ("INT", {"default": -1, "min": -1, "max": 63, "tooltip": "the last scale to generate: "
                                 "0 is the 1x1 scale, 12 the last at 1M; -1 generates every remaining scale"}),
        }}

    def step(self, candidates, to_scale):
        total, done = candidates.num_scales, candidates.scales_done
        target = total if to_scale < 0 else to_scale + 1
        if done == total:
            raise ValueError(f"these candidates are finished (all {total} scales are generated): connect them to "
                             "Pick Best or Decode instead of another Step")
        if not done < target <= total:
            have = f"scales 0 to {done - 1}" if done else "no scale yet"
            raise ValueError(f"cannot step to scale {target - 1}: these candidates have {have} of 0 to "
                             f"{total - 1}; choose a scale from {done} to {total - 1} (or -1 for all)")
        glue.check_interrupt()
        # KV-cache room only for the scales this node generates: later selections replace the cache
        state = candidates.state.step(until=target, callback=glue.ScaleProgress(done, target), capacity_scales=target)
        grid = previews.step_grid(state, candidates.vae, candidates.prompts, SELECTION_SIDE, glue.save_thumbnail)
        ui = glue.send_candidates(grid)
        return {"ui": ui, "result": (replace(candidates, state=state),)}


class TTSVARCluster:
    CATEGORY = CATEGORY
    DESCRIPTION = ("Clustering selection: groups the candidates by image features and keeps the one nearest "
                   "each cluster centre, so diverse structures survive.")
    RETURN_TYPES = (STATE,)
    RETURN_NAMES = ("candidates",)
    FUNCTION = "select"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "candidates": (STATE,),
            "features": (FEATURES,),
            "keep": ("INT", {"default": 6, "min": 1, "max": 256, "tooltip": "candidates to keep per prompt"}),
            "feature_mode": (FEATURE_MODE_CHOICES, {"default": "pca", "tooltip": "pca: first principal "
                             "component of the patch tokens (the paper); pool: mean patch token; global: "
                             "the pooled feature"}),
        }}

    def select(self, candidates, features, keep, feature_mode):
        return run_selection("cluster", candidates, features, lambda state, vae: cluster_step(
            state, vae, features, keep, feature_mode, **selection_options(state)))


class TTSVARResample:
    CATEGORY = CATEGORY
    DESCRIPTION = ("Reward resampling: scores the candidates and draws the next ones in proportion to "
                   "exp(lambda x potential); strong candidates may be duplicated, weak ones dropped.")
    RETURN_TYPES = (STATE,)
    RETURN_NAMES = ("candidates",)
    FUNCTION = "select"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "candidates": (STATE,),
            "reward": (REWARD,),
            "keep": ("INT", {"default": 2, "min": 1, "max": 256, "tooltip": "candidates to draw per prompt"}),
            "potential": (POTENTIAL_CHOICES, {"default": "value", "tooltip": "value: this scale's reward; diff: "
                          "its gain over the last scored scale; max / sum: over all scored scales"}),
            "lam": ("FLOAT", {"default": 10.0, "min": 0.0, "max": 1000.0, "step": 0.1,
                              "tooltip": "lambda: 0 draws uniformly, larger values favour high rewards"}),
        }}

    def select(self, candidates, reward, keep, potential, lam):
        return run_selection("resample", candidates, reward, lambda state, vae: resample_step(
            state, vae, reward, list(candidates.prompts), keep, potential, lam, **selection_options(state)))


class TTSVARDecode:
    CATEGORY = CATEGORY
    DESCRIPTION = "Decodes every live candidate to an image (at any scale: early scales look blurred)."
    RETURN_TYPES = (IMAGE,)
    RETURN_NAMES = ("images",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"candidates": (STATE,)}}

    def decode(self, candidates):
        check_started(candidates, "decoding")
        return (to_image(candidates.state.decode(candidates.vae)),)


class TTSVARPickBest:
    CATEGORY = CATEGORY
    DESCRIPTION = ("Scores the finished candidates and picks one per prompt: the best, one drawn by reward "
                   "(importance sampling), or the first (no reward).")
    RETURN_TYPES = (IMAGE, IMAGE, STATE)
    RETURN_NAMES = ("chosen", "finalists", "candidates")
    FUNCTION = "pick"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "candidates": (STATE,),
            "mode": (list(PICK_MODES), {"default": "best"}),
            "lam": ("FLOAT", {"default": 10.0, "min": 0.0, "max": 1000.0, "step": 0.1,
                              "tooltip": "lambda of 'sample by reward'"}),
        }, "optional": {"reward": (REWARD,)}}

    def pick(self, candidates, mode, lam, reward=None):
        if candidates.scales_done != candidates.num_scales:
            raise ValueError(f"the candidates have {candidates.scales_done} of their {candidates.num_scales} "
                             "scales: add a TTS-VAR Step node with to_scale -1 before picking")
        if reward is None and PICK_MODES[mode] != "none":
            raise ValueError(f"mode {mode!r} scores the finalists: connect a reward model, or choose 'first'")
        with glue.scorer_on_device(reward):
            state, picks, record = final_pick(candidates.state, candidates.vae, reward, list(candidates.prompts),
                                              PICK_MODES[mode], lam)
        images = state.decode(candidates.vae)
        ui = glue.send_candidates(previews.final_grid(state, candidates.vae, candidates.prompts, record,
                                                      glue.save_thumbnail))
        return {"ui": ui, "result": (to_image(images[picks]), to_image(images), replace(candidates, state=state))}


class TTSVARBatchSchedule:
    CATEGORY = CATEGORY
    DESCRIPTION = ("How many candidates live after each scale, and where the search clusters and resamples. "
                   "Start from a preset; empty text fields keep the preset's values.")
    RETURN_TYPES = (SCHEDULE,)
    RETURN_NAMES = ("schedule",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "preset": (list(SCHEDULE_PRESETS), {"default": "TTS-VAR paper (2B)"}),
            "n": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "N: every batch size is multiplied by it "
                          "(Best-of-N: N candidates)"}),
            "pixel_budget": (PIXEL_BUDGET_CHOICES, {"default": "1M", "tooltip": "the image size, which decides the "
                             "number of scales: 1M has 13, 0.60M 12, 0.25M 10, 0.06M 7"}),
            "batch_sizes": ("STRING", {"default": "", "tooltip": "live candidates after each scale (times N), "
                            "e.g. 8,8,6,6,6,4,2,2,2,1,1,1,1; empty: the preset's"}),
            "cluster_scales": ("STRING", {"default": "", "tooltip": "scales after which candidates are "
                               "clustered, e.g. 2,5; 'none' for no clustering; empty: the preset's"}),
            "resample_scales": ("STRING", {"default": "", "tooltip": "scales after which candidates are "
                                "resampled by reward, e.g. 6,9; 'none'; empty: the preset's"}),
            "potential": (POTENTIAL_CHOICES, {"default": "value"}),
            "lam": ("FLOAT", {"default": 10.0, "min": 0.0, "max": 1000.0, "step": 0.1, "tooltip": "lambda"}),
            "feature_mode": (FEATURE_MODE_CHOICES, {"default": "pca"}),
        }, "optional": {
            "custom_scales": ("STRING", {"default": "", "tooltip": SCALES_TOOLTIP}),
            "selection_decode": (list(SELECTION_DECODES), {"default": "448 px", "tooltip": "size at which "
                                 "selections decode candidates for the reward and feature models. 448 px: "
                                 "enough for their 224 px input; scale grid: a selection after scale k decodes "
                                 "at scale k's token grid (at most 448 px), several times faster at early "
                                 "scales but picks worse on our test model (docs/shapesworld_results.md); "
                                 "full size: as the paper's code"}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, preset, pixel_budget, batch_sizes, cluster_scales, resample_scales, custom_scales=""):
        texts = (preset, pixel_budget, batch_sizes, cluster_scales, resample_scales, custom_scales)
        if any(t is None for t in texts):
            return True  # a linked value is known only at run time; build() checks it then
        try:
            scales = num_scales(pixel_budget, parse_scales(custom_scales))
            schedule_from_widgets(preset, 1, scales, batch_sizes, cluster_scales, resample_scales)
        except ValueError as e:
            return f"invalid schedule: {e}"
        return True

    def build(self, preset, n, pixel_budget, batch_sizes, cluster_scales, resample_scales, potential, lam,
              feature_mode, custom_scales="", selection_decode="448 px"):
        custom = parse_scales(custom_scales)
        batch = schedule_from_widgets(preset, n, num_scales(pixel_budget, custom), batch_sizes, cluster_scales,
                                     resample_scales, potential, lam, feature_mode, selection_decode)
        return (SearchSchedule(batch, preset, pixel_budget, custom),)


class TTSVARSampler:
    CATEGORY = CATEGORY
    DESCRIPTION = ("The whole search in one node: starts the candidates the schedule asks for, generates every "
                   "scale, clusters and resamples where the schedule says, and picks one image per prompt.")
    RETURN_TYPES = (IMAGE, IMAGE, STATE)
    RETURN_NAMES = ("chosen", "finalists", "candidates")
    FUNCTION = "sample"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL,),
            "conditioning": (CONDITIONING,),
            "schedule": (SCHEDULE,),
            "aspect_ratio": (list(ASPECT_RATIOS), {"default": "1:1", "tooltip": "width:height template (the "
                             "schedule's pixel budget sets the size)"}),
            **sampling_inputs(),
        }, "optional": {"reward": (REWARD,), "features": (FEATURES,)}}

    def sample(self, model, conditioning, schedule, aspect_ratio, seed, cfg, tau, top_k, top_p, reward=None,
               features=None):
        need_reward, need_features = schedule.batch.needs()
        if need_reward and reward is None:
            raise ValueError(f"the {schedule.preset} schedule scores candidates: connect a TTS-VAR Load Reward "
                             "Model node to the reward input")
        if need_features and features is None:
            raise ValueError(f"the {schedule.preset} schedule clusters candidates: connect a TTS-VAR Load Feature "
                             "Extractor node to the features input")
        scales = image_schedule(model, aspect_ratio, schedule.pixel_budget, schedule.custom_scales)
        request = SearchRequest(conditioning, tuple(scales), SamplingParams(cfg=cfg, tau=tau, top_k=top_k, top_p=top_p),
                                schedule.batch, seed=seed, scorers=Scorers(reward, features))
        events = SamplerEvents(model.vae, list(conditioning.texts), len(scales))
        glue.check_interrupt()
        with glue.scorer_on_device(reward), glue.scorer_on_device(features):
            result = run_search(model.model, model.vae, request, events)
        final = Candidates(result.state, model, conditioning.texts)
        return {"ui": events.ui, "result": (to_image(result.chosen), to_image(result.images), final)}


class SamplerEvents:
    """run_search's event handler in the sampler: progress per scale, and a candidate grid at every
    clustering, resampling and the final pick (a selection's grid shows the candidates it chose from, at the
    size it decoded them, so the grid costs no second decode)."""

    def __init__(self, vae, prompts, scales: int):
        self.vae, self.prompts = vae, prompts
        self.progress = glue.ScaleProgress(0, scales)
        self.ui = {}

    def __call__(self, event):
        if isinstance(event, ScaleDone):
            self.progress(event.state)
        elif isinstance(event, SelectionDone):
            self.ui = glue.send_candidates(previews.selection_grid(event.record.event, event.before, self.vae,
                                                                   self.prompts, event.record, event.decode_side,
                                                                   glue.save_thumbnail))
        elif isinstance(event, SearchDone):
            self.ui = glue.send_candidates(previews.final_grid(event.state, self.vae, self.prompts, event.record,
                                                               glue.save_thumbnail))
