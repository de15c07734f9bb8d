"""ImageReward: a tiny BLIP written in ImageReward.pt's layout must score like the same model
run directly through transformers with the original preprocessing and per-image loop."""

import shutil

import pytest
import torch

from scorer_testlib import fake_full_size, random_images, randomize_, stack, to_pils, torchvision_clip_transform
from ttsvar_core.scorers import ModelFileNotFoundError, WrongFileError, load_reward
from ttsvar_core.scorers import imagereward as ir

PROMPT = "a photo of a red car on a sunny street"


def _tiny_towers():
    from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

    vision_cfg = BlipVisionConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                                  image_size=224, patch_size=16, layer_norm_eps=1e-6)
    text_cfg = BlipTextConfig(vocab_size=30524, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=256, encoder_hidden_size=128, max_position_embeddings=64,
                              layer_norm_eps=1e-12)
    vision = randomize_(BlipVisionModel(vision_cfg), seed=1).eval()
    text = randomize_(BlipTextModel(text_cfg, add_pooling_layer=False), seed=2).eval()
    torch.manual_seed(3)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(128, 1024), torch.nn.Dropout(0.2), torch.nn.Linear(1024, 128), torch.nn.Dropout(0.2),
        torch.nn.Linear(128, 64), torch.nn.Dropout(0.1), torch.nn.Linear(64, 16), torch.nn.Linear(16, 1),
    ).eval()
    randomize_(mlp, seed=4, scale=0.5)
    return vision, text, mlp


# The original ImageReward.pt names, written out independently of the package's mapping.
_VISION_TO_ORIGINAL = [
    ("embeddings.class_embedding", "cls_token"),
    ("embeddings.position_embedding", "pos_embed"),
    ("embeddings.patch_embedding.", "patch_embed.proj."),
    ("post_layernorm.", "norm."),
]
_LAYER_TO_ORIGINAL = [("layer_norm1.", "norm1."), ("layer_norm2.", "norm2."), ("self_attn.qkv.", "attn.qkv."),
                      ("self_attn.projection.", "attn.proj."), ("mlp.", "mlp.")]


def _original_vision_name(name):
    if name.startswith("encoder.layers."):
        index, rest = name[len("encoder.layers."):].split(".", 1)
        for new, old in _LAYER_TO_ORIGINAL:
            if rest.startswith(new):
                return f"blocks.{index}.{old}{rest[len(new):]}"
        raise AssertionError(name)
    for new, old in _VISION_TO_ORIGINAL:
        if name.startswith(new):
            return old + name[len(new):]
    raise AssertionError(name)


def _write_original_layout(path, vision, text, mlp):
    sd = {f"blip.visual_encoder.{_original_vision_name(k)}": v.clone() for k, v in vision.state_dict().items()}
    sd.update({f"blip.text_encoder.{k}": v.clone() for k, v in text.state_dict().items()})
    sd["blip.text_encoder.embeddings.position_ids"] = torch.arange(64).unsqueeze(0)
    sd.update({f"mlp.layers.{k}": v.clone() for k, v in mlp.state_dict().items()})
    for name, width in (("vision_proj", 128), ("text_proj", 128)):
        sd[f"blip.{name}.weight"] = torch.randn(256, width)
        sd[f"blip.{name}.bias"] = torch.randn(256)
    torch.save(sd, path)
    return sd


def _reference_scores(pixels, prompt, vision, text, mlp):
    """The original algorithm: one image at a time, [CLS] of the cross-attending text encoder."""
    tokenizer = ir.load_vocabulary()
    tokens = tokenizer(prompt, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    scores = []
    with torch.no_grad():
        for image in pixels:
            embeds = vision(pixel_values=image[None]).last_hidden_state
            out = text(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                       encoder_hidden_states=embeds, encoder_attention_mask=torch.ones(embeds.shape[:-1], dtype=torch.long))
            reward = mlp(out.last_hidden_state[:, 0, :].float())
            scores.append(((reward - 0.16717362830052426) / 1.0333394966054072).item())
    return torch.tensor(scores)


@pytest.fixture(scope="module")
def tiny_imagereward(tmp_path_factory):
    vision, text, mlp = _tiny_towers()
    path = tmp_path_factory.mktemp("ir") / "ImageReward.pt"
    _write_original_layout(path, vision, text, mlp)
    return path, (vision, text, mlp)


def test_scores_match_original_algorithm(tiny_imagereward):
    pytest.importorskip("torchvision")
    path, towers = tiny_imagereward
    images = random_images(3, 260, 301, seed=5)  # not square: resize to 259 x 224, crop offset 17.5 rounds
    expected = _reference_scores(stack(torchvision_clip_transform(224), to_pils(images)), PROMPT, *towers)
    reward = load_reward("imagereward", path, max_batch=2)
    got = reward.score(images, PROMPT)
    assert got.dtype == torch.float32 and got.device.type == "cpu" and got.shape == (3,)
    assert expected.std() > 1e-3  # the images must be told apart, or the check would be weak
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)


