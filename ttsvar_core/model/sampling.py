"""Scale-by-scale Infinity sampling: `scale_step` is the one step every loop (plain sampling, parity, the
search engine, cache rebuilding) runs.

A scale step: embed the next-scale input, run the blocks with the KV cache, head -> logits, 1/tau, CFG on
logits, top-k/top-p, one multinomial draw per bit, bits -> codes, accumulate codes at full latent size,
resize the sum to the next scale's input. Op order follows the official loop so float32 runs reproduce it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .config import RELEASES, InfinityConfig, release_of
from .infinity import Infinity, ScaleContext, TextCondition
from .kv_cache import KVCache
from .schedules import rope_cos_sin, validate_schedule


@dataclass(frozen=True)
class SamplingParams:
    """Per-scale guidance and temperature plus the bit sampler's filters. The field defaults are the 2B's
    setting; `for_model` gives the setting of the model's own release."""

    cfg: tuple[float, ...] | float = RELEASES["Infinity-2B"]["cfg"]
    tau: tuple[float, ...] | float = RELEASES["Infinity-2B"]["tau"]
    top_k: int = 900
    top_p: float = 0.97

    @classmethod
    def for_model(cls, model_cfg: InfinityConfig, cfg=None, tau=None, **filters) -> "SamplingParams":
        """The public cfg and tau of the model's release (config.RELEASES: the 8B samples at tau 1.0, the
        2B at 0.5), where `cfg` / `tau` are None; given values win."""
        release = RELEASES[release_of(model_cfg)]
        return cls(cfg=release["cfg"] if cfg is None else cfg, tau=release["tau"] if tau is None else tau, **filters)

    def cfg_at(self, si: int) -> float:
        return float(self.cfg[si] if isinstance(self.cfg, (tuple, list)) else self.cfg)

    def tau_at(self, si: int) -> float:
        return float(self.tau[si] if isinstance(self.tau, (tuple, list)) else self.tau)

    def guided(self, num_scales: int) -> bool:
        """Whether any scale uses guidance: only then do unconditional rows exist."""
        return any(self.cfg_at(i) != 1 for i in range(num_scales))

    def validate(self, num_scales: int) -> "SamplingParams":
        for name, value in (("cfg", self.cfg), ("tau", self.tau)):
            if isinstance(value, (tuple, list)) and len(value) < num_scales:
                raise ValueError(f"{name} list has {len(value)} entries but the schedule has {num_scales} scales")
        for si in range(num_scales):
            if not 0 < self.tau_at(si) < math.inf:
                raise ValueError(f"tau must be a finite number > 0 at every scale (scale {si} has {self.tau_at(si)})")
            if not math.isfinite(self.cfg_at(si)):
                raise ValueError(f"cfg must be a finite number at every scale (scale {si} has {self.cfg_at(si)})")
        if self.top_k < 0 or not 0 <= self.top_p <= 1:
            raise ValueError("top_k must be >= 0 and top_p within [0, 1]")
        return self


@dataclass
class Geometry:
    """Everything that depends only on the schedule and the model: token counts, offsets, RoPE tables."""

    schedule: list[tuple[int, int]]
    patchify: bool
    rope_cos: torch.Tensor
    rope_sin: torch.Tensor
    starts: list[int] = field(default_factory=list)

    @classmethod
    def build(cls, model: Infinity, schedule) -> "Geometry":
        schedule = validate_schedule(schedule, model.cfg.num_levels)
        cos, sin = rope_cos_sin(schedule, model.cfg.head_dim, device=model.device)
        starts = [0]
        for h, w in schedule:
            starts.append(starts[-1] + h * w)
        return cls(schedule, model.cfg.apply_spatial_patchify, cos, sin, starts)

    @property
    def num_scales(self) -> int:
        return len(self.schedule)

    @property
    def total_tokens(self) -> int:
        return self.starts[-1]

    def tokens(self, si: int) -> int:
        h, w = self.schedule[si]
        return h * w

    def latent_hw(self, si: int) -> tuple[int, int]:
        """Latent (VAE) size of scale si: the 8B's tokens cover 2x2 latent pixels."""
        h, w = self.schedule[si]
        return (2 * h, 2 * w) if self.patchify else (h, w)

    def rope(self, si: int):
        a, b = self.starts[si], self.starts[si + 1]
        return self.rope_cos[a:b], self.rope_sin[a:b]


