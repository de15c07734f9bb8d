"""InceptionV3 pool features: random weights in torchvision's file layout must give what the
TTS-VAR reference computes (inception_v3 with transform_input, fc = Identity, torchvision
Resize((299, 299)) + ImageNet normalisation)."""

import pytest
import torch

from scorer_testlib import random_images, randomize_, stack, to_pils, torchvision_fixed_transform
from ttsvar_core.scorers import WrongFileError, load_feature_extractor

pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    from torchvision.models import inception_v3

    torch.manual_seed(51)
    model = randomize_(inception_v3(weights=None, aux_logits=True, init_weights=True), seed=52, scale=0.05).eval()
    path = tmp_path_factory.mktemp("inception") / "inception_v3_google-0cc3c7bd.pth"
    sd = model.state_dict()
    torch.save(sd, path)
    return path, sd


def _reference(sd, pils):
    from torchvision.models import inception_v3

    model = inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False)
    model.load_state_dict(sd)
    model.fc = torch.nn.Identity()
    model.eval()
    with torch.no_grad():
        return model(stack(torchvision_fixed_transform(299), pils))


def test_pool_features_match_reference(inception_file):
    path, sd = inception_file
    images = random_images(3, 120, 150, seed=9)
    expected = _reference(sd, to_pils(images))
    features = load_feature_extractor("inception", path, max_batch=2).extract(images)
    assert features.patch_tokens is None
    assert features.pooled.shape == (3, 2048) and features.pooled.dtype == torch.float32
    assert expected.std() > 1e-3
    torch.testing.assert_close(features.pooled, expected, atol=1e-4, rtol=1e-4)


def test_file_without_aux_head_and_counters(tmp_path, inception_file):
    path, sd = inception_file
    slim = {k: v for k, v in sd.items() if not k.startswith("AuxLogits.") and not k.endswith("num_batches_tracked")}
    slim_path = tmp_path / "inception_v3.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in slim.items()}, str(slim_path))
    images = random_images(2, 64, 64, seed=10)
    full = load_feature_extractor("inception", path).extract(images).pooled
    torch.testing.assert_close(load_feature_extractor("inception", slim_path).extract(images).pooled, full)


def test_fid_inception_weights_are_explained(tmp_path, inception_file):
    _, sd = inception_file
    fid = dict(sd)
    fid["fc.weight"] = torch.zeros(1008, 2048)
    fid["fc.bias"] = torch.zeros(1008)
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(fid, path)
    with pytest.raises(WrongFileError, match="pytorch-fid"):
        load_feature_extractor("inception", path)


def test_dinov2_file_given_for_inception(tmp_path):
    path = tmp_path / "dinov2.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 8), "register_tokens": torch.zeros(1, 4, 8),
                "blocks.0.attn.qkv.weight": torch.zeros(24, 8)}, path)
    with pytest.raises(WrongFileError, match="DINOv2.*inception_v3_google-0cc3c7bd.pth"):
        load_feature_extractor("inception", path)