def test_model_matches_original_algorithm_without_torchvision(tiny_imagereward):
    """The same check on the model alone, fed the package's own preprocessing."""
    path, towers = tiny_imagereward
    images = random_images(3, 224, 240, seed=8)
    reward = load_reward("imagereward", path)
    expected = _reference_scores(reward.preprocess(to_pils(images)), PROMPT, *towers)
    torch.testing.assert_close(reward.score(images, PROMPT), expected, atol=2e-5, rtol=1e-5)


def test_pil_list_and_tensor_agree(tiny_imagereward):
    path, _ = tiny_imagereward
    images = random_images(2, 224, 224, seed=6)
    reward = load_reward("ir", path)
    torch.testing.assert_close(reward.score(to_pils(images), "a dog"), reward.score(images, "a dog"))


def test_prompt_changes_score(tiny_imagereward):
    path, _ = tiny_imagereward
    reward = load_reward("imagereward", path)
    images = random_images(2, 224, 224, seed=7)
    assert not torch.allclose(reward.score(images, "a dog"), reward.score(images, "a snowy mountain at dusk"))


def test_real_key_list_maps_onto_blip_large(tmp_path):
    """The real ImageReward.pt key set (625 tensors) must load completely and give BLIP-L."""
    path = tmp_path / "ImageReward.pt"
    modules = ir.build_modules(fake_full_size("imagereward_state_dict_keys.txt"), path)
    vision, text = modules["vision"].config, modules["text"].config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads, vision.intermediate_size,
            vision.image_size, vision.patch_size, vision.layer_norm_eps) == (1024, 24, 16, 4096, 224, 16, 1e-6)
    assert (text.vocab_size, text.hidden_size, text.num_hidden_layers, text.num_attention_heads,
            text.intermediate_size, text.encoder_hidden_size, text.max_position_embeddings) == (
        30524, 768, 12, 12, 3072, 1024, 512)
    assert sum(p.numel() for m in modules.values() for p in m.parameters()) > 440_000_000


def test_hps_file_is_named_as_wrong_file(tmp_path):
    path = tmp_path / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": fake_full_size("hps_vith14_keys.txt")}, path)
    with pytest.raises(WrongFileError) as err:
        load_reward("imagereward", path)
    message = str(err.value)
    assert "HPS" in message and "ImageReward.pt" in message and "models/ttsvar_rewards" in message


def test_truncated_checkpoint_lists_missing_tensors(tmp_path, tiny_imagereward):
    path, _ = tiny_imagereward
    sd = torch.load(path, weights_only=True)
    del sd["blip.visual_encoder.blocks.1.attn.proj.weight"]
    broken = tmp_path / "ImageReward.pt"
    torch.save(sd, broken)
    with pytest.raises(WrongFileError, match="blocks.1.attn.proj.weight"):
        load_reward("imagereward", broken)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="ImageReward.pt"):
        load_reward("imagereward", "/nonexistent/ImageReward.pt")


def test_missing_vocabulary(tmp_path, tiny_imagereward):
    path, _ = tiny_imagereward
    with pytest.raises(ModelFileNotFoundError, match="vocab.txt"):
        load_reward("imagereward", path, vocab_dir=tmp_path)


def test_wrong_vocabulary(tmp_path, tiny_imagereward):
    path, _ = tiny_imagereward
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo"]) + "\n")
    with pytest.raises(WrongFileError, match="bert-base-uncased"):
        load_reward("imagereward", path, vocab_dir=tmp_path)


def test_shipped_vocabulary_is_bert_base_uncased():
    tokenizer = ir.load_vocabulary()
    assert len(tokenizer) == 30524  # 30522 + BLIP's [DEC], [ENC]
    assert tokenizer.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [30522, 30523]
    assert tokenizer("A photo of a red car").input_ids == [101, 1037, 6302, 1997, 1037, 2417, 2482, 102]


def test_copied_vocabulary_folder_loads(tmp_path):
    shutil.copy(ir.VOCAB_DIR / "vocab.txt", tmp_path / "vocab.txt")
    assert len(ir.load_vocabulary(tmp_path)) == 30524
