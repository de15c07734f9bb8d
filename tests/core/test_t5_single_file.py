"""flan-t5 as one encoder-only .safetensors file (`python -m ttsvar_core convert-t5`), loaded with a tokenizer
folder: the same text features as the model folder, strict loading, errors that name the file and the fix."""
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ttsvar_core.__main__ import main
from ttsvar_core.model.checkpoints import CONFIG_METADATA_KEY
from ttsvar_core.model.pipeline import InfinityPipeline
from ttsvar_core.model.text import TextEncoder, TextEncoderError, convert_t5_folder, load_tokenizer
from ttsvar_core.testing.tiny_models import write_t5_for_tokenizer

PROMPTS = ["a red circle", "two blue squares above a star", "a red circle"]
REPO = Path(__file__).resolve().parents[2]


def convert(folder, out: Path, dtype: str) -> Path:
    assert main(["convert-t5", str(folder), str(out), "--dtype", dtype]) == 0
    return out


@pytest.fixture(scope="module")
def fp32_file(tiny_files, tmp_path_factory):
    return convert(tiny_files["t5"], tmp_path_factory.mktemp("t5") / "tiny-t5-fp32.safetensors", "fp32")


@pytest.fixture(scope="module")
def bf16_file(tiny_files, tmp_path_factory):
    return convert(tiny_files["t5"], tmp_path_factory.mktemp("t5") / "tiny-t5-bf16.safetensors", "bf16")


def test_file_holds_the_encoder_and_describes_itself(tiny_files, bf16_file):
    state = load_file(str(bf16_file))
    assert "shared.weight" in state and "encoder.embed_tokens.weight" not in state  # the tied copy is not stored
    assert all(k == "shared.weight" or k.startswith("encoder.") for k in state)
    assert {t.dtype for t in state.values()} == {torch.bfloat16}
    with safe_open(str(bf16_file), framework="pt") as f:
        config = json.loads(f.metadata()[CONFIG_METADATA_KEY])["t5"]
    assert config == json.loads((tiny_files["t5"] / "config.json").read_text())


def test_fp32_file_gives_the_folders_features_exactly(tiny_files, fp32_file):
    want, want_lens = TextEncoder(tiny_files["t5"]).encode(PROMPTS)
    got, lens = TextEncoder(fp32_file, tokenizer=tiny_files["t5"]).encode(PROMPTS)
    assert lens == want_lens and torch.equal(got, want)


def test_bf16_file_matches_the_folder_within_bf16_precision(tiny_files, bf16_file):
    want, _ = TextEncoder(tiny_files["t5"]).encode(PROMPTS)
    got, _ = TextEncoder(bf16_file, tokenizer=tiny_files["t5"]).encode(PROMPTS)
    # bf16 keeps 8 significant bits: weights rounded to it move the features by about 2^-8 of their norm
    assert (got - want).norm() / want.norm() < 2 ** -6
    # the folder loaded in bf16 rounds its weights exactly as the conversion did
    folder_bf16, _ = TextEncoder(tiny_files["t5"], dtype=torch.bfloat16).encode(PROMPTS)
    file_bf16, _ = TextEncoder(bf16_file, tokenizer=tiny_files["t5"], dtype=torch.bfloat16).encode(PROMPTS)
    assert torch.equal(file_bf16, folder_bf16)


def test_pipeline_loads_the_single_file_with_a_tokenizer_folder(tiny_files, fp32_file):
    args = (tiny_files["infinity_safetensors"], tiny_files["vae_safetensors"])
    from_folder = InfinityPipeline.load(*args, tiny_files["t5"]).encode(["a red circle"], "a star")
    from_file = InfinityPipeline.load(*args, fp32_file, text_tokenizer=tiny_files["t5"]).encode(["a red circle"],
                                                                                                "a star")
    assert torch.equal(from_file.features, from_folder.features)
    assert torch.equal(from_file.negative[0], from_folder.negative[0])


def test_single_file_needs_a_tokenizer_folder(tiny_files, fp32_file, tmp_path):
    with pytest.raises(TextEncoderError, match="holds no tokenizer.*t5_tokenizer"):
        TextEncoder(fp32_file)
    with pytest.raises(TextEncoderError, match="no tokenizer"):
        TextEncoder(fp32_file, tokenizer=tmp_path)
    with pytest.raises(FileNotFoundError, match="tokenizer folder not found"):
        TextEncoder(fp32_file, tokenizer=tmp_path / "missing")


def test_a_tokenizer_folder_replaces_the_folders_own(tiny_files, tmp_path):
    weights_only = tmp_path / "t5"
    weights_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        os.symlink(tiny_files["t5"] / name, weights_only / name)
    want, _ = TextEncoder(tiny_files["t5"]).encode(PROMPTS)
    got, _ = TextEncoder(weights_only, tokenizer=tiny_files["t5"]).encode(PROMPTS)
    assert torch.equal(got, want)


