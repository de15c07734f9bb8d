"""CLIP score from a local transformers folder, checked against CLIPModel's own forward pass
with transformers' PIL image processor and the folder's tokenizer."""

import json
import shutil

import pytest
import torch
from transformers import AutoTokenizer, CLIPModel

from scorer_testlib import pil_image_processor, random_images, to_pils, write_tiny_clip_folder
from ttsvar_core.scorers import ModelFileNotFoundError, WrongFileError, load_reward

PROMPT = "a red car"


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    write_tiny_clip_folder(folder, seed=21)
    return folder


def _reference_scores(folder, pils, prompt):
    model = CLIPModel.from_pretrained(str(folder), local_files_only=True).eval()
    tokens = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)([prompt], return_tensors="pt")
    pixels = pil_image_processor("CLIPImageProcessor").from_pretrained(str(folder))(images=pils, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, pixel_values=pixels.pixel_values)
    return (out.image_embeds * out.text_embeds).sum(-1)


# 30 x 48 resizes to 32 x 51: the centre crop offset 9.5 is floored by transformers.
@pytest.mark.parametrize("height,width", [(30, 48), (64, 40)])
def test_scores_match_clip_model(clip_folder, height, width):
    images = random_images(3, height, width, seed=height)
    expected = _reference_scores(clip_folder, to_pils(images), PROMPT)
    got = load_reward("clip", clip_folder, max_batch=2).score(images, PROMPT)
    assert got.shape == (3,) and got.dtype == torch.float32
    assert expected.std() > 1e-4
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_scale_multiplies_cosine(clip_folder):
    images = random_images(2, 40, 40, seed=3)
    plain = load_reward("clip", clip_folder).score(images, PROMPT)
    scaled = load_reward("clip", clip_folder, scale=100.0).score(images, PROMPT)
    torch.testing.assert_close(scaled, 100 * plain)
    assert plain.abs().max() <= 1.0


def test_folder_without_tokenizer(tmp_path, clip_folder):
    folder = tmp_path / "clip"
    shutil.copytree(clip_folder, folder)
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(ModelFileNotFoundError, match="tokenizer"):
        load_reward("clip", folder)


def test_folder_without_preprocessor_config(tmp_path, clip_folder):
    folder = tmp_path / "clip"
    shutil.copytree(clip_folder, folder)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(ModelFileNotFoundError, match="preprocessor_config.json"):
        load_reward("clip", folder)


def test_folder_of_another_model(tmp_path, clip_folder):
    folder = tmp_path / "not-clip"
    shutil.copytree(clip_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "siglip"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WrongFileError, match="'siglip' model"):
        load_reward("clip", folder)


def test_file_instead_of_folder(clip_folder):
    with pytest.raises(WrongFileError, match="folder was expected"):
        load_reward("clip", clip_folder / "model.safetensors")


def test_missing_weights_are_reported(tmp_path, clip_folder):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "clip"
    shutil.copytree(clip_folder, folder)
    sd = load_file(str(folder / "model.safetensors"))
    del sd[next(k for k in sd if k.startswith("vision_model.encoder.layers.1."))]
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(WrongFileError, match="does not hold all weights"):
        load_reward("clip", folder)


def test_legacy_integer_sizes_in_preprocessor_config(tmp_path, clip_folder):
    """openai/clip-vit-large-patch14 writes "size": 224 and "crop_size": 224 (ints, no do_rescale)."""
    folder = tmp_path / "clip"
    shutil.copytree(clip_folder, folder)
    config = json.loads((folder / "preprocessor_config.json").read_text())
    for key in ("do_rescale", "rescale_factor", "do_convert_rgb"):
        config.pop(key)
    config.update(size=32, crop_size=32, feature_extractor_type="CLIPFeatureExtractor")
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    images = random_images(2, 30, 48, seed=12)
    expected = _reference_scores(folder, to_pils(images), PROMPT)
    torch.testing.assert_close(load_reward("clip", folder).score(images, PROMPT), expected, atol=1e-5, rtol=1e-5)


def test_unreadable_weights_name_the_file(tmp_path, clip_folder):
    folder = tmp_path / "clip"
    shutil.copytree(clip_folder, folder)
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(WrongFileError) as err:
        load_reward("clip", folder)
    assert f"{folder} (model.safetensors)" in str(err.value) and "truncated" in str(err.value)
