"""Several rewards scored as one, as the TTS-VAR paper's appendix combines HPS and ImageReward.

    reward = CombinedReward([load_reward("imagereward", ir_file), load_reward("hps", hps_file)])
    scores = reward.score(images, prompt)    # per image: the weighted mean of each reward's softmax

Raw rewards live on different scales (ImageReward is standardised around 0, HPS is a cosine near 0.3), so
each is softmax-normalised over the images scored together before averaging. The search scores one prompt's
live candidates per call, so every softmax runs over one prompt's candidates at one scale.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .base import Reward
from .images import ImagesLike


def reward_weights(count: int, weights: Sequence[float] | None = None) -> list[float]:
    """One weight per reward (default: equal), checked."""
    weights = [1.0] * count if weights is None else [float(w) for w in weights]
    if len(weights) != count:
        raise ValueError(f"{len(weights)} weights for {count} rewards: give one weight per reward")
    if min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"reward weights must be >= 0 and not all 0, got {weights}")
    return weights


def combine_rewards(scores: Sequence[torch.Tensor], weights: Sequence[float] | None = None) -> torch.Tensor:
    """Several rewards of the same images: each softmax-normalised over the images, then a weighted mean."""
    weights = reward_weights(len(scores), weights)
    return sum(w * torch.softmax(s.float(), dim=0) for w, s in zip(weights, scores)) / sum(weights)


class CombinedReward:
    """A Reward-like object over several rewards: `score` as combine_rewards, and `to` / `offload` move every
    part, so the engine and the nodes' memory handling treat it like one reward."""

    name = "combined"

    def __init__(self, rewards: Sequence[Reward], weights: Sequence[float] | None = None):
        if len(rewards) < 2:
            raise ValueError("a combined reward needs at least two rewards")
        self.rewards = list(rewards)
        self.weights = reward_weights(len(self.rewards), weights)

    def score(self, images: ImagesLike, prompt: str) -> torch.Tensor:
        return combine_rewards([reward.score(images, prompt) for reward in self.rewards], self.weights)

    def to(self, device) -> "CombinedReward":
        for reward in self.rewards:
            reward.to(device)
        return self

    def offload(self) -> "CombinedReward":
        for reward in self.rewards:
            reward.offload()
        return self

    @property
    def _modules(self) -> dict:
        """Every part's torch modules (what must fit on a device; the nodes size their room by them)."""
        return {f"{i}.{name}": module for i, reward in enumerate(self.rewards)
                for name, module in reward._modules.items()}

    def __repr__(self) -> str:
        parts = ", ".join(f"{reward.name} x {weight:g}" for reward, weight in zip(self.rewards, self.weights))
        return f"CombinedReward({parts})"
