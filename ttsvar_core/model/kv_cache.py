"""An explicit self-attention KV cache: preallocated for a whole schedule, re-indexed without recomputing."""
from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every block, [depth, rows, heads, capacity, head_dim] each.

    `filled` is the frontier: how many token positions have been written. A state that owns a prefix of
    length L may append in place only while `filled == L`; otherwise another state has written past its
    prefix and it must copy its prefix first (`prefix_copy`). Rows are never grown by concatenation.
    """

    def __init__(self, depth: int, rows: int, heads: int, capacity: int, head_dim: int, *, dtype, device):
        shape = (depth, rows, heads, capacity, head_dim)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.filled = 0

    @property
    def rows(self) -> int:
        return self.k.shape[1]

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    def write(self, layer: int, start: int, k_new: torch.Tensor, v_new: torch.Tensor):
        """Stores new keys/values at [start, start + n) and returns views of everything up to there."""
        end = start + k_new.shape[2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache capacity {self.capacity} exceeded (need {end})")
        self.k[layer, :, :, start:end] = k_new
        self.v[layer, :, :, start:end] = v_new
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def gather_rows(self, rows: torch.Tensor | list[int], length: int, capacity: int | None = None) -> "KVCache":
        """A fresh cache whose row i is row `rows[i]` of this one, for the first `length` positions, with room
        for `capacity` positions (default: this cache's).

        Copies row by row so that no temporary of the whole cache is ever made; the source stays valid.
        """
        rows = [int(r) for r in rows]
        capacity = max(capacity or self.capacity, length)
        out = KVCache(self.k.shape[0], len(rows), self.k.shape[2], capacity, self.k.shape[4],
                      dtype=self.k.dtype, device=self.k.device)
        for dst, src in enumerate(rows):
            out.k[:, dst, :, :length].copy_(self.k[:, src, :, :length])
            out.v[:, dst, :, :length].copy_(self.v[:, src, :, :length])
        out.filled = length
        return out

    def prefix_copy(self, length: int, capacity: int | None = None) -> "KVCache":
        return self.gather_rows(range(self.rows), length, capacity)


class CacheRef:
    """The one mutable slot of a state: its cache may be released to save memory once a selection has
    consumed it, and is rebuilt from the stored bits if that state is ever used again."""

    def __init__(self, cache: KVCache | None):
        self.cache = cache
