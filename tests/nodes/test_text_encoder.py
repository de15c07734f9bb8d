"""The text encoder in the nodes: the loader's optional text_encoder_storage reaches T5 (workflows without it
load as before), and Text Encode runs T5 once per distinct text on the compute device, asking ComfyUI for the
room the stored weights take, then sends it back to the offload device."""
import importlib
import os
import types

import pytest
import torch

from ttsvar_core.testing.tiny_models import write_tiny_models

from .conftest import PACKAGE

STAND_IN_GPU = torch.device("cpu", 0)  # a device other than the offload device that tensors can live on


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_models(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def load(pack, model_folder, tiny):
    """load(**optional inputs) -> the Load Infinity Model node's output for the tiny files."""
    for name, key in (("infinity", "infinity_safetensors"), ("infinity_vae", "vae_safetensors")):
        os.symlink(tiny[key], model_folder(name, ".safetensors") / tiny[key].name)
    os.symlink(tiny["t5"], model_folder("text_encoders", ".safetensors") / "tiny-t5", target_is_directory=True)
    loader = importlib.import_module(f"{PACKAGE}.nodes.loaders").TTSVARModelLoader

    def run(**optional):
        return loader.execute(tiny["infinity_safetensors"].name, tiny["vae_safetensors"].name, "tiny-t5", "fp32",
                              **optional).result[0]
    return run


def stored(managed) -> set:
    return {p.dtype for p in managed.pipeline.text_encoder.model.parameters()}


def test_text_encoder_storage_is_optional_and_reaches_t5(load):
    assert stored(load()) == {torch.float32}  # a workflow saved before the input existed
    assert torch.float8_e4m3fn in stored(load(text_encoder_storage="fp8_e4m3fn"))
    assert torch.bfloat16 in stored(load(text_encoder_storage="bf16"))  # under fp32 compute on a CPU


def test_text_encode_runs_t5_once_per_text_on_the_device_and_sends_it_back(pack, load, monkeypatch):
    managed = load(text_encoder_storage="fp8_e4m3fn")
    encoder = managed.pipeline.text_encoder
    moves, batches = [], []
    to, forward = encoder.to, encoder.model.forward
    monkeypatch.setattr(encoder, "to", lambda device: moves.append(torch.device(device)) or to(device))
    monkeypatch.setattr(encoder.model, "forward",
                        lambda **kw: batches.append((kw["input_ids"].shape[0], encoder.device)) or forward(**kw))
    monkeypatch.setattr(pack.mm, "get_torch_device", lambda: STAND_IN_GPU)
    monkeypatch.setattr(pack.mm, "is_device_cpu", lambda device: torch.device(device) != STAND_IN_GPU)
    pack.mm.freed.clear()
    prompts = importlib.import_module(f"{PACKAGE}.nodes.prompts").TTSVARTextEncode
    conditioning = prompts.execute(managed, "a red cat", "blurry").result[0]
    # the prompt, then the negative prompt: one T5 pass each, both on the compute device
    assert batches == [(1, STAND_IN_GPU), (1, STAND_IN_GPU)]
    assert moves == [STAND_IN_GPU, torch.device("cpu")]
    assert {p.device for p in encoder.model.parameters()} == {torch.device("cpu")}
    # the room asked for is what the stored (fp8) weights take, not their fp32 size
    fp8_bytes = sum(t.numel() * t.element_size() for t in encoder.model.state_dict().values())
    fp32_bytes = sum(p.numel() * 4 for p in encoder.model.parameters())
    assert pack.mm.freed == [(fp8_bytes + pack.mm.minimum_inference_memory(), STAND_IN_GPU)]
    assert fp8_bytes < 0.6 * fp32_bytes
    assert conditioning.texts == ("a red cat",) and conditioning.negative is not None
