"""The BSQ VAE (flux-style convolutional auto-encoder, multi-scale binary spherical quantisation).

Module names mirror the official checkpoint (`.conv.` and `.norm.` wrappers) so state dicts load by name.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import VAEConfig


class Conv(nn.Module):
    def __init__(self, cin, cout, k=3, stride=1, padding=None):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2 if padding is None else padding)

    def forward(self, x):
        return self.conv(x)


class Norm(nn.Module):
    def __init__(self, channels, eps):
        super().__init__()
        self.norm = nn.GroupNorm(32 if channels % 32 == 0 else 24, channels, eps=eps)

    def forward(self, x):
        return self.norm(x)


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout, eps):
        super().__init__()
        self.norm1, self.conv1 = Norm(cin, eps), Conv(cin, cout)
        self.norm2, self.conv2 = Norm(cout, eps), Conv(cout, cout)
        if cin != cout:
            self.nin_shortcut = Conv(cin, cout, k=1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class Downsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = Conv(ch, ch, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = Conv(ch, ch)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    def __init__(self, blocks, resample=None, name=None):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        if resample is not None:
            setattr(self, name, resample)


class Mid(nn.Module):
    def __init__(self, ch, eps):
        super().__init__()
        self.block_1, self.block_2 = ResnetBlock(ch, ch, eps), ResnetBlock(ch, ch, eps)

    def forward(self, x):
        return self.block_2(self.block_1(x))


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        eps, base, mult = cfg.norm_eps, cfg.base_ch, cfg.encoder_ch_mult
        downs = int(math.log2(cfg.patch_size))
        self.conv_in = Conv(3, base)
        self.down = nn.ModuleList()
        cin = base
        for level, m in enumerate(mult):
            cout = base * m
            blocks = [ResnetBlock(cin if i == 0 else cout, cout, eps) for i in range(cfg.num_res_blocks)]
            self.down.append(Level(blocks, Downsample(cout) if level < downs else None, "downsample"))
            cin = cout
        self.mid = Mid(cin, eps)
        self.norm_out, self.conv_out = Norm(cin, eps), Conv(cin, cfg.codebook_dim)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        eps, base, mult = cfg.norm_eps, cfg.base_ch, cfg.decoder_ch_mult
        ups = int(math.log2(cfg.patch_size))
        cin = base * mult[-1]
        self.conv_in = Conv(cfg.codebook_dim, cin)
        self.mid = Mid(cin, eps)
        levels = {}
        for level in reversed(range(len(mult))):
            cout = base * mult[level]
            blocks = [ResnetBlock(cin if i == 0 else cout, cout, eps) for i in range(cfg.num_res_blocks + 1)]
            levels[level] = Level(blocks, Upsample(cout) if 1 <= level <= ups else None, "upsample")
            cin = cout
        self.up = nn.ModuleList(levels[i] for i in range(len(mult)))
        self.norm_out, self.conv_out = Norm(cin, eps), Conv(cin, 3)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def decoder_widest(cfg: VAEConfig, h: int, w: int) -> int:
    """Elements of the decoder's widest activation for one h x w latent: channels x pixels, maximised over
    the tensors a level's first block and its upsampling take in (the memory estimate scales this)."""
    ups = int(math.log2(cfg.patch_size))
    mult = cfg.decoder_ch_mult
    cin, side, widest = cfg.base_ch * mult[-1], 1, 0
    for level in reversed(range(len(mult))):
        widest = max(widest, cin * h * w * side * side)
        cin = cfg.base_ch * mult[level]
        if 1 <= level <= ups:
            side *= 2
            widest = max(widest, cin * h * w * side * side)
    return widest


class LFQ(nn.Module):
    def __init__(self, codebook_dim):
        super().__init__()
        self.register_buffer("mask", 2 ** torch.arange(codebook_dim - 1, -1, -1))


class Quantizer(nn.Module):
    def __init__(self, codebook_dim):
        super().__init__()
        self.lfq = LFQ(codebook_dim)


class BSQVAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantizer = Quantizer(cfg.codebook_dim)
        self.quantize = self.quantizer  # the official model registers it twice; keep both key prefixes

    @property
    def device(self):
        return self.decoder.conv_in.conv.weight.device

    @property
    def dtype(self):
        return self.decoder.conv_in.conv.weight.dtype

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent codes [B, d, H, W] -> image in [-1, 1], [B, 3, pH, pW].

        The decoder runs channels-last: its convolutions then take the oneDNN/cuDNN NHWC kernels, about 20%
        faster on a CPU (measured on the benchmark's decoder) and the layout tensor cores want on a GPU."""
        return self.decoder(z.to(self.dtype, memory_format=torch.channels_last)).float().clamp_(-1, 1)

    def encode_bits(self, image: torch.Tensor, vae_schedule: list[tuple[int, int]]):
        """Image in [-1, 1] -> (encoder output h, bits per scale [B,1,h,w,d] uint8, quantised sum z)."""
        h = self.encoder(image.to(self.dtype)).float()
        d = self.cfg.codebook_dim
        scale = 1 / (d ** 0.5)
        full = h.shape[-2:]
        residual = h.unsqueeze(2)                      # [B, d, 1, H, W]
        z = torch.zeros_like(residual)
        bits = []
        for hw in vae_schedule:
            if tuple(hw) != tuple(full):
                x = F.interpolate(residual, size=(1, *hw), mode="area")
            else:
                x = residual
            x = F.normalize(x, dim=1)
            quantised = torch.where(x > 0, scale, -scale)
            bits.append((quantised > 0).permute(0, 2, 3, 4, 1).to(torch.uint8))
            if tuple(hw) != tuple(full):
                quantised = F.interpolate(quantised, size=(1, *full), mode="trilinear")
            residual = residual - quantised
            z = z + quantised
        return h, bits, z.squeeze(2)
