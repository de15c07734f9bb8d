"""Selection nodes of the node-by-node search: clustering, reward resampling, and the final pick.

Each shows on the node the candidates it chose from (kept, dropped, duplicated, picked) with their scores.
The paper's schedule clusters after scales 2 and 5 and resamples after scales 6 and 9.
"""
from __future__ import annotations

from dataclasses import replace

from comfy_api.latest import io

from ..ttsvar_core.engine import FinalScores, cluster_step, final_pick, resample_step
from . import comfy_glue as glue
from . import previews
from .candidates import candidates_input, candidates_output
from .options import CATEGORY, PICK_MODES, SELECTION_SIDE, feature_mode_input, lam_input, potential_input
from .types import FEATURES, REWARD, Candidates, Choice, pick_outputs, score_values, to_image


def select(node: str, stage: str, candidates: Candidates, scorer, selection) -> io.NodeOutput:
    """A Cluster or Resample node's work: `selection(state)` (an engine step) with the scorer on the device,
    then the grid of what it chose from, made from the decode it scored (no second decode).

    The selections decode at SELECTION_SIDE and give the chosen candidates a cache without room to grow
    (the next Step node allocates what it needs). The input's cache is kept (no release_input): ComfyUI keeps
    the input state as a cached node output and hands it to this node again when only the selection's
    settings change; a released cache would then be rebuilt with room for the whole schedule, several GB per
    candidate at 1024 px."""
    candidates.require_images({"cluster": "clustering", "resample": "resampling"}[stage])
    glue.check_interrupt()
    glue.ready(candidates.pipeline)
    with glue.scorer_on_device(scorer):
        state, record = selection(candidates.state)
    grid = previews.selection_grid(stage, candidates.state, candidates.vae, candidates.prompts, record,
                                   SELECTION_SIDE, glue.save_thumbnail)
    return io.NodeOutput(replace(candidates, state=state), ui=glue.send_candidates(node, grid))


class TTSVARCluster(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TTSVAR_Cluster", display_name="TTS-VAR Clustering Selection", category=CATEGORY,
            description="Clustering selection: groups the candidates by image features and keeps the one nearest "
                        "each cluster centre, so diverse structures survive.",
            inputs=[
                candidates_input(),
                FEATURES.Input("features", tooltip="a feature extractor (TTS-VAR Load Feature Extractor)"),
                io.Int.Input("keep", default=6, min=1, max=256,
                             tooltip="how many candidates go on, per prompt: one from each group of look-alikes "
                                     "(the paper keeps 6 of 8 after scale 2, then 4)"),
                feature_mode_input(),
            ],
            outputs=[candidates_output()],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, candidates, features, keep, feature_mode):
        return select(cls.hidden.unique_id, "cluster", candidates, features, lambda state: cluster_step(
            state, candidates.vae, features, keep, feature_mode, capacity_scales=state.scale,
            decode_side=SELECTION_SIDE, should_stop=glue.check_interrupt))


class TTSVARResample(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TTSVAR_Resample", display_name="TTS-VAR Reward Resampling", category=CATEGORY,
            description="Reward resampling: scores the candidates and draws the next ones in proportion to "
                        "exp(lambda x potential); strong candidates may be duplicated, weak ones dropped.",
            inputs=[
                candidates_input(),
                REWARD.Input("reward", tooltip="a reward model (TTS-VAR Load Reward Model)"),
                io.Int.Input("keep", default=2, min=1, max=256,
                             tooltip="how many candidates are drawn, per prompt (the paper draws 2 after scale 6, "
                                     "then 1)"),
                potential_input(),
                lam_input("how strongly the draw favours high rewards: 0 draws evenly, 10 as the paper, very large "
                          "values keep only the best"),
            ],
            outputs=[candidates_output()],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, candidates, reward, keep, potential, lam):
        return select(cls.hidden.unique_id, "resample", candidates, reward, lambda state: resample_step(
            state, candidates.vae, reward, list(candidates.prompts), keep, potential, lam,
            capacity_scales=state.scale, decode_side=SELECTION_SIDE, should_stop=glue.check_interrupt))


class TTSVARPickBest(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TTSVAR_PickBest", display_name="TTS-VAR Pick Best", category=CATEGORY,
            description="Scores the finished candidates and picks one per prompt: the best, one drawn by reward "
                        "(importance sampling), or the first (no reward).",
            inputs=[
                candidates_input(),
                Choice("mode", options=list(PICK_MODES), default="best",
                       tooltip="best: the candidate with the highest reward; sample by reward: one drawn at random, "
                               "high rewards more likely (see lam); first: the first candidate, nothing scored (no "
                               "reward model needed)"),
                lam_input("for 'sample by reward': how strongly the draw favours high rewards (0 draws evenly, "
                          "10 as the paper)"),
                REWARD.Input("reward", optional=True, tooltip="a reward model; needed unless mode is 'first'"),
            ],
            outputs=[
                *pick_outputs(),
            ],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, candidates, mode, lam, reward=None):
        if candidates.scales_done != candidates.num_scales:
            raise ValueError(f"the candidates have {candidates.scales_done} of their {candidates.num_scales} "
                             "scales: add a TTS-VAR Step node with to_scale -1 before picking")
        if reward is None and PICK_MODES[mode] != "none":
            raise ValueError(f"mode {mode!r} scores the finalists: connect a reward model, or choose 'first'")
        glue.ready(candidates.pipeline)
        with glue.scorer_on_device(reward):
            state, picks, record = final_pick(candidates.state, candidates.vae, reward, list(candidates.prompts),
                                              PICK_MODES[mode], lam, should_stop=glue.check_interrupt)
        images = state.decode(candidates.vae, should_stop=glue.check_interrupt)
        grid = previews.final_grid(state, candidates.vae, candidates.prompts, record, glue.save_thumbnail)
        scores = score_values(FinalScores.of(state, record, candidates.prompts))
        return io.NodeOutput(to_image(images[picks]), to_image(images), replace(candidates, state=state), *scores,
                             ui=glue.send_candidates(cls.hidden.unique_id, grid))
