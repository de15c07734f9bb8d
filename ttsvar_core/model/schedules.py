"""Scale schedules (aspect-ratio templates x pixel budgets) and 2-D RoPE positions."""
from __future__ import annotations

import math

import torch

# 13 scales (h, w) of the 1M schedule of each template with h/w >= 1; the reciprocal ratios are transposes.
_TALL_1M: dict[str, list[tuple[int, int]]] = {
    "1.0": [(1, 1), (2, 2), (4, 4), (6, 6), (8, 8), (12, 12), (16, 16), (20, 20), (24, 24), (32, 32), (40, 40),
            (48, 48), (64, 64)],
    "1.25": [(1, 1), (2, 2), (3, 3), (5, 4), (10, 8), (15, 12), (20, 16), (25, 20), (30, 24), (35, 28), (45, 36),
             (55, 44), (70, 56)],
    "1.333": [(1, 1), (2, 2), (4, 3), (8, 6), (12, 9), (16, 12), (20, 15), (24, 18), (28, 21), (36, 27), (48, 36),
              (60, 45), (72, 54)],
    "1.5": [(1, 1), (2, 2), (3, 2), (6, 4), (9, 6), (15, 10), (21, 14), (27, 18), (33, 22), (39, 26), (48, 32),
            (63, 42), (78, 52)],
    "1.75": [(1, 1), (2, 2), (3, 3), (7, 4), (11, 6), (14, 8), (21, 12), (28, 16), (35, 20), (42, 24), (56, 32),
             (70, 40), (84, 48)],
    "2.0": [(1, 1), (2, 2), (4, 2), (6, 3), (10, 5), (16, 8), (22, 11), (30, 15), (38, 19), (46, 23), (60, 30),
            (74, 37), (90, 45)],
    "2.5": [(1, 1), (2, 2), (5, 2), (10, 4), (15, 6), (20, 8), (25, 10), (30, 12), (40, 16), (50, 20), (65, 26),
            (80, 32), (100, 40)],
    "3.0": [(1, 1), (2, 2), (6, 2), (9, 3), (15, 5), (21, 7), (27, 9), (36, 12), (45, 15), (54, 18), (72, 24),
            (90, 30), (111, 37)],
}
_RECIPROCAL = {"1.25": "0.8", "1.333": "0.75", "1.5": "0.666", "1.75": "0.571", "2.0": "0.5", "2.5": "0.4",
               "3.0": "0.333"}

# template order matters: ties snap to the first listed, as in the official code
ASPECT_RATIOS: tuple[str, ...] = ("1.0", "1.25", "0.8", "1.333", "0.75", "1.5", "0.666", "1.75", "0.571", "2.0",
                                  "0.5", "2.5", "0.4", "3.0", "0.333")
PIXEL_BUDGETS: dict[str, int] = {"0.06M": 7, "0.25M": 10, "0.60M": 12, "1M": 13}
PIXELS_PER_TOKEN = 16  # true for both released models (8B: 2x patchify x f8 VAE)
# The official RoPE table has 128 positions per side (2048 px / 16); the released models never saw more.
MAX_GRID_SIDE = 128


def _schedule_1m(ratio: str) -> list[tuple[int, int]]:
    if ratio in _TALL_1M:
        return list(_TALL_1M[ratio])
    tall = next(k for k, v in _RECIPROCAL.items() if v == ratio)
    return [(w, h) for h, w in _TALL_1M[tall]]


SCHEDULES_1M: dict[str, list[tuple[int, int]]] = {r: _schedule_1m(r) for r in ASPECT_RATIOS}


def snap_aspect_ratio(h_div_w: float) -> str:
    """The official snapping: nearest template by absolute difference, first on ties."""
    if not 0 < h_div_w < math.inf:
        raise ValueError(f"the aspect ratio h/w must be a positive finite number (e.g. 1.0, 0.75), got {h_div_w}")
    return min(ASPECT_RATIOS, key=lambda r: abs(float(r) - h_div_w))


def get_schedule(h_div_w: float | str = 1.0, pixel_budget: str = "1M") -> list[tuple[int, int]]:
    """Transformer scale schedule [(h, w), ...] for an aspect ratio and pixel budget."""
    if pixel_budget not in PIXEL_BUDGETS:
        raise ValueError(f"unknown pixel budget {pixel_budget!r}; choose one of {list(PIXEL_BUDGETS)}")
    ratio = h_div_w if isinstance(h_div_w, str) and h_div_w in SCHEDULES_1M else snap_aspect_ratio(float(h_div_w))
    return SCHEDULES_1M[ratio][: PIXEL_BUDGETS[pixel_budget]]


