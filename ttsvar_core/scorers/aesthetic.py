"""Aesthetic Predictor v2.5: a small MLP head on SigLIP so400m image embeddings.

Re-implemented from its description (the PyPI package is AGPL-3.0 and not used): the SigLIP
vision tower's pooled output is L2-normalised and fed to a 5-layer MLP (dropout between
layers, no activations) that predicts a 1-10 aesthetic rating. The head weights come from
aesthetic_predictor_v2_5.pth, the SigLIP tower from a local google/siglip-so400m-patch14-384
folder. TTS-VAR divides the rating by 10 before using it as a reward, so `scale` defaults to
0.1; pass scale=1.0 for the raw rating.
"""

from pathlib import Path
from typing import List, Optional

import torch
from PIL import Image

from .base import Reward
from .checkpoints import check_keys, empty_module, flat_tensors, load_into, read_tensors, require_file, wrong_file
from .errors import REWARDS_DIR
from .hf_folders import ImageSpec, load_pretrained, model_folder

EXPECTED_HEAD = "aesthetic_predictor_v2_5.pth (the Aesthetic Predictor v2.5 head)"
EXPECTED_SIGLIP = "a SigLIP model folder (google/siglip-so400m-patch14-384: config.json, model.safetensors, preprocessor_config.json)"
HEAD_LAYERS = (0, 2, 4, 6, 8)
DEFAULT_SCALE = 0.1


class AestheticHead(torch.nn.Module):
    keep_float32 = True

    def __init__(self, width: int):
        super().__init__()
        self.scoring_head = torch.nn.Sequential(
            torch.nn.Linear(width, 1024), torch.nn.Dropout(0.5),
            torch.nn.Linear(1024, 128), torch.nn.Dropout(0.5),
            torch.nn.Linear(128, 64), torch.nn.Dropout(0.5),
            torch.nn.Linear(64, 16), torch.nn.Dropout(0.2),
            torch.nn.Linear(16, 1),
        )

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.scoring_head(embeds)


def load_head(path: Path, width: int) -> AestheticHead:
    sd = flat_tensors(read_tensors(path, EXPECTED_HEAD), path, EXPECTED_HEAD, REWARDS_DIR)
    required = [f"scoring_head.{i}.{p}" for i in HEAD_LAYERS for p in ("weight", "bias")]
    check_keys(path, sd, required, EXPECTED_HEAD, REWARDS_DIR)
    head_width = sd["scoring_head.0.weight"].shape[1]
    if head_width != width:
        raise wrong_file(path, sd, EXPECTED_HEAD, REWARDS_DIR,
                         f"The head takes {head_width}-wide embeddings but the SigLIP model gives {width}; "
                         "v2.5 needs siglip-so400m-patch14-384 (1152).")
    return load_into(empty_module(lambda: AestheticHead(width)), sd, path, EXPECTED_HEAD, REWARDS_DIR)


class AestheticReward(Reward):
    name = "aesthetic"

    def __init__(self, path, *, device="cpu", dtype=torch.float32, max_batch=8,
                 siglip_path: Optional[str] = None, scale: float = DEFAULT_SCALE):
        from transformers import SiglipVisionModel

        if siglip_path is None:
            raise ValueError(
                "the aesthetic reward needs two things: the head file (path) and the SigLIP folder "
                f"(siglip_path=...), e.g. {REWARDS_DIR}/siglip-so400m-patch14-384"
            )
        head_path = require_file(path, EXPECTED_HEAD, REWARDS_DIR)
        folder, _ = model_folder(siglip_path, ("siglip", "siglip_vision_model"), EXPECTED_SIGLIP, REWARDS_DIR)
        siglip = load_pretrained(SiglipVisionModel, folder, EXPECTED_SIGLIP)
        head = load_head(head_path, siglip.config.hidden_size)
        self.preprocess = ImageSpec.from_folder(folder, EXPECTED_SIGLIP, square_by_default=True)
        self.scale = float(scale)
        super().__init__({"siglip": siglip, "head": head}, device=device, dtype=dtype, max_batch=max_batch)

    def _encode_prompt(self, prompt: str):
        return None  # the aesthetic score ignores the prompt

    def _score_chunk(self, images: List[Image.Image], text) -> torch.Tensor:
        pixels = self.preprocess(images).to(self.device, self.dtype)
        pooled = self._modules["siglip"](pixel_values=pixels).pooler_output.float()
        embeds = pooled / pooled.norm(dim=-1, keepdim=True)
        return self.scale * self._modules["head"](embeds).squeeze(-1)
