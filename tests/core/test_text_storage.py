"""The text encoder's weight storage: T5's block matmul weights held in fp8 (or bf16/fp16 under fp32
compute), widened layer by layer, giving features close to the full-precision encoder's; the choice passes
through InfinityPipeline.load and a refused one fails before anything loads."""
import pytest
import torch
import torch.nn.functional as F

from ttsvar_core.model.pipeline import InfinityPipeline
from ttsvar_core.model.text import TextEncoder, TextEncoderError, text_dtypes

PROMPTS = ["a red circle", "two blue squares above a star", "a green triangle left of a yellow star"]
CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


def stored_dtypes(encoder: TextEncoder) -> dict[str, torch.dtype]:
    return {name: p.dtype for name, p in encoder.model.named_parameters()}


def weight_bytes(encoder: TextEncoder) -> int:
    return sum(p.numel() * p.element_size() for p in encoder.model.parameters())


@pytest.fixture(scope="module")
def reference(tiny_files):
    encoder = TextEncoder(tiny_files["t5"])
    return encoder, encoder.encode(PROMPTS)


def closeness(got: torch.Tensor, want: torch.Tensor) -> tuple[float, float, float]:
    """(lowest per-row cosine similarity, max abs error relative to the largest feature, relative L2 error)."""
    cosine = float(F.cosine_similarity(got, want, dim=-1).min())
    return cosine, float((got - want).abs().max() / want.abs().max()), float((got - want).norm() / want.norm())


@pytest.mark.parametrize("storage, bits, cosine_floor, relative_ceiling", [
    # bf16 keeps 8 significant bits, fp8 e4m3fn 4: weights rounded to them move the features by about
    # 2^-8 and 2^-4 of their norm (measured on the tiny seeded T5: relative L2 0.0028 and 0.052, lowest
    # cosine 0.99999 and 0.9976)
    ("bf16", 16, 0.9995, 2 ** -6),
    ("fp16", 16, 0.9999, 2 ** -8),
    ("fp8", 8, 0.99, 2 ** -3),
])
def test_stored_weights_give_features_close_to_fp32(tiny_files, reference, storage, bits, cosine_floor,
                                                    relative_ceiling):
    full, (want, want_lens) = reference
    encoder = TextEncoder(tiny_files["t5"], weight_storage=storage)
    got, lens = encoder.encode(PROMPTS)
    assert encoder.dtype == torch.float32 and got.dtype == torch.float32 and lens == want_lens
    cosine, max_error, relative = closeness(got, want)
    print(f"{storage}: min cosine {cosine:.5f}, max abs error {max_error:.4f} of the largest feature, "
          f"relative L2 {relative:.4f}")
    assert cosine > cosine_floor and relative < relative_ceiling
    # only the encoder blocks' matmul weights are stored narrower; the embedding, norms and position
    # tables keep fp32
    dtypes = stored_dtypes(encoder)
    narrow = {n for n, d in dtypes.items() if d.itemsize * 8 == bits}
    assert narrow and all(".block." in n and n.endswith("parametrizations.weight.original") for n in narrow)
    assert dtypes["shared.weight"] == torch.float32
    assert weight_bytes(encoder) < weight_bytes(full) * (0.5 if bits == 16 else 0.4) + \
        full.model.shared.weight.numel() * 4
    # a layer's weight reads in its compute dtype: T5's own dtype checks (on wo.weight) see fp32
    assert encoder.model.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.float32


def test_each_prompt_is_encoded_once_with_stored_weights(tiny_files, monkeypatch):
    encoder = TextEncoder(tiny_files["t5"], weight_storage="fp8")
    rows = []
    forward = encoder.model.forward
    monkeypatch.setattr(encoder.model, "forward", lambda **kw: rows.append(kw["input_ids"].shape[0]) or forward(**kw))
    features, lens = encoder.encode(["a red circle", "a red circle", "a blue star"])
    assert rows == [2] and len(lens) == 3 and torch.equal(features[:lens[0]], features[lens[0]:2 * lens[0]])


def test_storage_moves_with_the_encoder(tiny_files):
    """The stored weights stay stored when T5 visits a device and comes back (here the meta device)."""
    encoder = TextEncoder(tiny_files["t5"], weight_storage="fp8")
    before = {n: d for n, d in stored_dtypes(encoder).items() if ".block." in n}
    encoder.to("meta")
    assert {n: d for n, d in stored_dtypes(encoder).items() if ".block." in n} == before
    assert {p.device.type for p in encoder.model.parameters()} == {"meta"}


def test_compute_and_storage_dtypes():
    # a 16-bit storage on a GPU's 16-bit default computes in it: nothing to widen
    assert text_dtypes("bf16", None, CUDA) == (torch.bfloat16, None)
    assert text_dtypes("fp16", None, CUDA) == (torch.float16, None)
    assert text_dtypes("fp8", None, CUDA) == (torch.float16, torch.float8_e4m3fn)
    assert text_dtypes(None, None, CUDA) == (torch.float16, None)
    assert text_dtypes("bf16", None, CPU) == (torch.float32, torch.bfloat16)
    assert text_dtypes("fp8", None, CPU) == (torch.float32, torch.float8_e4m3fn)
    # an explicit compute dtype is kept, so a storage as wide as it is refused, saying what to change
    with pytest.raises(TextEncoderError, match="text encoder storage: weight storage bf16 is no smaller than the "
                                               "compute dtype float16.*choose fp8 storage"):
        text_dtypes("bf16", torch.float16, CUDA)
    with pytest.raises(TextEncoderError, match="text encoder storage: fp8 weight storage does not run on Apple MPS"):
        text_dtypes("fp8", None, MPS)
    with pytest.raises(TextEncoderError, match="unknown weight storage 'fp4'"):
        text_dtypes("fp4", None, CPU)


def test_the_pipeline_passes_the_text_storage_and_refuses_before_loading(tiny_files):
    pipe = InfinityPipeline.load(tiny_files["infinity_safetensors"], tiny_files["vae_safetensors"], tiny_files["t5"],
                                 text_storage="fp8")
    assert torch.float8_e4m3fn in set(stored_dtypes(pipe.text_encoder).values())
    assert pipe.model.block_dtype == torch.float32  # the transformer's storage is its own choice
    with pytest.raises(TextEncoderError, match="Apple MPS"):
        InfinityPipeline.load("nowhere.pth", "nowhere.pth", "nowhere", device="mps", dtype="fp16",
                              text_storage="fp8")
