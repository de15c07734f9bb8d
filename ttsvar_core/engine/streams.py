"""Random streams: one per candidate, derived from the search seed, so results do not depend on batch size."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch


def derive_seed(seed: int, *path) -> int:
    """A 63-bit seed for a named sub-stream (candidate index, duplicate copy, resampling step...).
    Hashing rather than `seed + i` keeps the streams of neighbouring seeds from overlapping."""
    digest = hashlib.blake2b(repr((int(seed),) + tuple(path)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2 ** 63 - 1)


@dataclass(frozen=True)
class Stream:
    """An immutable generator snapshot: `seed` plus the saved state after the draws made so far."""

    seed: int
    state: torch.Tensor | None = None

    def generator(self, device) -> torch.Generator:
        g = torch.Generator(device=device)
        if self.state is None:
            g.manual_seed(self.seed)
        else:
            g.set_state(self.state)
        return g

    @staticmethod
    def after(seed: int, generator: torch.Generator) -> "Stream":
        return Stream(seed, generator.get_state())

    def child(self, *path) -> "Stream":
        return Stream(derive_seed(self.seed, *path))
