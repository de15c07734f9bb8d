"""The Load Infinity Model node's text encoder forms and memory options in a real ComfyUI, on tiny files: a
convert-t5 single file is listed and read with ComfyUI's own T5 tokenizer, giving the text features of the
folder it was converted from; fp8 weight storage with block streaming runs a search on the CPU; a storage
that saves nothing is refused with the fix."""
import io
import itertools
import shutil

import pytest
import torch
from PIL import Image

from ttsvar_core.model.config import PRESETS
from ttsvar_core.model.text import convert_t5_folder
from ttsvar_core.testing.tiny_models import write_t5_for_tokenizer

_seeds = itertools.count(7000)
T5_FOLDER = "tiny-t5-comfy-tokenizer"
T5_FILES = {"fp32": "tiny-t5-comfy-tokenizer-fp32.safetensors", "bf16": "tiny-t5-comfy-tokenizer-bf16.safetensors"}
PROMPTS = ("a red circle above a blue square", "two stars")


@pytest.fixture(scope="module")
def comfy_t5(comfy_server, tiny_models):
    """A tiny T5 folder that reads with ComfyUI's T5 tokenizer (32k tokens: its embedding has flan-t5's
    32128 rows, tiny in width), and its convert-t5 files in fp32 and bf16, in the server's text_encoders.
    Removed afterwards: other tests list that folder exactly."""
    base = comfy_server.models_dir / "text_encoders"
    tokenizer = comfy_server.comfy / "comfy" / "text_encoders" / "t5_tokenizer"
    folder = write_t5_for_tokenizer(base / T5_FOLDER, tokenizer, PRESETS["tiny"].text_channels)
    for dtype, name in T5_FILES.items():
        convert_t5_folder(folder, base / name, dtype)
    yield folder
    shutil.rmtree(folder)
    for name in T5_FILES.values():
        (base / name).unlink()


def loader(text_encoder="tiny-t5", **options):
    return {"class_type": "TTSVAR_ModelLoader", "inputs": {
        "model": "tiny_infinity.safetensors", "vae": "tiny_vae.safetensors", "text_encoder": text_encoder,
        "dtype": "fp32", **options}}


def features_graph(text_encoders: dict) -> dict:
    """One loader, Text Encode and feature display per text encoder (node ids m_<key>, t_<key>, x_<key>)."""
    graph = {}
    for key, name in text_encoders.items():
        graph[f"m_{key}"] = loader(name)
        for i, prompt in enumerate(PROMPTS):
            graph[f"t_{key}_{i}"] = {"class_type": "TTSVAR_TextEncode",
                                     "inputs": {"model": [f"m_{key}", 0], "prompt": prompt, "negative_prompt": ""}}
            graph[f"x_{key}_{i}"] = {"class_type": "TTSVARTest_TextFeatures",
                                     "inputs": {"conditioning": [f"t_{key}_{i}", 0]}}
    return graph


def shown_features(run, key) -> list[tuple[torch.Tensor, list[int]]]:
    shown = [run.outputs[f"x_{key}_{i}"]["ttsvar_text"][0] for i in range(len(PROMPTS))]
    return [(torch.tensor(s["features"]), s["lens"]) for s in shown]


def test_single_file_text_encoder_is_listed_and_gives_the_folders_features(comfy, comfy_t5):
    listed = comfy.object_info("TTSVAR_ModelLoader")["input"]["required"]["text_encoder"][0]
    assert {T5_FOLDER, *T5_FILES.values()} <= set(listed)
    # the folder's own files are inside its one entry; the shipped model's files belong to other loaders
    assert not [e for e in listed if e.startswith(T5_FOLDER + "/") or e.startswith("shapesworld/shapesworld_")]

    run = comfy.run_prompt(features_graph({"folder": T5_FOLDER, **T5_FILES}))
    assert run.succeeded, run.error
    folder = shown_features(run, "folder")
    for (want, want_lens), (fp32, lens) in zip(folder, shown_features(run, "fp32")):
        assert lens == want_lens and torch.equal(fp32, want)  # an fp32 file holds the folder's weights exactly
    for (want, _), (bf16, _) in zip(folder, shown_features(run, "bf16")):
        # bf16 keeps 8 significant bits: weights rounded to it move the features by about 2^-8 of their norm
        assert 0 < (bf16 - want).norm() / want.norm() < 2 ** -6


