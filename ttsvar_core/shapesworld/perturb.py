"""Image degradations for robustness checks of the evaluator (uint8 [H, W, 3] in, same out)."""

import io

import numpy as np
from PIL import Image


def box_blur(img: np.ndarray) -> np.ndarray:
    """3x3 box blur, edges replicated."""
    pad = np.pad(img.astype(np.float32), ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    total = sum(pad[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))
    return np.clip(np.rint(total / 9.0), 0, 255).astype(np.uint8)


def add_noise(img: np.ndarray, sigma: float, rng) -> np.ndarray:
    """Gaussian pixel noise of `sigma` grey levels, independent per channel."""
    noisy = img.astype(np.float32) + np.random.default_rng(rng).normal(0.0, sigma, img.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int = 75) -> np.ndarray:
    """A round trip through Pillow's JPEG encoder (4:2:0 chroma subsampling at the default quality)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))