def test_loading_is_strict(fp32_file, tiny_files, tmp_path):
    state = load_file(str(fp32_file))
    with safe_open(str(fp32_file), framework="pt") as f:
        metadata = f.metadata()
    tok = tiny_files["t5"]

    short = dict(state)
    del short["encoder.final_layer_norm.weight"]
    save_file(short, tmp_path / "short.safetensors", metadata=metadata)
    with pytest.raises(ValueError, match=r"(?s)short\.safetensors does not match.*1 missing keys: "
                                         r"encoder\.final_layer_norm\.weight.*convert-t5"):
        TextEncoder(tmp_path / "short.safetensors", tokenizer=tok)

    extra = dict(state, **{"decoder.final_layer_norm.weight": state["encoder.final_layer_norm.weight"].clone()})
    save_file(extra, tmp_path / "extra.safetensors", metadata=metadata)
    with pytest.raises(ValueError, match=r"(?s)1 unexpected keys: decoder\.final_layer_norm\.weight"):
        TextEncoder(tmp_path / "extra.safetensors", tokenizer=tok)

    wide = dict(state, **{"encoder.final_layer_norm.weight": torch.ones(7)})
    save_file(wide, tmp_path / "wide.safetensors", metadata=metadata)
    with pytest.raises(ValueError, match=r"shape mismatches: encoder\.final_layer_norm\.weight: file \[7\]"):
        TextEncoder(tmp_path / "wide.safetensors", tokenizer=tok)


def test_files_that_are_not_a_converted_encoder_are_explained(fp32_file, tiny_files, tmp_path):
    tok = tiny_files["t5"]
    save_file(load_file(str(fp32_file)), tmp_path / "bare.safetensors")  # e.g. another tool's T5 file
    with pytest.raises(TextEncoderError, match=r"bare\.safetensors has no T5 config.*a T5 text encoder "
                                               r"\(2 encoder blocks, width 256.*convert-t5"):
        TextEncoder(tmp_path / "bare.safetensors", tokenizer=tok)

    torch.save(load_file(str(fp32_file)), tmp_path / "t5.pth")
    with pytest.raises(TextEncoderError, match=r"t5\.pth is not a \.safetensors file.*never unpickled"):
        TextEncoder(tmp_path / "t5.pth", tokenizer=tok)

    with pytest.raises(TextEncoderError, match=r"tiny_infinity\.safetensors has no T5 config.*Infinity transformer"):
        TextEncoder(tiny_files["infinity_safetensors"], tokenizer=tok)

    with pytest.raises(FileNotFoundError, match="convert-t5"):
        TextEncoder(tmp_path / "missing.safetensors", tokenizer=tok)


def test_convert_explains_a_wrong_folder(tiny_files, tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"convert-t5: .*tiny_infinity_patchify_shards has no config\.json"):
        main(["convert-t5", str(tiny_files["infinity_patchify_shards"]), str(tmp_path / "out.safetensors")])
    with pytest.raises(SystemExit, match="must be a .safetensors file"):
        main(["convert-t5", str(tiny_files["t5"]), str(tmp_path / "out.pth")])


def comfyui_t5_tokenizer() -> Path | None:
    comfy = Path(os.environ.get("TTSVAR_COMFY_DIR", REPO / ".cache" / "ComfyUI"))
    folder = comfy / "comfy" / "text_encoders" / "t5_tokenizer"
    return folder if folder.is_dir() else None


@pytest.mark.skipif(comfyui_t5_tokenizer() is None, reason="ComfyUI is not set up (scripts/setup_env.sh)")
def test_comfyuis_t5_tokenizer_is_flan_t5s():
    """ComfyUI's T5 v1.1 tokenizer gives flan-t5's ids. Flan-T5 was fine-tuned from T5 v1.1 and keeps its 32k
    sentencepiece vocabulary (32100 tokens with the 100 sentinels, 32128 embedding rows); the ids below were
    printed by google/flan-t5-small's own tokenizer and by T5's documentation example."""
    tok = load_tokenizer(comfyui_t5_tokenizer(), vocab_size=32128)
    assert len(tok) == 32100
    assert tok("This is a test string.").input_ids == [100, 19, 3, 9, 794, 6108, 5, 1]
    assert tok("And finally the third line.").input_ids == [275, 2031, 8, 1025, 689, 5, 1]
    assert tok("translate English to German: How old are you?").input_ids == [
        13959, 1566, 12, 2968, 10, 571, 625, 33, 25, 58, 1]


@pytest.mark.skipif(comfyui_t5_tokenizer() is None, reason="ComfyUI is not set up (scripts/setup_env.sh)")
def test_a_single_file_reads_with_comfyuis_t5_tokenizer(tmp_path):
    """What the Load Infinity Model node does with a single file: read it with ComfyUI's t5_tokenizer. A tiny T5
    made for that tokenizer (flan-t5's 32128 embedding rows), converted, gives its folder's features."""
    folder = write_t5_for_tokenizer(tmp_path / "t5", comfyui_t5_tokenizer(), d_model=64)
    assert json.loads((folder / "config.json").read_text())["vocab_size"] == 32128
    single = convert_t5_folder(folder, tmp_path / "t5.safetensors", "fp32")
    want, want_lens = TextEncoder(folder).encode(PROMPTS)
    got, lens = TextEncoder(single, tokenizer=comfyui_t5_tokenizer()).encode(PROMPTS)
    assert lens == want_lens and torch.equal(got, want)
