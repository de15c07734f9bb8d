"""Renderer of ShapesWorld: a seeded layout that satisfies a prompt, drawn antialiased at 64x64.

Layout coordinates are in pixels of a 64x64 canvas, y pointing down; (x, y) is the centre of the
object's square box of side `size`. Every shape is drawn to touch its box on all four sides (the star
is 5% shorter than wide), so the box centre is also the centre of the drawn bounding box.
"""

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .prompts import Prompt
from .vocab import BACKGROUND, COLOURS, IMAGE_SIZE, MAX_OBJECT, MIN_OBJECT, PALETTE

EDGE_MARGIN = 2      # px between any object and the canvas border
GAP = 4              # px between the boxes of two objects, so they never touch even after a blur
MAX_ACROSS = 0.5     # in position layouts, sideways offset <= 0.5 x offset along the relation
SUPERSAMPLE = 4      # shapes are drawn at 4x and box-filtered down: antialiased edges
TEXTURE_STD = 4.0    # grey levels of the optional low-frequency background texture
# Largest object side by number of objects: four 24 px objects would rarely fit with the gaps.
MAX_SIZE_FOR = {1: MAX_OBJECT, 2: MAX_OBJECT, 3: 20, 4: 18}
CANDIDATES = 256     # layouts drawn at once in the rejection sampler


@dataclass(frozen=True)
class PlacedObject:
    shape: str
    colour: str
    x: float
    y: float
    size: int


@dataclass(frozen=True)
class Layout:
    objects: tuple[PlacedObject, ...]


def _star(points=5, inner=0.5):
    """Unit-box polygon of an upright star: width 1, height 0.951, centred on its bounding box."""
    outer = 1 / (2 * math.sin(math.radians(72)))
    shift = outer * (1 - math.cos(math.radians(36))) / 2
    verts = []
    for k in range(2 * points):
        r = outer if k % 2 == 0 else outer * inner
        a = math.radians(-90 + 180 * k / points)
        verts.append((r * math.cos(a), r * math.sin(a) + shift))
    return verts


def _cross(arm=1 / 3):
    a, h = arm / 2, 0.5
    return [(-a, -h), (a, -h), (a, -a), (h, -a), (h, a), (a, a), (a, h), (-a, h), (-a, a), (-h, a), (-h, -a), (-a, -a)]


# Polygons in a unit box centred on the origin (x right, y down); the circle is drawn as an ellipse.
POLYGONS = {
    "square": [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)],
    "triangle": [(0.0, -0.5), (0.5, 0.5), (-0.5, 0.5)],
    "diamond": [(0.0, -0.5), (0.5, 0.0), (0.0, 0.5), (-0.5, 0.0)],
    "star": _star(),
    "cross": _cross(),
}