def search_graph(seed, **options):
    """A 2-candidate search to the last of 5 tiny scales, decoded and saved (node "o")."""
    return {
        "m": loader(**options),
        "t": {"class_type": "TTSVAR_TextEncode", "inputs": {"model": ["m", 0], "prompt": "a red cat",
                                                            "negative_prompt": ""}},
        "a": {"class_type": "TTSVAR_Start", "inputs": {
            "model": ["m", 0], "conditioning": ["t", 0], "aspect_ratio": "1:1", "pixel_budget": "1M", "seed": seed,
            "cfg": 3.0, "tau": 0.5, "top_k": 900, "top_p": 0.97, "candidates": 2,
            "custom_scales": "1x1,2x2,3x3,4x4,4x4"}},
        "s": {"class_type": "TTSVAR_Step", "inputs": {"candidates": ["a", 0], "to_scale": -1}},
        "d": {"class_type": "TTSVAR_Decode", "inputs": {"candidates": ["s", 0]}},
        "o": {"class_type": "SaveImage", "inputs": {"images": ["d", 0], "filename_prefix": "loader_options"}},
    }


def saved_images(comfy, run) -> list[bytes]:
    return [Image.open(io.BytesIO(comfy.view(i["filename"], subfolder=i["subfolder"], folder_type=i["type"])))
            .tobytes() for i in run.outputs["o"]["images"]]


def test_memory_options_are_offered_with_their_explanations(comfy):
    optional = comfy.object_info("TTSVAR_ModelLoader")["input"]["optional"]
    assert optional["weight_storage"][0] == ["auto", "bf16", "fp16", "fp8_e4m3fn"]
    assert optional["weight_storage"][1]["default"] == "auto"
    assert optional["offload"][0] == ["none", "stream blocks from CPU memory"]
    assert optional["offload"][1]["default"] == "none"
    assert optional["text_encoder_storage"][0] == ["auto", "bf16", "fp16", "fp8_e4m3fn"]
    assert optional["text_encoder_storage"][1]["default"] == "auto"


def test_fp8_text_encoder_storage_runs_a_search_on_the_cpu(comfy, tiny_models):
    """T5 kept in fp8 encodes the prompt (once, in the Text Encode node) and the search draws its images."""
    run = comfy.run_prompt(search_graph(next(_seeds), text_encoder_storage="fp8_e4m3fn"))
    assert run.succeeded, run.error
    assert len(saved_images(comfy, run)) == 2


def test_fp8_storage_with_streamed_blocks_runs_a_search_on_the_cpu(comfy, tiny_models):
    """fp8 storage and block streaming together draw images; streaming moves weights and never changes
    them, so the images are those of fp8 storage alone."""
    seed = next(_seeds)
    streamed = comfy.run_prompt(search_graph(seed, weight_storage="fp8_e4m3fn",
                                             offload="stream blocks from CPU memory"))
    assert streamed.succeeded, streamed.error
    images = saved_images(comfy, streamed)
    assert len(images) == 2
    alone = comfy.run_prompt(search_graph(seed, weight_storage="fp8_e4m3fn", offload="none"))
    assert alone.succeeded, alone.error
    assert saved_images(comfy, alone) == images


def test_a_storage_that_saves_nothing_is_refused_with_the_fix(comfy, tiny_models):
    run = comfy.run_prompt(search_graph(next(_seeds), dtype="bf16", weight_storage="fp16"))
    assert not run.succeeded
    assert run.error["node_type"] == "TTSVAR_ModelLoader"
    message = run.error["exception_message"]
    assert "weight storage fp16 is no smaller than the compute dtype bfloat16" in message
    assert "(auto), choose fp8 storage, or compute in fp32" in message
