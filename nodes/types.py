"""The pack's socket types, declared once, and the small frozen values that travel on them.

ComfyUI caches node outputs and may feed one output into several nodes, so every value here is frozen and
nodes derive new ones with dataclasses.replace instead of changing them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from comfy_api.latest import io

from ..ttsvar_core.engine import BatchSchedule, FinalScores, SearchState

# Socket types. The names after io.Custom are what workflows store on links: never rename them.
MODEL = io.Custom("TTSVAR_MODEL")                 # comfy_glue.ManagedPipeline: transformer + VAE + T5 text encoder
CONDITIONING = io.Custom("TTSVAR_CONDITIONING")   # ttsvar_core.engine.Prompts
STATE = io.Custom("TTSVAR_STATE")                 # Candidates
SCHEDULE = io.Custom("TTSVAR_SCHEDULE")           # SearchSchedule
REWARD = io.Custom("TTSVAR_REWARD")               # ttsvar_core.scorers.Reward
FEATURES = io.Custom("TTSVAR_FEATURES")           # ttsvar_core.scorers.FeatureExtractor
IMAGE = io.Image                                  # ComfyUI's image batch: float32 [B, H, W, 3] in 0..1


def pick_outputs() -> list[io.Output]:
    """The outputs of the nodes that pick (Pick Best, Sampler): the picks, every finalist, the finished
    candidates, then their scores."""
    return [
        IMAGE.Output(display_name="chosen", tooltip="the picked image of each prompt"),
        IMAGE.Output(display_name="finalists", tooltip="every finished candidate"),
        STATE.Output(display_name="candidates", tooltip="the finished candidates with their final scores"),
        *score_outputs(),
    ]


def score_outputs() -> list[io.Output]:
    """The two score outputs of the nodes that pick (Pick Best, Sampler), last in their output list so links
    saved with the earlier outputs keep their slots."""
    return [
        io.Float.Output(display_name="chosen_scores", is_output_list=True,
                        tooltip="the reward of each chosen image, one number per prompt (NaN when nothing was "
                                "scored: mode 'first' or plain sampling)"),
        io.String.Output(display_name="scores_json",
                         tooltip="every finalist's reward and which was chosen, as JSON text: "
                                 '{"mode", "chosen": [{"prompt", "finalist", "score"}], '
                                 '"finalists": [{"index", "prompt", "origin", "score", "chosen"}]}'),
    ]


def score_values(scores: FinalScores) -> tuple[list[float], str]:
    """What the two score outputs carry."""
    return list(scores.chosen), scores.to_json()


class Choice(io.Combo.Input):
    """A combo widget whose value ComfyUI checks before the run.

    ComfyUI 0.3.75 checks a combo's value against its options only when the input's type is the option
    list itself (the classic form); the schema API's "COMBO" type is let through unchecked, and a stale
    value from an old workflow or an API call would then fail deep inside a node. With the list as type,
    a wrong value is refused once, on its own input, and /object_info shows the combo as before."""

    def get_io_type(self):
        return list(self.options)


def to_image(uint8_images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> ComfyUI's float IMAGE batch."""
    return uint8_images.float().div(255.0)


def from_image(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI's float IMAGE batch -> uint8 [N, H, W, C], rounded: an image that came from to_image comes back
    exactly (255 * (v / 255) is not always v in float32, and truncating would lose a level)."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


# eq=False: values holding tensors compare (and hash) by identity, never element by element
@dataclass(frozen=True, eq=False)
class Candidates:
    """What flows between the search nodes: the candidate state plus what later nodes need with it
    (the pipeline for its VAE, and the prompt texts rewards score against)."""

    state: SearchState
    pipeline: object  # comfy_glue.ManagedPipeline (its VAE decodes; `ready` puts it back on the device)
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

    def require_images(self, action: str) -> None:
        """Clustering, resampling and decoding need at least one generated scale."""
        if self.scales_done == 0:
            raise ValueError(f"{action} needs generated images: put a TTS-VAR Step node before this one")


@dataclass(frozen=True)
class SearchSchedule:
    """A validated batch schedule and the image schedule it was made for (a pixel budget, or custom scales)."""

    batch: BatchSchedule
    preset: str
    pixel_budget: str
    custom_scales: tuple[tuple[int, int], ...] | None
