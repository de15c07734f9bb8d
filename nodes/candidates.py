"""Candidate nodes of the node-by-node search: start N candidates, step them through scales, decode them.

Scale numbers count from 0 (the 1x1 scale) to the last scale (12 at 1M), as in the TTS-VAR paper.
"""
from __future__ import annotations

from dataclasses import replace

from comfy_api.latest import io

from ..ttsvar_core.engine import SearchRequest, SearchState, preset
from ..ttsvar_core.engine.text_inputs import parse_scales
from . import comfy_glue as glue
from . import previews
from .options import (CATEGORY, SELECTION_SIDE, aspect_ratio_input, custom_scales_input, image_schedule,
                      pixel_budget_input, sampling, sampling_inputs)
from .types import CONDITIONING, IMAGE, MODEL, STATE, Candidates, to_image


def candidates_input() -> io.Input:
    return STATE.Input("candidates", tooltip="candidates from Start, Step, Clustering or Resampling")


def candidates_output() -> io.Output:
    return STATE.Output(display_name="candidates", tooltip="the candidates after this node (the input is unchanged)")


def start_state(model, conditioning, scales, params, candidates: int, seed: int, capacity_scales: int) -> SearchState:
    """N fresh candidates, after the checks a search makes: until later nodes select, they are plain sampling
    of N, so that request is what gets checked."""
    plain = preset("raw", n=candidates, num_scales=len(scales))
    SearchRequest(conditioning, scales, params, plain, seed=seed,
                  options=glue.run_options()).check_inputs(model.model, model.vae)
    return SearchState.start(model.model, conditioning.features, list(conditioning.lens), scales, params,
                             candidates, seed=seed, negative=conditioning.negative, capacity_scales=capacity_scales)


class TTSVARStart(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TTSVAR_Start", display_name="TTS-VAR Start Candidates", category=CATEGORY,
            description="Creates N candidates for the prompt at the chosen size. Nothing is generated yet: "
                        "connect a Step node.",
            inputs=[
                MODEL.Input("model", tooltip="the loaded Infinity model"),
                CONDITIONING.Input("conditioning", tooltip="the prompt, encoded by TTS-VAR Text Encode"),
                aspect_ratio_input("the picture's shape, width:height (Infinity's 15 templates)"),
                pixel_budget_input(),
                *sampling_inputs(),
                io.Int.Input("candidates", default=8, min=1, max=256,
                             tooltip="how many candidates start: more gives the search more to choose from and "
                                     "costs more time and memory (the paper starts 8)"),
                custom_scales_input(),
            ],
            outputs=[candidates_output()],
        )

    @classmethod
    def validate_inputs(cls, custom_scales=""):
        # a linked value (None) is known only at run time, when execute parses it
        try:
            parse_scales(custom_scales)
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, model, conditioning, aspect_ratio, pixel_budget, seed, cfg, tau, top_k, top_p, candidates,
                custom_scales=""):
        scales = image_schedule(model, aspect_ratio, pixel_budget, parse_scales(custom_scales))
        glue.ready(model)
        # no KV-cache room yet: each Step node allocates room for exactly the scales it generates
        state = start_state(model, conditioning, scales, sampling(cfg, tau, top_k, top_p), candidates, seed,
                            capacity_scales=1)
        return io.NodeOutput(Candidates(state, model, conditioning.texts))


class TTSVARStep(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TTSVAR_Step", display_name="TTS-VAR Step Scales", category=CATEGORY,
            description="Generates the next scales of every candidate, up to and including the chosen scale, and "
                        "shows them on the node.",
            inputs=[
                candidates_input(),
                io.Int.Input("to_scale", default=-1, min=-1, max=63,
                             tooltip="the last scale to generate: 0 is the 1x1 scale, 12 the last at 1M; -1 "
                                     "generates every remaining scale"),
            ],
            outputs=[candidates_output()],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, candidates, to_scale):
        total, done = candidates.num_scales, candidates.scales_done
        target = total if to_scale < 0 else to_scale + 1
        if done == total:
            raise ValueError(f"these candidates are finished (all {total} scales are generated): connect them to "
                             "Pick Best or Decode instead of another Step")
        if not done < target <= total:
            have = f"scales 0 to {done - 1}" if done else "no scale yet"
            raise ValueError(f"cannot step to scale {target - 1}: these candidates have {have} of 0 to "
                             f"{total - 1}; choose a scale from {done} to {total - 1} (or -1 for all)")
        node = cls.hidden.unique_id
        glue.check_interrupt()
        glue.ready(candidates.pipeline)
        # KV-cache room only for the scales this node generates: later selections replace the cache
        state = candidates.state.step(until=target, callback=glue.ScaleProgress(node, done, target),
                                      capacity_scales=target)
        grid = previews.step_grid(state, candidates.vae, candidates.prompts, SELECTION_SIDE, glue.save_thumbnail,
                                  should_stop=glue.check_interrupt)
        return io.NodeOutput(replace(candidates, state=state), ui=glue.send_candidates(node, grid))


class TTSVARDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TTSVAR_Decode", display_name="TTS-VAR Decode Candidates", category=CATEGORY,
            description="Decodes every live candidate to an image (at any scale: early scales look blurred).",
            inputs=[candidates_input()],
            outputs=[IMAGE.Output(display_name="images", tooltip="every live candidate, in order")],
        )

    @classmethod
    def execute(cls, candidates):
        candidates.require_images("decoding")
        glue.ready(candidates.pipeline)
        return io.NodeOutput(to_image(candidates.state.decode(candidates.vae, should_stop=glue.check_interrupt)))
