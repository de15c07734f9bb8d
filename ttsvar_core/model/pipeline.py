"""The loaded Infinity parts in one object: transformer, VAE and text encoder (shared by CLI and nodes)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoints import load_infinity, load_vae, storage_dtype
from .config import pixels_per_token
from .dtypes import parse_dtype
from .infinity import Infinity
from .offload import stream_blocks
from .schedules import get_schedule, validate_schedule
from .text import Prompts, TextEncoder, text_dtypes
from .vae import BSQVAE

@dataclass
class InfinityPipeline:
    model: Infinity
    vae: BSQVAE
    text_encoder: TextEncoder

    @classmethod
    def load(cls, model_path, vae_path, text_encoder_path, *, text_tokenizer=None, device="cpu", dtype="fp32",
             text_device=None, weight_storage: str | None = None, stream: bool = False,
             text_storage: str | None = None) -> "InfinityPipeline":
        """`text_encoder_path`: a flan-t5-xl folder or a convert-t5 single file; `text_tokenizer`: a tokenizer
        folder, needed with a single file (see TextEncoder). `weight_storage` ("bf16", "fp16" or "fp8",
        narrower than `dtype`): the transformer blocks' matmul weights stored in it, computed in `dtype`.
        `stream`: the blocks stay in CPU memory and visit `device` one at a time (offload.stream_blocks).
        `text_storage`: the same choices for the T5 encoder's block weights (text.text_dtypes)."""
        device, dtype = torch.device(device), parse_dtype(dtype)
        storage_dtype(weight_storage, dtype, device)  # a refused storage fails before anything loads
        text_dtypes(text_storage, None, torch.device(text_device or device))  # and so does a refused T5 storage
        vae = load_vae(vae_path, device=device, dtype=torch.float32 if device.type == "cpu" else dtype)
        model = load_infinity(model_path, vae_cfg=vae.cfg, device="cpu" if stream else device, dtype=dtype,
                              weight_storage=weight_storage)
        if stream:
            stream_blocks(model, device)
        text = TextEncoder(text_encoder_path, tokenizer=text_tokenizer, device=text_device or device,
                           max_length=model.cfg.text_maxlen, weight_storage=text_storage)
        if text.channels != model.cfg.text_channels:
            raise ValueError(f"the text encoder {Path(text_encoder_path)} gives {text.channels}-channel features "
                             f"but the transformer expects {model.cfg.text_channels} (flan-t5-xl: 2048)")
        return cls(model, vae, text)

    def encode(self, prompts: list[str], negative_prompt: str | None = None) -> Prompts:
        """T5 rows of every prompt (each distinct prompt encoded once) and, when given, of the negative
        prompt once per prompt."""
        features, lens = self.text_encoder.encode(prompts)
        negative = None
        if negative_prompt:
            neg_features, neg_lens = self.text_encoder.encode([negative_prompt] * len(prompts))
            negative = (neg_features, tuple(neg_lens))
        return Prompts(tuple(prompts), features, tuple(lens), negative, negative_prompt or "")

    def schedule(self, aspect_ratio: float | str = 1.0, pixel_budget: str = "1M", custom=None):
        if custom:
            return validate_schedule(custom, self.model.cfg.num_levels)
        return get_schedule(aspect_ratio, pixel_budget)

    @property
    def pixels_per_token(self) -> int:
        return pixels_per_token(self.model.cfg, self.vae.cfg)
