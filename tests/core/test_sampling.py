"""The KV-cached sampling loop on tiny random models: consistency properties the golden data cannot cover."""
import pytest
import torch

import torch.nn.functional as F

from ttsvar_core.model import infinity
from ttsvar_core.model.checkpoints import build_random
from ttsvar_core.model.config import PRESETS
from ttsvar_core.model.sampling import (Geometry, SamplingParams, block_causal_mask, build_text, decode_images,
                                        forward_full, generate, to_uint8)
from ttsvar_core.testing.tiny_models import TINY_PATCHIFY

SCHEDULE = [(1, 1), (2, 2), (3, 3), (4, 4)]


@pytest.fixture(scope="module")
def tiny():
    return build_random(PRESETS["tiny"], seed=3)


def text(lens, channels=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(sum(lens), channels, generator=g) * 0.5, lens


def test_cached_equals_single_pass(tiny):
    model, _ = tiny
    feats, lens = text([4, 7])
    params = SamplingParams(cfg=3.0, tau=0.5)
    run = generate(model, feats, lens, SCHEDULE, params, generator=torch.Generator().manual_seed(1), record=True)
    full = forward_full(model, feats, lens, SCHEDULE, run.next_inputs, guided=True)
    cached = torch.cat(run.raw_logits, 1)
    assert full.shape == cached.shape == (4, 1 + 4 + 9 + 16, PRESETS["tiny"].logit_dim)
    assert (full - cached).abs().max() < 5e-4


def test_seeded_sampling_is_reproducible(tiny):
    model, _ = tiny
    feats, lens = text([5])
    params = SamplingParams(cfg=3.0, tau=1.0)
    a, b, c = (generate(model, feats, lens, SCHEDULE, params, generator=torch.Generator().manual_seed(s))
               for s in (7, 7, 8))
    assert all(torch.equal(x, y) for x, y in zip(a.bits, b.bits))
    assert not all(torch.equal(x, y) for x, y in zip(a.bits, c.bits))


def test_per_scale_cfg_ignores_uncond_where_cfg_is_one(tiny):
    model, _ = tiny
    feats, lens = text([5])
    params = SamplingParams(cfg=(1.0, 4.0, 1.0, 2.0), tau=(0.5, 1.0, 2.0, 1.0), top_k=1, top_p=0.0)
    run = generate(model, feats, lens, SCHEDULE, params, record=True)
    assert run.raw_logits[1].shape[0] == 2  # guidance at some scale: unconditional rows exist
    assert run.raw_logits[0].shape[0] == 1  # but at cfg-1 scales only the conditional row reaches the head
    for si in (0, 2):
        expected = (run.raw_logits[si][:1] / params.tau_at(si)).reshape(1, -1, 2)
        assert torch.allclose(run.cfg_logits[si], expected)
    raw = run.raw_logits[1] * (1 / 1.0)
    assert torch.allclose(run.cfg_logits[1], (4.0 * raw[:1] - 3.0 * raw[1:]).reshape(1, -1, 2), atol=1e-6)


def test_negative_prompt_replaces_learned_unconditional(tiny):
    model, _ = tiny
    feats, lens = text([5, 3])
    params = SamplingParams(cfg=3.0, tau=1.0, top_k=1, top_p=0.0)
    base = generate(model, feats, lens, SCHEDULE, params, record=True)
    same = generate(model, feats, lens, SCHEDULE, params, record=True,
                    negative=(model.unconditional_features(lens), lens))
    neg_feats, neg_lens = text([6, 2], seed=5)
    other = generate(model, feats, lens, SCHEDULE, params, record=True, negative=(neg_feats, neg_lens))
    assert torch.allclose(base.raw_logits[-1], same.raw_logits[-1], atol=1e-6)
    assert not torch.allclose(base.raw_logits[-1][2:], other.raw_logits[-1][2:], atol=1e-3)
    assert torch.allclose(base.raw_logits[0][:2], other.raw_logits[0][:2], atol=1e-6)  # cond rows unchanged


def test_patchify_model_generates_full_size_images():
    model, vae = build_random(TINY_PATCHIFY, seed=0)
    feats, lens = text([4])
    run = generate(model, feats, lens, SCHEDULE, SamplingParams(), generator=torch.Generator().manual_seed(0))
    assert run.bits[-1].shape == (1, 1, 8, 8, TINY_PATCHIFY.codebook_dim)  # 4x4 tokens = 8x8 latent pixels
    images = to_uint8(decode_images(vae, run.summed_codes))
    assert images.shape == (1, 64, 64, 3) and images.dtype == torch.uint8


def test_bad_sampling_parameters(tiny):
    model, _ = tiny
    feats, lens = text([4])
    with pytest.raises(ValueError, match="cfg list has 2 entries"):
        generate(model, feats, lens, SCHEDULE, SamplingParams(cfg=(3.0, 3.0)))
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        generate(model, feats, lens, SCHEDULE, SamplingParams(tau=0.0))
    with pytest.raises(ValueError, match="cfg must be a finite number"):
        generate(model, feats, lens, SCHEDULE, SamplingParams(cfg=float("inf")))
    with pytest.raises(ValueError, match="lengths sum"):
        generate(model, feats, [9], SCHEDULE, SamplingParams())


def test_block_streaming_gives_the_same_result(tiny):
    from ttsvar_core.model.offload import BlockStreamer
    model, _ = build_random(PRESETS["tiny"], seed=3)
    feats, lens = text([4])
    params = SamplingParams(top_k=1, top_p=0.0)
    reference = generate(model, feats, lens, SCHEDULE, params, record=True)
    streamer = BlockStreamer(model, "cpu")
    streamed = generate(model, feats, lens, SCHEDULE, params, record=True)
    streamer.remove()
    assert all(torch.equal(a, b) for a, b in zip(reference.raw_logits, streamed.raw_logits))
    assert len(streamer.handles) == 0


def test_cfg_one_scales_run_the_head_on_conditional_rows_only(tiny, monkeypatch):
    """Official loop: at a cfg-1 scale of a guided run `get_logits(last_stage[:B], cond_BD[:B])`. A head on all
    2B rows, sliced afterwards, is the same mathematically but not bitwise (other matmul shapes)."""
    model, _ = tiny
    feats, lens = text([5, 3])
    hidden = []
    forward_tokens = model.forward_tokens
    monkeypatch.setattr(model, "forward_tokens", lambda *a, **k: hidden.append(forward_tokens(*a, **k)) or hidden[-1])
    params = SamplingParams(cfg=(1.0, 4.0, 1.0, 2.0), tau=0.5, top_k=1, top_p=0.0)
    run = generate(model, feats, lens, SCHEDULE, params, record=True)
    sos = build_text(model, feats, lens, guided=True).sos
    for si in (0, 2):
        assert hidden[si].shape[0] == 4  # the unconditional rows still run through the blocks (KV cache)
        assert torch.equal(run.raw_logits[si], model.logits(hidden[si][:2], sos[:2])), si
    assert torch.equal(run.raw_logits[1], model.logits(hidden[1], sos))


def test_cross_attention_matches_the_reference_per_sequence_call():
    """The float32 reference attends one sequence at a time with 3-D tensors (PyTorch's math backend on CPU);
    the fused kernel a batched 4-D call picks differs in the last bit, and the bf16 rounding of the output
    turns that into 1e-4-sized logit differences. Rows of one sequence must give the reference's bits."""
    attention = infinity.CrossAttention(64, 64, 2)
    g = torch.Generator().manual_seed(0)
    for rows, length, text_len in ((2, 36, 11), (3, 12, 5), (2, 1, 7)):
        q = infinity.round_bf16(torch.randn(rows, 2, length, 32, generator=g))
        k, v = (infinity.round_bf16(torch.randn(2, text_len, 32, generator=g)) for _ in range(2))
        reference = torch.stack([infinity.round_bf16(F.scaled_dot_product_attention(q[i], k, v)) for i in range(rows)])
        assert torch.equal(attention.attend(q, k, v), reference), (rows, length, text_len)


def test_single_pass_pads_the_sequence_like_the_official_forward(tiny, monkeypatch):
    """Infinity.forward pads the sequence to a multiple of 128 (padded queries see token 0, no real query sees
    a padded key). Mathematically a no-op; bitwise it is what makes the single pass equal the reference."""
    model, _ = tiny
    feats, lens = text([4, 7])
    params = SamplingParams(cfg=3.0, tau=0.5)
    run = generate(model, feats, lens, SCHEDULE, params, generator=torch.Generator().manual_seed(1), record=True)
    calls, sdpa = [], F.scaled_dot_product_attention
    def spy(q, k, v, attn_mask=None, **kw):
        if attn_mask is not None:  # self-attention of the single pass
            calls.append((q.shape[-2], k.shape[-2], attn_mask))
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)
    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    full = forward_full(model, feats, lens, SCHEDULE, run.next_inputs, guided=True)
    real = 1 + 4 + 9 + 16
    assert full.shape[1] == real
    assert len(calls) == PRESETS["tiny"].depth
    causal = block_causal_mask(Geometry.build(model, SCHEDULE))
    for queries, keys, mask in calls:
        assert queries == keys == 128
        assert torch.equal(mask[:real, :real], causal)
        assert not mask[:real, real:].any()
        assert mask[real:, 0].all() and not mask[real:, 1:].any()
