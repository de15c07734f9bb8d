"""Strategies as compositions of step / cluster / resample / final pick (the loop owns the schedule)."""
from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace

import torch

from ..model.config import pixels_per_token
from ..model.offload import on_device
from .events import EventHandler, HistoryScored, ScaleDone, SearchDone, SelectionDone
from .request import SearchRequest
from .schedule import PAPER_PRESETS, BatchSchedule, preset
from .selection import cluster_step, final_pick, resample_step, score_step
from .state import SearchState

STRATEGIES = ("raw", "bon", "is", "tts-var")


@dataclass
class SearchResult:
    images: torch.Tensor            # [N_final, H, W, 3] uint8 RGB: every final candidate
    scores: torch.Tensor            # [N_final] final reward (NaN without a reward)
    prompt_of: torch.Tensor         # [N_final]
    picks: list[int]                # per prompt: index of its chosen final candidate
    trace: dict = field(default_factory=dict)
    state: SearchState | None = None

    @property
    def chosen(self) -> torch.Tensor:
        return self.images[self.picks]


def schedule_for(strategy: str, n: int, num_scales: int, release: str = "Infinity-2B", **overrides) -> BatchSchedule:
    """The strategy's preset for `num_scales` scales; "tts-var" is the paper preset of the model's release
    (model.config.release_of). Overrides that are None keep the preset's value."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {list(STRATEGIES)}")
    if strategy == "tts-var":
        by_release = {of: name for name, (of, _) in PAPER_PRESETS.items()}
        if release not in by_release:
            raise ValueError(f"no TTS-VAR preset for the release {release!r}; choose one of {list(by_release)}")
        strategy = by_release[release]
    sched = preset(strategy, n=n, num_scales=num_scales)
    if overrides:
        sched = replace(sched, **{k: v for k, v in overrides.items() if v is not None})
    return sched.validate(num_scales)


@contextmanager
def visiting(device, enabled: bool, *parts):
    """With `enabled`, the parts visit `device` only for the work inside the block (low-memory mode)."""
    with ExitStack() as stack:
        for part in parts:
            if part is not None:
                stack.enter_context(on_device(part, device, enabled))
        yield


def run_search(model, vae, request: SearchRequest, on_event: EventHandler | None = None) -> SearchResult:
    """Runs a whole batch schedule. `on_event` sees every scale, selection and the end (events.py); raising
    from it stops the run."""
    request.check_inputs(model, vae)
    batch, image_schedule, options = request.batch, request.image_schedule, request.options
    reward, extractor = request.scorers.reward, request.scorers.features
    prompts = list(request.prompts.texts)
    emit = on_event or (lambda event: None)
    idle = lambda *parts: visiting(model.device, options.offload_idle, *parts)  # noqa: E731
    scales = len(image_schedule)
    state = SearchState.start(model, request.prompts.features, list(request.prompts.lens), image_schedule,
                              request.sampling, batch.sizes[0], seed=request.seed, negative=request.prompts.negative,
                              shared_generator=options.shared_generator, capacity_scales=batch.cache_room(-1, scales))
    per_token = pixels_per_token(model.cfg, vae.cfg)
    full_side = max(image_schedule[-1]) * per_token
    final_images = min(batch.sizes[-1] * len(prompts), options.decode_chunk)
    policy = batch.decode_policy

    history = batch.history_scales()
    stop = options.should_stop or (lambda: None)
    trace = {"seed": request.seed, "batch_schedule": batch.describe(), "sizes": list(batch.sizes), "scales": [],
             "events": []}
    if history:  # the extra cost of a history potential, for users and the benchmark
        trace["history_scoring"] = {"potential": batch.potential, "scales": list(history), "images": 0,
                                    "seconds": 0.0}
    for si in range(scales):
        stop()
        state = state.step()
        trace["scales"].append({"scale": si, "live": state.num_candidates})
        emit(ScaleDone(si, state))
        event, per_prompt = batch.selection_at(si), batch.sizes[si]
        side = policy.side_at(si, image_schedule, per_token)
        decode = {"decode_side": side, "decode_chunk": policy.chunk(side, full_side, final_images),
                  "should_stop": options.should_stop}
        if si in history:
            # at a selection's side, so that a clustering after this scale reuses the decode
            start = time.perf_counter()
            with idle(vae, reward):
                state = score_step(state, vae, reward, prompts, **decode)
            seconds = time.perf_counter() - start
            trace["scales"][-1]["history_scoring_s"] = seconds
            trace["history_scoring"]["images"] += state.num_candidates
            trace["history_scoring"]["seconds"] += seconds
            emit(HistoryScored(si, state, seconds))
        before = state
        if event == "cluster":
            with idle(vae, extractor):
                state, record = cluster_step(state, vae, extractor, per_prompt, batch.feature_mode,
                                             capacity_scales=batch.cache_room(si, scales), release_input=True, **decode)
        elif event == "resample":
            with idle(vae, reward):
                state, record = resample_step(state, vae, reward, prompts, per_prompt, batch.potential, batch.lam,
                                              capacity_scales=batch.cache_room(si, scales), release_input=True,
                                              **decode)
        else:
            continue
        trace["events"].append(record.to_json())
        trace["scales"][-1]["live_after"] = state.num_candidates
        emit(SelectionDone(record, before, state, side))
    mode = batch.final if reward is not None else "none"
    with idle(vae, reward):
        state, picks, record = final_pick(state, vae, reward if batch.score_final else None, prompts, mode,
                                          batch.lam, options.decode_chunk, options.should_stop)
        images = state.decode(vae, options.decode_chunk, should_stop=options.should_stop)
    trace["events"].append(record.to_json())
    trace["picks"] = picks
    emit(SearchDone(record, state))
    return SearchResult(images=images, scores=state.scores[:, -1].clone(), prompt_of=state.prompt_of.cpu(),
                        picks=picks, trace=trace, state=state)
