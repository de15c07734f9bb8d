"""Every real on-disk format loads strictly; every wrong file fails with a message that says what to do."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from ttsvar_core.model.checkpoints import CheckpointError, TensorSource, load_infinity, load_vae
from ttsvar_core.model.config import PRESETS
from ttsvar_core.model.text import TextEncoder, TextEncoderError


def params(model):
    return {k: v.float() for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k


def test_transformer_formats_agree(tiny_files):
    vae = load_vae(tiny_files["vae_pth"])
    ref = load_infinity(tiny_files["infinity_pth"], vae_cfg=vae.cfg)
    assert_same_weights(ref, load_infinity(tiny_files["infinity_safetensors"]))


def test_sharded_folders_agree(tiny_files):
    vae = load_vae(tiny_files["vae_patchify_pth"])
    a = load_infinity(tiny_files["infinity_patchify_shards"], vae_cfg=vae.cfg)
    b = load_infinity(tiny_files["infinity_patchify_shards_bin"], vae_cfg=vae.cfg)
    c = load_infinity(tiny_files["infinity_patchify_safetensors"])
    assert a.cfg.apply_spatial_patchify and a.cfg.token_dim == 4 * vae.cfg.codebook_dim
    assert_same_weights(a, b)
    assert_same_weights(a, c)


def test_vae_key_spellings_and_formats_agree(tiny_files):
    ref = load_vae(tiny_files["vae_pth"])
    assert_same_weights(ref, load_vae(tiny_files["vae_flux_pth"]))
    assert_same_weights(ref, load_vae(tiny_files["vae_safetensors"]))
    raw = torch.load(tiny_files["vae_flux_pth"], weights_only=True)["vae"]
    assert "encoder.conv_in.weight" in raw and "decoder.mid.block_1.norm1.bias" in raw


def test_dtype_policy_without_fp32_copy(tiny_files):
    model = load_infinity(tiny_files["infinity_safetensors"], dtype=torch.bfloat16)
    assert model.block_chunks[0].module[0].ffn.fc1.weight.dtype == torch.bfloat16
    for name in ("head.weight", "word_embed.weight", "shared_ada_lin.1.weight", "text_norm.weight"):
        assert model.state_dict()[name].dtype == torch.float32, name
    assert not any(p.is_meta for p in model.parameters())
    assert not any(b.is_meta for b in model.buffers())


def test_corrupted_file(tmp_path, tiny_files):
    bad = tmp_path / "model.pth"
    bad.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(CheckpointError, match="model.pth"):
        load_infinity(bad, vae_cfg=PRESETS["tiny"].vae)
    bad_st = tmp_path / "model.safetensors"
    bad_st.write_bytes(b"{not a header" * 10)
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_infinity(bad_st)


@pytest.mark.parametrize("key", ["infinity_pth", "infinity_safetensors"])
def test_truncated_file(tmp_path, tiny_files, key):
    src = tiny_files[key]
    cut = tmp_path / src.name
    data = src.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_infinity(cut, vae_cfg=PRESETS["tiny"].vae)


def test_vae_of_the_other_model(tiny_files):
    other = load_vae(tiny_files["vae_patchify_pth"])
    with pytest.raises(CheckpointError, match="VAE does not belong"):
        load_infinity(tiny_files["infinity_safetensors"], vae_cfg=other.cfg)
    with pytest.raises(CheckpointError, match="infinity_vae_d32reg"):
        load_vae(tiny_files["vae_pth"], expected=PRESETS["infinity_2b"].vae)


def test_files_in_the_wrong_slot(tiny_files):
    with pytest.raises(CheckpointError, match="is an Infinity transformer checkpoint, not an Infinity VAE"):
        load_vae(tiny_files["infinity_pth"])
    with pytest.raises(CheckpointError, match="is a VAE checkpoint, not an Infinity transformer"):
        load_infinity(tiny_files["vae_safetensors"])


def test_key_mismatch_lists_keys(tmp_path, tiny_files):
    state = load_file(str(tiny_files["infinity_safetensors"]))
    renamed = {k.replace("block_chunks.1.module.0.", "blocks.2."): v for k, v in state.items()}
    del renamed["head.bias"]
    path = tmp_path / "renamed.safetensors"
    save_file(renamed, path, metadata=TensorSource(tiny_files["infinity_safetensors"]).metadata)
    with pytest.raises(CheckpointError) as err:
        load_infinity(path)
    text = str(err.value)
    assert "missing keys" in text and "head.bias" in text and "block_chunks.1.module.0.* (19 keys)" in text
    assert "unexpected keys" in text and "blocks.2.* (21 keys)" in text


def test_missing_file_and_shard(tmp_path, tiny_files):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_infinity(tmp_path / "nope.pth")
    folder = tmp_path / "shards"
    shutil.copytree(tiny_files["infinity_patchify_shards"], folder)
    next(folder.glob("*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_infinity(folder, vae_cfg=load_vae(tiny_files["vae_patchify_pth"]).cfg)
    (folder / "model.safetensors.index.json").unlink()
    with pytest.raises(CheckpointError, match="index"):
        load_infinity(folder)


def test_text_encoder_loads_offline_and_encodes_once_per_prompt(tiny_files):
    enc = TextEncoder(tiny_files["t5"])
    feats, lens = enc.encode(["a red circle", "two blue squares above a star", "a red circle"])
    assert lens[0] == lens[2] and feats.shape == (sum(lens), enc.channels)
    assert torch.equal(feats[: lens[0]], feats[-lens[2]:])
    ids = enc.tokenizer("a red circle").input_ids
    assert ids[-1] == enc.tokenizer.eos_token_id and enc.tokenizer.unk_token_id not in ids


def test_missing_tokenizer_file(tmp_path, tiny_files):
    folder = tmp_path / "t5"
    shutil.copytree(tiny_files["t5"], folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(TextEncoderError, match="no tokenizer"):
        TextEncoder(folder)


def test_damaged_tokenizer_is_detected(tmp_path, tiny_files):
    """A tokenizer.json whose vocabulary is gone loads without error in transformers; we refuse it."""
    folder = tmp_path / "t5"
    shutil.copytree(tiny_files["t5"], folder)
    tok = json.loads((folder / "tokenizer.json").read_text())
    tok["model"]["vocab"] = tok["model"]["vocab"][:3]
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(TextEncoderError, match="unusable"):
        TextEncoder(folder)


def test_wrong_text_encoder_folder(tmp_path, tiny_files):
    with pytest.raises(FileNotFoundError, match="flan-t5-xl"):
        TextEncoder(tmp_path / "missing")
    with pytest.raises(TextEncoderError, match="config.json"):
        TextEncoder(tiny_files["infinity_pth"].parent)


def test_an_incomplete_file_is_called_incomplete_not_the_wrong_kind(tmp_path, tiny_files):
    state = load_file(str(tiny_files["infinity_safetensors"]))
    del state["word_embed.weight"]
    path = tmp_path / "cut.safetensors"
    save_file(state, path)  # without the config metadata, so the keys are read
    with pytest.raises(CheckpointError) as err:
        load_infinity(path, vae_cfg=PRESETS["tiny"].vae)
    message = str(err.value)
    assert "looks like an Infinity transformer checkpoint but has no word_embed.weight" in message
    assert "incomplete" in message and "not an Infinity transformer" not in message
    vae_state = load_file(str(tiny_files["vae_safetensors"]))
    del vae_state["decoder.conv_in.conv.weight"]
    save_file(vae_state, tmp_path / "vae.safetensors")
    with pytest.raises(CheckpointError, match="looks like a VAE checkpoint but has no decoder.conv_in"):
        load_vae(tmp_path / "vae.safetensors")


def test_a_file_holding_code_is_named_for_it(tmp_path):
    path = tmp_path / "infinity_2b_reg.pth"
    torch.save({"hook": shutil.rmtree}, path)
    with pytest.raises(CheckpointError, match="holds Python objects .code."):
        load_infinity(path, vae_cfg=PRESETS["tiny"].vae)


@pytest.mark.parametrize("damage", ["garbage", "code"])
def test_unreadable_text_encoder_weights_name_the_file(tmp_path, tiny_files, damage):
    folder = tmp_path / "t5"
    shutil.copytree(tiny_files["t5"], folder)
    (folder / "model.safetensors").unlink()
    if damage == "garbage":
        (folder / "pytorch_model.bin").write_text("<html>404 Not Found</html>")
    else:
        torch.save({"hook": shutil.rmtree}, folder / "pytorch_model.bin")
    with pytest.raises(TextEncoderError) as err:
        TextEncoder(folder)
    assert str(folder) in str(err.value) and "pytorch_model.bin" in str(err.value)
    assert ("Python objects (code)" if damage == "code" else "truncated, damaged") in str(err.value)


def test_a_lone_surrogate_in_a_prompt_is_explained(tiny_files):
    with pytest.raises(TextEncoderError, match="invalid character at position 6"):
        TextEncoder(tiny_files["t5"]).encode(["a cat \ud800 on a mat"])
