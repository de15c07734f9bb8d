"""The Batch Schedule node's N agrees with the engine's limit: the widget allows the widest N any preset
allows, and validation names the limit of the chosen preset before the run."""
import pytest

from ttsvar_core.engine import MAX_CANDIDATES_PER_PROMPT

# preset -> the largest N the engine accepts (N times the preset's widest batch <= 256)
LIMITS = {"TTS-VAR paper (2B)": 32, "TTS-VAR paper (8B)": 32, "Best-of-N": 256, "Importance sampling": 256,
          "Plain sampling": 256}


def validate(pack, preset, n, pixel_budget="1M", batch_sizes=""):
    node = pack.nodes.schedule.TTSVARBatchSchedule
    return node.validate_inputs(preset=preset, n=n, pixel_budget=pixel_budget, batch_sizes=batch_sizes,
                                cluster_scales="", resample_scales="", custom_scales="")


def test_the_widget_allows_what_some_preset_allows(pack):
    schema = pack.nodes.schedule.TTSVARBatchSchedule.define_schema()
    (n,) = [i for i in schema.inputs if i.id == "n"]
    assert n.max == max(LIMITS.values()) == MAX_CANDIDATES_PER_PROMPT
    assert n.min == 1
    assert "N <= 32 for the TTS-VAR paper presets" in n.tooltip
    assert set(LIMITS) == set(pack.nodes.schedule.SCHEDULE_PRESETS)


@pytest.mark.parametrize("preset", LIMITS)
@pytest.mark.parametrize("pixel_budget", ["1M", "0.25M"])
def test_validation_names_each_presets_limit(pack, preset, pixel_budget):
    limit = LIMITS[preset]
    assert validate(pack, preset, limit, pixel_budget) is True
    message = validate(pack, preset, limit + 1, pixel_budget)
    assert message.startswith("invalid schedule: ")
    assert f"more than the {MAX_CANDIDATES_PER_PROMPT} allowed: use N <= {limit} with this schedule" in message
    assert "N (the size multiplier) must be >= 1, got 0" in validate(pack, preset, 0, pixel_budget)


def test_edited_batch_sizes_set_the_limit(pack):
    sizes = ",".join(["4"] * 13)
    assert validate(pack, "Best-of-N", 64, batch_sizes=sizes) is True
    assert "use N <= 64 with this schedule" in validate(pack, "Best-of-N", 65, batch_sizes=sizes)


def test_a_linked_n_is_checked_when_the_node_runs(pack):
    node = pack.nodes.schedule.TTSVARBatchSchedule
    assert validate(pack, "TTS-VAR paper (2B)", None) is True
    with pytest.raises(ValueError, match="use N <= 32 with this schedule"):
        node.execute("TTS-VAR paper (2B)", 10000, "1M", "", "", "", "value", 10.0, "pca")
