"""The memory estimate: exact where it counts bytes, close to the measured peak, and a refusal before any
allocation when a search cannot fit."""
import importlib.util
import time
from pathlib import Path

import pytest
import torch

from ttsvar_core.engine import Prompts, RunOptions, SearchRequest, SearchState, run_search, schedule_for
from ttsvar_core.engine import memory
from ttsvar_core.engine.memory import NotEnoughMemory, estimate_search_memory
from ttsvar_core.model.checkpoints import build_random
from ttsvar_core.model.config import PRESETS
from ttsvar_core.model.offload import stream_blocks
from ttsvar_core.model.sampling import SamplingParams
from ttsvar_core.model.schedules import get_schedule

from .conftest import SCHEDULE

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench.py"
CPU = torch.device("cpu")


def request(prompts, strategy, n, schedule=SCHEDULE, **options) -> SearchRequest:
    feats, lens = prompts
    return SearchRequest(Prompts(("p0", "p1"), feats, tuple(lens)), tuple(schedule), SamplingParams(),
                         schedule_for(strategy, n, len(schedule)), options=RunOptions(**options))


def test_the_kv_cache_estimate_is_what_the_search_allocates(tiny, prompts):
    model, vae = tiny
    feats, lens = prompts
    peak = estimate_search_memory(model, vae, request(prompts, "raw", 3))[CPU]
    state = SearchState.start(model, feats, lens, SCHEDULE, SamplingParams(), 3)
    allocated = sum(t.numel() * t.element_size() for t in (state.cache.k, state.cache.v))
    assert peak.parts["KV cache"] == allocated


def load_bench():
    spec = importlib.util.spec_from_file_location("ttsvar_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_the_estimate_is_close_to_the_measured_peak(tiny, prompts):
    bench = load_bench()
    model, vae = tiny
    req = request(prompts, "raw", 2)
    estimate = estimate_search_memory(model, vae, req)[CPU].total
    measured = bench.exact_cpu_peak(lambda: run_search(model, vae, req))
    assert measured / 1.5 < estimate < measured * 1.5, (estimate, measured)


def test_a_streamed_block_is_counted_and_measured(prompts):
    """With block streaming one block's copy is on the device while it runs (BlockStreamer copies on a CPU
    too, so the CPU allocator sees it): the estimate adds the largest block's bytes to the scale steps, and
    the measured peak rises by as much."""
    bench = load_bench()
    model, vae = build_random(PRESETS["tiny"], seed=11)  # its own model: streaming rewires it
    # 8 candidates decoded one at a time: the last scale step, where the blocks run, is the peak
    req = request(prompts, "raw", 8, decode_chunk=1)
    plain = estimate_search_memory(model, vae, req)[CPU]
    plain_measured = bench.exact_cpu_peak(lambda: run_search(model, vae, req))
    streamer = stream_blocks(model, "cpu")
    try:
        streamed = estimate_search_memory(model, vae, req)[CPU]
        measured = bench.exact_cpu_peak(lambda: run_search(model, vae, req))
    finally:
        streamer.remove()
    block = max(sum(t.numel() * t.element_size() for t in [*b.parameters(), *b.buffers()]) for b in model.blocks())
    assert streamer.visiting_bytes == block and not hasattr(model, "block_streamer")
    assert plain.moment == streamed.moment == "scale 4" and "streamed block" not in plain.parts
    assert streamed.parts["streamed block"] == block and streamed.total - plain.total == block
    # measured on torch 2.13 (CPU): the peak rises by exactly one block; the estimate is 2% under the peak
    assert abs((measured - plain_measured) - block) < block / 10, (measured, plain_measured, block)
    assert measured / 1.1 < streamed.total < measured * 1.1, (streamed.total, measured)


def test_a_search_that_cannot_fit_is_refused_before_allocating(tiny, prompts, monkeypatch):
    model, vae = tiny
    monkeypatch.setattr(memory, "available_memory", lambda device: 8 * 10**9)

    def no_cache(*args, **kwargs):
        raise AssertionError("a KV cache was allocated")
    monkeypatch.setattr("ttsvar_core.engine.state.KVCache", no_cache)
    big = request(prompts, "raw", 128, get_schedule(1.0, "1M"))  # 2 x 128 candidates at 1M: about 36 GB
    started = time.perf_counter()
    with pytest.raises(NotEnoughMemory) as refused:
        run_search(model, vae, big)
    assert time.perf_counter() - started < 1
    message = str(refused.value)
    assert "needs about" in message and "KV cache" in message and "8.0 GB is available" in message
    assert "smaller N" in message and "smaller pixel budget" in message
    need = float(message.split("needs about ")[1].split(" GB")[0])
    assert 30 < need < 45


def test_a_normal_tiny_request_passes(tiny, prompts):
    model, vae = tiny
    req = request(prompts, "raw", 2)
    assert req.check_inputs(model, vae) is req
    assert 0 < memory.available_memory(CPU)


def test_candidate_counts_are_bounded_in_the_engine(tiny, prompts):
    model, _ = tiny
    feats, lens = prompts
    with pytest.raises(ValueError, match="N <= 256"):
        schedule_for("bon", 257, len(SCHEDULE))
    assert max(schedule_for("tts-var", 32, 13).sizes) == 256
    with pytest.raises(ValueError, match=r"264 candidates per prompt \(N x 8\).*N <= 32"):
        schedule_for("tts-var", 33, 13)
    with pytest.raises(ValueError, match="at most 256"):
        SearchState.start(model, feats, lens, SCHEDULE, SamplingParams(), 257)


def test_a_search_that_does_not_fit_first_asks_the_host_to_make_room(tiny, prompts, monkeypatch):
    """make_room (ComfyUI unloading its own models) is asked for the estimate on the device that falls short;
    the search runs when that freed enough, and is refused, after one request, when it did not."""
    model, vae = tiny
    estimate = estimate_search_memory(model, vae, request(prompts, "raw", 2))[CPU].total
    free = {"bytes": estimate // 2}
    monkeypatch.setattr(memory, "available_memory", lambda device: free["bytes"])
    asked = []

    def make_room(num_bytes, device):
        asked.append((num_bytes, device))
        free["bytes"] += freed

    freed = estimate
    result = run_search(model, vae, request(prompts, "raw", 2, make_room=make_room))
    assert asked == [(estimate, CPU)]
    assert len(result.images) == 4

    asked.clear()
    free["bytes"], freed = estimate // 2, 0
    with pytest.raises(NotEnoughMemory, match="needs about"):
        run_search(model, vae, request(prompts, "raw", 2, make_room=make_room))
    assert asked == [(estimate, CPU)]

    asked.clear()
    free["bytes"] = 2 * estimate  # fits: the host is not disturbed
    run_search(model, vae, request(prompts, "raw", 2, make_room=make_room))
    assert asked == []
