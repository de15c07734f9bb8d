"""Invariants of the candidate state: stepping, selecting and branching."""
import pytest
import torch

from ttsvar_core.engine import SearchState, derive_seed
from ttsvar_core.model.sampling import SamplingParams, generate

SCHEDULE = [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]
PARAMS = SamplingParams(cfg=3.0, tau=1.0)


def start(model, prompts, n=4, **kw):
    feats, lens = prompts
    return SearchState.start(model, feats, lens, SCHEDULE, PARAMS, n, seed=7, **kw)


def snapshot(state):
    return {"bits": [b.clone() for b in state.bits],
            "summed": None if state.summed is None else state.summed.clone(),
            "cache_k": state.cache.k[:, :, :, :state.cache_length].clone(),
            "streams": [None if s.state is None else s.state.clone() for s in state.streams],
            "scale": state.scale, "n": state.num_candidates}


def assert_same(a, b):
    assert a["scale"] == b["scale"] and a["n"] == b["n"]
    assert all(torch.equal(x, y) for x, y in zip(a["bits"], b["bits"]))
    assert (a["summed"] is None) == (b["summed"] is None)
    if a["summed"] is not None:
        assert torch.equal(a["summed"], b["summed"])
    assert torch.equal(a["cache_k"], b["cache_k"])
    assert all((x is None and y is None) or torch.equal(x, y) for x, y in zip(a["streams"], b["streams"]))


def test_stepping_equals_the_plain_loop(tiny, prompts):
    model, _ = tiny
    feats, lens = prompts
    plain = generate(model, feats, lens, SCHEDULE, PARAMS, generator=torch.Generator().manual_seed(7))
    state = SearchState.start(model, feats, lens, SCHEDULE, PARAMS, 1, seed=7, shared_generator=True)
    for si in range(len(SCHEDULE)):
        state = state.step()
        assert torch.equal(state.bits[si], plain.bits[si]), si
    assert torch.equal(state.summed, plain.summed_codes)


def test_candidate_equals_its_solo_run(tiny, prompts):
    """Candidate i of a search with seed s generates what a single run with the derived seed generates."""
    model, _ = tiny
    feats, lens = prompts
    state = start(model, prompts).step(until=len(SCHEDULE))
    for prompt, i in ((0, 2), (1, 3)):
        solo = generate(model, feats[sum(lens[:prompt]):sum(lens[:prompt + 1])], [lens[prompt]], SCHEDULE, PARAMS,
                        generator=torch.Generator().manual_seed(derive_seed(7, prompt, i)))
        candidate = state.candidates_of(prompt)[i]
        for si in range(len(SCHEDULE)):
            assert torch.equal(state.bits[si][candidate], solo.bits[si][0]), (prompt, i, si)


def test_select_all_in_order_changes_nothing(tiny, prompts):
    model, _ = tiny
    mid = start(model, prompts).step(until=2)
    a = mid.step(until=len(SCHEDULE))
    b = mid.select(range(mid.num_candidates)).step(until=len(SCHEDULE))
    assert_same(snapshot(a), snapshot(b))


def test_selected_candidate_continues_as_if_alone(tiny, prompts):
    model, _ = tiny
    mid = start(model, prompts).step(until=3)
    full = mid.step(until=len(SCHEDULE))
    picked = mid.select([5]).step(until=len(SCHEDULE))
    for si in range(len(SCHEDULE)):
        assert torch.equal(picked.bits[si][0], full.bits[si][5]), si
    assert torch.allclose(picked.summed[0], full.summed[5], atol=1e-6)


def test_duplicates_diverge_and_the_first_copy_keeps_its_stream(tiny, prompts):
    model, _ = tiny
    mid = start(model, prompts).step(until=2)
    dup = mid.select([1, 1, 1]).step(until=len(SCHEDULE))
    alone = mid.select([1]).step(until=len(SCHEDULE))
    assert torch.equal(dup.bits[-1][0], alone.bits[-1][0])
    assert not torch.equal(dup.bits[-1][1], dup.bits[-1][2])
    assert torch.equal(dup.bits[1][1], dup.bits[1][2])  # shared history before the selection


def test_reindexed_cache_equals_rebuilt_cache(tiny, prompts):
    model, _ = tiny
    state = start(model, prompts).step(until=3).select([6, 0, 0, 3]).step()
    length = state.cache_length
    rebuilt = state.rebuilt_cache()
    assert torch.allclose(state.cache.k[:, :, :, :length], rebuilt.k[:, :, :, :length], atol=1e-5)
    assert torch.allclose(state.cache.v[:, :, :, :length], rebuilt.v[:, :, :, :length], atol=1e-5)


