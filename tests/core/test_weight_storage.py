"""fp8 weight storage: the blocks' matmul weights in float8, upcast per layer, everything else unchanged."""
import copy

import pytest
import torch

from ttsvar_core.model.checkpoints import build_random, is_fp8_slot, load_infinity, store_fp8
from ttsvar_core.model.config import PRESETS
from ttsvar_core.model.sampling import SamplingParams, generate

SCHEDULE = [(1, 1), (2, 2), (3, 3), (4, 4)]


def block_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for n, p in model.named_parameters() if n.startswith("block_chunks."))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.float() - b.float()).pow(2).mean()
    peak = b.float().abs().max()
    return float(10 * torch.log10(peak ** 2 / mse))


@pytest.fixture(scope="module")
def bf16_model():
    model, _ = build_random(PRESETS["tiny"], seed=3, dtype=torch.bfloat16)
    return model


def test_fp8_storage_halves_block_memory_and_keeps_the_logits(bf16_model):
    fp8 = store_fp8(copy.deepcopy(bf16_model))
    assert fp8.block_dtype == torch.bfloat16  # computation (and the KV cache) stays bf16
    matmul = sum(p.numel() for n, p in fp8.named_parameters() if is_fp8_slot(n, p.ndim))
    assert matmul > 0.8 * sum(p.numel() for n, p in fp8.named_parameters() if n.startswith("block_chunks."))
    assert block_bytes(fp8) < 0.6 * block_bytes(bf16_model)
    g = torch.Generator().manual_seed(0)
    feats, lens = torch.randn(9, 256, generator=g) * 0.5, [4, 5]
    params = SamplingParams(cfg=3.0, tau=0.5)
    reference = generate(bf16_model, feats, lens, SCHEDULE, params, generator=torch.Generator().manual_seed(1),
                         record=True)
    # teacher-forced on the reference's bits, so both see the same inputs at every scale
    stored = generate(fp8, feats, lens, SCHEDULE, params, generator=torch.Generator().manual_seed(1),
                      teacher_bits=reference.bits, record=True)
    for si, (a, b) in enumerate(zip(stored.raw_logits, reference.raw_logits)):
        quality = psnr(a, b)
        print(f"scale {si}: fp8 vs bf16 logits PSNR {quality:.1f} dB")
        assert quality > 25, si  # e4m3 keeps 3 mantissa bits: about 1-3% relative error per weight


def test_fp8_storage_when_loading(tiny_files):
    model = load_infinity(tiny_files["infinity_safetensors"], dtype=torch.bfloat16, weight_storage="fp8")
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert dtypes["block_chunks.0.module.0.sa.mat_qkv.weight"] == torch.float8_e4m3fn
    assert dtypes["block_chunks.0.module.0.sa.q_bias"] == torch.bfloat16
    assert dtypes["head.weight"] == torch.float32  # outside the blocks nothing changes
    with pytest.raises(ValueError, match="weight storage"):
        load_infinity(tiny_files["infinity_safetensors"], weight_storage="int4")