def draw_coverage(shape: str, x: float, y: float, size: float, canvas: int = IMAGE_SIZE) -> np.ndarray:
    """Fraction of each pixel of a canvas x canvas image that the shape covers (float32 in [0, 1])."""
    big = canvas * SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy, s = x * SUPERSAMPLE, y * SUPERSAMPLE, size * SUPERSAMPLE
    if shape == "circle":
        draw.ellipse([cx - s / 2, cy - s / 2, cx + s / 2 - 1, cy + s / 2 - 1], fill=255)
    else:
        draw.polygon([(cx + u * s, cy + v * s) for u, v in POLYGONS[shape]], fill=255)
    small = mask.resize((canvas, canvas), Image.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def background(canvas: int = IMAGE_SIZE, texture_seed: int | None = None) -> np.ndarray:
    """Plain light grey, or with a faint smooth grey texture when a seed is given."""
    img = np.empty((canvas, canvas, 3), np.float32)
    img[:] = BACKGROUND
    if texture_seed is not None:
        coarse = np.random.default_rng(texture_seed).normal(0, 1, (6, 6)).astype(np.float32)
        smooth = Image.fromarray(coarse, mode="F").resize((canvas, canvas), Image.BICUBIC)
        img += TEXTURE_STD * np.asarray(smooth)[..., None]
    return img


def render_layout(layout: Layout, canvas: int = IMAGE_SIZE, texture_seed: int | None = None) -> np.ndarray:
    """Draw a layout (64-pixel coordinates) on a canvas x canvas uint8 RGB image."""
    scale = canvas / IMAGE_SIZE
    img = background(canvas, texture_seed)
    for obj in layout.objects:
        alpha = draw_coverage(obj.shape, obj.x * scale, obj.y * scale, obj.size * scale, canvas)[..., None]
        img = img * (1 - alpha) + np.asarray(PALETTE[obj.colour], np.float32) * alpha
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _objects_to_place(prompt: Prompt, rng) -> list[tuple[str, str]]:
    """(shape, colour) per object; unnamed colours are drawn independently for every object."""
    placed = []
    for spec in prompt.objects:
        for _ in range(spec.count):
            placed.append((spec.shape, spec.colour or COLOURS[rng.integers(len(COLOURS))]))
    return placed


def _relation_ok(xy, relation):
    """Per candidate: does the relation hold with a clear margin (see MAX_ACROSS)?"""
    i, rel, j = relation
    d = xy[:, j] - xy[:, i]  # offset from the subject to the reference object
    along, across = {"left of": (d[:, 0], d[:, 1]), "right of": (-d[:, 0], d[:, 1]),
                     "above": (d[:, 1], d[:, 0]), "below": (-d[:, 1], d[:, 0])}[rel]
    return (along > 0) & (np.abs(across) <= MAX_ACROSS * along)


def _valid(xy, sizes, relation):
    n = xy.shape[1]
    ok = np.ones(len(xy), bool)
    for a in range(n):
        for b in range(a + 1, n):
            half = (sizes[:, a] + sizes[:, b]) / 2
            gap = np.max(np.abs(xy[:, a] - xy[:, b]), axis=1) - half
            ok &= gap >= GAP
    if relation is not None:
        ok &= _relation_ok(xy, relation)
    return ok


def _place(n, max_size, relation, rng):
    """Rejection sampler: draw CANDIDATES layouts at once, return the first valid one or None."""
    sizes = rng.integers(MIN_OBJECT, max_size + 1, (CANDIDATES, n)).astype(np.float32)
    low = EDGE_MARGIN + sizes / 2
    high = IMAGE_SIZE - EDGE_MARGIN - sizes / 2
    xy = low[..., None] + rng.random((CANDIDATES, n, 2), dtype=np.float32) * (high - low)[..., None]
    hits = np.flatnonzero(_valid(xy, sizes, relation))
    if len(hits) == 0:
        return None
    k = hits[0]
    return [(float(xy[k, m, 0]), float(xy[k, m, 1]), int(sizes[k, m])) for m in range(n)]


def sample_layout(prompt: Prompt, rng) -> Layout:
    """A random layout that satisfies the prompt exactly: the named objects and nothing else."""
    rng = np.random.default_rng(rng)
    objects = _objects_to_place(prompt, rng)
    max_size = MAX_SIZE_FOR[len(objects)]
    while True:
        spots = _place(len(objects), max_size, prompt.relation, rng)
        if spots is not None:
            return Layout(tuple(PlacedObject(s, c, x, y, z) for (s, c), (x, y, z) in zip(objects, spots)))
        max_size = max(MIN_OBJECT, max_size - 2)  # crowded: shrink and try again


def render_prompt(prompt: Prompt, seed: int, texture: bool = False,
                  canvas: int = IMAGE_SIZE) -> tuple[np.ndarray, Layout]:
    """Ground-truth image (uint8 [canvas, canvas, 3]) and its layout for a prompt; same seed, same image."""
    rng = np.random.default_rng(seed)
    layout = sample_layout(prompt, rng)
    texture_seed = int(rng.integers(2**31)) if texture else None
    return render_layout(layout, canvas, texture_seed), layout
