"""Exact evaluator of ShapesWorld: parse an image into objects, score it against a prompt's spec.

Detection (see detect()):
  1. The background colour is the median of the image's 2-pixel border.
  2. A rendered pixel is background + a * (colour - background), a = how much of it a shape covers. For
     every palette colour we recover a by projecting (pixel - background) on (colour - background), and
     measure how far the pixel lies off that line. A pixel belongs to the colour whose line is nearest,
     among those with a >= 0.5 and off-line distance <= MAX_OFF_LINE. So every colour's mask is the
     half-coverage level set of its shapes, whatever the colour, blur or contrast, and blended edge
     pixels never form halos of a wrong colour.
  3. 8-connected components per colour; components under MIN_AREA pixels (at 64x64, scaled with the
     image area) are noise and dropped.
  4. Shape: the component's mask, cropped to its bounding box and resampled to GRID x GRID, is compared
     (mean squared difference) with a bank of templates: every shape drawn at every size 14..24, at
     four sub-pixel offsets, sharp and Gaussian-blurred (sigma 0.7, 1.0, 1.4), thresholded at half
     coverage like the images. The nearest template names the shape unless it is farther than
     MAX_SHAPE_DISTANCE, or its box is more than MAX_ASPECT times longer one way: then the blob is an
     unknown shape, which matches no object of a prompt (it is still listed in the details).
  The position of an object is the centre of its bounding box (as GenEval's boxes).

Scoring rules (as GenEval's, with "found" meaning detections of the named shape and, if the spec names
one, colour):
  single_object, two_object, colors, color_attr: each named object found at least once. Other objects
      in the image do not matter.
  counting: exactly `count` found objects (the shape in any colour, as our counting prompts name no
      colour); objects of other shapes do not matter.
  position: both objects found, and the relation holds for every pair (subject, reference) of found
      objects, so a duplicate on the wrong side fails it.
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
MIN_AREA = 30                # px at 64x64; the smallest object (a 14 px star) covers ~84 px
GRID = 16                    # side of the resampled mask compared with the shape templates
MAX_SHAPE_DISTANCE = 0.2     # mean (mask - template)^2 beyond which a blob is no known shape
MAX_ASPECT = 1.5             # all shapes have square boxes; a blob twice as wide (two merged shapes,
                             # a smear) is no known shape, though it would match one once resampled
TEMPLATE_BLURS = (0.0, 0.7, 1.0, 1.4)
TEMPLATE_OFFSETS = (0.0, 0.5)
POSITION_MARGIN = 0.1        # GenEval's POSITION_THRESHOLD
BORDER = 2                   # px of border whose median colour is taken as the background
TEMPLATE_CANVAS = 32         # room for the largest shape plus its blur
EIGHT_CONNECTED = np.ones((3, 3), bool)


@dataclass(frozen=True)
class Detection:
    shape: str | None   # None: a blob that matches no shape template
    colour: str
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


def colour_labels(img: np.ndarray) -> np.ndarray:
    """Per pixel: index into COLOURS of the shape colour covering at least half of it, or -1."""
    bg = _background(img).astype(np.float32)
    diff = img.astype(np.float32) - bg
    lines = np.asarray([PALETTE[c] for c in COLOURS], np.float32) - bg
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


def _crop(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


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


def detect(image) -> tuple[Detection, ...]:
    """All objects in the image, in a fixed order (by colour, then scan order)."""
    img = to_rgb_array(image)
    h, w = img.shape[:2]
    scale = 64.0 / w, 64.0 / h  # report positions and sizes in the 64x64 frame
    min_area = MIN_AREA * (h * w) / 64**2
    labels = colour_labels(img)
    found = []
    for k, colour in enumerate(COLOURS):
        comps, _ = ndimage.label(labels == k, structure=EIGHT_CONNECTED)
        for idx, box in enumerate(ndimage.find_objects(comps), start=1):
            mask = comps[box] == idx
            area = int(mask.sum())
            if area < min_area:
                continue
            shape, dist = classify_shape(mask)
            ys, xs = box
            found.append(Detection(shape, colour, (xs.start + xs.stop) / 2 * scale[0],
                                   (ys.start + ys.stop) / 2 * scale[1], (xs.stop - xs.start) * scale[0],
                                   (ys.stop - ys.start) * scale[1], area, dist))
    return tuple(found)


def relation_holds(a: Detection, rel: str, b: Detection) -> bool:
    """Is `a` `rel` `b` (e.g. a left of b)? See the module docstring for the rule."""
    dx, dy = b.x - a.x, b.y - a.y
    along, across, extent = {"left of": (dx, dy, a.w + b.w), "right of": (-dx, dy, a.w + b.w),
                             "above": (dy, dx, a.h + b.h), "below": (-dy, dx, a.h + b.h)}[rel]
    return along > POSITION_MARGIN * extent and along > abs(across)


def _matches(det: Detection, spec) -> bool:
    return det.shape == spec.shape and (spec.colour is None or det.colour == spec.colour)


def _score(prompt: Prompt, dets) -> tuple[bool, str, list]:
    groups = [[d for d in dets if _matches(d, spec)] for spec in prompt.objects]
    for spec, group in zip(prompt.objects, groups):
        if prompt.category == "counting" and len(group) != spec.count:
            return False, f"expected exactly {spec.count} {spec.words()}, found {len(group)}", groups
        if len(group) < spec.count:
            return False, f"expected {spec.count} {spec.words()}, found {len(group)}", groups
    if prompt.relation is not None:
        i, rel, j = prompt.relation
        for a in groups[i]:
            for b in groups[j]:
                if not relation_holds(a, rel, b):
                    return False, (f"{prompt.objects[i].words()} at ({a.x:.1f}, {a.y:.1f}) is not {rel} "
                                   f"{prompt.objects[j].words()} at ({b.x:.1f}, {b.y:.1f})"), groups
    return True, "ok", groups


def evaluate(image, prompt: Prompt) -> EvalResult:
    """Score one image against one prompt; details hold the reason, detections and per-object counts."""
    dets = detect(image)
    correct, reason, groups = _score(prompt, dets)
    return EvalResult(correct, prompt.category,
                      {"reason": reason, "found": [len(g) for g in groups], "detections": dets})


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
