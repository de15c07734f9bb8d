"""Reward models and feature extractors for TTS-VAR, loaded offline from files users already have.

    reward = load_reward("imagereward", "models/ttsvar_rewards/ImageReward.pt", device="cuda", dtype=torch.float16)
    scores = reward.score(images_uint8_bhw3, "a red car")      # float32 [B] on CPU
    dino = load_feature_extractor("dinov2", "models/ttsvar_features/dinov2_vitl14_reg4_pretrain.pth")
    feats = dino.extract(images_uint8_bhw3)                     # Features(patch_tokens, pooled)
    both = CombinedReward([reward, load_reward("hps", "models/ttsvar_rewards/HPS_v2.1_compressed.pt")])

See docs/scorers.md for the files each kind needs.
"""

from .base import FeatureExtractor, Features, Reward
from .combined import CombinedReward, combine_rewards
from .errors import ImageBatchError, MissingDependencyError, ModelFileNotFoundError, ScorerError, WrongFileError
from .registry import (feature_extractor_kinds, load_feature_extractor, load_reward, register_feature_extractor,
                       register_reward, reward_kinds)

__all__ = [
    "Features", "FeatureExtractor", "Reward", "CombinedReward", "combine_rewards",
    "load_reward", "load_feature_extractor", "register_reward", "register_feature_extractor",
    "reward_kinds", "feature_extractor_kinds",
    "ScorerError", "WrongFileError", "ModelFileNotFoundError", "MissingDependencyError", "ImageBatchError",
]
