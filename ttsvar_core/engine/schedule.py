"""Batch schedules: how many candidates live after each scale, and where the search narrows them.

`sizes[si]` is the number of live candidates once scale si has been generated and its selection (if any)
has run; scale si is generated with `sizes[si - 1]` candidates (scale 0 with `sizes[0]`). Sizes may change
only at a clustering or resampling scale, so every entry is followed exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

POTENTIALS = ("value", "diff", "max", "sum")
FEATURE_MODES = ("pca", "pool", "global")
SELECTION_RESOLUTIONS = ("fixed", "scale")

PAPER_BASE_SIZES = (8, 8, 6, 6, 6, 4, 2, 2, 2, 1, 1, 1, 1)
DEFAULT_SELECTION_SIDE = 448
# The most candidates one prompt may have at any scale: a bound on mistakes (N = 10000 would run for minutes
# before failing), far above what fits in memory at the released models' sizes.
MAX_CANDIDATES_PER_PROMPT = 256


@dataclass(frozen=True)
class DecodePolicy:
    """The size at which selections decode candidates for the reward and feature models: the one rule the
    all-in-one search and the node-by-node selections follow (so a selection reuses a preview's decode).

    "fixed": every selection decodes at `side` px (None: full size, as the reference). Reward and feature
    models look at 224 px, so 448 keeps detail for them at a fifth of a 1024 px decode. "scale": a selection
    after scale k decodes the sums at scale k's own token grid (one latent cell per token, at most `side`):
    the sums hold no finer detail than that grid yet, and early selections then cost a small fraction of a
    full decode. It selects worse on ShapesWorld (picked reward 0.03 lower, docs/shapesworld_results.md),
    hence not the default."""

    side: int | None = DEFAULT_SELECTION_SIDE
    resolution: str = "fixed"

    def side_at(self, si: int, image_schedule, pixels_per_token: int) -> int | None:
        """Image side (px) at which a selection after scale `si` decodes (None: full size)."""
        if self.resolution == "scale":
            side = max(image_schedule[si]) * pixels_per_token
            return side if self.side is None else min(side, self.side)
        return self.side

    @staticmethod
    def chunk(side: int | None, full_side: int, final_images: int) -> int:
        """How many candidates a selection decodes at once: no more decoder memory than the final decode
        (`final_images` full-size images at once), scaled by the pixel area saved by decoding smaller."""
        side = min(side or full_side, full_side)
        return max(1, int(final_images * (full_side / side) ** 2))


@dataclass(frozen=True)
class BatchSchedule:
    base_sizes: tuple[int, ...] = PAPER_BASE_SIZES
    multiplier: int = 1                      # N: every size is multiplied by it
    cluster_scales: tuple[int, ...] = (2, 5)
    resample_scales: tuple[int, ...] = (6, 9)
    potential: str = "value"
    lam: float = 10.0                        # temperature lambda of the resampling weights exp(lambda * potential)
    feature_mode: str = "pca"
    final: str = "best"                      # "best": argmax of the final reward; "sample": importance sampling
    score_final: bool = True
    # selection decodes: see DecodePolicy
    selection_side: int | None = DEFAULT_SELECTION_SIDE
    selection_resolution: str = "fixed"

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(b * self.multiplier for b in self.base_sizes)

    @property
    def num_scales(self) -> int:
        return len(self.base_sizes)

    @property
    def decode_policy(self) -> DecodePolicy:
        return DecodePolicy(self.selection_side, self.selection_resolution)

    def needs(self) -> tuple[bool, bool]:
        """(needs a reward model, needs a feature extractor)"""
        clusters = any(self.selection_at(s) for s in self.cluster_scales)
        reward = bool(self.resample_scales) or (self.score_final and self.final != "none")
        return reward, clusters

    def event(self, si: int) -> str | None:
        if si in self.cluster_scales:
            return "cluster"
        if si in self.resample_scales:
            return "resample"
        return None

    def selection_at(self, si: int) -> str | None:
        """The selection that runs after scale si: every resampling, and a clustering that narrows the batch
        (one that keeps every candidate changes nothing and is skipped)."""
        event = self.event(si)
        if event == "cluster" and not self.sizes[si] < self.sizes[max(si - 1, 0)]:
            return None
        return event

    def cache_room(self, si: int, num_scales: int) -> int:
        """Scales of KV-cache room the batch needs after scale si (-1: at the start): only until the next
        selection replaces its cache."""
        return next((e + 1 for e in range(si + 1, num_scales) if self.selection_at(e)), num_scales)

    def validate(self, model_scales: int | None = None) -> "BatchSchedule":
        sizes = self.sizes
        if self.multiplier < 1:
            raise ValueError(f"N (the size multiplier) must be >= 1, got {self.multiplier}")
        if any(s < 1 for s in sizes):
            raise ValueError(f"every batch size must be >= 1, got {list(sizes)}: a size of 0 would leave no "
                             "candidate to continue")
        if max(sizes) > MAX_CANDIDATES_PER_PROMPT:
            most = max(self.base_sizes)
            raise ValueError(f"N = {self.multiplier} gives {max(sizes)} candidates per prompt (N x {most}), more "
                             f"than the {MAX_CANDIDATES_PER_PROMPT} allowed: use N <= "
                             f"{max(1, MAX_CANDIDATES_PER_PROMPT // most)} with this schedule")
        if model_scales is not None and self.num_scales != model_scales:
            raise ValueError(f"the batch schedule has {self.num_scales} entries but the image schedule has "
                             f"{model_scales} scales: use BatchSchedule.rescaled({model_scales}) or edit the sizes")
        both = set(self.cluster_scales) & set(self.resample_scales)
        if both:
            raise ValueError(f"scale(s) {sorted(both)} are both clustering and resampling scales")
        for si in list(self.cluster_scales) + list(self.resample_scales):
            if not 0 <= si < self.num_scales:
                raise ValueError(f"selection scale {si} is out of range 0..{self.num_scales - 1}")
        if not 0 <= self.lam < math.inf:
            raise ValueError(f"lambda (the resampling temperature) must be a finite number >= 0, got {self.lam}")
        if self.potential not in POTENTIALS:
            raise ValueError(f"unknown potential {self.potential!r}; choose one of {POTENTIALS}")
        if self.feature_mode not in FEATURE_MODES:
            raise ValueError(f"unknown feature mode {self.feature_mode!r}; choose one of {FEATURE_MODES}")
        if self.selection_side is not None and self.selection_side < 16:
            raise ValueError(f"selection_side must be at least 16 px (or None for full size), got {self.selection_side}")
        if self.selection_resolution not in SELECTION_RESOLUTIONS:
            raise ValueError(f"unknown selection_resolution {self.selection_resolution!r}; choose one of "
                             f"{SELECTION_RESOLUTIONS}")
        if self.final not in ("best", "sample", "none"):
            raise ValueError("final must be 'best', 'sample' or 'none'")
        live = sizes[0]
        for si, size in enumerate(sizes):
            event = self.event(si)
            if event is None and size != live:
                raise ValueError(f"the size changes from {live} to {size} after scale {si}, which is not a "
                                 "clustering or resampling scale; add it to one of them or keep the size")
            if event == "cluster" and size > live:
                raise ValueError(f"clustering after scale {si} must not grow the batch ({live} -> {size}): "
                                 "clustering keeps one candidate per cluster")
            live = size
        return self

    def rescaled(self, num_scales: int) -> "BatchSchedule":
        """The same schedule for another number of scales: each selection scale moves proportionally and
        keeps the size it produced; selections that would land on one scale are spread to the next ones."""
        events, last = {}, -1
        for si in sorted(self.cluster_scales + self.resample_scales):
            j = max(round(si * (num_scales - 1) / max(self.num_scales - 1, 1)), last + 1)
            if j >= num_scales:
                break
            events[j], last = (self.event(si), self.base_sizes[si]), j
        base, live = [], self.base_sizes[0]
        for j in range(num_scales):
            live = events[j][1] if j in events else live
            base.append(live)
        clusters = tuple(j for j, (kind, _) in sorted(events.items()) if kind == "cluster")
        resamples = tuple(j for j, (kind, _) in sorted(events.items()) if kind == "resample")
        return replace(self, base_sizes=tuple(base), cluster_scales=clusters, resample_scales=resamples)


def preset(name: str, n: int = 1, num_scales: int | None = None) -> BatchSchedule:
    """Named schedules: the paper's TTS-VAR settings and the baselines, with N as multiplier."""
    scales = num_scales or 13
    if name == "tts-var-2b":
        sched = BatchSchedule(multiplier=n)
    elif name == "tts-var-8b":
        # the 8B release at 512 px (0.25M) has 10 scales: the 2B shape, rescaled
        sched = BatchSchedule(multiplier=n).rescaled(10)
    elif name in ("bon", "best-of-n"):
        sched = BatchSchedule(base_sizes=(1,) * scales, multiplier=n, cluster_scales=(), resample_scales=())
    elif name in ("is", "importance-sampling"):
        sched = BatchSchedule(base_sizes=(1,) * scales, multiplier=n, cluster_scales=(), resample_scales=(),
                              final="sample")
    elif name in ("raw", "plain"):
        sched = BatchSchedule(base_sizes=(1,) * scales, multiplier=n, cluster_scales=(), resample_scales=(),
                              final="none", score_final=False)
    else:
        raise ValueError(f"unknown schedule preset {name!r}; choose tts-var-2b, tts-var-8b, bon, is or raw")
    if num_scales is not None and sched.num_scales != num_scales:
        sched = sched.rescaled(num_scales)
    return sched.validate()


PRESET_NAMES = ("tts-var-2b", "tts-var-8b", "bon", "is", "raw")
