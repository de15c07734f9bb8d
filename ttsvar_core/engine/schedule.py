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

FAST_SELECTION_SIDE = 448  # the faster named decodes: reward and feature models look at 224 px
# The most candidates one prompt may have at any scale: a bound on mistakes (N = 10000 would run for minutes
# before failing), far above what fits in memory at the released models' sizes.
MAX_CANDIDATES_PER_PROMPT = 256


@dataclass(frozen=True)
class DecodePolicy:
    """The size at which selections decode candidates for the reward and feature models: the one rule the
    all-in-one search and the node-by-node selections follow (so a selection reuses a preview's decode).

    "fixed": every selection decodes at `side` px (None: full size, as the paper's code). "scale": a
    selection after scale k decodes the sums at scale k's own token grid (one latent cell per token, at most
    `side`): the sums hold no finer detail than that grid yet. The named choices and what each was measured
    to cost are in DECODE_CHOICES."""

    side: int | None = None
    resolution: str = "fixed"
    # "scale" only: never decode below this side (px). The early scales' grids are a few cells, mostly
    # border to the decoder; a floor keeps those decodes at a size the scorers can read.
    floor: int | None = None

    def side_at(self, si: int, image_schedule, pixels_per_token: int) -> int | None:
        """Image side (px) at which a selection after scale `si` decodes (None: full size)."""
        if self.resolution == "scale":
            side = max(image_schedule[si]) * pixels_per_token
            if self.floor is not None:
                side = max(side, self.floor)
            return side if self.side is None else min(side, self.side)
        return self.side

    @staticmethod
    def chunk(side: int | None, full_side: int, final_images: int) -> int:
        """How many candidates a selection decodes at once: no more decoder memory than the final decode
        (`final_images` full-size images at once), scaled by the pixel area saved by decoding smaller."""
        side = min(side or full_side, full_side)
        return max(1, int(final_images * (full_side / side) ** 2))

    @property
    def label(self) -> str:
        """The choice's name, or its size in words for a custom side."""
        named = next((name for name, policy in DECODE_CHOICES.items() if policy == self), None)
        if named is not None:
            return named
        if self.resolution == "scale":
            bounds = [f"at least {self.floor} px"] if self.floor is not None else []
            bounds += [f"at most {self.side} px"] if self.side is not None else []
            return "each scale's token grid" + (f" ({', '.join(bounds)})" if bounds else "")
        return "full size" if self.side is None else f"{self.side} px"


# The named ways selections decode (CLI --selection-decode, the Batch Schedule node's selection_decode) and
# what each was measured to cost, quoted where the user chooses. "paper" is the default and the decode of
# every paper preset. On ShapesWorld (paired, docs/shapesworld_results.md) half-size decodes, the analog of
# 448px, selected without a significant loss and token-grid decodes lost reward; 448px on the real scorers is
# not measured, so the faster choices stay opt-in.
DECODE_CHOICES = {
    "paper": DecodePolicy(None, "fixed"),
    "448px": DecodePolicy(FAST_SELECTION_SIDE, "fixed"),
    "scale-grid": DecodePolicy(FAST_SELECTION_SIDE, "scale"),
}
DECODE_EFFECTS = {
    "paper": "every selection decodes at full size, as the paper's code: the slowest. For Infinity-2B at 1024 px "
             "the 20N selection decodes cost 197 TFLOP per N, 1.5x TTS-VAR's 129 TFLOP of transformer work "
             "(benchmarks/bench.py's FLOP floors); on the CPU benchmark TTS-VAR took 6.66 s at N = 2, 2.14x its "
             "token-pass prediction, 60% of it in selections (benchmarks/README.md).",
    "448px": "every selection decodes at 448 px (the scorers look at 224 px): 37.7 TFLOP of decodes per N for "
             "Infinity-2B at 1024 px, a fifth of full size; on an H200 selections took 20-29% of TTS-VAR's "
             "time (benchmarks/README.md). Its ShapesWorld analog (half-size decodes) lost no significant "
             "reward against full size (-0.015, 95% CI [-0.031, +0.002]; docs/shapesworld_results.md), and its CPU "
             "benchmark analog (112 of 256 px) ran TTS-VAR at 1.08-1.22x its token-pass prediction against "
             "Best-of-N at N = 1-4 (full size: 2.19-3.00x; benchmarks/README.md).",
    "scale-grid": "each selection decodes at its scale's token grid (one latent cell per token, at most 448 px): "
                  "8.6 TFLOP of decodes per N for Infinity-2B at 1024 px; on the CPU benchmark 2.99 s instead of "
                  "6.66 s at N = 2 (0.96x the token-pass prediction). It selects worse: on ShapesWorld the picked "
                  "reward drops by 0.051 (95% CI 0.034-0.068) against full-size decodes at N = 2, and by 0.042 "
                  "with a floor of a quarter of the image side (docs/shapesworld_results.md).",
}


