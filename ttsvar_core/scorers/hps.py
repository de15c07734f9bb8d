"""HPS v2.1 (Human Preference Score) from HPS_v2.1_compressed.pt on open_clip.

HPS v2.1 is an open_clip ViT-H-14 fine-tuned on human preferences; its score is the cosine
similarity between the normalised image and prompt embeddings. The hpsv2 package cannot be
imported (its wheel lacks the BPE vocabulary) and always downloads the LAION weights first, so
the model is built here from open_clip's ViT-H-14 architecture with no pretrained weights and
then filled from the user's checkpoint. open_clip_torch (MIT) is an optional dependency.
"""

from pathlib import Path
from typing import List, Union

import torch
from PIL import Image

from .base import Reward
from .checkpoints import check_keys, empty_module, flat_tensors, load_into, read_tensors, require_file, wrong_file
from .errors import REWARDS_DIR, missing_dependency
from .images import CLIP_MEAN, CLIP_STD, resize_longer_side_and_pad, to_normalized_tensor

EXPECTED = "HPS_v2.1_compressed.pt (HPS v2.1, xswu/HPSv2)"
DEFAULT_ARCH = "ViT-H-14"


def import_open_clip():
    try:
        import open_clip
    except ImportError as exc:
        raise missing_dependency("open_clip", "open_clip_torch", "The HPS v2.1 reward") from exc
    return open_clip


def model_config(open_clip, arch: Union[str, dict]) -> dict:
    """open_clip model config: a registered name (HPS v2.1 is 'ViT-H-14') or an explicit dict
    with embed_dim, vision_cfg and text_cfg (used for other sizes, e.g. tiny test models)."""
    if isinstance(arch, dict):
        return dict(arch)
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise ValueError(f"open_clip has no model config named {arch!r}; HPS v2.1 uses {DEFAULT_ARCH!r}")
    return cfg


def read_checkpoint(path: Path) -> dict:
    """HPS files wrap the weights as {'state_dict': ...}; a bare state dict is accepted too."""
    obj = read_tensors(path, EXPECTED)
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        extra = sorted(k for k in obj if k != "state_dict")
        if extra:
            raise wrong_file(path, obj, EXPECTED, REWARDS_DIR,
                             f"Besides 'state_dict' it holds {extra[:4]}; use the *_compressed.pt file.")
        obj = obj["state_dict"]
    return flat_tensors(obj, path, EXPECTED, REWARDS_DIR)


def build_model(open_clip, cfg: dict, sd: dict, path: Path) -> torch.nn.Module:
    model = empty_module(lambda: open_clip.CLIP(**cfg))
    check_keys(path, sd, model.state_dict().keys(), EXPECTED, REWARDS_DIR)
    return load_into(model, sd, path, EXPECTED, REWARDS_DIR)


class HPSv2Reward(Reward):
    name = "hps"

    def __init__(self, path, *, device="cpu", dtype=torch.float32, max_batch=8, arch=DEFAULT_ARCH):
        open_clip = import_open_clip()
        path = require_file(path, EXPECTED, REWARDS_DIR)
        cfg = model_config(open_clip, arch)
        model = build_model(open_clip, cfg, read_checkpoint(path), path)
        self.image_size = _image_size(model)
        context = cfg.get("text_cfg", {}).get("context_length", 77)
        # The BPE vocabulary ships inside open_clip, so this reads no network and no cache.
        self.tokenizer = open_clip.SimpleTokenizer(context_length=context)
        super().__init__({"clip": model}, device=device, dtype=dtype, max_batch=max_batch)

    def _encode_prompt(self, prompt: str):
        tokens = self.tokenizer([prompt]).to(self.device)
        return self._modules["clip"].encode_text(tokens, normalize=True)

    def preprocess(self, images: List[Image.Image]) -> torch.Tensor:
        """HPS's ResizeMaxSize: bicubic resize of the longer side, black padding, CLIP normalisation."""
        padded = [resize_longer_side_and_pad(im, self.image_size) for im in images]
        return to_normalized_tensor(padded, CLIP_MEAN, CLIP_STD)

    def _score_chunk(self, images: List[Image.Image], text_features) -> torch.Tensor:
        pixels = self.preprocess(images).to(self.device, self.dtype)
        image_features = self._modules["clip"].encode_image(pixels, normalize=True)
        return (image_features.float() * text_features.float()).sum(dim=-1)


def _image_size(model) -> int:
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)
