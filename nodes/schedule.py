"""The batch schedule node: how many candidates live after each scale, and where the search narrows them."""
from __future__ import annotations

from comfy_api.latest import io

from ..ttsvar_core.engine import MAX_CANDIDATES_PER_PROMPT
from ..ttsvar_core.engine.schedule import PAPER_PRESETS
from ..ttsvar_core.engine.text_inputs import parse_scales
from .options import (CATEGORY, SCHEDULE_PRESET_TOOLTIP, SCHEDULE_PRESETS, SELECTION_DECODE_TOOLTIP,
                      SELECTION_DECODES, custom_scales_input, feature_mode_input, lam_input, num_scales,
                      pixel_budget_input, potential_input, schedule_from_widgets)
from .types import SCHEDULE, Choice, SearchSchedule

# The paper presets' widest batch (8 candidates): N times the widest batch is what the engine limits.
PAPER_WIDEST = max(max(paper.base_sizes) for _, paper in PAPER_PRESETS.values())


class TTSVARBatchSchedule(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TTSVAR_BatchSchedule", display_name="TTS-VAR Batch Schedule", category=CATEGORY,
            description="How many candidates live after each scale, and where the search clusters and resamples. "
                        "Start from a preset; empty text fields keep the preset's values.",
            inputs=[
                Choice("preset", options=list(SCHEDULE_PRESETS), default="TTS-VAR paper (2B)",
                       tooltip=SCHEDULE_PRESET_TOOLTIP),
                # The widest N any preset allows; the engine's limit is per schedule (N times its widest batch
                # at most MAX_CANDIDATES_PER_PROMPT), and validate_inputs names it for the chosen one.
                io.Int.Input("n", default=1, min=1, max=MAX_CANDIDATES_PER_PROMPT,
                             tooltip="N: every batch size is multiplied by it (Best-of-N: N candidates); time and "
                                     f"memory grow with it. At most {MAX_CANDIDATES_PER_PROMPT} candidates live per "
                                     "prompt (N times the widest batch size): N <= "
                                     f"{MAX_CANDIDATES_PER_PROMPT // PAPER_WIDEST} for the TTS-VAR paper presets "
                                     f"({PAPER_WIDEST} candidates at their widest), {MAX_CANDIDATES_PER_PROMPT} for "
                                     "the others"),
                pixel_budget_input(),
                io.String.Input("batch_sizes", default="", tooltip="live candidates after each scale (times N), "
                                "e.g. 8,8,6,6,6,4,2,2,2,1,1,1,1; empty: the preset's"),
                io.String.Input("cluster_scales", default="", tooltip="scales after which candidates are clustered, "
                                "e.g. 2,5; 'none' for no clustering; empty: the preset's"),
                io.String.Input("resample_scales", default="", tooltip="scales after which candidates are "
                                "resampled by reward, e.g. 6,9; 'none'; empty: the preset's"),
                potential_input(),
                lam_input("how strongly resampling (and Importance sampling's final draw) favours high rewards: "
                          "0 draws evenly, 10 as the paper, very large values keep only the best"),
                feature_mode_input(),
                custom_scales_input(),
                Choice("selection_decode", options=list(SELECTION_DECODES), default="full size (paper)",
                       optional=True, tooltip=SELECTION_DECODE_TOOLTIP),
            ],
            outputs=[SCHEDULE.Output(display_name="schedule", tooltip="for the TTS-VAR Sampler")],
        )

    @classmethod
    def validate_inputs(cls, preset, n, pixel_budget, batch_sizes, cluster_scales, resample_scales, custom_scales=""):
        # The check reads these seven inputs. ComfyUI 0.3.75 files a returned message under every input a
        # validator names, and a validator sees only the inputs it names: a bad schedule is listed on all seven.
        # Naming n also leaves its widget range to this check: the engine's limit on N depends on the preset.
        texts = (preset, n, pixel_budget, batch_sizes, cluster_scales, resample_scales, custom_scales)
        if any(t is None for t in texts):
            return True  # a linked value is known only at run time; execute checks it then
        try:
            scales = num_scales(pixel_budget, parse_scales(custom_scales))
            schedule_from_widgets(preset, n, scales, batch_sizes, cluster_scales, resample_scales)
        except ValueError as e:
            return f"invalid schedule: {e}"
        return True

    @classmethod
    def execute(cls, preset, n, pixel_budget, batch_sizes, cluster_scales, resample_scales, potential, lam,
                feature_mode, custom_scales="", selection_decode="full size (paper)"):
        custom = parse_scales(custom_scales)
        batch = schedule_from_widgets(preset, n, num_scales(pixel_budget, custom), batch_sizes, cluster_scales,
                                     resample_scales, potential, lam, feature_mode, selection_decode)
        return io.NodeOutput(SearchSchedule(batch, preset, pixel_budget, custom))