@dataclass(frozen=True)
class PaperSchedule:
    """A batch schedule the TTS-VAR paper ran (base sizes, times N), and on what."""

    setting: str
    base_sizes: tuple[int, ...]
    cluster_scales: tuple[int, ...]
    resample_scales: tuple[int, ...]

    @property
    def num_scales(self) -> int:
        return len(self.base_sizes)


# The paper's main setting (its run.bash), and Appendix B's for the 8B at 512 px: the same selections on
# the same token grids (the 0.25M schedule is a prefix of the 1M one), the last resampling one scale
# earlier because 10 scales end at scale 9.
PAPER_2B = PaperSchedule("Infinity-2B at 1024 px (13 scales)", (8, 8, 6, 6, 6, 4, 2, 2, 2, 1, 1, 1, 1), (2, 5), (6, 9))
PAPER_8B = PaperSchedule("Infinity-8B at 512 px (10 scales)", (8, 8, 6, 6, 6, 4, 2, 2, 1, 1), (2, 5), (6, 8))
# the presets named after the paper -> (the release they are for, its paper schedule)
PAPER_PRESETS = {"tts-var-2b": ("Infinity-2B", PAPER_2B), "tts-var-8b": ("Infinity-8B", PAPER_8B)}
BASELINE_NOTES = {"bon": "Best-of-N", "is": "importance sampling", "raw": "plain sampling"}
PRESET_NAMES = tuple(PAPER_PRESETS) + tuple(BASELINE_NOTES)


@dataclass(frozen=True)
class BatchSchedule:
    base_sizes: tuple[int, ...] = PAPER_2B.base_sizes
    multiplier: int = 1                      # N: every size is multiplied by it
    cluster_scales: tuple[int, ...] = PAPER_2B.cluster_scales
    resample_scales: tuple[int, ...] = PAPER_2B.resample_scales
    potential: str = "value"
    lam: float = 10.0                        # temperature lambda of the resampling weights exp(lambda * potential)
    feature_mode: str = "pca"
    final: str = "best"                      # "best": argmax of the final reward; "sample": importance sampling
    score_final: bool = True
    # selection decodes: see DecodePolicy (the default is the paper's full size)
    selection_side: int | None = None
    selection_resolution: str = "fixed"
    selection_floor: int | None = None
    origin: str | None = None                # the preset it was built from (describe() names the changes)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(b * self.multiplier for b in self.base_sizes)

    @property
    def num_scales(self) -> int:
        return len(self.base_sizes)

    @property
    def decode_policy(self) -> DecodePolicy:
        return DecodePolicy(self.selection_side, self.selection_resolution, self.selection_floor)

    def decoding(self, policy: DecodePolicy) -> "BatchSchedule":
        """This schedule with its selections decoding by `policy` (e.g. DECODE_CHOICES["448px"])."""
        return replace(self, selection_side=policy.side, selection_resolution=policy.resolution,
                       selection_floor=policy.floor)

    def needs(self) -> tuple[bool, bool]:
        """(needs a reward model, needs a feature extractor)"""
        clusters = any(self.selection_at(s) for s in self.cluster_scales)
        reward = bool(self.resample_scales) or (self.score_final and self.final != "none")
        return reward, clusters

    def history_scales(self) -> tuple[int, ...]:
        """Scales at which the search scores every live candidate only to build the reward history that the
        diff, max and sum potentials read (the paper defines them over the generation history: diff = r_k -
        r_(k-1), max and sum over every scale so far). From the first selection up to the last resampling,
        less the resampling scales, which score anyway; after the last resampling no potential is read. None
        for value, the default, which reads the current reward only."""
        if self.potential == "value" or not self.resample_scales:
            return ()
        first = min(self.cluster_scales + self.resample_scales)
        return tuple(si for si in range(first, max(self.resample_scales)) if si not in self.resample_scales)

    def describe(self) -> str:
        """What this schedule is, in words: the preset it was built from (for a paper preset, the paper's
        setting it reproduces, or that it is not the paper's) and every value changed from that preset."""
        if self.origin is None:
            return f"custom batch schedule [N = {self.multiplier}]"
        note = f"{preset_note(self.origin, self.num_scales)} [N = {self.multiplier}]"
        base = preset(self.origin, self.multiplier, self.num_scales)
        changed = [f"{name.replace('_', ' ')} {getattr(self, name)}"
                   for name in ("base_sizes", "cluster_scales", "resample_scales", "potential", "lam",
                                "feature_mode", "final", "score_final") if getattr(self, name) != getattr(base, name)]
        if self.decode_policy != base.decode_policy:
            changed.append(f"selection decode {self.decode_policy.label!r} instead of the preset's "
                           f"{base.decode_policy.label!r}")
        return f"edited from {note}: {'; '.join(changed)}" if changed else note

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
        if self.selection_floor is not None and (self.selection_resolution != "scale" or self.selection_floor < 16):
            raise ValueError(f"selection_floor ({self.selection_floor}) bounds the scale-grid decodes from below: "
                             "give at least 16 px with selection_resolution 'scale', or None")
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
        keeps the size it produced; selections that would land on one scale are spread to the next ones.
        Not how the paper moved its schedule: rescaled(10) of the 2B schedule clusters after 2 and 4 and
        resamples after 5 and 7, where the paper's 10-scale (8B) schedule keeps 2, 5 and 6 and resamples last
        after 8; so paper presets use the paper's schedules wherever it has one (preset)."""
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


