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


def test_the_estimate_is_close_to_the_measured_peak(tiny, prompts):
    spec = importlib.util.spec_from_file_location("ttsvar_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model, vae = tiny
    req = request(prompts, "raw", 2)
    estimate = estimate_search_memory(model, vae, req)[CPU].total
    measured = bench.exact_cpu_peak(lambda: run_search(model, vae, req))
    assert measured / 1.5 < estimate < measured * 1.5, (estimate, measured)


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
