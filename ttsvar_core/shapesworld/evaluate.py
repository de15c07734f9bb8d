"""Exact evaluator of ShapesWorld: parse an image into objects, score it against a prompt's spec.

Detection (see detect()) finds every object a person would count and names only what it can name.
MIN_AREA and MIN_SHAPE_SIDE are at 64x64 and scale with the image; the other distances are image pixels
(edges are as blurred at any size). Positions and sizes are reported in the 64x64 frame.
  1. The background colour is the median of the image's 2-pixel border.
  2. Palette parts. A rendered pixel is background + a * (colour - background), a = how much of it a
     shape covers. For every palette colour we recover a by projecting (pixel - background) on
     (colour - background), and measure how far the pixel lies off that line. A pixel belongs to the
     colour whose line is nearest, among those with a >= 0.5 and off-line distance <= MAX_OFF_LINE.
     The 8-connected components of each colour with at least MIN_AREA pixels are palette parts: the
     half-coverage silhouettes of the world's objects, whatever the colour, blur or contrast, without
     halos of a wrong colour from blended edges.
  3. Other parts, whatever their colour. A pixel's contrast is its RGB distance from the background
     after a 3x3 mean (a third of the pixel noise). A pixel is solid when its contrast is at least
     FG_CONTRAST / 2 and at least half the highest contrast within PEAK_REACH px: the half-contrast
     silhouette of any object, faded, off-palette or two-tone. Solid pixels more than EXPLAIN_RADIUS px
     from every palette part (closer ones are the palette part's own blended edge) form other parts
     (8-connected), each one that holds at least MIN_AREA pixels of contrast >= FG_CONTRAST.
  4. Parts at most TOUCH_GAP px apart touch (also through other parts). A part touching no other is one
     object. Touching parts that are all palette parts of a known shape (step 5) are touching objects of
     different colours: one object each. Any other touching parts are one object seen in pieces (a
     two-tone shape, a faded or off-palette object against a palette one): its mask is the pieces plus
     the solid pixels within TOUCH_GAP / 2 px of them (which bridges the gaps), and it has no colour.
     An object of one colour is never cut into pieces: if it matches no shape (two overlapping circles)
     it is one unknown object, which already counts against every exclusion rule below; cutting it could
     only turn pieces, truncated silhouettes the templates cannot vouch for, into known shapes.
  5. Shape: the object's mask, cropped to its bounding box and resampled to GRID x GRID, is compared
     (mean squared difference) with a bank of templates: every shape drawn at every size 14..24, at
     four sub-pixel offsets, sharp and Gaussian-blurred (sigma 0.7, 1.0, 1.4), thresholded at half
     coverage like the images. The nearest template names the shape unless it is farther than
     MAX_SHAPE_DISTANCE, its box is more than MAX_ASPECT times longer one way, or its box is under
     MIN_SHAPE_SIDE px both ways (too few pixels to tell a circle from a square): then the shape is
     unknown (None).
  6. Colour: an object from one palette part has that palette colour when the median colour of its
     interior (the part less its 1 px rim, or all of it if nothing is left) lies within MAX_COLOUR_ERROR
     of it. Otherwise (faded, off-palette) and for objects from other or several parts the colour is
     unknown (None).
  The position of an object is the centre of its bounding box (as GenEval's boxes).

Scoring rules. A detection IS a spec's object when its shape is the named shape and, if the spec names
a colour, its colour is that colour. It COULD BE one when its shape is the named shape or unknown and,
if the spec names a colour, its colour is that colour or unknown. "Found" means the detections that are
the object.
  single_object, two_object, colors, color_attr (GenEval's include rule, the colour checked on the
      detections of the named shape): at least `count` of each named object found. Other objects do
      not matter. An object of unknown shape is never found, nor one of unknown colour where the spec
      names a colour, so neither helps.
  counting (GenEval's include N / exclude N + 1; our prompts name no colour): exactly `count` found and
      no other detection could be the shape, so an unknown blob fails it.
  position: both objects found, and the relation holds for every pair (subject, reference) where one
      side is found and the other is or could be its object, so a duplicate on the wrong side fails it,
      be it named, of unknown colour or of unknown shape.
Relation rule, with d = centre(reference) - centre(subject), y pointing down, w/h the box sizes:
  "A left of B"  <=>  d.x > POSITION_MARGIN * (w_A + w_B)  and  d.x > |d.y|
  (mirrored for right of; with x and y exchanged for above / below). The margin is GenEval's 0.1; the
  second clause (more horizontal than vertical offset) makes the four relations mutually exclusive.
"""

