"""Nodes an artist steers the search with by hand: keep the candidates they like, vary one from a scale.

Both show on the node the candidates they received, marked by the choice, and both are one engine call:
SearchState.select (the same re-indexing as clustering and resampling) and SearchState.varied.
"""
from __future__ import annotations

from dataclasses import replace

from comfy_api.latest import io

from ..ttsvar_core.engine import MAX_SEED
from . import comfy_glue as glue
from . import previews
from .candidates import candidates_input, candidates_output
from .options import CATEGORY, KEEP_SYNTAX, SELECTION_SIDE, parse_keep

KEEP_DESCRIPTION = (
    "Keeps the candidates you name, in that order: 0,3,5x2 keeps #0, #3 and two copies of #5 (a copy continues "
    "with its own random draws). Empty keeps all. Click a candidate in a grid to keep it or drop it again "
    "(shift-click adds a copy): a click in this node's grid, or in the grid of the nearest node before it "
    "whose grid shows its output (Step, Start from Image, Pick Best, Sampler; the path may pass through Step "
    "nodes, which keep the numbering), edits this node's keep list. Queue again: only this node and what "
    "follows it run (with the Start node's seed fixed: a new seed draws new candidates).")


class TTSVARKeep(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TTSVAR_Keep", display_name="TTS-VAR Keep Candidates", category=CATEGORY,
            description=KEEP_DESCRIPTION,
            inputs=[
                candidates_input(),
                io.String.Input("keep", default="", tooltip=f"the candidates to keep: {KEEP_SYNTAX} (numbers "
                                "as in the grids); empty keeps all; click candidates in a grid to edit it"),
            ],
            outputs=[candidates_output()],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, keep):
        # the syntax is known before the run; whether the numbers exist only when the candidates arrive
        if keep is None:
            return True
        try:
            parse_keep(keep)
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, candidates, keep):
        candidates.require_images("keeping candidates")
        state = candidates.state
        kept = parse_keep(keep) or tuple(range(state.num_candidates))
        missing = sorted({i for i in kept if i >= state.num_candidates})
        if missing:
            raise ValueError(f"keep: there is no candidate {', '.join(f'#{i}' for i in missing)}; these candidates "
                             f"are #0 to #{state.num_candidates - 1}: name only those (or click them in the grid)")
        glue.ready(candidates.pipeline)
        # no room to grow, as after clustering: the next Step allocates what it generates
        chosen = state.select(kept, capacity_scales=state.scale)
        grid = previews.chosen_grid("keep", state, candidates.vae, candidates.prompts, kept,
                                    "" if keep.strip() else "all kept: click candidates to choose",
                                    SELECTION_SIDE, glue.save_thumbnail)
        return io.NodeOutput(replace(candidates, state=chosen), ui=glue.send_candidates(cls.hidden.unique_id, grid))


class TTSVARVary(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TTSVAR_Vary", display_name="TTS-VAR Vary from Scale", category=CATEGORY,
            description="Makes new candidates from one you like: they share its scales 0 to to_scale and draw "
                        "the rest anew from a new seed. A late to_scale keeps the details (subtle variations), an "
                        "early one only the layout (strong ones). Connect a Step node to generate them; click a "
                        "candidate in this node's grid to vary that one.",
            inputs=[
                candidates_input(),
                io.Int.Input("candidate", default=0, min=0, max=4095,
                             tooltip="which candidate to vary: its number in the grid"),
                io.Int.Input("to_scale", default=2, min=0, max=63,
                             tooltip="the last scale the new candidates share with it (0 is the 1x1 scale): late "
                                     "for subtle variations, early for strong ones"),
                io.Int.Input("copies", default=4, min=1, max=256, tooltip="how many new candidates"),
                io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True,
                             tooltip="seed of the new draws; the same seed gives the same variations"),
            ],
            outputs=[candidates_output()],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, candidates, candidate, to_scale, copies, seed):
        candidates.require_images("varying a candidate")
        state = candidates.state
        if to_scale >= candidates.num_scales - 1:
            raise ValueError(f"to_scale {to_scale}: the new candidates must have a scale left to draw, and these "
                             f"have scales 0 to {candidates.num_scales - 1}; choose at most {candidates.num_scales - 2}")
        glue.ready(candidates.pipeline)
        varied = state.varied(candidate, to_scale, copies, seed, capacity_scales=to_scale + 1)
        grid = previews.chosen_grid("vary", state, candidates.vae, candidates.prompts, [candidate] * copies,
                                    f"{copies} new from scale {to_scale} of #{candidate}", SELECTION_SIDE,
                                    glue.save_thumbnail)
        return io.NodeOutput(replace(candidates, state=varied), ui=glue.send_candidates(cls.hidden.unique_id, grid))
