"""A contact sheet of images with their prompts, for a human to look at."""

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .render import render_prompt

CAPTION_LINES = 3
LINE_HEIGHT = 11


def save_grid(path, images, captions, columns: int = 6, scale: int = 3) -> Path:
    """Write images (uint8 [H, W, 3] each) in a grid, each upscaled `scale` times (nearest, so pixels
    stay visible) above its caption. Returns the path."""
    images = [np.asarray(im, dtype=np.uint8) for im in images]
    h, w = images[0].shape[0] * scale, images[0].shape[1] * scale
    cell_h = h + CAPTION_LINES * LINE_HEIGHT + 4
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * (w + 4), rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    chars = max(8, w // 6)
    for n, (im, caption) in enumerate(zip(images, captions)):
        x, y = (n % columns) * (w + 4), (n // columns) * cell_h
        sheet.paste(Image.fromarray(im).resize((w, h), Image.NEAREST), (x, y))
        for k, line in enumerate(textwrap.wrap(caption, chars)[:CAPTION_LINES]):
            draw.text((x, y + h + 1 + k * LINE_HEIGHT), line, fill=(0, 0, 0), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def save_sample_grid(path, prompts, seed: int = 0, texture: bool = False, columns: int = 6,
                     scale: int = 3) -> Path:
    """Render each prompt once (seed + its index) and write the grid."""
    images = [render_prompt(p, seed + n, texture=texture)[0] for n, p in enumerate(prompts)]
    return save_grid(path, images, [f"[{p.category}] {p.text}" for p in prompts], columns, scale)