import itertools
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage

from .prompts import Prompt
from .render import draw_coverage
from .vocab import CATEGORIES, COLOURS, MAX_OBJECT, MIN_OBJECT, PALETTE, SHAPES

MAX_OFF_LINE = 60.0          # RGB distance off the background-colour line; palette colours are >= 106 off
                             # each other's lines, a 3x noise sigma of 8 is ~40
MIN_COVERAGE = 0.5           # a pixel is part of a shape when at least half covered
MIN_AREA = 12                # px: a 4 px square is an object a person sees. The smallest object of the
                             # world (a 14 px star) covers ~84 px; the star tips that JPEG q75 (also after
                             # noise 8) leaves outside the palette masks are under 6 px (measured)
FG_CONTRAST = 40.0           # contrast that is clearly not background: ~23 grey levels on every channel,
                             # a palette colour at 25% coverage. The background texture (std 4) reaches 39
                             # at most (3000 seeds); with noise sigma 8 or 12 on top, no solid blob holds
                             # more than 3 or 7 pixels above it, under MIN_AREA
PEAK_REACH = 2               # px: an edge pixel lies this close to its object's full-contrast interior
                             # (antialiasing, the 3x3 mean, a 3x3 blur)
EXPLAIN_RADIUS = 2           # px around a palette part that are its blended edge, not another object
TOUCH_GAP = 2                # px between parts that still touch: a part found next to a palette part lies
                             # EXPLAIN_RADIUS px from it; the world's renders keep >= 3 px between objects
MAX_COLOUR_ERROR = 40.0      # RGB distance of an object's interior from its palette colour: blur, noise 8
                             # and JPEG q75 move it <= 21 (measured); a colour halfway between two palette
                             # colours lies >= 66 from both, a palette colour at 80% strength 34..49
GRID = 16                    # side of the resampled mask compared with the shape templates
MAX_SHAPE_DISTANCE = 0.2     # mean (mask - template)^2 beyond which a blob is no known shape
MAX_ASPECT = 1.5             # all shapes have square boxes; a blob twice as wide (two merged shapes,
                             # a smear) is no known shape, though it would match one once resampled
MIN_SHAPE_SIDE = 10          # px: the templates are 14..24 px; a few pixels cannot tell the shapes apart
TEMPLATE_BLURS = (0.0, 0.7, 1.0, 1.4)
TEMPLATE_OFFSETS = (0.0, 0.5)
POSITION_MARGIN = 0.1        # GenEval's POSITION_THRESHOLD
BORDER = 2                   # px of border whose median colour is taken as the background
TEMPLATE_CANVAS = 32         # room for the largest shape plus its blur
EIGHT_CONNECTED = np.ones((3, 3), bool)


@dataclass(frozen=True)
class Detection:
    shape: str | None   # None: unknown, a blob that matches no shape template or is too small
    colour: str | None  # None: unknown, not one palette colour (faded, off-palette, several colours)
    x: float            # bounding-box centre, pixels, 64x64 frame of the input image
    y: float
    w: float            # bounding-box size, pixels, same frame
    h: float
    area: int           # pixels of the input image
    shape_distance: float


@dataclass(frozen=True)
class EvalResult:
    correct: bool
    category: str
    details: dict = field(default_factory=dict)


def to_rgb_array(image) -> np.ndarray:
    """uint8 [H, W, 3] from a numpy array, a torch tensor ([H, W, 3] or [3, H, W]) or a PIL image.
    Floating-point input is taken to be in [0, 1]."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3] or [3, H, W], got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.rint(np.clip(arr, 0.0, 1.0) * 255.0)
    return arr.astype(np.uint8)


def _background(img: np.ndarray) -> np.ndarray:
    frame = np.concatenate([img[:BORDER].reshape(-1, 3), img[-BORDER:].reshape(-1, 3),
                            img[:, :BORDER].reshape(-1, 3), img[:, -BORDER:].reshape(-1, 3)])
    return np.median(frame, axis=0)


def colour_labels(diff: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Per pixel of diff = image - background (float32): index into COLOURS of the shape colour covering
    at least half of it, or -1."""
    lines = np.asarray([PALETTE[c] for c in COLOURS], np.float32) - bg.astype(np.float32)
    sq_len = (lines**2).sum(axis=1)
    dot = diff @ lines.T
    coverage = dot / sq_len
    off_line = np.sqrt(np.maximum((diff**2).sum(axis=-1, keepdims=True) - dot**2 / sq_len, 0.0))
    valid = (coverage >= MIN_COVERAGE) & (off_line <= MAX_OFF_LINE)
    off_line = np.where(valid, off_line, np.inf)
    return np.where(valid.any(axis=-1), off_line.argmin(axis=-1), -1)


