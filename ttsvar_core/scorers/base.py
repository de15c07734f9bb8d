"""The two interfaces the search engine uses: Reward and FeatureExtractor.

Both hold torch modules on a caller-chosen device and dtype, process images in chunks of at
most max_batch so memory stays bounded, and can be offloaded to the CPU between uses; the
next call moves them back to their device.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
from PIL import Image

from ..model.dtypes import parse_dtype
from ..model.files import in_process_memory
from .images import ImageBatch, ImagesLike

# Rough peak activation memory of one image in a batch, in float32: an upper bound for the shipped models
# (SigLIP so400m at 384 px, the largest, holds about 80 MB per image: 729 tokens, 16 attention maps).
WORKING_BYTES_PER_IMAGE = 128 * 2**20


def resolve_max_batch(max_batch: int) -> int:
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch must be a positive int, got {max_batch!r}")
    return max_batch


@dataclass(frozen=True)
class Features:
    """patch_tokens: [B, P, C] float32 on CPU, or None for global-only extractors.
    pooled: [B, C] float32 on CPU."""

    patch_tokens: Optional[torch.Tensor]
    pooled: torch.Tensor


class _Hosted:
    """Owns named modules and keeps them on one device and dtype."""

    def __init__(self, modules: Dict[str, torch.nn.Module], *, device, dtype, max_batch: int):
        self._modules = modules
        self.device = torch.device(device)
        self.dtype = parse_dtype(dtype)
        self.max_batch = resolve_max_batch(max_batch)
        self._offloaded = True
        self._place(self.device)
        for module in modules.values():  # CPU weights must not stay memory-mapped from their file
            in_process_memory(module)

    @property
    def is_offloaded(self) -> bool:
        return self._offloaded

    def to(self, device) -> "_Hosted":
        """Set the compute device and move the weights there."""
        self.device = torch.device(device)
        self._place(self.device)
        return self

    def offload(self) -> "_Hosted":
        """Move the weights to the CPU; the next call moves them back to self.device."""
        self._place(torch.device("cpu"))
        return self

    def _place(self, device: torch.device) -> None:
        for module in self._modules.values():
            module.to(device=device, dtype=self._module_dtype(module))
        self._offloaded = device != self.device

    def _module_dtype(self, module: torch.nn.Module) -> torch.dtype:
        """Small heads stay in float32 (the originals compute them on float features)."""
        return torch.float32 if getattr(module, "keep_float32", False) else self.dtype

    @property
    def batch_bytes(self) -> int:
        """Rough peak memory one batch needs on `device` beyond the weights (the search's memory estimate)."""
        return self.max_batch * WORKING_BYTES_PER_IMAGE * self.dtype.itemsize // 4

    @property
    def weight_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for m in self._modules.values()
                   for t in list(m.parameters()) + list(m.buffers()))

    def _ready(self) -> None:
        if self._offloaded:
            self._place(self.device)

    def _chunks(self, images: ImagesLike):
        batch = ImageBatch(images)
        return len(batch), batch.chunks(self.max_batch)


class Reward(_Hosted):
    """Maps (images, prompt) to one float32 score per image."""

    name: str = "reward"

    def score(self, images: ImagesLike, prompt: str) -> torch.Tensor:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        count, chunks = self._chunks(images)
        if count == 0:
            return torch.zeros(0, dtype=torch.float32)
        self._ready()
        with torch.no_grad():  # not inference_mode: callers may modify the results in place
            text = self._encode_prompt(prompt)
            scores = [self._score_chunk(pils, text).float().cpu().reshape(-1) for pils in chunks]
        return torch.cat(scores)

    def _encode_prompt(self, prompt: str):
        """Work done once per call for the prompt (tokenising, text features)."""
        raise NotImplementedError

    def _score_chunk(self, images: List[Image.Image], text) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device}, dtype={self.dtype}, max_batch={self.max_batch})"


class FeatureExtractor(_Hosted):
    """Maps images to Features (patch tokens and pooled features)."""

    name: str = "features"

    def extract(self, images: ImagesLike) -> Features:
        count, chunks = self._chunks(images)
        if count == 0:
            raise ValueError("extract() needs at least one image")
        self._ready()
        with torch.no_grad():  # not inference_mode: callers may modify the results in place
            parts = [self._extract_chunk(pils) for pils in chunks]
        pooled = torch.cat([p.pooled.float().cpu() for p in parts])
        if parts[0].patch_tokens is None:
            return Features(patch_tokens=None, pooled=pooled)
        return Features(patch_tokens=torch.cat([p.patch_tokens.float().cpu() for p in parts]), pooled=pooled)

    def _extract_chunk(self, images: List[Image.Image]) -> Features:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device}, dtype={self.dtype}, max_batch={self.max_batch})"
