"""The custom socket types of the pack, declared once, and the small frozen values that travel on them.

ComfyUI caches node outputs and may feed one output into several nodes, so every value here is frozen and
nodes derive new ones with dataclasses.replace instead of changing them.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..ttsvar_core.engine import BatchSchedule, SearchState
from ..ttsvar_core.model.pipeline import InfinityPipeline

# Socket type names, as they appear on node inputs and outputs.
MODEL = "TTSVAR_MODEL"                 # InfinityPipeline: transformer + VAE + T5 text encoder
CONDITIONING = "TTSVAR_CONDITIONING"   # ttsvar_core.engine.Prompts
STATE = "TTSVAR_STATE"                 # Candidates
SCHEDULE = "TTSVAR_SCHEDULE"           # SearchSchedule
REWARD = "TTSVAR_REWARD"               # ttsvar_core.scorers.Reward
FEATURES = "TTSVAR_FEATURES"           # ttsvar_core.scorers.FeatureExtractor
IMAGE = "IMAGE"                        # ComfyUI's image batch: float32 [B, H, W, 3] in 0..1

__all__ = ["MODEL", "CONDITIONING", "STATE", "SCHEDULE", "REWARD", "FEATURES", "IMAGE",
           "Candidates", "SearchSchedule"]


# eq=False: values holding tensors compare (and hash) by identity, never element by element
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
