"""Strategies as compositions of step / cluster / resample / final pick (the loop owns the schedule)."""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import torch

from ..offload import on_device
from .schedule import BatchSchedule, preset
from .selection import cluster_step, final_pick, resample_step
from .state import SearchState

STRATEGIES = {"raw": "raw", "bon": "bon", "is": "is", "tts-var": "tts-var-2b"}


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


def schedule_for(strategy: str, n: int, num_scales: int, **overrides) -> BatchSchedule:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {list(STRATEGIES)}")
    sched = preset(STRATEGIES[strategy], n=n, num_scales=num_scales)
    if overrides:
        from dataclasses import replace
        sched = replace(sched, **{k: v for k, v in overrides.items() if v is not None})
    return sched.validate(num_scales)


def needs(schedule: BatchSchedule) -> tuple[bool, bool]:
    """(needs a reward model, needs a feature extractor)"""
    sizes = schedule.sizes
    clusters = any(s > 0 and sizes[s] < sizes[s - 1] for s in schedule.cluster_scales)
    reward = bool(schedule.resample_scales) or (schedule.score_final and schedule.final != "none")
    return reward, clusters


def selection_side(batch: BatchSchedule, si: int, image_schedule, pixels_per_token: int) -> int | None:
    """Image side (px) at which a selection after scale `si` decodes its candidates (None: full size)."""
    if batch.selection_resolution == "scale":
        side = max(image_schedule[si]) * pixels_per_token
        return side if batch.selection_side is None else min(side, batch.selection_side)
    return batch.selection_side


def selection_chunk(batch: BatchSchedule, prompts: int, final_chunk: int, full_side: int,
                    side: int | None) -> int:
    """How many candidates a selection decodes at once: no more decoder memory than the final decode of
    the same run needs (its min(final candidates, chunk) full-size images), scaled by the pixel area
    saved by decoding selections smaller."""
    final = min(batch.sizes[-1] * prompts, final_chunk)
    side = min(side or full_side, full_side)
    return max(1, int(final * (full_side / side) ** 2))


@contextmanager
def visiting(device, enabled: bool, *parts):
    """With `enabled`, the parts visit `device` only for the work inside the block (low-memory mode)."""
    with ExitStack() as stack:
        for part in parts:
            if part is not None:
                stack.enter_context(on_device(part, device, enabled))
        yield


def run_search(model, vae, text_features, lens, prompts: list[str], image_schedule, params, batch: BatchSchedule,
               *, seed: int = 0, reward=None, extractor=None, negative=None, shared_generator: bool = False,
               callback=None, decode_chunk: int = 8, offload_idle: bool = False) -> SearchResult:
    """Runs a whole batch schedule. `callback(event, state, record)` sees every scale and selection
    (progress bars, previews, interrupts: raising from it stops the run). `offload_idle`: the VAE,
    reward and feature models sit in CPU memory and visit the model's device only while they work."""
    batch.validate(len(image_schedule))
    idle = lambda *parts: visiting(model.device, offload_idle, *parts)  # noqa: E731
    need_reward, need_features = needs(batch)
    if need_reward and reward is None:
        raise ValueError("this schedule scores candidates: give a reward model")
    if need_features and extractor is None:
        raise ValueError("this schedule clusters candidates: give a feature extractor")
    if len(prompts) != len(lens):
        raise ValueError(f"{len(prompts)} prompt texts for {len(lens)} encoded prompts")
    # each batch size only needs cache room until the next selection replaces its cache
    events = sorted(s for s in batch.cluster_scales + batch.resample_scales)
    room = lambda si: next((e + 1 for e in events if e > si), len(image_schedule))  # noqa: E731
    state = SearchState.start(model, text_features, lens, image_schedule, params, batch.sizes[0], seed=seed,
                              negative=negative, shared_generator=shared_generator, capacity_scales=room(-1))
    per_token = vae.cfg.patch_size * (2 if model.cfg.apply_spatial_patchify else 1)

    def decoding(si):  # side and chunk of a selection's decode
        side = selection_side(batch, si, image_schedule, per_token)
        return {"decode_side": side, "decode_chunk": selection_chunk(batch, len(lens), decode_chunk,
                                                                     max(image_schedule[-1]) * per_token, side)}

    trace = {"seed": seed, "sizes": list(batch.sizes), "scales": [], "events": []}
    for si in range(len(image_schedule)):
        state = state.step()
        trace["scales"].append({"scale": si, "live": state.num_candidates})
        if callback:
            callback("step", state, {"scale": si})
        event, per_prompt = batch.event(si), batch.sizes[si]
        if event == "cluster" and per_prompt < state.num_candidates // state.num_prompts:
            with idle(vae, extractor):
                state, record = cluster_step(state, vae, extractor, per_prompt, batch.feature_mode,
                                             capacity_scales=room(si), release_input=True, **decoding(si))
        elif event == "resample":
            with idle(vae, reward):
                state, record = resample_step(state, vae, reward, prompts, per_prompt, batch.potential, batch.lam,
                                              capacity_scales=room(si), release_input=True, **decoding(si))
        else:
            continue
        trace["events"].append(record)
        trace["scales"][-1]["live_after"] = state.num_candidates
        if callback:
            callback(event, state, record)
    mode = batch.final if reward is not None else "none"
    with idle(vae, reward):
        state, picks, record = final_pick(state, vae, reward if batch.score_final else None, prompts, mode,
                                          batch.lam)
        images = state.decode(vae, decode_chunk)
    trace["events"].append(record)
    trace["picks"] = picks
    if callback:
        callback("final", state, record)
    return SearchResult(images=images, scores=state.scores[:, -1].clone(), prompt_of=state.prompt_of.cpu(),
                        picks=picks, trace=trace, state=state)