def _resample(mask: np.ndarray) -> np.ndarray:
    """A binary mask cropped to its bounding box, as GRID x GRID occupancy in [0, 1]."""
    pic = Image.fromarray(mask.astype(np.float32), mode="F")
    return np.asarray(pic.resize((GRID, GRID), Image.BOX), np.float32)


def _box(mask: np.ndarray) -> tuple[slice, slice]:
    """The bounding box of a non-empty mask, as (rows, columns) slices."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _crop(mask: np.ndarray) -> np.ndarray:
    return mask[_box(mask)]


@lru_cache(maxsize=None)
def shape_templates() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The template bank, built once per process: (templates [N, GRID * GRID], index into SHAPES [N],
    squared norms [N]), read-only. Blurring the coverage map is the same as blurring the image (the image is linear in coverage)."""
    masks, names = [], []
    for k, shape in enumerate(SHAPES):
        for size in range(MIN_OBJECT, MAX_OBJECT + 1):
            for dx, dy in itertools.product(TEMPLATE_OFFSETS, TEMPLATE_OFFSETS):
                cover = draw_coverage(shape, 16 + dx, 16 + dy, size, canvas=TEMPLATE_CANVAS)
                for sigma in TEMPLATE_BLURS:
                    blurred = ndimage.gaussian_filter(cover, sigma) if sigma else cover
                    masks.append(_resample(_crop(blurred >= MIN_COVERAGE)))
                    names.append(k)
    templates, index = np.stack(masks).reshape(len(masks), -1), np.asarray(names)
    sq_norms = (templates**2).sum(axis=1)
    for array in (templates, index, sq_norms):
        array.setflags(write=False)
    return templates, index, sq_norms


def classify_shape(mask: np.ndarray) -> tuple[str | None, float]:
    """(shape or None, distance to the nearest template) of a bounding-box-cropped binary mask.
    The distance is the mean squared difference of the GRID x GRID occupancies (a matrix product)."""
    templates, index, sq_norms = shape_templates()
    v = _resample(mask).reshape(-1)
    rows, cols = mask.shape
    diff = (sq_norms + v @ v - 2.0 * (templates @ v)) / v.size
    best = int(diff.argmin())
    known = diff[best] <= MAX_SHAPE_DISTANCE and max(rows, cols) <= MAX_ASPECT * min(rows, cols)
    return (SHAPES[index[best]] if known else None), max(float(diff[best]), 0.0)


def _contrast(diff: np.ndarray) -> np.ndarray:
    """Per pixel of diff = image - background: RGB distance from the background after a 3x3 mean,
    whatever the colour."""
    mean = ndimage.uniform_filter(diff, size=(3, 3, 1))
    return np.sqrt((mean**2).sum(axis=-1))


def _solid(contrast: np.ndarray) -> np.ndarray:
    """Pixels at least half as contrasted as the strongest pixel within PEAK_REACH px (and not faint):
    an object's half-contrast silhouette, whatever its colour or contrast."""
    peak = ndimage.maximum_filter(contrast, size=2 * PEAK_REACH + 1)
    return (contrast >= FG_CONTRAST / 2) & (contrast >= peak / 2)


def _components(mask: np.ndarray, min_area: float, clear: np.ndarray | None = None) -> list[np.ndarray]:
    """The 8-connected components of a mask, as full-frame masks, that hold at least min_area pixels
    (counting only the `clear` pixels when given)."""
    if not mask.any():  # most images hold a few of the six colours
        return []
    comps, _ = ndimage.label(mask, structure=EIGHT_CONNECTED)
    counted = comps if clear is None else np.where(clear, comps, 0)
    areas = np.bincount(counted.ravel(), minlength=comps.max() + 1)
    return [comps == idx for idx in np.flatnonzero(areas[1:] >= min_area) + 1]


