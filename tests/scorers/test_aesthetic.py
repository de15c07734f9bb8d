"""Aesthetic Predictor v2.5: a tiny SigLIP folder plus a head file in the original layout must
score like SigLIP's pooled output, normalised, through the same MLP (as TTS-VAR feeds it:
a uint8 [B, H, W, 3] tensor through transformers' SigLIP image processor)."""

import json
import shutil
from collections import OrderedDict

import pytest
import torch
from transformers import SiglipConfig, SiglipModel, SiglipVisionModel

from scorer_testlib import pil_image_processor, random_images, randomize_, write_preprocessor_config
from ttsvar_core.scorers import ModelFileNotFoundError, WrongFileError, load_reward


class _Head(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        layers = [torch.nn.Linear(width, 1024), torch.nn.Dropout(0.5), torch.nn.Linear(1024, 128), torch.nn.Dropout(0.5),
                  torch.nn.Linear(128, 64), torch.nn.Dropout(0.5), torch.nn.Linear(64, 16), torch.nn.Dropout(0.2),
                  torch.nn.Linear(16, 1)]
        self.scoring_head = torch.nn.Sequential(*layers)


def _siglip_settings():
    return dict(image_processor_type="SiglipImageProcessor", do_resize=True, size={"height": 32, "width": 32},
                resample=3, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])


@pytest.fixture(scope="module")
def aesthetic_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("aes")
    config = SiglipConfig(
        text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
    )
    siglip = randomize_(SiglipModel(config), seed=31, scale=0.2).eval()
    folder = root / "siglip-tiny"
    siglip.save_pretrained(folder)
    write_preprocessor_config(folder, **_siglip_settings())
    head = randomize_(_Head(32), seed=32, scale=0.5).eval()
    head_path = root / "aesthetic_predictor_v2_5.pth"
    torch.save(OrderedDict(head.state_dict()), head_path)
    return head_path, folder, siglip, head


def _reference_raw(folder, siglip, head, images):
    processor = pil_image_processor("SiglipImageProcessor").from_pretrained(str(folder))
    pixels = processor(images=images, return_tensors="pt").pixel_values
    with torch.no_grad():
        embeds = siglip.vision_model(pixel_values=pixels).pooler_output
        embeds = embeds / embeds.norm(dim=-1, keepdim=True)
        return head.scoring_head(embeds).squeeze(-1)


def test_scores_match_reference(aesthetic_files):
    head_path, folder, siglip, head = aesthetic_files
    images = random_images(3, 48, 40, seed=4)
    raw = _reference_raw(folder, siglip, head, images)
    reward = load_reward("aesthetic", head_path, siglip_path=folder, max_batch=2)
    assert raw.std() > 1e-4
    torch.testing.assert_close(reward.score(images, "ignored"), 0.1 * raw, atol=1e-5, rtol=1e-5)
    raw_reward = load_reward("aes", head_path, siglip_path=folder, scale=1.0)
    torch.testing.assert_close(raw_reward.score(images, ""), raw, atol=1e-5, rtol=1e-5)


def test_vision_only_siglip_folder(tmp_path, aesthetic_files):
    head_path, folder, siglip, head = aesthetic_files
    vision_folder = tmp_path / "siglip-vision"
    tower = SiglipVisionModel(siglip.config.vision_config)
    # transformers 5 flattened SiglipVisionModel; 4 wraps the same tower as .vision_model
    getattr(tower, "vision_model", tower).load_state_dict(siglip.vision_model.state_dict())
    tower.save_pretrained(vision_folder)
    write_preprocessor_config(vision_folder, **_siglip_settings())
    images = random_images(2, 32, 32, seed=5)
    from_full = load_reward("aesthetic", head_path, siglip_path=folder).score(images, "")
    from_tower = load_reward("aesthetic", head_path, siglip_path=vision_folder).score(images, "")
    torch.testing.assert_close(from_tower, from_full)


def test_siglip_folder_is_required(aesthetic_files):
    head_path = aesthetic_files[0]
    with pytest.raises(ValueError, match="siglip_path"):
        load_reward("aesthetic", head_path)


def test_head_for_another_width(tmp_path, aesthetic_files):
    _, folder, _, _ = aesthetic_files
    path = tmp_path / "aesthetic_predictor_v2_5.pth"
    torch.save(_Head(48).state_dict(), path)
    with pytest.raises(WrongFileError, match="48-wide"):
        load_reward("aesthetic", path, siglip_path=folder)


def test_siglip_folder_given_as_head(aesthetic_files):
    _, folder, _, _ = aesthetic_files
    with pytest.raises(WrongFileError, match="aesthetic_predictor_v2_5.pth"):
        load_reward("aesthetic", folder / "model.safetensors", siglip_path=folder)


def test_missing_siglip_folder(tmp_path, aesthetic_files):
    with pytest.raises(ModelFileNotFoundError, match="siglip"):
        load_reward("aesthetic", aesthetic_files[0], siglip_path=tmp_path / "siglip-so400m-patch14-384")


def test_clip_folder_given_as_siglip(tmp_path, aesthetic_files):
    head_path, folder, _, _ = aesthetic_files
    wrong = tmp_path / "clip"
    shutil.copytree(folder, wrong)
    config = json.loads((wrong / "config.json").read_text())
    config["model_type"] = "clip"
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(WrongFileError, match="'clip' model"):
        load_reward("aesthetic", head_path, siglip_path=wrong)
