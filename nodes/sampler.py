"""The all-in-one sampler node and its handler of the engine's events (progress and candidate grids)."""
from __future__ import annotations

from comfy_api.latest import io

from ..ttsvar_core.engine import (FinalScores, ScaleDone, Scorers, SearchDone, SearchRequest, SelectionDone,
                                  run_search)
from . import comfy_glue as glue
from . import previews
from .options import CATEGORY, aspect_ratio_input, image_schedule, sampling, sampling_inputs
from .types import (CONDITIONING, FEATURES, MODEL, REWARD, SCHEDULE, Candidates, pick_outputs,
                    score_values, to_image)


class SamplerEvents:
    """run_search's event handler in the sampler: progress per scale, and a candidate grid at every
    clustering, resampling and the final pick (a selection's grid shows the candidates it chose from, at the
    size it decoded them, so the grid costs no second decode). `ui` is the last grid, kept on the node;
    `final` the final pick's record, for the score outputs."""

    def __init__(self, node: str, vae, prompts, scales: int):
        self.node, self.vae, self.prompts = node, vae, prompts
        self.progress = glue.ScaleProgress(node, 0, scales)
        self.ui = {}
        self.final = None

    def __call__(self, event):
        if isinstance(event, ScaleDone):
            self.progress(event.state)
        elif isinstance(event, SelectionDone):
            self.show(previews.selection_grid(event.record.event, event.before, self.vae, self.prompts,
                                              event.record, event.decode_side, glue.save_thumbnail))
        elif isinstance(event, SearchDone):
            self.final = event.record
            self.show(previews.final_grid(event.state, self.vae, self.prompts, event.record, glue.save_thumbnail))

    def show(self, grid: dict) -> None:
        self.ui = glue.send_candidates(self.node, grid)


class TTSVARSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TTSVAR_Sampler", display_name="TTS-VAR Sampler (all-in-one)", category=CATEGORY,
            description="The whole search in one node: starts the candidates the schedule asks for, generates every "
                        "scale, clusters and resamples where the schedule says, and picks one image per prompt.",
            inputs=[
                MODEL.Input("model", tooltip="the loaded Infinity model"),
                CONDITIONING.Input("conditioning", tooltip="the prompt, encoded by TTS-VAR Text Encode"),
                SCHEDULE.Input("schedule", tooltip="a TTS-VAR Batch Schedule: sizes, selections, image size"),
                aspect_ratio_input("the picture's shape, width:height (Infinity's 15 templates); the schedule's pixel "
                                   "budget sets its size"),
                *sampling_inputs(),
                REWARD.Input("reward", optional=True,
                             tooltip="a reward model; needed when the schedule resamples or picks by reward"),
                FEATURES.Input("features", optional=True,
                               tooltip="a feature extractor; needed when the schedule clusters"),
            ],
            outputs=[
                *pick_outputs(),
            ],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, conditioning, schedule, aspect_ratio, seed, cfg, tau, top_k, top_p, reward=None,
                features=None):
        # The request checks these too, in the engine's words; here they name the node to connect.
        need_reward, need_features = schedule.batch.needs()
        if need_reward and reward is None:
            raise ValueError(f"the {schedule.preset} schedule scores candidates: connect a TTS-VAR Load Reward "
                             "Model node to the reward input")
        if need_features and features is None:
            raise ValueError(f"the {schedule.preset} schedule clusters candidates: connect a TTS-VAR Load Feature "
                             "Extractor node to the features input")
        scales = image_schedule(model, aspect_ratio, schedule.pixel_budget, schedule.custom_scales)
        request = SearchRequest(conditioning, scales, sampling(cfg, tau, top_k, top_p), schedule.batch, seed=seed,
                                scorers=Scorers(reward, features), options=glue.run_options())
        events = SamplerEvents(cls.hidden.unique_id, model.vae, list(conditioning.texts), len(scales))
        glue.check_interrupt()
        glue.ready(model)
        with glue.scorer_on_device(reward), glue.scorer_on_device(features):
            result = run_search(model.model, model.vae, request, events)
        final = Candidates(result.state, model, conditioning.texts)
        scores = score_values(FinalScores.of(result.state, events.final, conditioning.texts))
        return io.NodeOutput(to_image(result.chosen), to_image(result.images), final, *scores, ui=events.ui)
