"""What a search reports while it runs: typed records of its selections and one event type per moment.

A search calls one handler, `on_event(event)`, with a `ScaleDone` after every generated scale, a
`HistoryScored` after a scale scored only for a history potential (diff, max, sum), a `SelectionDone`
after every clustering or resampling and a `SearchDone` at the end. Progress bars, previews
and interrupts (raise from the handler to stop the run) all hang on that one signature.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Callable, Union

from .state import SearchState


def _finite(values) -> list:
    """JSON has no NaN or infinity: those become null."""
    return [v if isinstance(v, (int, float)) and math.isfinite(v) else None for v in values]


@dataclass(frozen=True)
class GroupRecord:
    """One prompt's candidates at a selection or final pick (indices into the state the selection ran on)."""

    prompt: int
    candidates: list[int]
    kept: list[int] = field(default_factory=list)     # what continues (with repeats for duplicates)
    scores: list[float] | None = None                  # reward at this scale, where scored
    potentials: list[float] | None = None
    weights: list[float] | None = None
    pick: int | None = None                            # final pick
    note: str = ""

    def to_json(self) -> dict:
        out = {"prompt": self.prompt, "candidates": self.candidates}
        if self.pick is None:
            out["kept"] = self.kept
        else:
            out["pick"] = self.pick
        for name in ("scores", "potentials", "weights"):
            if getattr(self, name) is not None:
                out[name] = _finite(getattr(self, name))
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class SelectionRecord:
    """What a clustering, resampling or final pick decided, for traces and candidate grids."""

    event: str                     # "cluster" | "resample" | "final"
    scale: int                     # the scale it followed (0 = the 1x1 scale)
    groups: list[GroupRecord]
    potential: str | None = None   # resampling
    lam: float | None = None       # resampling and sampled final picks
    mode: str | None = None        # final pick: "best" | "sample" | "none"

    @property
    def kept(self) -> list[int]:
        return [i for g in self.groups for i in g.kept]

    @property
    def picks(self) -> list[int]:
        return [g.pick for g in self.groups]

    def scores_by_candidate(self) -> dict[int, float]:
        return {i: s for g in self.groups if g.scores is not None for i, s in zip(g.candidates, g.scores)}

    def to_json(self) -> dict:
        out = {"event": self.event, "scale": self.scale, "groups": [g.to_json() for g in self.groups]}
        if self.event != "final":
            out["kept"] = self.kept
        if self.potential is not None:
            out["potential"] = self.potential
        if self.lam is not None:
            out["lambda"] = self.lam
        if self.mode is not None:
            out["mode"] = self.mode
        return out


@dataclass(frozen=True)
class ScaleDone:
    scale: int                     # the scale just generated
    state: SearchState


@dataclass(frozen=True)
class HistoryScored:
    scale: int                     # the scale whose live candidates were scored for the reward history
    state: SearchState             # with those scores recorded
    seconds: float                 # the extra cost: the decode (a clustering after this scale reuses it) and reward


@dataclass(frozen=True)
class SelectionDone:
    record: SelectionRecord
    before: SearchState            # the candidates the selection chose from (its decode is memoised there)
    after: SearchState
    decode_side: int | None        # the image side it decoded them at


@dataclass(frozen=True)
class SearchDone:
    record: SelectionRecord        # the final pick
    state: SearchState


@dataclass(frozen=True)
class FinalScores:
    """The rewards of what a final pick returns, as plain values to save, compare or wire elsewhere.

    `chosen`: the reward of each prompt's chosen image, in prompt order (NaN where nothing was scored: the
    "none" pick mode). `finalists`: every finished candidate's reward, in the order of the finished images.
    """

    prompts: tuple[str, ...]
    mode: str
    picks: tuple[int, ...]          # per prompt: index of its chosen finalist
    chosen: tuple[float, ...]
    finalists: tuple[float, ...]
    prompt_of: tuple[int, ...]      # per finalist: its prompt
    origin: tuple[int, ...]         # per finalist: the initial candidate it descends from

    @classmethod
    def of(cls, state: SearchState, record: SelectionRecord, prompts) -> "FinalScores":
        scores = [float(s) for s in state.scores[:, state.scale - 1].tolist()]
        return cls(prompts=tuple(prompts), mode=record.mode, picks=tuple(record.picks),
                   chosen=tuple(scores[i] for i in record.picks), finalists=tuple(scores),
                   prompt_of=tuple(int(p) for p in state.prompt_of.tolist()),
                   origin=tuple(int(o) for o in state.origin.tolist()))

    def to_json(self) -> str:
        chosen = _finite(self.chosen)
        finalists = _finite(self.finalists)
        return json.dumps({
            "mode": self.mode,
            "chosen": [{"prompt": self.prompts[p], "finalist": i, "score": chosen[p]}
                       for p, i in enumerate(self.picks)],
            "finalists": [{"index": i, "prompt": self.prompts[self.prompt_of[i]], "origin": self.origin[i],
                           "score": finalists[i], "chosen": i in self.picks} for i in range(len(finalists))],
        })


Event = Union[ScaleDone, HistoryScored, SelectionDone, SearchDone]
EventHandler = Callable[[Event], None]
