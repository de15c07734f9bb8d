"""Strategies end to end on a tiny random model, checked from their traces."""
import json
import math

import pytest
import torch

from ttsvar_core.engine import (BatchSchedule, FinalScores, HistoryScored, Prompts, ScaleDone, Scorers, SearchDone,
                                 SearchRequest, SelectionDone, run_search, schedule_for)
from ttsvar_core.model.sampling import SamplingParams
from ttsvar_core.scorers import CombinedReward, combine_rewards

SCHEDULE = ((1, 1), (2, 2), (3, 3), (4, 4), (5, 5))


def request(prompts, batch, reward=None, extractor=None, seed=3) -> SearchRequest:
    feats, lens = prompts
    return SearchRequest(Prompts(("p0", "p1"), feats, tuple(lens)), SCHEDULE, SamplingParams(), batch, seed=seed,
                         scorers=Scorers(reward, extractor))


def run(tiny, prompts, batch, reward=None, extractor=None, seed=3, on_event=None):
    model, vae = tiny
    return run_search(model, vae, request(prompts, batch, reward, extractor, seed), on_event)


def test_schedule_sizes_are_followed_exactly(tiny, prompts, reward, extractor):
    batch = BatchSchedule(base_sizes=(4, 3, 3, 2, 1), cluster_scales=(1,), resample_scales=(3, 4))
    result = run(tiny, prompts, batch, reward, extractor)
    per_prompt = [s.get("live_after", s["live"]) // 2 for s in result.trace["scales"]]
    assert per_prompt == list(batch.sizes)
    assert [e["event"] for e in result.trace["events"]] == ["cluster", "resample", "resample", "final"]
    assert result.images.shape == (2, 80, 80, 3)


def test_best_of_n_picks_the_highest_reward(tiny, prompts, reward):
    result = run(tiny, prompts, schedule_for("bon", 3, len(SCHEDULE)), reward)
    for p, pick in enumerate(result.picks):
        group = (result.prompt_of == p).nonzero().squeeze(1)
        assert pick in group.tolist() and result.scores[pick] == result.scores[group].max()
        assert torch.allclose(result.scores[pick], reward.score(result.images[pick:pick + 1], "")[0])


def test_tts_var_and_best_of_n_start_from_the_same_candidates(tiny, prompts, reward, extractor):
    bon = run(tiny, prompts, schedule_for("bon", 4, len(SCHEDULE)), reward)
    tts = run(tiny, prompts, BatchSchedule(base_sizes=(4, 4, 2, 1, 1), cluster_scales=(2,),
                                           resample_scales=(3,)), reward, extractor)
    # the final TTS-VAR candidates were re-indexed: follow each back to its initial candidate
    assert bon.state.origin.tolist() == list(range(8))
    for j, origin in enumerate(tts.state.origin.tolist()):
        assert torch.equal(tts.state.bits[0][j], bon.state.bits[0][origin])


def test_a_combined_reward_is_normalised_over_each_prompts_candidates(tiny, prompts, reward):
    class Darkness:
        def score(self, images, prompt):
            return 1 - images.float().mean(dim=(1, 2, 3)) / 255

    result = run(tiny, prompts, schedule_for("bon", 3, len(SCHEDULE)), CombinedReward([reward, Darkness()], (3, 1)))
    for p, pick in enumerate(result.picks):
        group = (result.prompt_of == p).nonzero().squeeze(1)
        images = result.images[group]
        expected = combine_rewards([reward.score(images, ""), Darkness().score(images, "")], (3, 1))
        assert torch.allclose(result.scores[group], expected) and pick == group[expected.argmax()]


def test_importance_sampling_and_raw(tiny, prompts, reward):
    result = run(tiny, prompts, schedule_for("is", 3, len(SCHEDULE)), reward)
    assert result.trace["events"][-1]["mode"] == "sample" and len(result.picks) == 2
    raw = run(tiny, prompts, schedule_for("raw", 2, len(SCHEDULE)))
    assert torch.isnan(raw.scores).all() and raw.images.shape[0] == 4


def test_missing_models_are_reported(tiny, prompts):
    with pytest.raises(ValueError, match="reward"):
        run(tiny, prompts, schedule_for("bon", 2, len(SCHEDULE)))
    with pytest.raises(ValueError, match="feature extractor"):
        run(tiny, prompts, BatchSchedule(base_sizes=(4, 2, 2, 2, 2), cluster_scales=(1,), resample_scales=()),
            reward=object())


@pytest.mark.parametrize("resolution,side,expected", [
    ("scale", None, [(2, 2), (4, 4), (5, 5)]),      # each selection at its own scale's token grid
    ("scale", 48, [(2, 2), (3, 3), (3, 3)]),        # ... never above selection_side
    ("fixed", 48, [(3, 3), (3, 3), (3, 3)]),        # every selection at selection_side
    ("fixed", None, [(5, 5), (5, 5), (5, 5)]),      # full size, as the reference
])
def test_selections_decode_at_the_configured_resolution(tiny, prompts, reward, extractor, resolution, side,
                                                         expected):
    model, vae = tiny
    decoded, per_event = [], {}

    def on_event(event):
        if not isinstance(event, ScaleDone):
            kind = event.record.event
            per_event.setdefault(kind, []).append(set(decoded))
            if isinstance(event, SelectionDone):  # the event names the size it decoded at
                assert {max(s) for s in decoded} <= {(event.decode_side or 80) // 16}
        decoded.clear()

    hook = vae.decoder.register_forward_pre_hook(lambda module, args: decoded.append(tuple(args[0].shape[-2:])))
    try:
        batch = BatchSchedule(base_sizes=(4, 3, 3, 2, 1), cluster_scales=(1,), resample_scales=(3, 4),
                              selection_side=side, selection_resolution=resolution)
        result = run(tiny, prompts, batch, reward, extractor, on_event=on_event)
    finally:
        hook.remove()
    selections = per_event["cluster"] + per_event["resample"]
    assert selections == [{size} for size in expected]
    assert per_event["final"] == [{(5, 5)}] and result.images.shape == (2, 80, 80, 3)  # the output: full size


@pytest.mark.parametrize("kind", ["value", "diff", "max", "sum"])
def test_history_potentials_score_every_scale_from_the_first_clustering(tiny, prompts, reward, extractor, kind):
    model, vae = tiny
    scale_of_decode, now, seen = [], [None], []  # the scale after which each image is decoded

    def on_event(event):
        seen.append(event)
        now[0] = event.scale if isinstance(event, ScaleDone) else "after"

    hook = vae.decoder.register_forward_pre_hook(lambda module, args: scale_of_decode.extend([now[0]] * len(args[0])))
    try:
        batch = BatchSchedule(base_sizes=(4, 3, 3, 2, 1), cluster_scales=(1,), resample_scales=(3, 4), potential=kind)
        result = run(tiny, prompts, batch, reward, extractor, on_event=on_event)
    finally:
        hook.remove()
    resamples = [e for e in seen if isinstance(e, SelectionDone) and e.record.event == "resample"]
    if kind == "value":  # scores only where it resamples and at the end
        assert "history_scoring" not in result.trace and not any(isinstance(e, HistoryScored) for e in seen)
        assert torch.isnan(resamples[0].before.scores).all()
        return
    # scored after scales 1 and 2 (3 and 4 resample and score anyway), recorded in the trace with its cost
    scored = [e for e in seen if isinstance(e, HistoryScored)]
    assert [e.scale for e in scored] == [1, 2] == result.trace["history_scoring"]["scales"]
    assert result.trace["history_scoring"]["images"] == 8 + 6  # both prompts' live candidates
    assert result.trace["history_scoring"]["seconds"] == pytest.approx(sum(e.seconds for e in scored))
    assert all("history_scoring_s" in result.trace["scales"][si] for si in (1, 2))
    # the clustering after scale 1 reuses the scoring's decode: each candidate is decoded once per scale
    assert scale_of_decode.count(1) == 8 and scale_of_decode.count(2) == 6
    for event in resamples:
        si = event.record.scale
        for group in event.record.groups:
            past = event.before.scores[group.candidates, 1:si]
            assert not torch.isnan(past).any()  # every scale since the first clustering
            r = torch.tensor(group.scores)
            expected = {"diff": r - past[:, -1], "max": torch.maximum(r, past.max(dim=1).values),
                        "sum": r + past.sum(dim=1)}[kind]
            assert torch.allclose(torch.tensor(group.potentials), expected)
    # the rewards of the final candidates: every scale from the first clustering on
    assert not torch.isnan(result.state.scores[:, 1:]).any()


def test_unknown_selection_resolution_is_rejected():
    with pytest.raises(ValueError, match="selection_resolution"):
        BatchSchedule(selection_resolution="half").validate(13)


def test_events_are_typed_and_in_order(tiny, prompts, reward, extractor):
    seen = []
    batch = BatchSchedule(base_sizes=(4, 3, 3, 2, 2), cluster_scales=(1,), resample_scales=(3,))
    result = run(tiny, prompts, batch, reward, extractor, on_event=seen.append)
    kinds = [type(e).__name__ if not isinstance(e, SelectionDone) else e.record.event for e in seen]
    assert kinds == ["ScaleDone", "ScaleDone", "cluster", "ScaleDone", "ScaleDone", "resample", "ScaleDone",
                     "SearchDone"]
    cluster = next(e for e in seen if isinstance(e, SelectionDone))
    assert cluster.before.num_candidates == 8 and cluster.after.num_candidates == 6
    assert cluster.record.kept == result.trace["events"][0]["kept"]
    assert isinstance(seen[-1], SearchDone) and seen[-1].record.picks == result.picks


def test_final_scores_are_the_rewards_of_what_the_search_returns(tiny, prompts, reward, extractor):
    seen = []
    result = run(tiny, prompts, schedule_for("bon", 3, len(SCHEDULE)), reward, on_event=seen.append)
    scores = FinalScores.of(result.state, seen[-1].record, ("p0", "p1"))
    assert scores.picks == tuple(result.picks)
    assert scores.chosen == tuple(result.scores[result.picks].tolist())
    assert scores.finalists == tuple(result.scores.tolist())
    report = json.loads(scores.to_json())
    assert report["mode"] == "best"
    assert [(c["prompt"], c["finalist"]) for c in report["chosen"]] == [("p0", result.picks[0]),
                                                                        ("p1", result.picks[1])]
    assert [f["chosen"] for f in report["finalists"]].count(True) == 2
    assert [f["origin"] for f in report["finalists"]] == result.state.origin.tolist()

    # plain sampling scores nothing: NaN in the values, null in the JSON (which has no NaN)
    seen.clear()
    raw = run(tiny, prompts, schedule_for("raw", 1, len(SCHEDULE)), on_event=seen.append)
    unscored = FinalScores.of(raw.state, seen[-1].record, ("p0", "p1"))
    assert all(math.isnan(s) for s in unscored.chosen)
    assert [c["score"] for c in json.loads(unscored.to_json())["chosen"]] == [None, None]


def test_check_inputs_names_what_is_wrong(tiny, prompts, reward):
    model, vae = tiny
    feats, lens = prompts
    bon = schedule_for("bon", 2, len(SCHEDULE))
    good = request(prompts, bon, reward)
    assert good.check_inputs(model, vae) is good
    cases = [
        (SearchRequest(Prompts(("p0",), feats, tuple(lens)), SCHEDULE, SamplingParams(), bon,
                       scorers=Scorers(reward)), "prompt texts"),
        (SearchRequest(Prompts(("p0", " "), feats, tuple(lens)), SCHEDULE, SamplingParams(), bon,
                       scorers=Scorers(reward)), "empty"),
        (SearchRequest(Prompts(("p0", "p1"), feats[:, :3], tuple(lens)), SCHEDULE, SamplingParams(), bon,
                       scorers=Scorers(reward)), "text features"),
        (SearchRequest(Prompts(("p0", "a \ud800"), feats, tuple(lens)), SCHEDULE, SamplingParams(), bon,
                       scorers=Scorers(reward)), "prompt 2 holds an invalid character"),
        (request(prompts, bon, reward, seed=-1), "seed"),
        (request(prompts, schedule_for("bon", 2, 4), reward), "4 entries"),
        (SearchRequest(good.prompts, SCHEDULE, SamplingParams(tau=0.0), bon, scorers=Scorers(reward)), "tau"),
        (SearchRequest(good.prompts, tuple((i, i) for i in range(1, 17)), SamplingParams(), bon,
                       scorers=Scorers(reward)), "scale embeddings for 15"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            bad.check_inputs(model, vae)
