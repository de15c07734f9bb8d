"""The Infinity transformer, written from INFINITY_SPEC.md (parameter names follow the official checkpoints).

The network works on "rows": with classifier-free guidance a batch of N candidates has 2N rows, the N
conditional rows first. Text conditioning is computed once per text *sequence* and rows point at their
sequence through `row_seq`, so candidates of one prompt share it instead of storing copies.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .config import InfinityConfig
from .kv_cache import KVCache


def round_bf16(x: torch.Tensor) -> torch.Tensor:
    """The official cross-attention rounds fp32 q/k/v and its output to bf16 (flash-attn inputs)."""
    return x.to(torch.bfloat16).to(x.dtype) if x.dtype == torch.float32 else x


def compute_weight(weight: torch.Tensor, compute_dtype: torch.dtype) -> torch.Tensor:
    """A matmul weight stored narrower than its layer computes (fp8, or bf16/fp16 under fp32; see
    checkpoints.WEIGHT_STORAGE) is upcast to the compute dtype, that of its bias, just before its matmul: the
    storage saves memory while the arithmetic stays in the compute dtype."""
    return weight if weight.dtype == compute_dtype else weight.to(compute_dtype)


def linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """A linear layer run in its compute dtype (bf16 blocks take fp32 activations; stored weights upcast)."""
    w = layer.weight if layer.bias is None else compute_weight(layer.weight, layer.bias.dtype)
    return F.linear(x.to(w.dtype), w, layer.bias)


def ada_layer_norm(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float) -> torch.Tensor:
    x = F.layer_norm(x.float(), (x.shape[-1],), None, None, eps)
    return x.mul(scale.add(1)).add_(shift)


@dataclass
class TextCondition:
    """Per-sequence text conditioning (sequence s: cond prompts first, then their unconditional texts)."""

    sos: torch.Tensor            # [S, D] pooled text ("cond_BD")
    gss: torch.Tensor            # [S, 1, 6, C] shared AdaLN parameters
    memory: torch.Tensor         # [sum(lens), C] cross-attention keys/values source
    lens: list[int]              # text rows per sequence
    block_kv: dict = field(default_factory=dict, repr=False)  # layer -> projected text (k, v), filled once

    def keys_values(self, layer: int, attention: "CrossAttention"):
        """Every block projects the same text at every scale: do it once per block and keep it."""
        if layer not in self.block_kv:
            self.block_kv[layer] = attention.keys_values(self.memory)
        return self.block_kv[layer]

    @property
    def num_sequences(self) -> int:
        return len(self.lens)

    def offsets(self) -> list[int]:
        out = [0]
        for n in self.lens:
            out.append(out[-1] + n)
        return out


@dataclass
class ScaleContext:
    """What every block needs for one forward pass: the text of each row, the positions, and the cache.

    One context serves a scale of the cached loop (level = the scale index, cache written from `start`) or a
    whole teacher-forced sequence (level = per-token scale indices, no cache, a block-causal mask)."""

    text: TextCondition
    row_seq: torch.Tensor              # [rows] text sequence of every network row
    rope_cos: torch.Tensor             # [L, hd/2] angles of the tokens run now
    rope_sin: torch.Tensor
    level: int | torch.Tensor          # scale index, or [L] scale index of every token
    cache: KVCache | None = None
    start: int = 0                     # cache position of the first token run now
    attn_mask: torch.Tensor | None = None
    gss_rows: torch.Tensor = field(init=False, repr=False)
    offsets: list[int] = field(init=False, repr=False)
    seq_groups: list = field(init=False, repr=False)

    def __post_init__(self):
        self.gss_rows = self.text.gss[self.row_seq]
        self.offsets = self.text.offsets()
        # rows of each text sequence, so cross-attention runs once per sequence
        self.seq_groups = [(int(s), (self.row_seq == s).nonzero().squeeze(1)) for s in self.row_seq.unique()]


class SelfAttention(nn.Module):
    def __init__(self, cfg: InfinityConfig):
        super().__init__()
        c, h = cfg.embed_dim, cfg.num_heads
        self.num_heads, self.head_dim, self.max_log = h, c // h, cfg.max_scale_mul_log
        self.mat_qkv = nn.Linear(c, 3 * c, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(c))
        self.v_bias = nn.Parameter(torch.zeros(c))
        self.register_buffer("zero_k_bias", torch.zeros(c))
        self.scale_mul_1H11 = nn.Parameter(torch.full((1, h, 1, 1), 4.0).log())
        self.proj = nn.Linear(c, c)

    def forward(self, x, ctx: "ScaleContext", layer: int):
        rows, length, c = x.shape
        w = compute_weight(self.mat_qkv.weight, self.q_bias.dtype)
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias)).to(w.dtype)
        qkv = F.linear(x.to(w.dtype), w, bias).view(rows, length, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [rows, H, L, hd]
        scale_mul = self.scale_mul_1H11.clamp_max(self.max_log).exp()
        q = F.normalize(q, dim=-1, eps=1e-12).mul(scale_mul).contiguous()
        k = F.normalize(k, dim=-1, eps=1e-12).contiguous()
        q, k = apply_rope(q, k, ctx.rope_cos, ctx.rope_sin)
        if ctx.cache is not None:
            k, v = ctx.cache.write(layer, ctx.start, k.to(ctx.cache.k.dtype), v.to(ctx.cache.v.dtype))
            q = q.to(k.dtype)
        # cosine attention: scale 1; within a scale every token sees all tokens of scales <= its own
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=ctx.attn_mask, scale=1.0)
        return linear(out.transpose(1, 2).reshape(rows, length, c), self.proj)


def apply_rope(q, k, cos, sin):
    """Rotates adjacent pairs (x0, x1) by the per-token angles; cos/sin are [L, hd/2] float32."""
    qk = torch.stack((q, k), dim=0)
    dtype = qk.dtype
    qk = qk.float().reshape(*qk.shape[:-1], -1, 2)
    x0, x1 = qk[..., 0], qk[..., 1]
    qk = torch.stack([cos * x0 - sin * x1, sin * x0 + cos * x1], dim=-1)
    q, k = qk.reshape(*qk.shape[:-2], -1).to(dtype).unbind(0)
    return q, k


class CrossAttention(nn.Module):
    """Image rows attend to the text rows of their own sequence. With `pool=True` a learned query
    pools each sequence (TextAttentivePool)."""

    def __init__(self, embed_dim: int, kv_dim: int, num_heads: int, pool: bool = False):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        if pool:
            self.mat_q = nn.Parameter(torch.zeros(1, num_heads, self.head_dim))
        else:
            self.mat_q = nn.Linear(embed_dim, embed_dim)
        self.mat_kv = nn.Linear(kv_dim, 2 * embed_dim, bias=False)
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim))
        self.proj = nn.Linear(embed_dim, embed_dim)

    def keys_values(self, memory: torch.Tensor):
        w = compute_weight(self.mat_kv.weight, self.v_bias.dtype)
        kv = F.linear(memory.to(w.dtype), w, torch.cat((self.zero_k_bias, self.v_bias)).to(w.dtype))
        kv = kv.view(-1, 2, self.num_heads, self.head_dim)
        return round_bf16(kv[:, 0]).transpose(0, 1), round_bf16(kv[:, 1]).transpose(0, 1)  # [H, T, hd]

    def attend(self, q, k, v):
        """q [n, H, L, hd] against one sequence's k, v [H, T, hd]."""
        n = q.shape[0]
        k, v = k.unsqueeze(0).expand(n, -1, -1, -1), v.unsqueeze(0).expand(n, -1, -1, -1)
        if q.device.type == "cpu":
            # The float32 reference attends one sequence at a time with 3-D tensors, which PyTorch's CPU
            # SDPA runs on its math backend; the fused CPU kernel differs in the last bit, and after the
            # bf16 rounding below that moves logits by up to ~3e-4. Same backend, same bits.
            with sdpa_kernel(SDPBackend.MATH):
                return round_bf16(F.scaled_dot_product_attention(q, k, v))
        return round_bf16(F.scaled_dot_product_attention(q, k, v))

    def pool(self, memory: torch.Tensor, offsets: list[int]) -> torch.Tensor:
        k, v = self.keys_values(memory)
        q = round_bf16(self.mat_q.to(k.dtype)).unsqueeze(2)  # [1, H, 1, hd]
        outs = [self.attend(q, k[:, a:b], v[:, a:b]) for a, b in zip(offsets[:-1], offsets[1:])]
        out = torch.cat(outs, 0).transpose(1, 2).reshape(len(outs), -1)
        return linear(out.float(), self.proj)

    def forward(self, x, kv, offsets, seq_groups):
        rows, length, c = x.shape
        q = round_bf16(linear(x, self.mat_q)).view(rows, length, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = kv
        out = torch.empty_like(q)
        for seq, idx in seq_groups:
            a, b = offsets[seq], offsets[seq + 1]
            part = self.attend(q[idx], k[:, a:b], v[:, a:b])
            out[idx] = part
        return linear(out.transpose(1, 2).reshape(rows, length, c).float(), self.proj)


class FFN(nn.Module):
    def __init__(self, c: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(c, hidden), nn.Linear(hidden, c)

    def forward(self, x):
        return linear(F.gelu(linear(x, self.fc1), approximate="tanh"), self.fc2)


class Block(nn.Module):
    def __init__(self, cfg: InfinityConfig):
        super().__init__()
        c = cfg.embed_dim
        self.eps = cfg.norm_eps
        self.sa = SelfAttention(cfg)
        self.ca = CrossAttention(c, c, cfg.num_heads)
        self.ffn = FFN(c, cfg.ffn_hidden)
        self.ca_norm = nn.LayerNorm(c, eps=cfg.norm_eps)
        self.ada_gss = nn.Parameter(torch.zeros(1, 1, 6, c))

    def forward(self, x, ctx: "ScaleContext", layer: int):
        gamma1, gamma2, scale1, scale2, shift1, shift2 = (self.ada_gss.float() + ctx.gss_rows).unbind(2)
        a = ada_layer_norm(x, scale1, shift1, self.eps)
        x = x + self.sa(a, ctx, layer).float().mul_(gamma1)
        x = x + self.ca(F.layer_norm(x, (x.shape[-1],), self.ca_norm.weight.float(), self.ca_norm.bias.float(),
                                     self.eps), ctx.text.keys_values(layer, self.ca), ctx.offsets,
                        ctx.seq_groups).float()
        x = x + self.ffn(ada_layer_norm(x, scale2, shift2, self.eps)).float().mul(gamma2)
        return x


class BlockChunk(nn.Module):
    """Only exists so parameter names match the released `block_chunks.{i}.module.{j}` layout."""

    def __init__(self, cfg: InfinityConfig):
        super().__init__()
        self.module = nn.ModuleList(Block(cfg) for _ in range(cfg.blocks_per_chunk))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x):
        x = x.float()
        return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True).add_(self.eps))) * self.weight