def image_size(schedule: list[tuple[int, int]]) -> tuple[int, int]:
    """Output pixel size (H, W) of a schedule."""
    h, w = schedule[-1]
    return h * PIXELS_PER_TOKEN, w * PIXELS_PER_TOKEN


def validate_schedule(schedule, num_levels: int | None = None) -> list[tuple[int, int]]:
    """The schedule as (h, w) token grids, checked against what the network can run: `num_levels` is the
    model's number of scale embeddings (its `cfg.num_levels`); without it only model-free rules apply."""
    out = []
    for i, hw in enumerate(schedule):
        if len(hw) == 3:  # official (t, h, w) tuples; inference uses t = 1
            hw = hw[1:]
        h, w = int(hw[0]), int(hw[1])
        if h < 1 or w < 1:
            raise ValueError(f"scale {i} has size {h}x{w}; every scale needs at least 1x1 tokens")
        if not out and (h, w) != (1, 1):
            raise ValueError(f"the first scale is {h}x{w}, but it must be 1x1: every image starts from one "
                             "token, the pooled prompt; write 1x1 first, e.g. 1x1,2x2,4x4")
        if out and (h < out[-1][0] or w < out[-1][1]):
            raise ValueError(f"scale {i} ({h}x{w}) is smaller than scale {i - 1} ({out[-1][0]}x{out[-1][1]});"
                             " scales must grow coarse to fine")
        if max(h, w) > MAX_GRID_SIDE:
            raise ValueError(f"scale {i} is {h}x{w} tokens, larger than the {MAX_GRID_SIDE}x{MAX_GRID_SIDE} grid "
                             f"the position table covers ({MAX_GRID_SIDE * PIXELS_PER_TOKEN} px); use a smaller "
                             "last scale (the 1M schedules end at 64x64 for 1:1)")
        out.append((h, w))
    if not out:
        raise ValueError("a schedule needs at least one scale")
    if num_levels is not None and len(out) > num_levels:
        raise ValueError(f"the schedule has {len(out)} scales but the model has scale embeddings for {num_levels}: "
                         f"use at most {num_levels} scales")
    return out


def rope_final_grid(schedule: list[tuple[int, int]]) -> tuple[int, int]:
    """The grid RoPE positions are normalised to: the 1M final scale of the official schedule this one
    is a prefix of, else (custom schedule) its own last scale."""
    for ratio in ASPECT_RATIOS:
        full = SCHEDULES_1M[ratio]
        if len(schedule) <= len(full) and full[: len(schedule)] == list(schedule):
            return full[-1]
    return tuple(schedule[-1])


def rope_positions(schedule: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column RoPE indices of every token of the schedule (mode 2): int64 [L_total] each."""
    final_h, final_w = rope_final_grid(schedule)
    rows, cols = [], []
    for h, w in schedule:
        # float32 product then half-to-even rounding, as the reference tabulates them
        r = (torch.arange(h, dtype=torch.float32) * torch.tensor(final_h / h, dtype=torch.float32)).round().long()
        c = (torch.arange(w, dtype=torch.float32) * torch.tensor(final_w / w, dtype=torch.float32)).round().long()
        rows.append(r[:, None].expand(h, w).reshape(-1))
        cols.append(c[None, :].expand(h, w).reshape(-1))
    return torch.cat(rows), torch.cat(cols)


def rope_cos_sin(schedule: list[tuple[int, int]], head_dim: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables [L_total, head_dim // 2] in float32: the first half of each row encodes the row
    position, the second half the column, one angle per adjacent pair of a head vector."""
    half = head_dim // 2
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, half, 2, dtype=torch.int64).float() / half))
    rows, cols = rope_positions(schedule)
    size = int(max(rows.max(), cols.max())) + 1
    # angles of a whole integer grid, then gathered: the same float32 values the reference tabulates
    grid = torch.outer(torch.arange(max(size, MAX_GRID_SIDE), dtype=torch.float32), inv_freq)
    angles = torch.cat([grid[rows], grid[cols]], dim=-1)
    return angles.cos().to(device), angles.sin().to(device)