def preset_note(name: str, num_scales: int | None = None) -> str:
    """What a preset is at `num_scales` scales, in words: for a paper preset, the paper's setting it
    reproduces, or that the paper gives no schedule for that many scales and what is used instead."""
    if name in BASELINE_NOTES:
        return BASELINE_NOTES[name]
    if name not in PAPER_PRESETS:
        raise ValueError(f"unknown schedule preset {name!r}; choose one of {PRESET_NAMES}")
    release, own = PAPER_PRESETS[name]
    scales = num_scales or own.num_scales
    if scales == own.num_scales:
        return f"TTS-VAR paper: {own.setting}"
    source = paper_source(name, scales)
    if source.num_scales == scales:
        return (f"the TTS-VAR paper's {source.setting} schedule: the paper gives no {release} schedule for "
                f"{scales} scales")
    return (f"the TTS-VAR paper's {source.setting} schedule rescaled to {scales} scales: not in the paper, "
            "which gives schedules for 13 and 10 scales only")


def paper_source(name: str, num_scales: int | None = None) -> PaperSchedule:
    """The paper schedule a paper preset uses at `num_scales` scales: its release's own; else the paper's
    schedule for that many scales (the other release's); else the main one (2B), to be rescaled."""
    _, own = PAPER_PRESETS[name]
    if num_scales is None or num_scales == own.num_scales:
        return own
    return next((s for _, s in PAPER_PRESETS.values() if s.num_scales == num_scales), PAPER_2B)


def preset(name: str, n: int = 1, num_scales: int | None = None) -> BatchSchedule:
    """Named schedules: the paper's TTS-VAR settings and the baselines, with N as multiplier. A paper preset
    is exactly the paper's schedule where the paper has one for `num_scales` scales; otherwise it is the 2B
    schedule rescaled, and `describe()` (preset_note) says so."""
    scales = num_scales or 13
    if name in PAPER_PRESETS:
        source = paper_source(name, num_scales)
        sched = BatchSchedule(base_sizes=source.base_sizes, multiplier=n, cluster_scales=source.cluster_scales,
                              resample_scales=source.resample_scales)
    elif name == "bon":
        sched = BatchSchedule(base_sizes=(1,) * scales, multiplier=n, cluster_scales=(), resample_scales=())
    elif name == "is":
        sched = BatchSchedule(base_sizes=(1,) * scales, multiplier=n, cluster_scales=(), resample_scales=(),
                              final="sample")
    elif name == "raw":
        sched = BatchSchedule(base_sizes=(1,) * scales, multiplier=n, cluster_scales=(), resample_scales=(),
                              final="none", score_final=False)
    else:
        raise ValueError(f"unknown schedule preset {name!r}; choose one of {PRESET_NAMES}")
    if num_scales is not None and sched.num_scales != num_scales:
        sched = sched.rescaled(num_scales)
    return replace(sched, origin=name).validate()
