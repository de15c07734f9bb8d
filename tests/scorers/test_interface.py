"""The interface the search engine relies on: registry, chunking, dtype, offloading."""

import numpy as np
import pytest
import torch

from scorer_testlib import random_images, write_tiny_clip_folder
from ttsvar_core.scorers import (FeatureExtractor, Features, Reward, feature_extractor_kinds, load_feature_extractor,
                                 load_reward, register_feature_extractor, register_reward, reward_kinds)
from ttsvar_core.model.dtypes import parse_dtype as resolve_dtype
from ttsvar_core.scorers.registry import FEATURE_EXTRACTORS, REWARDS


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    write_tiny_clip_folder(folder, seed=61)
    return folder


class _Brightness(Reward):
    """A reward with a visible internal module, to check the base class plumbing."""

    name = "brightness"

    def __init__(self, path, *, device="cpu", dtype=torch.float32, max_batch=8, gain=1.0):
        self.gain = gain
        self.chunk_sizes = []
        super().__init__({"scale": torch.nn.Linear(1, 1)}, device=device, dtype=dtype, max_batch=max_batch)

    def _encode_prompt(self, prompt):
        return len(prompt)

    def _score_chunk(self, images, text):
        self.chunk_sizes.append(len(images))
        means = torch.tensor([float(np.asarray(im, dtype=np.float64).mean()) for im in images])
        return self.gain * means + text


@pytest.fixture
def brightness_kind():
    register_reward("test-brightness", _Brightness)
    yield "test-brightness"
    REWARDS._loaders.pop("test-brightness", None)


def test_builtin_kinds():
    assert reward_kinds() == ["aesthetic", "clip", "hps", "imagereward"]
    assert feature_extractor_kinds() == ["clip-vision", "dinov2", "inception"]


def test_registered_reward_loads_and_chunks(brightness_kind):
    reward = load_reward(brightness_kind, "unused", max_batch=2, gain=2.0)
    images = random_images(5, 4, 4, seed=1)
    scores = reward.score(images, "abc")
    expected = 2.0 * images.float().mean(dim=(1, 2, 3)) + 3
    torch.testing.assert_close(scores, expected)
    assert reward.chunk_sizes == [2, 2, 1]


def test_duplicate_registration_needs_replace(brightness_kind):
    with pytest.raises(ValueError, match="already registered"):
        register_reward(brightness_kind, _Brightness)
    register_reward(brightness_kind, _Brightness, replace=True)
    with pytest.raises(ValueError, match="already registered"):
        register_reward("ir", _Brightness)  # aliases are taken too


def test_unknown_kind_lists_available():
    with pytest.raises(ValueError, match="available: aesthetic, clip, hps, imagereward"):
        load_reward("pickscore", "x")
    with pytest.raises(ValueError, match="available: clip-vision, dinov2, inception"):
        load_feature_extractor("clip", "x")


def test_loader_must_return_the_right_type():
    register_feature_extractor("test-not-an-extractor", lambda path, **kw: object())
    try:
        with pytest.raises(TypeError, match="not a FeatureExtractor"):
            load_feature_extractor("test-not-an-extractor", "x")
    finally:
        FEATURE_EXTRACTORS._loaders.pop("test-not-an-extractor")


def test_chunk_size_does_not_change_scores(clip_folder):
    images = random_images(5, 40, 40, seed=2)
    one = load_reward("clip", clip_folder, max_batch=1).score(images, "a red dog")
    all_at_once = load_reward("clip", clip_folder, max_batch=8).score(images, "a red dog")
    torch.testing.assert_close(one, all_at_once, atol=1e-6, rtol=1e-6)


def test_bfloat16_is_close_to_float32(clip_folder):
    images = random_images(3, 40, 40, seed=3)
    fp32 = load_reward("clip", clip_folder).score(images, "a car")
    reward = load_reward("clip", clip_folder, dtype="bf16")
    assert next(reward._modules["clip"].parameters()).dtype == torch.bfloat16
    bf16 = reward.score(images, "a car")
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, fp32, atol=3e-2, rtol=0)


def test_offload_and_back(clip_folder):
    reward = load_reward("clip", clip_folder)
    images = random_images(2, 40, 40, seed=4)
    before = reward.score(images, "a car")
    assert reward.offload() is reward
    assert all(p.device.type == "cpu" for p in reward._modules["clip"].parameters())
    assert reward.to("cpu") is reward and not reward.is_offloaded
    torch.testing.assert_close(reward.score(images, "a car"), before)


def test_empty_batch_and_bad_prompt(clip_folder):
    reward = load_reward("clip", clip_folder)
    assert reward.score([], "a car").shape == (0,)
    with pytest.raises(TypeError, match="prompt must be a str"):
        reward.score(random_images(1, 8, 8), ["a car"])


def test_mixed_sizes_in_a_call(clip_folder):
    from PIL import Image

    reward = load_reward("clip", clip_folder)
    with pytest.raises(ValueError, match="same size"):
        reward.score([Image.new("RGB", (40, 40)), Image.new("RGB", (48, 40))], "a car")


def test_argument_validation(clip_folder):
    with pytest.raises(ValueError, match="max_batch"):
        load_reward("clip", clip_folder, max_batch=0)
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("int8")
    assert resolve_dtype("fp16") is torch.float16 and resolve_dtype(torch.bfloat16) is torch.bfloat16


def test_features_dataclass_is_frozen():
    features = Features(patch_tokens=None, pooled=torch.zeros(1, 2))
    with pytest.raises(AttributeError):
        features.pooled = torch.ones(1)
    assert issubclass(FeatureExtractor, object) and FeatureExtractor.name == "features"


def test_scorers_report_their_memory_for_the_search_estimate():
    from ttsvar_core.scorers.base import WORKING_BYTES_PER_IMAGE
    full, half = _Brightness(None, max_batch=4), _Brightness(None, max_batch=4, dtype=torch.float16)
    assert full.batch_bytes == 4 * WORKING_BYTES_PER_IMAGE and half.batch_bytes == 2 * WORKING_BYTES_PER_IMAGE
    assert full.weight_bytes == 2 * 4 and half.weight_bytes == 2 * 2  # Linear(1, 1): a weight and a bias
