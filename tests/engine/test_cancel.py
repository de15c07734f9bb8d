"""Cancellation inside long work: `should_stop` runs before every decode chunk and scorer batch."""
import pytest

from ttsvar_core.engine import Prompts, RunOptions, Scorers, SearchRequest, SearchState, run_search, schedule_for
from ttsvar_core.model.sampling import SamplingParams

from .conftest import SCHEDULE, BrightnessReward


class Cancelled(Exception):
    pass


def counting_decoder(monkeypatch, vae) -> list:
    calls = []
    decode = vae.decode

    def counted(z):
        calls.append(z.shape[0])
        return decode(z)
    monkeypatch.setattr(vae, "decode", counted)
    return calls


def stop_after(calls: list, count: int):
    def should_stop():
        if len(calls) >= count:
            raise Cancelled
    return should_stop


def test_a_cancel_stops_a_decode_after_the_chunk_it_is_in(tiny, prompts, monkeypatch):
    model, vae = tiny
    feats, lens = prompts
    state = SearchState.start(model, feats, lens, SCHEDULE, SamplingParams(), 4).step(until=len(SCHEDULE))
    calls = counting_decoder(monkeypatch, vae)
    with pytest.raises(Cancelled):
        state.decode(vae, chunk=1, should_stop=stop_after(calls, 1))
    assert calls == [1]  # one of eight chunks
    assert len(state.decode(vae, chunk=3)) == 8 and calls[1:] == [3, 3, 2]  # nothing half-done was kept


def test_run_options_carry_the_cancel_into_the_final_decode_and_scoring(tiny, prompts, monkeypatch):
    model, vae = tiny
    feats, lens = prompts
    calls = counting_decoder(monkeypatch, vae)
    raw = SearchRequest(Prompts(("p0", "p1"), feats, tuple(lens)), SCHEDULE, SamplingParams(),
                        schedule_for("raw", 4, len(SCHEDULE)),
                        options=RunOptions(decode_chunk=1, should_stop=stop_after(calls, 1)))
    with pytest.raises(Cancelled):
        run_search(model, vae, raw)
    assert calls == [1]

    scored = []

    class OneAtATime(BrightnessReward):
        max_batch = 1

        def score(self, images, prompt):
            scored.append(len(images))
            return super().score(images, prompt)
    bon = SearchRequest(raw.prompts, SCHEDULE, SamplingParams(), schedule_for("bon", 4, len(SCHEDULE)),
                        scorers=Scorers(OneAtATime()), options=RunOptions(should_stop=stop_after(scored, 1)))
    with pytest.raises(Cancelled):
        run_search(model, vae, bon)
    assert scored == [1]  # one of eight scorer batches
