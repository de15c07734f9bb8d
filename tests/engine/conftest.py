import argparse
from dataclasses import dataclass

import pytest
import torch

from ttsvar_core.cli import add_generate_parser
from ttsvar_core.model.checkpoints import build_random
from ttsvar_core.model.config import PRESETS

SCHEDULE = [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]


@pytest.fixture(scope="session")
def tiny():
    return build_random(PRESETS["tiny"], seed=11)


@pytest.fixture(scope="session")
def prompts():
    g = torch.Generator().manual_seed(5)
    lens = [4, 6]
    return torch.randn(sum(lens), PRESETS["tiny"].text_channels, generator=g) * 0.5, lens


@dataclass
class Features:
    patch_tokens: torch.Tensor
    pooled: torch.Tensor


class PatchColourExtractor:
    """A real (if simple) structural feature: mean colour of 4x4 image patches."""

    def extract(self, images):
        x = images.float().permute(0, 3, 1, 2) / 255
        patches = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(2).transpose(1, 2)
        return Features(patches, patches.mean(1))


class BrightnessReward:
    """Mean brightness: a reward whose best candidate is known by looking at the pixels."""

    def score(self, images, prompt):
        return images.float().mean(dim=(1, 2, 3)) / 255


@pytest.fixture
def extractor():
    return PatchColourExtractor()


@pytest.fixture
def reward():
    return BrightnessReward()


def generate_args(*extra):
    """`generate`'s parsed command line with placeholder files and `extra` flags (nothing is loaded)."""
    parser = argparse.ArgumentParser()
    add_generate_parser(parser.add_subparsers())
    return parser.parse_args(["generate", "--model", "m", "--vae", "v", "--text-encoder", "t", "--prompt", "p",
                              "--out", "o", *extra])
