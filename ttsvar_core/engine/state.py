"""The candidate state of a search: steppable, selectable and branchable, never mutated in place.

ComfyUI caches node outputs and may feed one state into two branches, so `step` and `select` return new
states and leave their input valid. The KV cache is shared copy-on-write: a state may append to a cache
only while it is the cache's frontier (nobody wrote past its prefix); otherwise it copies its prefix first.
`select` re-indexes cache rows, codes, inputs, scores and streams with index operations, never by
recomputing and never by cloning whole caches.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from ..model.infinity import Infinity, TextCondition
from ..model.kv_cache import CacheRef, KVCache
from ..model.sampling import (Geometry, SamplingParams, accumulate, bits_to_codes, build_text, decode_images,
                              next_input, row_layout, scale_step, to_uint8)
from .schedule import MAX_CANDIDATES_PER_PROMPT
from .streams import Stream, derive_seed


def decode_grid(h: int, w: int, per_latent: int, max_side: int | None) -> tuple[int, int]:
    """The latent grid a decode of an h x w latent runs at when the image side may be at most `max_side`
    pixels (None: full size): area-downsampled, each side at least one cell."""
    if max_side and max(h, w) * per_latent > max_side:
        factor = max_side / (max(h, w) * per_latent)
        return max(1, round(h * factor)), max(1, round(w * factor))
    return h, w


def index_keep_layout(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """index_select on dim 0 that keeps the tensor's memory layout (summed codes are channels-innermost,
    and the layout decides which interpolation kernel runs, so it must survive a selection)."""
    order = sorted(range(t.ndim), key=lambda d: (-t.stride(d), d))
    physical = t.permute(order)
    picked = physical.index_select(order.index(0), idx)
    inverse = [order.index(d) for d in range(t.ndim)]
    return picked.permute(inverse)


def fresh_streams(seed: int, prompt_of: torch.Tensor) -> tuple:
    """Candidate j of prompt p draws from Stream(derive_seed(seed, p, j)): what it draws never depends on
    how many other candidates or prompts share the batch."""
    counts: dict[int, int] = {}
    streams = []
    for p in prompt_of.tolist():
        streams.append(Stream(derive_seed(seed, int(p), counts.get(p, 0))))
        counts[p] = counts.get(p, 0) + 1
    return tuple(streams)


@dataclass(frozen=True)
class SearchState:
    model: Infinity
    geometry: Geometry
    params: SamplingParams
    text: TextCondition
    num_prompts: int
    guided: bool
    prompt_of: torch.Tensor            # [N] prompt index of every candidate
    scale: int                         # scales generated so far
    bits: tuple                        # per scale [N, 1, H, W, d] uint8
    summed: torch.Tensor | None        # [N, d, 1, H, W]
    next_in: torch.Tensor | None       # [N, h*w, token_dim] input of the next scale
    cache_ref: CacheRef
    streams: tuple                     # per candidate Stream, or one shared Stream (reference mode)
    shared_stream: bool
    scores: torch.Tensor               # [N, num_scales] reward history, NaN where not scored
    origin: torch.Tensor               # [N] index of the initial candidate each one descends from
    seed: int = 0
    memo: dict = field(default_factory=dict, compare=False, repr=False)  # decoded images of this state

    # ---- construction ---------------------------------------------------------------------------------
    @classmethod
    def start(cls, model: Infinity, text_features: torch.Tensor, lens: list[int], schedule,
              params: SamplingParams, candidates: int | list[int], seed: int = 0, negative=None,
              shared_generator: bool = False, capacity_scales: int | None = None) -> "SearchState":
        """`candidates`: how many per prompt (an int for all, or one count per prompt).
        `capacity_scales`: the KV cache gets room for this many scales (default all); a search that will
        narrow the batch after scale k only needs k + 1 scales at the starting batch size."""
        geometry = Geometry.build(model, schedule)
        params.validate(geometry.num_scales)
        counts = [candidates] * len(lens) if isinstance(candidates, int) else list(candidates)
        if len(counts) != len(lens) or min(counts) < 1:
            raise ValueError(f"need a candidate count >= 1 for each of the {len(lens)} prompts, got {counts}")
        if max(counts) > MAX_CANDIDATES_PER_PROMPT:
            raise ValueError(f"{max(counts)} candidates for one prompt: at most {MAX_CANDIDATES_PER_PROMPT} are "
                             "allowed")
        guided = params.guided(geometry.num_scales)
        text = build_text(model, text_features, lens, guided, negative)
        prompt_of = torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(counts)).to(model.device)
        n = int(prompt_of.shape[0])
        rows = 2 * n if guided else n
        capacity = geometry.starts[min(capacity_scales or geometry.num_scales, geometry.num_scales)]
        cache = KVCache(model.cfg.depth, rows, model.cfg.num_heads, capacity, model.cfg.head_dim,
                        dtype=model.block_dtype, device=model.device)
        if shared_generator:  # the reference's single generator, for parity with its runs
            streams = (Stream(seed),)
        else:
            streams = fresh_streams(seed, prompt_of)
        return cls(model=model, geometry=geometry, params=params, text=text, num_prompts=len(lens), guided=guided,
                   prompt_of=prompt_of, scale=0, bits=(), summed=None, next_in=None, cache_ref=CacheRef(cache),
                   streams=streams,
                   shared_stream=shared_generator, scores=torch.full((n, geometry.num_scales), float("nan")),
                   origin=torch.arange(n), seed=seed)

    # ---- views ----------------------------------------------------------------------------------------
    @property
    def num_candidates(self) -> int:
        return int(self.prompt_of.shape[0])

    @property
    def cache_length(self) -> int:
        return self.geometry.starts[self.scale]

    def candidates_of(self, prompt: int) -> list[int]:
        return (self.prompt_of == prompt).nonzero().squeeze(1).tolist()

    def row_seq(self) -> torch.Tensor:
        return row_layout(self.prompt_of, self.num_prompts, self.guided)

    # ---- stepping -------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, until: int | None = None, callback=None, capacity_scales: int | None = None) -> "SearchState":
        """Generates the next scale (or every scale up to `until`, exclusive count of scales done).
        `capacity_scales`: if the cache must be (re)allocated, room for this many scales (default: all)."""
        target = self.scale + 1 if until is None else until
        if not self.scale < target <= self.geometry.num_scales:
            raise ValueError(f"cannot step from {self.scale} to {target} scales "
                             f"(the schedule has {self.geometry.num_scales})")
        state = self
        while state.scale < target:
            state = state._step_one(capacity_scales)
            if callback is not None:
                callback(state)
        return state

    @property
    def cache(self) -> KVCache:
        """This state's KV cache (rebuilt from the stored bits if it was released)."""
        if self.cache_ref.cache is None:
            self.cache_ref.cache = self.rebuilt_cache()
        return self.cache_ref.cache

    def release_cache(self) -> None:
        """Frees this state's cache (memory); it is rebuilt transparently if the state is used again."""
        self.cache_ref.cache = None

    def _room(self, capacity_scales: int | None) -> int:
        return self.geometry.starts[min(capacity_scales or self.geometry.num_scales, self.geometry.num_scales)]

    def _owned_cache(self, capacity_scales: int | None = None, scales: int = 1) -> KVCache:
        """A cache this state may append its next `scales` scales to: the shared one while this state is its
        frontier and it has room, else a copy of the prefix with room for `capacity_scales` (default: all)."""
        cache, needed = self.cache, self.geometry.starts[self.scale + scales]
        if cache.filled == self.cache_length and cache.capacity >= needed:
            return cache
        capacity = cache.capacity if cache.capacity >= needed else max(self._room(capacity_scales), needed)
        return cache.prefix_copy(self.cache_length, capacity)

    def _step_one(self, capacity_scales: int | None = None) -> "SearchState":
        si, device = self.scale, self.model.device
        cache = self._owned_cache(capacity_scales)
        if self.shared_stream:
            generators = self.streams[0].generator(device)
        else:
            generators = [s.generator(device) for s in self.streams]
        out = scale_step(self.model, self.geometry, si, self.text, self.row_seq(), cache, self.next_in, self.summed,
                         self.params, generators)
        if self.shared_stream:
            streams = (Stream.after(self.streams[0].seed, generators),)
        else:
            streams = tuple(Stream.after(s.seed, g) for s, g in zip(self.streams, generators))
        return replace(self, scale=si + 1, bits=self.bits + (out.bits,), summed=out.summed, next_in=out.next_in,
                       cache_ref=CacheRef(cache), streams=streams, memo={})

    # ---- selection ------------------------------------------------------------------------------------
    @torch.no_grad()
    def select(self, indices, capacity_scales: int | None = None, release_input: bool = False) -> "SearchState":
        """Keeps, drops and duplicates candidates: new candidate i is old candidate indices[i].

        A candidate kept once (or the first copy of a duplicate) keeps its random stream, so its
        continuation is exactly what it would have generated alone; further copies get child streams.
        `capacity_scales`: room in the new cache (default: all scales). `release_input`: free this
        state's cache afterwards (it is rebuilt from its bits if this state is ever stepped again).
        """
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        if idx.ndim != 1 or idx.numel() == 0:
            raise ValueError("select needs at least one candidate index")
        if int(idx.min()) < 0 or int(idx.max()) >= self.num_candidates:
            raise ValueError(f"candidate index out of range 0..{self.num_candidates - 1}: {idx.tolist()}")
        dev = self.prompt_of.device
        rows = idx if not self.guided else torch.cat([idx, idx + self.num_candidates])
        capacity = self._room(capacity_scales)
        if release_input and capacity > self.cache_length:
            # gather the kept prefix compactly and free the source before the bigger buffer exists,
            # so the peak is (source + kept prefix) or (kept prefix + new), never source + new
            compact = self.cache.gather_rows(rows, self.cache_length, self.cache_length)
            self.release_cache()
            cache = compact.prefix_copy(self.cache_length, capacity)
            del compact
        else:
            cache = self.cache.gather_rows(rows, self.cache_length, capacity)
            if release_input:
                self.release_cache()
        if self.shared_stream:
            streams = self.streams
        else:
            seen: dict[int, int] = {}
            streams = []
            for i in idx.tolist():
                copy = seen.get(i, 0)
                seen[i] = copy + 1
                parent = self.streams[i]
                streams.append(parent if copy == 0 else parent.child("copy", self.scale, copy))
            streams = tuple(streams)
        return replace(
            self, prompt_of=self.prompt_of.index_select(0, idx.to(dev)),
            bits=tuple(b.index_select(0, idx.to(b.device)) for b in self.bits),
            summed=None if self.summed is None else index_keep_layout(self.summed, idx.to(self.summed.device)),
            next_in=None if self.next_in is None else self.next_in.index_select(0, idx.to(self.next_in.device)),
            cache_ref=CacheRef(cache), streams=streams, scores=self.scores.index_select(0, idx),
            origin=self.origin[idx],
            memo={})

    def with_scores(self, scores: torch.Tensor) -> "SearchState":
        """Records a reward for every live candidate at the current scale (returns a new state)."""
        scores = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
        if scores.shape[0] != self.num_candidates:
            raise ValueError(f"{scores.shape[0]} scores for {self.num_candidates} candidates")
        history = self.scores.clone()
        history[:, self.scale - 1] = scores
        return replace(self, scores=history, memo=self.memo)

    # ---- images ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, vae, chunk: int = 8, max_side: int | None = None, should_stop=None) -> torch.Tensor:
        """uint8 RGB images [N, H, W, 3] of the current (partial) code sums, decoded once per state.
        `should_stop()` runs before every chunk and raises to cancel.

        `max_side`: decode a latent area-downsampled so the image side is at most this many pixels.
        Reward and feature models look at 224 px images, so selections need no 1024 px decode; it costs
        as much as the decoder's full-size pass would (about 7 TFLOP per 2B image), for nothing."""
        if self.summed is None:
            raise ValueError("nothing to decode before the first scale has been generated")
        key = ("images", max_side)
        if key not in self.memo:
            summed = self.summed
            h, w = summed.shape[-2:]
            size = decode_grid(h, w, vae.cfg.patch_size, max_side)
            if size != (h, w):
                summed = F.interpolate(summed, size=(1, *size), mode="area")
            self.memo[key] = to_uint8(decode_images(vae, summed, chunk, should_stop)).cpu()
        return self.memo[key]

    @torch.no_grad()
    def rebuilt_cache(self) -> KVCache:
        """The cache recomputed from the stored bits (one forward per scale, nothing sampled). Used to check
        re-indexing and to restore a cache that was dropped to save memory."""
        g, model = self.geometry, self.model
        rows = 2 * self.num_candidates if self.guided else self.num_candidates
        # room for what exists only: a later step grows it once, with the room its caller asks for
        cache = KVCache(model.cfg.depth, rows, model.cfg.num_heads, max(g.starts[self.scale], 1), model.cfg.head_dim,
                        dtype=model.block_dtype, device=model.device)
        summed = next_in = None
        for si in range(self.scale):
            out = scale_step(model, g, si, self.text, self.row_seq(), cache, next_in, summed, self.params,
                             forced_bits=self.bits[si], draw=False)
            summed, next_in = out.summed, out.next_in
        return cache

    # ---- branching ------------------------------------------------------------------------------------
    @torch.no_grad()
    def forced(self, bits: list[torch.Tensor]) -> "SearchState":
        """The next len(bits) scales taken from given bits instead of sampled ones (teacher forcing): each
        [N or 1, 1, H, W, d] in the latent layout (1: the same bits for every candidate). Nothing is drawn,
        so every candidate's random stream is where it was: sampling continues from the forced scales as a
        fresh run would from its first scale. Start from Image forces an encoded image's scales this way."""
        if self.shared_stream:
            raise ValueError("forcing scales needs per-candidate streams (not the reference's shared generator)")
        if not bits or self.scale + len(bits) > self.geometry.num_scales:
            raise ValueError(f"cannot force {len(bits)} scale(s) after scale {self.scale} of "
                             f"{self.geometry.num_scales}")
        g, model, n = self.geometry, self.model, self.num_candidates
        cache = self._owned_cache(self.scale + len(bits), scales=len(bits))
        summed, next_in, new_bits = self.summed, self.next_in, []
        for offset, forced in enumerate(bits):
            si = self.scale + offset
            expected = (1, *g.latent_hw(si), model.cfg.codebook_dim)
            if tuple(forced.shape[1:]) != expected or forced.shape[0] not in (1, n):
                raise ValueError(f"bits for scale {si} have shape {tuple(forced.shape)}; expected "
                                 f"[{n} or 1, {', '.join(map(str, expected))}]")
            forced = forced.to(model.device, torch.uint8).expand(n, *expected).contiguous()
            out = scale_step(model, g, si, self.text, self.row_seq(), cache, next_in, summed, self.params,
                             forced_bits=forced, draw=False)
            summed, next_in = out.summed, out.next_in
            new_bits.append(out.bits)
        return replace(self, scale=self.scale + len(bits), bits=self.bits + tuple(new_bits), summed=summed,
                       next_in=next_in, cache_ref=CacheRef(cache), memo={})

    @torch.no_grad()
    def truncated(self, scales: int) -> "SearchState":
        """These candidates as they were after their first `scales` scales: the shared KV cache keeps its
        prefix (the next step copies it, copy-on-write), sums and inputs are re-added from the kept bits in
        the order the steps added them, so the floats are the same. Rewards of dropped scales are forgotten."""
        if not 1 <= scales <= self.scale:
            raise ValueError(f"can keep 1 to {self.scale} generated scales, not {scales}")
        if scales == self.scale:
            return self
        g, model = self.geometry, self.model
        summed = None
        for si in range(scales):
            summed = accumulate(summed, bits_to_codes(self.bits[si], model.cfg.codebook_dim), g, si)
        scores = self.scores.clone()
        scores[:, scales:] = float("nan")
        return replace(self, scale=scales, bits=self.bits[:scales], summed=summed,
                       next_in=next_input(summed, g, scales - 1), scores=scores, memo={})

    def reseeded(self, seed: int) -> "SearchState":
        """The same candidates with fresh random streams, as SearchState.start(seed=seed) gives them."""
        if self.shared_stream:
            raise ValueError("reseeding needs per-candidate streams (not the reference's shared generator)")
        return replace(self, streams=fresh_streams(seed, self.prompt_of), seed=seed)

    def varied(self, index: int, scale: int, copies: int, seed: int,
               capacity_scales: int | None = None) -> "SearchState":
        """`copies` new candidates that share candidate `index`'s scales 0..`scale` and continue with new
        seeds: late scales give subtle variations, early ones strong. The shared prefix is re-indexed, never
        recomputed. `capacity_scales`: room in the new cache, as in `select`."""
        if not 0 <= index < self.num_candidates:
            raise ValueError(f"candidate {index} does not exist: choose 0 to {self.num_candidates - 1}")
        if not 0 <= scale < self.scale:
            raise ValueError(f"scale {scale} has not been generated: choose 0 to {self.scale - 1}")
        if copies < 1:
            raise ValueError(f"need at least one variation, got {copies}")
        return self.truncated(scale + 1).select([index] * copies, capacity_scales).reseeded(seed)