def test_inputs_of_step_and_select_stay_valid(tiny, prompts):
    model, _ = tiny
    mid = start(model, prompts).step(until=2)
    before = snapshot(mid)
    branch_a = mid.step(until=4)
    branch_b = mid.select([3, 1]).step(until=4)
    branch_c = mid.step(until=4)  # the cache frontier moved: this branch must copy, not overwrite branch a
    assert_same(before, snapshot(mid))
    assert_same(snapshot(branch_a), snapshot(branch_c))
    assert all(torch.equal(x[[3, 1]], y) for x, y in zip(mid.bits, branch_b.bits[:2]))
    again = branch_a.step()
    assert again.scale == 5 and branch_a.scale == 4
    assert torch.equal(branch_b.bits[0], mid.bits[0][[3, 1]])


def test_multi_prompt_candidates_keep_their_prompt(tiny, prompts):
    model, _ = tiny
    state = start(model, prompts, n=[2, 3]).step()
    assert state.prompt_of.tolist() == [0, 0, 1, 1, 1]
    sel = state.select([4, 0, 4])
    assert sel.prompt_of.tolist() == [1, 0, 1] and sel.candidates_of(1) == [0, 2]


def test_bad_selections(tiny, prompts):
    model, _ = tiny
    state = start(model, prompts).step()
    with pytest.raises(ValueError, match="out of range"):
        state.select([99])
    with pytest.raises(ValueError, match="at least one"):
        state.select([])
    with pytest.raises(ValueError, match="cannot step"):
        state.step(until=9)
    with pytest.raises(ValueError, match="candidate count"):
        start(model, prompts, n=0)


def test_released_cache_is_rebuilt_and_results_stay_the_same(tiny, prompts):
    model, _ = tiny
    mid = start(model, prompts).step(until=2)
    kept = mid.select([1, 4], release_input=True)
    assert mid.cache_ref.cache is None
    again = mid.step(until=len(SCHEDULE))  # the released state is still usable: its cache is rebuilt
    reference = start(model, prompts).step(until=len(SCHEDULE))
    assert all(torch.equal(a, b) for a, b in zip(again.bits, reference.bits))
    assert kept.step().scale == 3


def test_small_capacity_grows_once_when_needed(tiny, prompts):
    model, _ = tiny
    feats, lens = prompts
    state = SearchState.start(model, feats, lens, SCHEDULE, PARAMS, 2, seed=7, capacity_scales=2)
    assert state.cache.capacity == 1 + 4
    grown = state.step(until=len(SCHEDULE))
    reference = SearchState.start(model, feats, lens, SCHEDULE, PARAMS, 2, seed=7).step(until=len(SCHEDULE))
    assert grown.cache.capacity == sum(h * w for h, w in SCHEDULE)
    assert all(torch.equal(a, b) for a, b in zip(grown.bits, reference.bits))


def test_selection_decode_at_reduced_size(tiny, prompts):
    model, vae = tiny
    state = start(model, prompts, n=2).step(until=3)
    full = state.decode(vae)
    small = state.decode(vae, max_side=40)
    assert full.shape == (4, 80, 80, 3) and small.shape == (4, 32, 32, 3)
    assert state.decode(vae) is full  # decoded once per state and size


def test_step_capacity_and_rebuild_room(tiny, prompts):
    model, _ = tiny
    feats, lens = prompts
    state = SearchState.start(model, feats, lens, SCHEDULE, PARAMS, 2, seed=7, capacity_scales=1)
    grown = state.step(until=3, capacity_scales=3)
    assert grown.cache.capacity == 1 + 4 + 9
    grown.release_cache()
    assert grown.cache.capacity == 1 + 4 + 9  # rebuilt with room for what exists only
    assert grown.step(capacity_scales=4).cache.capacity == 1 + 4 + 9 + 16


# ---- branching: vary from a scale, force scales (start from an image) ---------------------------------------
def test_varied_equals_a_fresh_run_that_shares_the_prefix(tiny, prompts):
    model, _ = tiny
    feats, lens = prompts
    done = start(model, prompts, n=3).step(until=len(SCHEDULE))
    varied = done.varied(index=4, scale=1, copies=3, seed=99).step(until=len(SCHEDULE))
    # a fresh run of 3 candidates of candidate 4's prompt whose first two scales are candidate 4's
    prompt = int(done.prompt_of[4])
    a, b = sum(lens[:prompt]), sum(lens[:prompt + 1])
    fresh = SearchState.start(model, feats, lens, SCHEDULE, PARAMS, [3 if p == prompt else 1 for p in range(2)],
                              seed=99)
    keep = fresh.candidates_of(prompt)
    fresh = fresh.select(keep)  # only that prompt's candidates, with their own streams
    fresh = fresh.forced([done.bits[0][4:5], done.bits[1][4:5]]).step(until=len(SCHEDULE))
    assert a < b and varied.num_candidates == 3 and varied.prompt_of.tolist() == [prompt] * 3
    for si in range(len(SCHEDULE)):
        assert torch.equal(varied.bits[si], fresh.bits[si]), si
    assert torch.equal(varied.summed, fresh.summed)
    # shared prefix, different continuations
    assert all(torch.equal(varied.bits[si][j], done.bits[si][4]) for si in (0, 1) for j in range(3))
    assert not torch.equal(varied.bits[-1][0], varied.bits[-1][1])


