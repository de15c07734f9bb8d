"""The custom socket types of the pack, declared once, and the small frozen values that travel on them.

ComfyUI caches node outputs and may feed one output into several nodes, so every value here is frozen and
nodes derive new ones with dataclasses.replace instead of changing them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ttsvar_core.engine import BatchSchedule, SearchState
from ..ttsvar_core.pipeline import InfinityPipeline

# Socket type names, as they appear on node inputs and outputs.
MODEL = "TTSVAR_MODEL"                 # InfinityPipeline: transformer + VAE + T5 text encoder
CONDITIONING = "TTSVAR_CONDITIONING"   # Conditioning
STATE = "TTSVAR_STATE"                 # Candidates
SCHEDULE = "TTSVAR_SCHEDULE"           # SearchSchedule
REWARD = "TTSVAR_REWARD"               # ttsvar_core.scorers.Reward
FEATURES = "TTSVAR_FEATURES"           # ttsvar_core.scorers.FeatureExtractor
IMAGE = "IMAGE"                        # ComfyUI's image batch: float32 [B, H, W, 3] in 0..1

__all__ = ["MODEL", "CONDITIONING", "STATE", "SCHEDULE", "REWARD", "FEATURES", "IMAGE", "Conditioning",
           "Candidates", "SearchSchedule"]


# eq=False: values holding tensors compare (and hash) by identity, never element by element
@dataclass(frozen=True, eq=False)
class Conditioning:
    """Encoded prompts: T5 rows of every prompt, their lengths, and the optional negative prompt's rows."""

    prompts: tuple[str, ...]
    negative_prompt: str
    features: torch.Tensor
    lens: tuple[int, ...]
    negative: tuple | None          # (features, lens) of the negative prompt, one copy per prompt

    @property
    def channels(self) -> int:
        return int(self.features.shape[-1])


@dataclass(frozen=True, eq=False)
class Candidates:
    """What flows between the search nodes: the candidate state plus what later nodes need with it
    (the pipeline for its VAE, and the prompt texts rewards score against)."""

    state: SearchState
    pipeline: InfinityPipeline
    prompts: tuple[str, ...]

    @property
    def vae(self):
        return self.pipeline.vae

    @property
    def scales_done(self) -> int:
        return self.state.scale

    @property
    def num_scales(self) -> int:
        return self.state.geometry.num_scales


@dataclass(frozen=True)
class SearchSchedule:
    """A validated batch schedule and the image schedule it was made for (a pixel budget, or custom scales)."""

    batch: BatchSchedule
    preset: str
    pixel_budget: str
    custom_scales: tuple[tuple[int, int], ...] | None
