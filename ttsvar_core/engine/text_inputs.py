"""Values users type as text (node widgets, command-line flags): lists of numbers and token grids.

Each parser raises ValueError with a message that says what is wrong and how to write it instead.
"""
from __future__ import annotations

from ..model.schedules import validate_schedule
from ..model.text import check_text


def check_prompt(text: str, what: str = "the prompt") -> str:
    """A prompt a search can use: not blank, and text the tokenizer can take."""
    check_text(text, what)
    if not text.strip():
        raise ValueError(f"{what} is empty: type what the image should show")
    return text


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """'8,8,6' -> (8, 8, 6); '' -> ()."""
    try:
        return tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a list of whole numbers; write them separated by commas, "
                         "e.g. 8,8,6") from None


def parse_floats(text: str, what: str) -> float | tuple[float, ...]:
    """'3' -> 3.0 (one value for every scale); '1,3,3' -> (1.0, 3.0, 3.0) (one per scale)."""
    try:
        values = tuple(float(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a number or a comma-separated list of numbers, "
                         "e.g. 3 or 1,3,3") from None
    if not values:
        raise ValueError(f"{what}: give a number, or one per scale separated by commas")
    return values[0] if len(values) == 1 else values


def parse_scales(text: str | None) -> tuple[tuple[int, int], ...] | None:
    """'1x1,2x2,4x3' or '1,2,4' -> ((1, 1), (2, 2), (4, 3)); empty -> None (use the pixel budget)."""
    if text is None or not text.strip():
        return None
    scales = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        sides = part.lower().split("x")
        try:
            hw = [int(s) for s in sides]
        except ValueError:
            raise ValueError(f"custom scales: {part!r} is not a token grid; write HxW (e.g. 4x4) or one "
                             "number per scale, separated by commas") from None
        if len(hw) not in (1, 2):
            raise ValueError(f"custom scales: {part!r} has {len(hw)} sides; write HxW, e.g. 4x3")
        scales.append((hw[0], hw[-1]))
    try:
        return tuple(validate_schedule(scales))
    except ValueError as e:
        raise ValueError(f"custom scales: {e}") from None