def _parts(img: np.ndarray, bg: np.ndarray, min_area: float):
    """[(mask, index into COLOURS or None)] and the contrast map: steps 2 and 3 of the module docstring."""
    diff = img.astype(np.float32) - bg.astype(np.float32)
    labels = colour_labels(diff, bg)
    parts = [(mask, k) for k in range(len(COLOURS)) for mask in _components(labels == k, min_area)]
    palette = np.zeros(labels.shape, bool)
    for mask, _ in parts:
        palette |= mask
    contrast = _contrast(diff)
    explained = ndimage.maximum_filter(palette, size=2 * EXPLAIN_RADIUS + 1)  # grown by EXPLAIN_RADIUS px
    clear = (contrast >= FG_CONTRAST) & ~explained
    if clear.any():  # most renders hold palette parts only
        parts += [(mask, None) for mask in _components(_solid(contrast) & ~explained, min_area, clear)]
    return parts, contrast


def _groups(parts, shape) -> list[tuple[list, np.ndarray | None]]:
    """The parts in groups that touch (step 4), each with the region its parts span grown by
    TOUCH_GAP / 2 px (None for a lone part)."""
    if len(parts) < 2:
        return [([part], None) for part in parts]
    occupied = np.zeros(shape, bool)
    for mask, _ in parts:
        occupied |= mask
    # Growing every part by half the gap joins the parts at most TOUCH_GAP px apart.
    touching, _ = ndimage.label(ndimage.maximum_filter(occupied, size=TOUCH_GAP + 1), structure=EIGHT_CONNECTED)
    groups = {}
    for mask, k in parts:
        groups.setdefault(int(touching[mask][0]), []).append((mask, k))
    return [(members, touching == label if len(members) > 1 else None) for label, members in groups.items()]


def _shape(mask: np.ndarray, min_side: float) -> tuple[str | None, float]:
    crop = _crop(mask)
    shape, dist = classify_shape(crop)
    return (shape if max(crop.shape) >= min_side else None), dist


def _apart(members, min_side: float):
    """[(shape, distance)] of a group of touching parts [(mask, colour index or None)] if they are
    separate objects: a lone part, or palette parts that all have a known shape (touching objects of
    different colours). None if they are pieces of one object."""
    if len(members) > 1 and any(k is None for _, k in members):
        return None
    shapes = [_shape(mask, min_side) for mask, _ in members]
    if len(members) > 1 and any(shape is None for shape, _ in shapes):
        return None
    return shapes


def _colour(img: np.ndarray, mask: np.ndarray, k: int | None) -> str | None:
    """The palette colour k if the part's interior has it (step 6), else None."""
    if k is None:
        return None
    box = _box(mask)
    part = mask[box]
    core = ndimage.binary_erosion(part, EIGHT_CONNECTED)  # the border counts as outside
    median = np.median(img[box][core if core.any() else part].astype(np.float32), axis=0)
    close = np.linalg.norm(median - np.asarray(PALETTE[COLOURS[k]], np.float32)) <= MAX_COLOUR_ERROR
    return COLOURS[k] if close else None


def _detection(mask, shape, dist, colour, scale) -> Detection:
    rows, cols = _box(mask)
    y0, y1, x0, x1 = rows.start, rows.stop, cols.start, cols.stop
    return Detection(shape, colour, (x0 + x1) / 2 * scale[0], (y0 + y1) / 2 * scale[1],
                     (x1 - x0) * scale[0], (y1 - y0) * scale[1], int(mask.sum()), dist)


