"""DINOv2 with registers: one tiny random model written in the three on-disk layouts (official
torch.hub .pth, transformers folder, timm file) must give the same patch tokens, equal to
transformers' Dinov2WithRegistersModel and to timm's ViT run on the same weights."""

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

from scorer_testlib import fake_full_size, random_images, randomize_, stack, to_pils, torchvision_fixed_transform
from ttsvar_core.scorers import WrongFileError, load_feature_extractor
from ttsvar_core.scorers import dinov2

DIM, DEPTH, HEADS, REGISTERS = 128, 2, 2, 4


def _official_from_hf(hf_sd):
    """transformers names -> official torch.hub names, written out independently of the package."""
    out = {
        "cls_token": hf_sd["embeddings.cls_token"],
        "mask_token": hf_sd["embeddings.mask_token"],
        "pos_embed": hf_sd["embeddings.position_embeddings"],
        "register_tokens": hf_sd["embeddings.register_tokens"],
        "patch_embed.proj.weight": hf_sd["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": hf_sd["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": hf_sd["layernorm.weight"],
        "norm.bias": hf_sd["layernorm.bias"],
    }
    for i in range(DEPTH):
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        for leaf in ("weight", "bias"):
            for name in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                out[f"{dst}{name}.{leaf}"] = hf_sd[f"{src}{name}.{leaf}"]
            out[f"{dst}attn.qkv.{leaf}"] = torch.cat([_hf(hf_sd, src, f"{p}_proj", f"attention.{n}", leaf)
                                                       for p, n in zip("qkv", ("query", "key", "value"))])
            out[f"{dst}attn.proj.{leaf}"] = _hf(hf_sd, src, "o_proj", "output.dense", leaf)
        out[f"{dst}ls1.gamma"] = hf_sd[f"{src}layer_scale1.lambda1"]
        out[f"{dst}ls2.gamma"] = hf_sd[f"{src}layer_scale2.lambda1"]
    return {k: v.clone().contiguous() for k, v in out.items()}


def _hf(hf_sd, prefix, v5_name, v4_name, leaf):
    """transformers 5 names the attention projections q_proj/k_proj/v_proj/o_proj; 4 nests them."""
    v5 = f"{prefix}attention.{v5_name}.{leaf}"
    return hf_sd[v5] if v5 in hf_sd else hf_sd[f"{prefix}attention.{v4_name}.{leaf}"]


def _timm_from_official(sd):
    """What timm's DINOv2 checkpoint filter does: class position folded into cls_token."""
    out = {k: v.clone() for k, v in sd.items() if k not in ("mask_token", "register_tokens", "pos_embed", "cls_token")}
    out["cls_token"] = sd["cls_token"] + sd["pos_embed"][:, :1]
    out["reg_token"] = sd["register_tokens"].clone()
    out["pos_embed"] = sd["pos_embed"][:, 1:].clone()
    return out


@pytest.fixture(scope="module")
def dino_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("dino")
    config = Dinov2WithRegistersConfig(hidden_size=DIM, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
                                       mlp_ratio=4, image_size=518, patch_size=14, num_register_tokens=REGISTERS,
                                       layerscale_value=0.5)
    hf = randomize_(Dinov2WithRegistersModel(config), seed=41, scale=0.2).eval()
    hf.save_pretrained(root / "dinov2-with-registers-tiny")
    official = _official_from_hf(hf.state_dict())
    torch.save(official, root / "dinov2_vitl14_reg4_pretrain.pth")
    timm_sd = _timm_from_official(official)
    save_file(timm_sd, str(root / "vit_large_patch14_reg4_dinov2.safetensors"))
    return root, hf, official, timm_sd


def _hf_reference(hf, pils):
    pixels = stack(torchvision_fixed_transform(224), pils)
    with torch.no_grad():
        tokens = hf(pixel_values=pixels).last_hidden_state
    return tokens[:, 1 + REGISTERS:], tokens[:, 0]


def test_three_layouts_agree_with_transformers(dino_files):
    pytest.importorskip("torchvision")
    root, hf, _, _ = dino_files
    images = random_images(3, 200, 260, seed=6)
    patches, cls = _hf_reference(hf, to_pils(images))
    paths = [root / "dinov2_vitl14_reg4_pretrain.pth", root / "dinov2-with-registers-tiny",
             root / "dinov2-with-registers-tiny" / "model.safetensors", root / "vit_large_patch14_reg4_dinov2.safetensors"]
    results = [load_feature_extractor("dinov2", p, max_batch=2).extract(images) for p in paths]
    for features in results:
        assert features.patch_tokens.shape == (3, 256, DIM) and features.pooled.shape == (3, DIM)
        assert features.patch_tokens.dtype == torch.float32
        torch.testing.assert_close(features.patch_tokens, patches, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(features.pooled, cls, atol=1e-4, rtol=1e-4)
    for features in results[1:]:  # the layouts hold the same numbers, so the outputs agree closely
        torch.testing.assert_close(features.patch_tokens, results[0].patch_tokens, atol=1e-5, rtol=1e-5)


def test_three_layouts_agree_on_the_model(dino_files):
    """The same check on the model alone, fed the package's own preprocessing (no torchvision)."""
    root, hf, _, _ = dino_files
    images = random_images(2, 224, 224, seed=9)
    paths = [root / "dinov2_vitl14_reg4_pretrain.pth", root / "dinov2-with-registers-tiny",
             root / "vit_large_patch14_reg4_dinov2.safetensors"]
    extractors = [load_feature_extractor("dinov2", p) for p in paths]
    with torch.no_grad():
        expected = hf(pixel_values=extractors[0].preprocess(to_pils(images))).last_hidden_state[:, 1 + REGISTERS:]
    for extractor in extractors:
        torch.testing.assert_close(extractor.extract(images).patch_tokens, expected, atol=1e-4, rtol=1e-4)


def test_timm_model_on_timm_file_agrees(dino_files):
    timm = pytest.importorskip("timm")
    root, _, _, timm_sd = dino_files
    model = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, embed_dim=DIM, depth=DEPTH,
                              num_heads=HEADS, img_size=518, dynamic_img_size=True, num_classes=0)
    model.load_state_dict(timm_sd)
    model.eval()
    extractor = load_feature_extractor("dinov2", root / "vit_large_patch14_reg4_dinov2.safetensors")
    images = random_images(2, 224, 224, seed=7)
    with torch.no_grad():
        expected = model.forward_features(extractor.preprocess(to_pils(images)))[:, 1 + REGISTERS:]
    torch.testing.assert_close(extractor.extract(images).patch_tokens, expected, atol=1e-4, rtol=1e-4)


def test_timm_file_saved_at_224(tmp_path):
    """timm files saved at img_size=224 hold a 16 x 16 position grid already."""
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, embed_dim=DIM, depth=DEPTH,
                              num_heads=HEADS, img_size=224, num_classes=0)
    randomize_(model, seed=42, scale=0.2).eval()
    path = tmp_path / "dinov2_timm.pth"
    torch.save(model.state_dict(), path)
    extractor = load_feature_extractor("dinov2", path)
    images = random_images(2, 224, 224, seed=8)
    with torch.no_grad():
        expected = model.forward_features(extractor.preprocess(to_pils(images)))
    features = extractor.extract(images)
    torch.testing.assert_close(features.patch_tokens, expected[:, 1 + REGISTERS:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(features.pooled, expected[:, 0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("keys,pos_tokens", [("dinov2_hub_keys.txt", 1370), ("dinov2_timm224_keys.txt", 257),
                                             ("dinov2_hf_v5_keys.txt", 1370)])
def test_real_key_lists_give_vit_l14_reg4(tmp_path, keys, pos_tokens):
    model = dinov2.build_model(fake_full_size(keys), tmp_path / keys)
    assert model.shape == dinov2.VitShape(dim=1024, depth=24, heads=16, patch=14, registers=4,
                                          pos_tokens=pos_tokens, mlp_hidden=4096)


def test_image_size_option(dino_files):
    root = dino_files[0]
    extractor = load_feature_extractor("dinov2", root / "dinov2_vitl14_reg4_pretrain.pth", image_size=112)
    assert extractor.extract(random_images(1, 64, 64)).patch_tokens.shape == (1, 64, DIM)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        load_feature_extractor("dinov2", root / "dinov2_vitl14_reg4_pretrain.pth", image_size=100)


def test_dinov2_without_registers_is_explained(tmp_path, dino_files):
    official = dict(dino_files[2])
    del official["register_tokens"]
    path = tmp_path / "dinov2_vitl14_pretrain.pth"
    torch.save(official, path)
    with pytest.raises(WrongFileError, match="no register tokens"):
        load_feature_extractor("dinov2", path)


def test_folder_of_another_model(tmp_path, dino_files):
    folder = tmp_path / "dinov2-base"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "dinov2"}))
    with pytest.raises(WrongFileError, match="'dinov2' model"):
        load_feature_extractor("dinov2", folder)


def test_aesthetic_head_is_named_as_wrong_file(tmp_path):
    path = tmp_path / "aesthetic_predictor_v2_5.pth"
    torch.save({"scoring_head.0.weight": torch.zeros(1024, 1152), "scoring_head.0.bias": torch.zeros(1024)}, path)
    with pytest.raises(WrongFileError) as err:
        load_feature_extractor("dinov2", path)
    assert "Aesthetic Predictor" in str(err.value) and "dinov2_vitl14_reg4_pretrain.pth" in str(err.value)
    assert "models/ttsvar_features" in str(err.value)
