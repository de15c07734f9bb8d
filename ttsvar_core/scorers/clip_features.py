"""Image features from the vision tower of a local transformers CLIP folder (kind "clip-vision").

patch_tokens: the last hidden state without the class token, [B, (side/patch)^2, width]; pooled: the
projected image embedding (what CLIP score compares with the text), so the 'global' feature mode and the
reward see the same vector. The folder is the same one the "clip" reward loads, so a small world's
tiny CLIP serves as both reward and clustering features.
"""

from typing import List

import torch
from PIL import Image

from .base import Features, FeatureExtractor
from .errors import FEATURES_DIR
from .hf_folders import ImageSpec, load_pretrained, model_folder

EXPECTED = "a transformers CLIP model folder (config.json, model.safetensors and preprocessor_config.json)"


class ClipVisionExtractor(FeatureExtractor):
    name = "clip-vision"

    def __init__(self, path, *, device="cpu", dtype=torch.float32, max_batch=8):
        from transformers import CLIPModel

        folder, _ = model_folder(path, ("clip",), EXPECTED, FEATURES_DIR)
        clip = load_pretrained(CLIPModel, folder, EXPECTED)
        self.preprocess = ImageSpec.from_folder(folder, EXPECTED, square_by_default=False)
        # only the image side is needed: keep the vision tower and projection, drop the text tower
        super().__init__({"vision": clip.vision_model, "projection": clip.visual_projection},
                         device=device, dtype=dtype, max_batch=max_batch)

    def _extract_chunk(self, images: List[Image.Image]) -> Features:
        vision, projection = self._modules["vision"], self._modules["projection"]
        out = vision(pixel_values=self.preprocess(images).to(self.device, self.dtype))
        return Features(patch_tokens=out.last_hidden_state[:, 1:], pooled=projection(out.pooler_output))
