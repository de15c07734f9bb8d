"""Several rewards scored as one (the paper's averaged softmax of HPS and ImageReward), on the tiny CLIP
scorers of ttsvar_core.testing."""
import pytest
import torch

from scorer_testlib import random_images
from ttsvar_core.scorers import CombinedReward, combine_rewards, load_reward
from ttsvar_core.testing.tiny_scorers import write_tiny_clip

PROMPT = "a red cat"


@pytest.fixture(scope="module")
def two_rewards(tmp_path_factory):
    root = tmp_path_factory.mktemp("combined")
    return [load_reward("clip", write_tiny_clip(root / f"clip{seed}", seed=seed)) for seed in (0, 1)]


def test_combined_rewards_are_softmax_normalised():
    hps, ir = torch.tensor([0.30, 0.31, 0.20]), torch.tensor([1.0, -2.0, 0.5])
    assert torch.allclose(combine_rewards([hps, ir]), (torch.softmax(hps, 0) + torch.softmax(ir, 0)) / 2)
    assert torch.allclose(combine_rewards([hps, ir], [3, 1]), (3 * torch.softmax(hps, 0) + torch.softmax(ir, 0)) / 4)


def test_a_combined_reward_scores_like_its_parts(two_rewards):
    images = random_images(4, 40, 40, seed=3)
    a, b = (reward.score(images, PROMPT) for reward in two_rewards)
    assert not torch.allclose(a, b)  # two different rewards
    combined = CombinedReward(two_rewards, weights=(2, 1))
    got = combined.score(images, PROMPT)
    assert got.shape == (4,) and got.dtype == torch.float32
    assert torch.allclose(got, (2 * torch.softmax(a, 0) + torch.softmax(b, 0)) / 3)
    assert torch.allclose(CombinedReward(two_rewards).score(images, PROMPT), combine_rewards([a, b]))
    assert repr(combined) == "CombinedReward(clip x 2, clip x 1)"


class Recording:
    """A part that records where it is sent."""

    def __init__(self, name):
        self.name, self._modules, self.calls = name, {"head": torch.nn.Linear(2, 1)}, []

    def to(self, device):
        self.calls.append(("to", str(device)))

    def offload(self):
        self.calls.append("offload")


def test_a_combined_reward_moves_every_part():
    parts = [Recording("a"), Recording("b")]
    combined = CombinedReward(parts)
    assert combined.to("cuda:1") is combined and combined.offload() is combined
    assert all(part.calls == [("to", "cuda:1"), "offload"] for part in parts)
    # the nodes size the device room a scorer needs by its modules: every part's
    assert list(combined._modules) == ["0.head", "1.head"]


def test_combined_reward_mistakes_are_explained(two_rewards):
    with pytest.raises(ValueError, match="at least two"):
        CombinedReward(two_rewards[:1])
    with pytest.raises(ValueError, match="one weight per reward"):
        CombinedReward(two_rewards, weights=(1, 1, 1))
    with pytest.raises(ValueError, match=">= 0"):
        CombinedReward(two_rewards, weights=(1, -1))
