"""The engine's typed boundary: what a search is asked to do, checked once by `check_inputs`.

The command line and the ComfyUI nodes only translate their user's inputs into these values; every check
that does not depend on how the values were typed lives here, so each mistake has one message.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..model.sampling import SamplingParams
from ..model.text import Prompts, check_text
from ..model.schedules import validate_schedule
from .memory import check_memory
from .schedule import BatchSchedule
from .text_inputs import check_prompt

MAX_SEED = 2 ** 63 - 1


@dataclass(frozen=True)
class Scorers:
    """The models a batch schedule may need: a reward for resampling and the final pick, image features
    for clustering (ttsvar_core.scorers interfaces)."""

    reward: object | None = None
    features: object | None = None


@dataclass(frozen=True)
class RunOptions:
    decode_chunk: int = 8            # final images decoded this many at a time
    offload_idle: bool = False       # VAE and scorers visit the model's device only while they work
    shared_generator: bool = False   # one generator for all candidates, as the reference (parity runs)
    # cancellation: called before every scale, decode chunk and scorer batch; it raises to stop the run
    should_stop: Callable[[], None] | None = None
    # make_room(bytes, device): asks the host to free memory it holds on a device (ComfyUI unloads its own
    # models); called when the memory estimate does not fit, before the search is refused
    make_room: Callable[[int, torch.device], None] | None = None


@dataclass(frozen=True, eq=False)
class SearchRequest:
    prompts: Prompts
    image_schedule: tuple[tuple[int, int], ...]
    sampling: SamplingParams
    batch: BatchSchedule
    seed: int = 0
    scorers: Scorers = field(default_factory=Scorers)
    options: RunOptions = field(default_factory=RunOptions)

    @property
    def num_scales(self) -> int:
        return len(self.image_schedule)

    def check_inputs(self, model, vae) -> "SearchRequest":
        """Every check a search needs before it allocates anything, the memory it will need last; raises
        ValueError (NotEnoughMemory for memory) saying what to change."""
        if not self.prompts.texts:
            raise ValueError("no prompt given: give at least one prompt")
        for i, text in enumerate(self.prompts.texts):
            check_prompt(text, f"prompt {i + 1}" if len(self.prompts.texts) > 1 else "the prompt")
        check_text(self.prompts.negative_text, "the negative prompt")
        if len(self.prompts.lens) != len(self.prompts.texts):
            raise ValueError(f"{len(self.prompts.texts)} prompt texts for {len(self.prompts.lens)} encoded prompts")
        if self.prompts.channels != model.cfg.text_channels:
            raise ValueError(f"the prompts were encoded with {self.prompts.channels}-channel text features but "
                             f"this model takes {model.cfg.text_channels}: encode them with this model's text "
                             "encoder")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"the seed must be within 0..{MAX_SEED}, got {self.seed}")
        validate_schedule(self.image_schedule, model.cfg.num_levels)
        self.sampling.validate(self.num_scales)
        self.batch.validate(self.num_scales)
        need_reward, need_features = self.batch.needs()
        if need_reward and self.scorers.reward is None:
            raise ValueError("this batch schedule scores candidates (resampling or a final pick by reward): "
                             "give a reward model")
        if need_features and self.scorers.features is None:
            raise ValueError("this batch schedule clusters candidates: give a feature extractor")
        if self.options.decode_chunk < 1:
            raise ValueError(f"decode_chunk must be >= 1, got {self.options.decode_chunk}")
        check_memory(model, vae, self)
        return self
