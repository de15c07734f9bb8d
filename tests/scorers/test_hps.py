"""HPS v2.1: a tiny open_clip model saved in HPS_v2.1_compressed.pt's layout must score like the
same model run directly by open_clip with the original HPS preprocessing."""

import sys

import pytest
import torch

from scorer_testlib import fake_full_size, random_images, randomize_, stack, to_pils, torchvision_hps_transform
from ttsvar_core.scorers import MissingDependencyError, WrongFileError, load_reward
from ttsvar_core.scorers import hps

TINY = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=224, layers=2, width=64, head_width=32, patch_size=32),
    text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
)
PROMPT = "a watercolor painting of a lighthouse"


@pytest.fixture(scope="module")
def tiny_hps(tmp_path_factory):
    open_clip = pytest.importorskip("open_clip")
    pytest.importorskip("torchvision")
    model = randomize_(open_clip.CLIP(**TINY), seed=11).eval()
    # The real file stores float16 weights; the reference uses the same rounded values.
    sd = {k: v.half() for k, v in model.state_dict().items()}
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    path = tmp_path_factory.mktemp("hps") / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": sd}, path)
    return path, model, open_clip


def _reference_scores(open_clip, model, pils, prompt):
    tokens = open_clip.get_tokenizer("ViT-H-14")([prompt])
    pixels = stack(torchvision_hps_transform(224), pils)
    with torch.no_grad():
        image_features, text_features, _ = model(pixels, tokens)
    return (image_features @ text_features.T)[:, 0]  # one prompt, so column 0 per image


@pytest.mark.parametrize("height,width", [(256, 320), (300, 200), (224, 224)])
def test_scores_match_open_clip(tiny_hps, height, width):
    path, model, open_clip = tiny_hps
    images = random_images(3, height, width, seed=height + width)
    expected = _reference_scores(open_clip, model, to_pils(images), PROMPT)
    got = load_reward("hps", path, arch=TINY, max_batch=2).score(images, PROMPT)
    assert got.shape == (3,) and got.dtype == torch.float32
    assert expected.std() > 1e-4
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_real_key_list_matches_vit_h_14(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    path = tmp_path / "HPS_v2.1_compressed.pt"
    model = hps.build_model(open_clip, hps.model_config(open_clip, "ViT-H-14"),
                            fake_full_size("hps_vith14_keys.txt"), path)
    assert model.visual.transformer.width == 1280 and len(model.transformer.resblocks) == 24
    assert model.attn_mask.shape == (77, 77) and torch.isinf(model.attn_mask[0, 1])


def test_imagereward_file_is_rejected(tmp_path):
    pytest.importorskip("open_clip")
    path = tmp_path / "ImageReward.pt"
    torch.save(fake_full_size("imagereward_state_dict_keys.txt"), path)
    with pytest.raises(WrongFileError) as err:
        load_reward("hps", path)
    assert "ImageReward" in str(err.value) and "HPS_v2.1_compressed.pt" in str(err.value)


def test_missing_open_clip_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # makes `import open_clip` fail
    path = tmp_path / "HPS_v2.1_compressed.pt"
    path.write_bytes(b"unused")
    with pytest.raises(MissingDependencyError, match="pip install open_clip_torch"):
        load_reward("hps", path)


def test_uncompressed_checkpoint_is_explained(tmp_path):
    pytest.importorskip("open_clip")
    path = tmp_path / "HPS_v2.1.pt"
    torch.save({"state_dict": {"logit_scale": torch.zeros(())}, "optimizer": {"lr": torch.ones(1)}}, path)
    with pytest.raises(WrongFileError, match="compressed"):
        load_reward("hps", path)
