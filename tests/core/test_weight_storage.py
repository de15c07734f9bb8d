"""Weight storage and block streaming: the blocks' matmul weights stored in float8 (or bf16/fp16 under fp32
compute), upcast per layer, everything else unchanged; blocks kept in CPU memory and streamed to the device."""
import copy

import pytest
import torch

from ttsvar_core.model.checkpoints import build_random, is_storage_slot, load_infinity, store_fp8
from ttsvar_core.model.offload import stream_blocks
from ttsvar_core.model.pipeline import InfinityPipeline
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
    matmul = sum(p.numel() for n, p in fp8.named_parameters() if is_storage_slot(n, p.ndim))
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
    with pytest.raises(ValueError, match=r"unknown weight storage 'int4'.*\['bf16', 'fp16', 'fp8'\]"):
        load_infinity(tiny_files["infinity_safetensors"], weight_storage="int4")


def test_bf16_storage_under_fp32_compute(tiny_files):
    """bf16 storage halves an fp32 model's block memory on a CPU; the arithmetic stays fp32, so the logits
    differ from fp32 weights only by the weights' bf16 rounding, exactly as bf16-stored weights run in fp32."""
    fp32 = load_infinity(tiny_files["infinity_safetensors"])
    stored = load_infinity(tiny_files["infinity_safetensors"], weight_storage="bf16")
    assert stored.block_dtype == torch.float32
    assert stored.block_chunks[0].module[0].ffn.fc1.weight.dtype == torch.bfloat16
    assert block_bytes(stored) < 0.6 * block_bytes(fp32)
    rounded = copy.deepcopy(fp32)
    for name, p in rounded.named_parameters():
        if is_storage_slot(name, p.ndim):
            p.data = p.data.to(torch.bfloat16).float()
    g = torch.Generator().manual_seed(0)
    feats, lens = torch.randn(9, 256, generator=g) * 0.5, [4, 5]
    params = SamplingParams(cfg=3.0, tau=0.5)
    want = generate(rounded, feats, lens, SCHEDULE, params, generator=torch.Generator().manual_seed(1), record=True)
    got = generate(stored, feats, lens, SCHEDULE, params, generator=torch.Generator().manual_seed(1), record=True)
    assert all(torch.equal(a, b) for a, b in zip(got.bits, want.bits))
    assert all(torch.equal(a, b) for a, b in zip(got.raw_logits, want.raw_logits))


@pytest.mark.parametrize("storage, dtype, words", [
    ("bf16", torch.float16, "weight storage bf16 is no smaller than the compute dtype float16.*fp8 storage"),
    ("fp16", torch.bfloat16, "weight storage fp16 is no smaller than the compute dtype bfloat16.*compute in fp32"),
])
def test_a_storage_that_saves_nothing_is_refused(tiny_files, storage, dtype, words):
    with pytest.raises(ValueError, match=words):
        load_infinity(tiny_files["infinity_safetensors"], dtype=dtype, weight_storage=storage)


def test_a_storage_equal_to_the_compute_dtype_changes_nothing(tiny_files):
    model = load_infinity(tiny_files["infinity_safetensors"], dtype=torch.bfloat16, weight_storage="bf16")
    assert {p.dtype for n, p in model.named_parameters() if n.startswith("block_chunks.")} == {torch.bfloat16}


def test_fp8_is_refused_on_mps_before_loading(tiny_files):
    with pytest.raises(ValueError, match="fp8 weight storage does not run on Apple MPS.*bf16 or fp16"):
        InfinityPipeline.load("nowhere.pth", "nowhere.pth", "nowhere", device="mps", dtype="fp16",
                              weight_storage="fp8")


def test_streaming_keeps_the_blocks_in_cpu_memory():
    """The blocks stay in CPU memory and everything else goes to the device (here the meta device, which
    shows the placement without a GPU)."""
    model, _ = build_random(PRESETS["tiny"], seed=3)
    stream_blocks(model, "meta")
    where = {n: t.device.type for n, t in [*model.named_parameters(), *model.named_buffers()]}
    assert {d for n, d in where.items() if n.startswith("block_chunks.")} == {"cpu"}
    assert {d for n, d in where.items() if not n.startswith("block_chunks.")} == {"meta"}
    assert model.device.type == "meta"


def test_fp8_and_streaming_through_the_pipeline_give_the_same_images(tiny_files):
    """InfinityPipeline.load with fp8 storage and block streaming samples the same bits as fp8 storage alone
    (streaming moves weights, never changes them)."""
    args = (tiny_files["infinity_safetensors"], tiny_files["vae_safetensors"], tiny_files["t5"])
    plain = InfinityPipeline.load(*args, weight_storage="fp8")
    streamed = InfinityPipeline.load(*args, weight_storage="fp8", stream=True)
    assert streamed.model.block_chunks[0].module[0].sa.mat_qkv.weight.dtype == torch.float8_e4m3fn
    prompts = plain.encode(["a red circle"])
    params = SamplingParams(cfg=3.0, tau=0.5)
    runs = [generate(p.model, prompts.features, list(prompts.lens), SCHEDULE, params,
                     generator=torch.Generator().manual_seed(1)) for p in (plain, streamed)]
    assert all(torch.equal(a, b) for a, b in zip(runs[0].bits, runs[1].bits))
