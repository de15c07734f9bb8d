"""Image batches and the PIL preprocessing steps the original scorers use.

The originals preprocess with torchvision transforms or transformers image processors on PIL
images. Both resize through PIL for PIL input, so doing the same PIL calls here reproduces
them exactly without importing torchvision.
"""

from typing import Iterator, List, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from .errors import ImageBatchError

ImagesLike = Union[torch.Tensor, Sequence[Image.Image]]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageBatch:
    """A validated batch: a uint8 [B, H, W, 3] RGB tensor or a list of same-size PIL images."""

    def __init__(self, images: ImagesLike):
        if isinstance(images, torch.Tensor):
            self._tensor = _check_tensor(images)
            self._pils = None
            self.size = (int(images.shape[2]), int(images.shape[1]))
        else:
            self._tensor = None
            self._pils = _check_pil_list(images)
            self.size = self._pils[0].size if self._pils else (0, 0)

    def __len__(self) -> int:
        return len(self._pils) if self._pils is not None else int(self._tensor.shape[0])

    def chunks(self, n: int) -> Iterator[List[Image.Image]]:
        """Yield lists of at most n RGB PIL images, converting tensor rows only when needed."""
        for start in range(0, len(self), n):
            stop = min(start + n, len(self))
            if self._pils is not None:
                yield [_rgb(im) for im in self._pils[start:stop]]
            else:
                rows = self._tensor[start:stop].cpu().numpy()
                yield [Image.fromarray(row) for row in rows]


def _check_tensor(images: torch.Tensor) -> torch.Tensor:
    if images.dtype != torch.uint8:
        raise ImageBatchError(
            f"images must be a torch.uint8 tensor [B, H, W, 3] (RGB, 0..255), got dtype {images.dtype}. "
            "Convert with (x.clamp(0, 1) * 255).to(torch.uint8) first."
        )
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ImageBatchError(
            f"images must be a tensor of shape [B, H, W, 3] (channels last, RGB), got {tuple(images.shape)}."
        )
    return images


def _check_pil_list(images) -> List[Image.Image]:
    if isinstance(images, Image.Image):
        raise ImageBatchError("images must be a list of PIL images or a uint8 tensor, not a single PIL image; wrap it in a list.")
    images = list(images)
    for i, im in enumerate(images):
        if not isinstance(im, Image.Image):
            raise ImageBatchError(
                f"images[{i}] is a {type(im).__name__}; expected PIL.Image.Image (or pass one uint8 [B, H, W, 3] tensor)."
            )
    sizes = sorted({im.size for im in images})
    if len(sizes) > 1:
        raise ImageBatchError(
            f"all images in one call must have the same size, got {len(sizes)} sizes (width x height): "
            + ", ".join(f"{w}x{h}" for w, h in sizes[:6])
            + ". Score images of different sizes in separate calls."
        )
    return images


def _rgb(im: Image.Image) -> Image.Image:
    return im if im.mode == "RGB" else im.convert("RGB")


def resize_shorter_side(im: Image.Image, size: int, resample: int) -> Image.Image:
    """torchvision Resize(int) semantics: the shorter side becomes size, the longer one is truncated."""
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return im
    return im.resize((new_w, new_h), resample)


def resize_exact(im: Image.Image, height: int, width: int, resample: int) -> Image.Image:
    if im.size == (width, height):
        return im
    return im.resize((width, height), resample)


def center_crop(im: Image.Image, height: int, width: int, round_offsets: bool) -> Image.Image:
    """Centre crop; torchvision rounds the offset (round_offsets=True), transformers floors it."""
    w, h = im.size
    if width > w or height > h:
        im = _pad_to(im, max(height, h), max(width, w))
        w, h = im.size
    if round_offsets:
        top, left = int(round((h - height) / 2.0)), int(round((w - width) / 2.0))
    else:
        top, left = (h - height) // 2, (w - width) // 2
    return im.crop((left, top, left + width, top + height))


def _pad_to(im: Image.Image, height: int, width: int) -> Image.Image:
    canvas = Image.new("RGB", (width, height))
    canvas.paste(im, ((width - im.size[0]) // 2, (height - im.size[1]) // 2))
    return canvas


def resize_longer_side_and_pad(im: Image.Image, size: int) -> Image.Image:
    """HPS v2 validation transform (ResizeMaxSize): bicubic resize so the longer side is size,
    then pad with black to size x size, the odd pixel going right/bottom.

    The original skips resize *and* padding when the longer side already equals size, which
    breaks on non-square images; here such images are still padded.
    """
    w, h = im.size
    scale = size / float(max(h, w))
    if scale != 1.0:
        new_h, new_w = round(h * scale), round(w * scale)
        im = im.resize((new_w, new_h), Image.BICUBIC)
    else:
        new_h, new_w = h, w
    if (new_w, new_h) == (size, size):
        return im
    canvas = Image.new("RGB", (size, size))
    canvas.paste(im, ((size - new_w) // 2, (size - new_h) // 2))
    return canvas


def to_normalized_tensor(
    images: Sequence[Image.Image], mean: Tuple[float, ...], std: Tuple[float, ...], scale: float = 1 / 255
) -> torch.Tensor:
    """Stack RGB PIL images into a float32 [B, 3, H, W] tensor: x * scale, then (x - mean) / std.

    With scale 1/255 this is torchvision's ToTensor + Normalize, operation for operation.
    """
    arrays = [np.asarray(im, dtype=np.uint8) for im in images]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    if scale == 1 / 255:
        x = x.to(torch.float32).div(255)
    else:
        x = x.to(torch.float32).mul(scale)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return x.sub_(mean_t).div_(std_t)
