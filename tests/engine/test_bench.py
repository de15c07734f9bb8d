"""The benchmark's accounting: memory meter, token-pass counts, FLOP floors and the median of repeats."""
import importlib.util
import time
from pathlib import Path

import pytest
import torch

from ttsvar_core.model.config import PRESETS
from ttsvar_core.engine import DECODE_CHOICES, Prompts, Scorers, SearchRequest, run_search, schedule_for
from ttsvar_core.model.sampling import SamplingParams

from .conftest import SCHEDULE

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("ttsvar_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_meter_sees_an_allocation_that_is_already_freed(bench):
    size = 64 * 2**20
    with bench.CpuPeak() as meter:
        block = torch.ones(size // 4)
        time.sleep(0.05)  # the sampler runs every millisecond
        del block
        time.sleep(0.01)
    assert meter.bytes >= 0.95 * size
    assert meter.rss_bytes >= 0.95 * size


def test_token_passes_follow_the_schedule(bench, tiny, prompts, extractor, reward):
    model, vae = tiny
    feats, lens = prompts
    batch = schedule_for("tts-var", 1, len(SCHEDULE))
    request = SearchRequest(Prompts(("a", "b"), feats, tuple(lens)), tuple(SCHEDULE), SamplingParams(cfg=3.0),
                            batch, scorers=Scorers(reward, extractor))
    result = run_search(model, vae, request)
    counted = bench.token_passes(result.trace, SCHEDULE, guided=True)
    assert counted == bench.predicted_passes(batch, SCHEDULE, prompts=2, guided=True)
    # by hand: scale si runs with the size left after scale si - 1, two rows per candidate, two prompts
    sizes = (batch.sizes[0],) + batch.sizes[:-1]
    assert counted == sum(2 * 2 * n * h * w for n, (h, w) in zip(sizes, SCHEDULE))


def test_history_scoring_is_counted_apart_from_steps_and_selections(bench, tiny, prompts, extractor, reward):
    model, vae = tiny
    feats, lens = prompts
    run = bench.measure("tts-var", 1, model=model, vae=vae, prompts=Prompts(("a", "b"), feats, tuple(lens)),
                        schedule=SCHEDULE, params=SamplingParams(), reward=reward, extractor=extractor,
                        device=torch.device("cpu"), guided=True, offload=False, potential="diff")
    # the 5-scale schedule clusters after 1 and 2 and resamples after 3 and 4: scored after 1 and 2,
    # two prompts of 8 and then 6 live candidates
    assert run["history_scored_scales"] == [1, 2] and run["history_scored_images"] == 2 * (8 + 6)
    assert run["history_scoring_s"] > 0 and len(run["step_s"]) == len(SCHEDULE)


def test_decode_floor_is_one_decoded_latent_cell_per_token(bench):
    cfg = PRESETS["infinity_2b"]
    n = 13
    paper, fixed, scale = (bench.selection_floors(cfg, "1M", schedule_for("tts-var", 1, n).decoding(DECODE_CHOICES[d]))
                           for d in ("paper", "448px", "scale-grid"))
    assert [f["after_scale"] for f in fixed] == [2, 5, 6, 9]
    assert [f["side"] for f in paper] == [1024] * 4  # the paper decodes full size
    assert [f["side"] for f in fixed] == [448] * 4
    assert [f["side"] for f in scale] == [64, 192, 256, 448]  # the token grid x 16 px, capped at 448
    for a, b in zip(fixed, scale):
        # convolution FLOPs grow with the decoded area, and the step is the same
        assert b["decode_gflop"] / a["decode_gflop"] == pytest.approx((b["side"] / a["side"]) ** 2, rel=0.01)
        assert a["step_gflop"] == b["step_gflop"]
    # uncapped scale-grid decodes cost one latent cell per token: the same fraction of every step
    uncapped = [f["decode_over_step"] for f in scale[:3]]
    assert max(uncapped) == pytest.approx(min(uncapped), rel=0.01)
    # the paper's first clustering decodes 8 candidates at 448 px after a 16-token step
    assert fixed[0]["decode_over_step"] > 10


def test_the_448px_analog_is_the_same_fraction_of_a_smaller_image(bench):
    """At 1024 px the analog is the 448px choice itself; at the tiny benchmark's 256 px it is 112 px (7 tokens),
    where "448px" would decode at full size."""
    assert bench.decode_policies(1024, 16)[bench.ANALOG] == bench.DECODE_CHOICES["448px"]
    assert bench.decode_policies(256, 16)[bench.ANALOG].side == 112


def test_median_run_keeps_the_middle_time_and_the_highest_memory(bench):
    runs = [{"wall_s": t, "peak_bytes": m, "peak_rss_bytes": m + 1, "peak_total_bytes": None, "tag": t}
            for t, m in ((3.0, 10), (1.0, 30), (2.0, 20))]
    run = bench.median_run(runs)
    assert run["tag"] == 2.0 and run["wall_s_repeats"] == [3.0, 1.0, 2.0]
    assert run["peak_bytes"] == 30 and run["peak_rss_bytes"] == 31 and run["peak_total_bytes"] is None


def test_exact_cpu_peak_replays_allocations_and_frees(bench):
    mib = 2**20

    def run():
        first = torch.ones(32 * mib // 4)
        del first
        second = torch.ones(16 * mib // 4)
        third = torch.ones(8 * mib // 4)
        return second, third

    peak = bench.exact_cpu_peak(run)
    assert 32 * mib <= peak < 33 * mib  # the freed 32 MiB block, not 32 + 16 + 8