class SharedAdaLin(nn.Linear):
    pass


class TextPool(nn.Module):
    def __init__(self, cfg: InfinityConfig):
        super().__init__()
        self.ca = CrossAttention(cfg.embed_dim, cfg.text_channels, cfg.pool_heads, pool=True)


class HeadNorm(nn.Module):
    def __init__(self, cfg: InfinityConfig):
        super().__init__()
        self.eps = cfg.norm_eps
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cfg.embed_dim, 2 * cfg.embed_dim))

    def forward(self, h, sos_rows):
        scale, shift = self.ada_lin(sos_rows.float()).view(-1, 1, 2, h.shape[-1]).unbind(2)
        return F.layer_norm(h.float(), (h.shape[-1],), None, None, self.eps).mul(scale.add(1)).add_(shift)


class Infinity(nn.Module):
    def __init__(self, cfg: InfinityConfig):
        super().__init__()
        self.cfg = cfg
        c, d, ct5 = cfg.embed_dim, cfg.embed_dim, cfg.text_channels
        self.cfg_uncond = nn.Parameter(torch.zeros(cfg.text_maxlen, ct5))
        self.pos_start = nn.Parameter(torch.zeros(1, 1, c))
        self.text_norm = RMSNorm(ct5)
        self.text_proj_for_sos = TextPool(cfg)
        self.text_proj_for_ca = nn.Sequential(nn.Linear(ct5, d), nn.GELU(approximate="tanh"), nn.Linear(d, d))
        self.lvl_embed = nn.Embedding(cfg.num_levels, c)
        self.word_embed = nn.Linear(cfg.token_dim, c)
        self.shared_ada_lin = nn.Sequential(nn.SiLU(), SharedAdaLin(d, 6 * c))
        self.head_nm = HeadNorm(cfg)
        self.head = nn.Linear(c, cfg.logit_dim)
        self.block_chunks = nn.ModuleList(BlockChunk(cfg) for _ in range(cfg.block_chunks))

    def blocks(self):
        for chunk in self.block_chunks:
            yield from chunk.module

    @property
    def block_dtype(self) -> torch.dtype:
        """The dtype the blocks compute (and the KV cache stores) in; fp8-stored weights compute in it too."""
        return self.block_chunks[0].module[0].sa.q_bias.dtype

    @property
    def device(self) -> torch.device:
        return self.pos_start.device

    # ---- text -------------------------------------------------------------------------------------
    def encode_text(self, features: torch.Tensor, lens: list[int]) -> TextCondition:
        """features: T5 rows of all sequences concatenated [sum(lens), Ct5]."""
        lens = [int(n) for n in lens]
        if sum(lens) != features.shape[0]:
            raise ValueError(f"text features have {features.shape[0]} rows but the lengths sum to {sum(lens)}")
        x = self.text_norm(features.to(self.device))
        offsets = [0]
        for n in lens:
            offsets.append(offsets[-1] + n)
        sos = self.text_proj_for_sos.ca.pool(x, offsets)
        memory = self.text_proj_for_ca(x)
        gss = self.shared_ada_lin(sos.float()).float().view(-1, 1, 6, self.cfg.embed_dim)
        return TextCondition(sos=sos, gss=gss, memory=memory, lens=lens)

    def unconditional_features(self, lens: list[int]) -> torch.Tensor:
        """The learned unconditional text: the first len_i rows of `cfg_uncond` for each prompt."""
        return torch.cat([self.cfg_uncond[:n] for n in lens], 0)

    # ---- tokens -----------------------------------------------------------------------------------
    def scale0_tokens(self, sos_rows: torch.Tensor) -> torch.Tensor:
        return (sos_rows.unsqueeze(1) + self.pos_start).float()

    def embed_tokens(self, next_input: torch.Tensor) -> torch.Tensor:
        """next_input [n, L, token_dim] (codes space) -> [n, L, C]."""
        return linear(next_input, self.word_embed).float()

    def forward_tokens(self, x: torch.Tensor, ctx: "ScaleContext") -> torch.Tensor:
        """Runs all blocks on tokens x [rows, L, C] of one scale (or, with a mask, a whole sequence)."""
        x = x + (self.lvl_embed.weight[ctx.level] if isinstance(ctx.level, int) else self.lvl_embed(ctx.level))
        for layer, block in enumerate(self.blocks()):
            # the block projects the text itself: with block streaming its weights arrive only on call
            x = block(x, ctx, layer)
        return x

    def logits(self, hidden: torch.Tensor, sos_rows: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_nm(hidden, sos_rows))