def detect(image) -> tuple[Detection, ...]:
    """All objects in the image, top to bottom, then left to right (see the module docstring)."""
    img = to_rgb_array(image)
    h, w = img.shape[:2]
    scale = 64.0 / w, 64.0 / h  # report positions and sizes in the 64x64 frame
    min_area = MIN_AREA * (h * w) / 64**2
    min_side = MIN_SHAPE_SIDE * np.sqrt(h * w) / 64
    bg = _background(img)
    parts, contrast = _parts(img, bg, min_area)
    found = []
    for members, region in _groups(parts, (h, w)):
        shapes = _apart(members, min_side)
        if shapes is not None:
            found += [_detection(mask, shape, dist, _colour(img, mask, k), scale)
                      for (mask, k), (shape, dist) in zip(members, shapes)]
        else:
            pieces = np.zeros((h, w), bool)
            for mask, _ in members:
                pieces |= mask
            whole = region & (_solid(contrast) | pieces)
            found.append(_detection(whole, *_shape(whole, min_side), None, scale))
    return tuple(sorted(found, key=lambda d: (d.y, d.x)))


def relation_holds(a: Detection, rel: str, b: Detection) -> bool:
    """Is `a` `rel` `b` (e.g. a left of b)? See the module docstring for the rule."""
    dx, dy = b.x - a.x, b.y - a.y
    along, across, extent = {"left of": (dx, dy, a.w + b.w), "right of": (-dx, dy, a.w + b.w),
                             "above": (dy, dx, a.h + b.h), "below": (-dy, dx, a.h + b.h)}[rel]
    return along > POSITION_MARGIN * extent and along > abs(across)


def _is(det: Detection, spec) -> bool:
    """Is the detection the spec's object (known shape and, if named, colour)?"""
    return det.shape == spec.shape and (spec.colour is None or det.colour == spec.colour)


def _could_be(det: Detection, spec) -> bool:
    """Could the detection be the spec's object, reading an unknown shape or colour as any?"""
    return (det.shape in (spec.shape, None)
            and (spec.colour is None or det.colour in (spec.colour, None)))


def _score(prompt: Prompt, dets) -> tuple[bool, str, list, list]:
    found = [[d for d in dets if _is(d, spec)] for spec in prompt.objects]
    possible = [[d for d in dets if _could_be(d, spec)] for spec in prompt.objects]
    exact = prompt.category == "counting"
    for spec, group, maybe in zip(prompt.objects, found, possible):
        if len(group) < spec.count or (exact and len(maybe) > spec.count):
            unsure = len(maybe) - len(group) if exact else 0
            more = f" and {unsure} more that could be one" if unsure else ""
            return False, (f"expected {'exactly ' if exact else ''}{spec.count} {spec.words()}, "
                           f"found {len(group)}{more}"), found, possible
    if prompt.relation is not None:
        i, rel, j = prompt.relation
        for a in possible[i]:
            for b in possible[j]:
                # an unknown blob may be either object but not both at once, and two merely possible
                # detections say nothing about where the named objects are
                if a is b or (a not in found[i] and b not in found[j]):
                    continue
                if not relation_holds(a, rel, b):
                    return False, (f"{prompt.objects[i].words()} at ({a.x:.1f}, {a.y:.1f}) is not {rel} "
                                   f"{prompt.objects[j].words()} at ({b.x:.1f}, {b.y:.1f})"), found, possible
    return True, "ok", found, possible


def evaluate(image, prompt: Prompt) -> EvalResult:
    """Score one image against one prompt; details hold the reason, the detections, and per object
    how many detections are it (found) and could be it (possible)."""
    dets = detect(image)
    correct, reason, found, possible = _score(prompt, dets)
    return EvalResult(correct, prompt.category,
                      {"reason": reason, "found": [len(g) for g in found],
                       "possible": [len(g) for g in possible], "detections": dets})


def evaluate_batch(images, prompts) -> list[EvalResult]:
    """images: a sequence (or a [B, H, W, 3] / [B, 3, H, W] array or tensor) aligned with prompts."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images for {len(prompts)} prompts")
    return [evaluate(image, prompt) for image, prompt in zip(images, prompts)]


def aggregate(results) -> dict:
    """GenEval's summary: accuracy per category, `overall` = mean of the category accuracies (categories
    without results are left out), plus the plain fraction of correct images and the counts."""
    per_category, counts = {}, {}
    for category in CATEGORIES:
        hits = [r.correct for r in results if r.category == category]
        if hits:
            per_category[category] = float(np.mean(hits))
            counts[category] = len(hits)
    overall = float(np.mean(list(per_category.values()))) if per_category else float("nan")
    images = float(np.mean([r.correct for r in results])) if results else float("nan")
    return {"per_category": per_category, "overall": overall, "image_accuracy": images, "n": counts}
