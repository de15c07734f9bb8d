"""Presets named after the TTS-VAR paper are the paper's settings, and any other schedule says what it is."""
from dataclasses import replace

import pytest

from ttsvar_core.cli import batch_schedule_from_args
from ttsvar_core.engine import DECODE_CHOICES, BatchSchedule, DecodePolicy, preset, schedule_for
from ttsvar_core.model.config import PRESETS
from ttsvar_core.model.sampling import SamplingParams

from .conftest import generate_args


def test_paper_presets_are_the_papers_schedules():
    # Appendix B: Infinity-8B at 512 px (10 scales) runs 8N,8N,6N,6N,6N,4N,2N,2N,1N,1N, clustering after
    # scales 2 and 5 and resampling after 6 and 8
    eight = preset("tts-var-8b", n=2)
    assert eight.sizes == (16, 16, 12, 12, 12, 8, 4, 4, 2, 2)
    assert (eight.cluster_scales, eight.resample_scales) == ((2, 5), (6, 8))
    # the main setting (run.bash): Infinity-2B at 1024 px (13 scales)
    two = preset("tts-var-2b")
    assert two.sizes == (8, 8, 6, 6, 6, 4, 2, 2, 2, 1, 1, 1, 1)
    assert (two.cluster_scales, two.resample_scales) == ((2, 5), (6, 9))
    # the paper's code decodes every candidate at full size for its selections
    for sched in (eight, two):
        assert sched.selection_side is None and sched.decode_policy == DECODE_CHOICES["paper"]
    assert eight.describe() == "TTS-VAR paper: Infinity-8B at 512 px (10 scales) [N = 2]"
    assert two.describe() == "TTS-VAR paper: Infinity-2B at 1024 px (13 scales) [N = 1]"
    # the tts-var strategy takes the paper preset of the model's release
    assert schedule_for("tts-var", 2, 10, "Infinity-8B") == eight
    assert schedule_for("tts-var", 1, 13, "Infinity-2B") == two


def test_a_paper_preset_that_is_not_the_papers_schedule_says_so():
    # the paper gives no 8B schedule at 1M (13 scales): the 2B's, named as such; and no 2B one at 10 scales
    at_1m = preset("tts-var-8b", num_scales=13)
    assert at_1m.sizes == preset("tts-var-2b").sizes
    assert "Infinity-2B at 1024 px (13 scales) schedule: the paper gives no Infinity-8B schedule for 13 " \
           "scales" in at_1m.describe()
    assert preset("tts-var-2b", num_scales=10).sizes == preset("tts-var-8b").sizes
    assert "gives no Infinity-2B schedule for 10 scales" in preset("tts-var-2b", num_scales=10).describe()
    for name in ("tts-var-2b", "tts-var-8b"):
        assert "rescaled to 7 scales: not in the paper" in preset(name, num_scales=7).describe()
    # edits, a faster decode included, are listed against the preset
    edited = replace(preset("tts-var-2b"), lam=5.0).decoding(DECODE_CHOICES["448px"])
    assert edited.describe() == ("edited from TTS-VAR paper: Infinity-2B at 1024 px (13 scales) [N = 1]: lam 5.0; "
                                 "selection decode '448px' instead of the preset's 'paper'")
    assert BatchSchedule().describe() == "custom batch schedule [N = 1]"
    assert preset("bon", n=4, num_scales=7).describe() == "Best-of-N [N = 4]"


def test_the_proportional_rescale_is_not_the_papers_10_scale_schedule():
    """Why paper presets use the paper's own schedules: rescaling the 2B's moves the selections early."""
    rescaled = preset("tts-var-2b").rescaled(10)
    assert (rescaled.cluster_scales, rescaled.resample_scales) == ((2, 4), (5, 7))
    assert "edited from the TTS-VAR paper's Infinity-8B" in rescaled.describe()


@pytest.mark.parametrize("extra,policy", [
    ((), DECODE_CHOICES["paper"]),                                      # the default decodes as the paper
    (("--selection-decode", "448px"), DECODE_CHOICES["448px"]),
    (("--selection-decode", "scale-grid"), DECODE_CHOICES["scale-grid"]),
    (("--selection-side", "224"), DecodePolicy(224, "fixed")),
])
def test_command_line_decodes_as_the_paper_unless_a_faster_choice_is_named(extra, policy):
    batch = batch_schedule_from_args(generate_args(*extra), 10, "Infinity-8B")
    assert batch.decode_policy == policy
    assert batch.sizes == preset("tts-var-8b").sizes
    assert ("edited" in batch.describe()) == (policy != DECODE_CHOICES["paper"])


def test_sampling_defaults_follow_the_release():
    # Infinity's public settings: the 8B samples at tau 1.0, the 2B at 0.5, both at cfg 3
    for config, tau in (("infinity_8b", 1.0), ("infinity_2b", 0.5), ("tiny", 0.5)):
        params = SamplingParams.for_model(PRESETS[config])
        assert (params.cfg, params.tau) == (3.0, tau)
    given = SamplingParams.for_model(PRESETS["infinity_8b"], cfg=4.0, tau=(0.5, 0.7), top_p=0.9)
    assert (given.cfg, given.tau, given.top_p) == (4.0, (0.5, 0.7), 0.9)


def test_scale_grid_decodes_with_a_floor():
    """A floor lifts the early scales' tiny decodes to at least its side; later scales keep their grid, and the
    cap still bounds them. A floor needs the scale-grid resolution."""
    image_schedule = [(1, 1), (2, 2), (4, 4), (8, 8), (16, 16)]
    sides = lambda policy: [policy.side_at(si, image_schedule, 4) for si in range(5)]  # noqa: E731
    assert sides(DecodePolicy(48, "scale")) == [4, 8, 16, 32, 48]
    assert sides(DecodePolicy(48, "scale", floor=16)) == [16, 16, 16, 32, 48]
    assert sides(DecodePolicy(None, "scale", floor=16)) == [16, 16, 16, 32, 64]
    assert DecodePolicy(48, "scale", floor=16).label == "each scale's token grid (at least 16 px, at most 48 px)"
    schedule = BatchSchedule().decoding(DecodePolicy(448, "scale", floor=224))
    assert schedule.decode_policy == DecodePolicy(448, "scale", floor=224)
    with pytest.raises(ValueError, match="selection_floor"):
        BatchSchedule(selection_floor=224).validate(13)