def build_text(model: Infinity, features: torch.Tensor, lens: list[int], guided: bool,
               negative: tuple[torch.Tensor, list[int]] | None = None) -> TextCondition:
    """Sequences 0..P-1 are the prompts; with guidance P..2P-1 are their unconditional texts: the learned
    table (first len_i rows) or, when given, the negative prompts' own features."""
    if not guided:
        return model.encode_text(features, lens)
    if negative is None:
        neg_features, neg_lens = model.unconditional_features(lens), list(lens)
    else:
        neg_features, neg_lens = negative
        if len(neg_lens) != len(lens):
            raise ValueError(f"{len(neg_lens)} negative prompts given for {len(lens)} prompts")
    features = torch.cat([features.to(model.device).float(), neg_features.to(model.device).float()], 0)
    return model.encode_text(features, list(lens) + list(neg_lens))


def row_layout(prompt_of_candidate: torch.Tensor, num_prompts: int, guided: bool) -> torch.Tensor:
    """Sequence index of every network row: candidates first, then (guided) their unconditional rows."""
    if not guided:
        return prompt_of_candidate
    return torch.cat([prompt_of_candidate, prompt_of_candidate + num_prompts])


def scale_tokens(model: Infinity, text: TextCondition, row_seq: torch.Tensor, next_in: torch.Tensor | None) -> torch.Tensor:
    """The embedded input of a scale for every network row [rows, h*w, C]: the pooled text at scale 0, else
    the previous scales' code sum resized to this scale (`next_in` [n, h*w, token_dim], shared by a
    candidate's conditional and unconditional rows)."""
    if next_in is None:
        return model.scale0_tokens(text.sos[row_seq])
    tokens = model.embed_tokens(next_in)
    return tokens.repeat(row_seq.shape[0] // tokens.shape[0], 1, 1)


def head_rows_at(params: "SamplingParams", si: int, n: int, guided: bool) -> int | None:
    """At a cfg-1 scale of a guided run the official head runs on the n conditional rows only. A head on
    all rows gives the same logits mathematically but not bitwise (the matmul shapes differ)."""
    return n if guided and params.cfg_at(si) == 1 else None


def guide_logits(raw: torch.Tensor, n: int, cfg: float, tau: float, guided: bool) -> torch.Tensor:
    """Temperature then CFG on logits: [n, h*w*d, 2] for the sampler."""
    if guided and cfg != 1:
        logits = raw.mul(1 / tau)
        logits = cfg * logits[:n] + (1 - cfg) * logits[n:]
    else:
        logits = raw[:n].mul(1 / tau)
    return logits.reshape(n, -1, 2)


def filter_logits_(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Top-k then top-p on [n, bits, 2] (in place). For two classes top-k >= 2 is a no-op and top-p drops
    the minority bit when its probability is <= 1 - top_p."""
    if top_k > 0:
        top_k = min(top_k, logits.shape[-1])
        kth = logits.topk(top_k, largest=True, sorted=False, dim=-1)[0].amin(dim=-1, keepdim=True)
        logits.masked_fill_(logits < kth, -torch.inf)
    if top_p > 0:
        sorted_logits, sorted_idx = logits.sort(dim=-1, descending=False)
        remove = sorted_logits.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
        remove[..., -1:] = False
        logits.masked_fill_(remove.scatter(sorted_idx.ndim - 1, sorted_idx, remove), -torch.inf)
    return logits


def draw_bits(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One multinomial call for all rows (the official random-number use): [n, bits] int64."""
    probs = logits.softmax(dim=-1).view(-1, 2)
    return torch.multinomial(probs, num_samples=1, replacement=True, generator=generator).view(logits.shape[0], -1)


def sample_bits(logits: torch.Tensor, params: SamplingParams, generators) -> torch.Tensor:
    """generators: one shared generator (or None: global RNG), or a list with one per candidate row."""
    logits = filter_logits_(logits.clone(), params.top_k, params.top_p)
    if isinstance(generators, (list, tuple)):
        return torch.cat([draw_bits(logits[i:i + 1], g) for i, g in enumerate(generators)], 0)
    return draw_bits(logits, generators)


def latent_bits(bits: torch.Tensor, geometry: Geometry, si: int) -> torch.Tensor:
    """Sampled token bits [n, h*w*d'] -> latent layout [n, 1, H, W, d] uint8 (8B: unpatchified)."""
    h, w = geometry.schedule[si]
    idx = bits.reshape(bits.shape[0], h, w, -1)
    if geometry.patchify:  # one token holds a 2x2 block of latent pixels
        idx = F.pixel_shuffle(idx.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    return idx.unsqueeze(1).to(torch.uint8).contiguous()


def bits_to_codes(bits: torch.Tensor, codebook_dim: int) -> torch.Tensor:
    """Latent bits [n, 1, H, W, d] -> codes [n, d, 1, H, W]: a channels-innermost view, as the official
    code builds it (the layout decides the trilinear kernel and so the last bits of every sum)."""
    scale = 1 / (codebook_dim ** 0.5)
    codes = F.normalize(bits.long().unsqueeze(-2) * scale * 2 - scale, dim=-1)
    codes = codes.reshape(*codes.shape[:-2], -1)
    return codes.permute(0, 4, 1, 2, 3)


def accumulate(summed: torch.Tensor | None, codes: torch.Tensor, geometry: Geometry, si: int) -> torch.Tensor:
    """Adds scale si's codes into the running sum at full latent size (returns a new tensor)."""
    full = (1, *geometry.latent_hw(geometry.num_scales - 1))
    if si != geometry.num_scales - 1:
        codes = F.interpolate(codes, size=full, mode="trilinear")
    return codes if summed is None else summed + codes


def next_input(summed: torch.Tensor, geometry: Geometry, si: int) -> torch.Tensor:
    """The input of scale si + 1: the running sum resized (trilinear) to its size, [n, h*w, token_dim]."""
    x = F.interpolate(summed, size=(1, *geometry.latent_hw(si + 1)), mode="trilinear").squeeze(-3)
    if geometry.patchify:
        x = F.pixel_unshuffle(x, 2)
    return x.reshape(*x.shape[:2], -1).permute(0, 2, 1)


def decode_images(vae, summed: torch.Tensor, chunk: int = 8, should_stop=None) -> torch.Tensor:
    """Summed codes [n, d, 1, H, W] -> images in [-1, 1] [n, 3, pH, pW], decoded `chunk` at a time.
    `should_stop()` runs before every chunk and raises to cancel (a large decode takes minutes)."""
    z = summed.squeeze(-3)
    parts = []
    for i in range(0, z.shape[0], chunk):
        if should_stop is not None:
            should_stop()
        parts.append(vae.decode(z[i:i + chunk].to(vae.device)))
    return torch.cat(parts, 0)


@torch.no_grad()
def encode_images(vae, images: torch.Tensor, geometry: Geometry) -> list[torch.Tensor]:
    """uint8 RGB images [B, H, W, 3] -> their bits at every scale of `geometry` (latent layout [B, 1, h, w, d]),
    the residual multi-scale quantisation the model was trained on. Images are resized (area-preserving
    antialiased bicubic) to the schedule's pixel size; snapping the aspect ratio is the caller's choice."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected RGB images [B, H, W, 3], got shape {tuple(images.shape)}")
    latent = geometry.latent_hw(geometry.num_scales - 1)
    size = (latent[0] * vae.cfg.patch_size, latent[1] * vae.cfg.patch_size)
    x = images.permute(0, 3, 1, 2).float().div(127.5).sub(1)
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bicubic", antialias=True).clamp(-1, 1)
    _, bits, _ = vae.encode_bits(x.to(vae.device), [geometry.latent_hw(si) for si in range(geometry.num_scales)])
    return bits


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images [n, 3, H, W] -> uint8 RGB [n, H, W, 3], truncating like the official code."""
    return ((images + 1) / 2).permute(0, 2, 3, 1).mul(255).to(torch.uint8)


@dataclass
class ScaleOutput:
    bits: torch.Tensor                 # [n, 1, H, W, d] uint8 (latent layout): what the image continues with
    summed: torch.Tensor               # [n, d, 1, H, W] codes of every scale so far
    next_in: torch.Tensor | None       # [n, h*w, token_dim] input of the next scale (None after the last)
    sampled: torch.Tensor | None       # what the sampler drew (differs from bits under teacher forcing)
    raw: torch.Tensor | None           # [rows, h*w, 2d] raw logits
    logits: torch.Tensor | None        # [n, h*w*d, 2] after temperature and guidance


def scale_step(model: Infinity, geometry: Geometry, si: int, text: TextCondition, row_seq: torch.Tensor,
               cache: KVCache | None, next_in: torch.Tensor | None, summed: torch.Tensor | None,
               params: SamplingParams, generators=None, forced_bits: torch.Tensor | None = None,
               draw: bool = True) -> ScaleOutput:
    """Scale si for n candidates (rows = n, or 2n with guidance): forward with the cache, sample, add codes.

    `generators`: one shared generator (None: the global one) or one per candidate. `forced_bits` [n, 1, H, W,
    d] replace the drawn bits (teacher forcing: the sampler still runs and consumes random numbers, as in the
    official loop). `draw=False` (with forced_bits) only fills the cache and the sums: rebuilding a cache."""
    guided = params.guided(geometry.num_scales)
    n = row_seq.shape[0] // 2 if guided else row_seq.shape[0]  # candidates: their rows come first
    ctx = ScaleContext(text, row_seq, *geometry.rope(si), level=si, cache=cache, start=geometry.starts[si])
    hidden = model.forward_tokens(scale_tokens(model, text, row_seq, next_in), ctx)
    if cache is not None:
        cache.filled = geometry.starts[si + 1]
    raw = logits = sampled = None
    if draw:
        head = head_rows_at(params, si, n, guided)
        raw = model.logits(hidden[:head], text.sos[row_seq[:head]])
        logits = guide_logits(raw, n, params.cfg_at(si), params.tau_at(si), guided)
        sampled = latent_bits(sample_bits(logits, params, generators), geometry, si)
    if forced_bits is None:
        if sampled is None:
            raise ValueError("scale_step without drawing needs forced_bits")
        bits = sampled
    else:
        bits = forced_bits.to(hidden.device, torch.uint8).reshape(n, 1, *geometry.latent_hw(si), -1)
    summed = accumulate(summed, bits_to_codes(bits, model.cfg.codebook_dim), geometry, si)
    nxt = next_input(summed, geometry, si) if si + 1 < geometry.num_scales else None
    return ScaleOutput(bits=bits, summed=summed, next_in=nxt, sampled=sampled, raw=raw, logits=logits)


@dataclass
class PlainResult:
    bits: list[torch.Tensor]                  # per scale [n, 1, H, W, d] uint8 (latent layout)
    summed_codes: torch.Tensor                # [n, d, 1, H, W]
    sampled_bits: list[torch.Tensor] = field(default_factory=list)  # what the sampler drew (teacher forcing)
    raw_logits: list[torch.Tensor] = field(default_factory=list)
    cfg_logits: list[torch.Tensor] = field(default_factory=list)
    next_inputs: list[torch.Tensor] = field(default_factory=list)


@torch.no_grad()
def generate(model: Infinity, text_features: torch.Tensor, lens: list[int], schedule, params: SamplingParams, *,
             generator=None, negative=None, teacher_bits: list[torch.Tensor] | None = None,
             record: bool = False) -> PlainResult:
    """Plain Infinity sampling of one image per prompt with a KV cache, scale by scale.

    teacher_bits (per scale [n, 1, H, W, d], latent layout) replace the sampled bits (teacher forcing, the
    sampler still runs and still consumes random numbers, as in the official loop).
    """
    geometry = Geometry.build(model, schedule)
    params.validate(geometry.num_scales)
    n = len(lens)
    guided = params.guided(geometry.num_scales)
    text = build_text(model, text_features, lens, guided, negative)
    row_seq = row_layout(torch.arange(n, device=model.device), n, guided)
    cache = KVCache(model.cfg.depth, row_seq.shape[0], model.cfg.num_heads, geometry.total_tokens,
                    model.cfg.head_dim, dtype=model.block_dtype, device=model.device)
    out = PlainResult(bits=[], summed_codes=None)
    summed = next_in = None
    for si in range(geometry.num_scales):
        step = scale_step(model, geometry, si, text, row_seq, cache, next_in, summed, params, generator,
                          forced_bits=None if teacher_bits is None else teacher_bits[si])
        summed, next_in = step.summed, step.next_in
        out.bits.append(step.bits)
        if record:
            out.sampled_bits.append(step.sampled)
            out.raw_logits.append(step.raw)
            out.cfg_logits.append(step.logits)
            if next_in is not None:
                out.next_inputs.append(next_in)
    out.summed_codes = summed
    return out


PAD_TO_MULTIPLE = 128  # the official forward's `pad_to_multiplier`


def block_causal_mask(geometry: Geometry, device=None) -> torch.Tensor:
    """[L, L] bool: a token of scale i sees every token of scales <= i (what the KV cache computes)."""
    scale_of = torch.repeat_interleave(torch.arange(geometry.num_scales),
                                       torch.tensor([geometry.tokens(i) for i in range(geometry.num_scales)]))
    return (scale_of[None, :] <= scale_of[:, None]).to(device)


def forward_full(model: Infinity, text_features, lens, schedule, next_inputs: list[torch.Tensor], guided: bool,
                 negative=None) -> torch.Tensor:
    """All scales in one pass with a block-causal mask (no KV cache): raw logits [rows, L_total, 2d].
    Cross-checks the cached path, and is the teacher-forced training forward (gradients flow when the
    caller enables them)."""
    geometry = Geometry.build(model, schedule)
    n = len(lens)
    text = build_text(model, text_features, lens, guided, negative)
    row_seq = row_layout(torch.arange(n, device=model.device), n, guided)
    rows = row_seq.shape[0]
    parts = [model.scale0_tokens(text.sos[row_seq])]
    parts += [model.embed_tokens(x.to(model.device)).repeat(rows // n, 1, 1) for x in next_inputs]
    x = torch.cat(parts, 1)
    levels = torch.repeat_interleave(torch.arange(geometry.num_scales, device=model.device),
                                     torch.tensor([geometry.tokens(i) for i in range(geometry.num_scales)],
                                                  device=model.device))
    # The official forward pads the sequence to a multiple of 128 tokens: padded queries see token 0 only and
    # no real token sees them. That changes no real value mathematically, but it changes the attention kernels'
    # shapes and so the last bits (~1e-5 in logits, more where a bf16 rounding flips): pad the same way.
    length = x.shape[1]
    pad = -length % PAD_TO_MULTIPLE
    mask, cos, sin = block_causal_mask(geometry, model.device), geometry.rope_cos, geometry.rope_sin
    if pad:
        x = F.pad(x, (0, 0, 0, pad))
        levels = F.pad(levels, (0, pad))  # padded rows never reach a real row, whatever they hold
        cos, sin = F.pad(cos, (0, 0, 0, pad)), F.pad(sin, (0, 0, 0, pad))  # the official table pads with 0
        padded = torch.zeros(length + pad, length + pad, dtype=torch.bool, device=mask.device)
        padded[:length, :length] = mask
        padded[length:, 0] = True
        mask = padded
    hidden = model.forward_tokens(x, ScaleContext(text, row_seq, cos, sin, level=levels, attn_mask=mask))
    return model.logits(hidden[:, :length], text.sos[row_seq])
