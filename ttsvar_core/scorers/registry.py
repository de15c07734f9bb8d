"""Name -> loader registries for rewards and feature extractors.

A loader is any callable `loader(path, *, device, dtype, max_batch, **extra)` returning a Reward
(or FeatureExtractor). Built-in kinds are registered below; other code can add its own with
register_reward / register_feature_extractor.
"""

from typing import Callable, Dict, List

import torch

from .aesthetic import AestheticReward
from .base import FeatureExtractor, Reward
from .clip_features import ClipVisionExtractor
from .clip_score import ClipScoreReward
from .dinov2 import DinoV2Extractor
from .hps import HPSv2Reward
from .imagereward import ImageReward
from .inception import InceptionExtractor

Loader = Callable[..., object]


class Registry:
    def __init__(self, what: str, aliases: Dict[str, str]):
        self.what = what
        self._loaders: Dict[str, Loader] = {}
        self._aliases = dict(aliases)

    def register(self, kind: str, loader: Loader, *, replace: bool = False) -> None:
        key = kind.lower()
        if not replace and (key in self._loaders or key in self._aliases):
            raise ValueError(f"{self.what} kind {kind!r} is already registered; pass replace=True to override it")
        self._aliases.pop(key, None)
        self._loaders[key] = loader

    def canonical(self, kind: str) -> str:
        """The registered name of a kind or alias ('ir' -> 'imagereward')."""
        return self._aliases.get(kind.lower(), kind.lower())

    def get(self, kind: str) -> Loader:
        key = self.canonical(kind)
        if key not in self._loaders:
            raise ValueError(f"unknown {self.what} kind {kind!r}; available: {', '.join(self.kinds())}")
        return self._loaders[key]

    def kinds(self) -> List[str]:
        return sorted(self._loaders)


# Aliases are the names the TTS-VAR reference uses on its command line.
REWARDS = Registry("reward", aliases={"ir": "imagereward", "aes": "aesthetic", "hpsv2": "hps", "clipscore": "clip"})
FEATURE_EXTRACTORS = Registry("feature extractor", aliases={"dino": "dinov2", "inceptionv3": "inception"})

REWARDS.register("imagereward", ImageReward)
REWARDS.register("hps", HPSv2Reward)
REWARDS.register("clip", ClipScoreReward)
REWARDS.register("aesthetic", AestheticReward)
FEATURE_EXTRACTORS.register("dinov2", DinoV2Extractor)
FEATURE_EXTRACTORS.register("inception", InceptionExtractor)
FEATURE_EXTRACTORS.register("clip-vision", ClipVisionExtractor)


def load_reward(kind: str, path, *, device="cpu", dtype=torch.float32, max_batch: int = 8, **extra) -> Reward:
    """Load a reward model from local files. kinds: imagereward, hps, clip, aesthetic (+ registered).

    extra: imagereward: vocab_dir; hps: arch; clip: scale; aesthetic: siglip_path (required), scale.
    """
    reward = REWARDS.get(kind)(path, device=device, dtype=dtype, max_batch=max_batch, **extra)
    if not isinstance(reward, Reward):
        raise TypeError(f"the loader for reward kind {kind!r} returned {type(reward).__name__}, not a Reward")
    return reward


def load_feature_extractor(kind: str, path, *, device="cpu", dtype=torch.float32, max_batch: int = 8,
                           **extra) -> FeatureExtractor:
    """Load a feature extractor from local files. kinds: dinov2, inception (+ registered).

    extra: dinov2: image_size (default 224).
    """
    extractor = FEATURE_EXTRACTORS.get(kind)(path, device=device, dtype=dtype, max_batch=max_batch, **extra)
    if not isinstance(extractor, FeatureExtractor):
        raise TypeError(f"the loader for extractor kind {kind!r} returned {type(extractor).__name__}, not a FeatureExtractor")
    return extractor


def register_reward(kind: str, loader: Loader, *, replace: bool = False) -> None:
    REWARDS.register(kind, loader, replace=replace)


def register_feature_extractor(kind: str, loader: Loader, *, replace: bool = False) -> None:
    FEATURE_EXTRACTORS.register(kind, loader, replace=replace)


def reward_kinds() -> List[str]:
    return REWARDS.kinds()


def feature_extractor_kinds() -> List[str]:
    return FEATURE_EXTRACTORS.kinds()