def test_varied_with_a_small_cache_grows_once_and_draws_the_same(tiny, prompts):
    model, _ = tiny
    done = start(model, prompts, n=2).step(until=len(SCHEDULE))
    small = done.varied(index=1, scale=2, copies=2, seed=5, capacity_scales=3)
    assert small.cache.capacity == 1 + 4 + 9  # the prefix only: the next step allocates what it needs
    roomy = done.varied(index=1, scale=2, copies=2, seed=5)
    grown, reference = small.step(until=len(SCHEDULE)), roomy.step(until=len(SCHEDULE))
    assert all(torch.equal(a, b) for a, b in zip(grown.bits, reference.bits))


def test_truncated_state_continues_like_the_original(tiny, prompts):
    model, _ = tiny
    two = start(model, prompts, n=2).step(until=2)
    four = two.step(until=4)
    again = four.truncated(2)
    assert again.scale == 2 and torch.equal(again.summed, two.summed) and torch.equal(again.next_in, two.next_in)
    assert torch.equal(again.reseeded(7).step().bits[-1], two.reseeded(7).step().bits[-1])
    back = four.step(until=5).truncated(4)
    assert all(torch.equal(x, y) for x, y in zip(back.bits, four.bits)) and torch.equal(back.summed, four.summed)
    assert torch.isnan(back.scores[:, 4:]).all()


def test_forcing_every_scale_reproduces_the_given_bits(tiny, prompts):
    model, _ = tiny
    reference = start(model, prompts, n=1).step(until=len(SCHEDULE))
    forced = start(model, prompts, n=1).forced(list(reference.bits))
    assert all(torch.equal(x, y) for x, y in zip(forced.bits, reference.bits))
    assert torch.equal(forced.summed, reference.summed)
    assert torch.allclose(forced.cache.k[:, :, :, :forced.cache_length],
                          reference.rebuilt_cache().k[:, :, :, :reference.cache_length])


def test_forcing_several_scales_makes_room_for_them(tiny, prompts):
    model, _ = tiny
    feats, lens = prompts
    reference = start(model, prompts, n=1).step(until=3)
    tight = SearchState.start(model, feats, lens, SCHEDULE, PARAMS, 1, seed=7, capacity_scales=1)
    forced = tight.forced(list(reference.bits))      # three scales into a cache with room for one
    roomy = start(model, prompts, n=1).forced(list(reference.bits))
    assert forced.cache.capacity >= 1 + 4 + 9
    assert torch.equal(forced.step().bits[-1], roomy.step().bits[-1])


def test_branching_inputs_are_checked(tiny, prompts):
    model, _ = tiny
    state = start(model, prompts, n=2).step(until=3)
    with pytest.raises(ValueError, match="candidate 9"):
        state.varied(9, 1, 2, seed=1)
    with pytest.raises(ValueError, match="scale 3 has not been generated"):
        state.varied(0, 3, 2, seed=1)
    with pytest.raises(ValueError, match="shape"):
        state.forced([torch.zeros(1, 1, 9, 9, 4, dtype=torch.uint8)])
    with pytest.raises(ValueError, match="cannot force"):
        state.forced([state.bits[0]] * 3)


def test_start_from_an_image_forces_its_encoded_scales(tiny, prompts):
    from ttsvar_core.model.sampling import encode_images
    model, vae = tiny
    drawn = start(model, prompts, n=1).step(until=len(SCHEDULE)).decode(vae)       # [2, 80, 80, 3]
    fresh = start(model, prompts, n=1)
    bits = encode_images(vae, drawn, fresh.geometry)
    assert [tuple(b.shape) for b in bits] == [(2, 1, h, w, model.cfg.codebook_dim) for h, w in SCHEDULE]
    whole = fresh.forced(bits)                      # k = last scale: the image's own bits
    assert all(torch.equal(x, y) for x, y in zip(whole.bits, bits))
    partial = fresh.forced(bits[:2]).step(until=len(SCHEDULE))   # composition from the image, rest sampled
    assert torch.equal(partial.bits[1], bits[1]) and partial.scale == len(SCHEDULE)
    with pytest.raises(ValueError, match="RGB"):
        encode_images(vae, drawn[..., :2], fresh.geometry)
