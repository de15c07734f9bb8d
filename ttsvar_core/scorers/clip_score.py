"""CLIP score from a local transformers CLIP folder.

The score is the cosine similarity between the projected image and prompt embeddings, times
`scale` (1.0 by default, the same scale as HPS, which is a CLIP cosine too; use 100 for the
usual CLIPScore numbers). A CLIP score needs both towers of the same model, so the folder
must be a full CLIPModel (e.g. a copy of openai/clip-vit-large-patch14), not a ComfyUI
clip_vision or text-encoder file.
"""

from typing import List

import torch
from PIL import Image

from .base import Reward
from .errors import REWARDS_DIR
from .hf_folders import ImageSpec, load_pretrained, load_tokenizer, model_folder

EXPECTED = "a transformers CLIP model folder (config.json, model.safetensors, tokenizer and preprocessor_config.json)"


class ClipScoreReward(Reward):
    name = "clip"

    def __init__(self, path, *, device="cpu", dtype=torch.float32, max_batch=8, scale=1.0):
        from transformers import CLIPModel

        folder, _ = model_folder(path, ("clip",), EXPECTED, REWARDS_DIR)
        model = load_pretrained(CLIPModel, folder, EXPECTED)
        text_cfg = model.config.text_config
        self.tokenizer = load_tokenizer(folder, EXPECTED, text_cfg.vocab_size)
        self.max_tokens = text_cfg.max_position_embeddings
        self.preprocess = ImageSpec.from_folder(folder, EXPECTED, square_by_default=False)
        self.scale = float(scale)
        super().__init__({"clip": model}, device=device, dtype=dtype, max_batch=max_batch)

    def _encode_prompt(self, prompt: str) -> torch.Tensor:
        clip = self._modules["clip"]
        tokens = self.tokenizer([prompt], padding=True, truncation=True, max_length=self.max_tokens,
                                return_tensors="pt")
        # The towers are called directly because get_text_features() changed its return type
        # between transformers 4 (tensor) and 5 (model output).
        pooled = clip.text_model(input_ids=tokens.input_ids.to(self.device),
                                 attention_mask=tokens.attention_mask.to(self.device)).pooler_output
        return torch.nn.functional.normalize(clip.text_projection(pooled).float(), dim=-1)

    def _score_chunk(self, images: List[Image.Image], text_embeds) -> torch.Tensor:
        clip = self._modules["clip"]
        pixels = self.preprocess(images).to(self.device, self.dtype)
        pooled = clip.vision_model(pixel_values=pixels).pooler_output
        image_embeds = torch.nn.functional.normalize(clip.visual_projection(pooled).float(), dim=-1)
        return self.scale * (image_embeds * text_embeds).sum(dim=-1)
