"""Model configurations: one dataclass per network plus named presets (nanoGPT style)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class VAEConfig:
    """Flux-style convolutional auto-encoder with a multi-scale BSQ quantiser."""

    codebook_dim: int = 32          # bits per latent pixel
    patch_size: int = 16            # image pixels per latent pixel along one side
    base_ch: int = 128
    encoder_ch_mult: tuple[int, ...] = (1, 2, 4, 4, 4)
    decoder_ch_mult: tuple[int, ...] = (1, 2, 4, 4, 4)
    num_res_blocks: int = 2
    norm_eps: float = 1e-6


@dataclass(frozen=True)
class InfinityConfig:
    """The Infinity transformer. Every switch the released models fix is hard-wired in the code."""

    depth: int = 32
    embed_dim: int = 2048
    num_heads: int = 16
    mlp_ratio: float = 4.0
    block_chunks: int = 8
    text_channels: int = 2048       # T5 feature width
    text_maxlen: int = 512
    codebook_dim: int = 32          # bits per latent pixel of the paired VAE
    apply_spatial_patchify: bool = False  # 8B: one token = 2x2 latent pixels
    norm_eps: float = 1e-6
    num_levels: int = 15            # rows of lvl_embed
    max_scale_mul_log: float = 4.605170185988092  # ln(100): clamp of the cosine-attention scale
    vae: VAEConfig = field(default_factory=VAEConfig)

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def token_dim(self) -> int:
        """Channels of one transformer token: d, or 4d with spatial patchify."""
        return self.codebook_dim * (4 if self.apply_spatial_patchify else 1)

    @property
    def logit_dim(self) -> int:
        return 2 * self.token_dim

    @property
    def ffn_hidden(self) -> int:
        return round(self.embed_dim * self.mlp_ratio / 256) * 256

    @property
    def blocks_per_chunk(self) -> int:
        return self.depth // self.block_chunks

    @property
    def pool_head_dim(self) -> int:
        return 64 if self.embed_dim > 4096 else 128

    @property
    def pool_heads(self) -> int:
        return self.text_channels // self.pool_head_dim

    def __post_init__(self):
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.depth % self.block_chunks:
            raise ValueError(f"depth {self.depth} is not divisible by block_chunks {self.block_chunks}")
        if self.head_dim % 4:
            raise ValueError("head_dim must be a multiple of 4 for 2-D RoPE")
        if self.vae.codebook_dim != self.codebook_dim:
            raise ValueError("InfinityConfig.codebook_dim must equal its VAE's codebook_dim")


VAE_PRESETS: dict[str, VAEConfig] = {
    "infinity_vae_d32reg": VAEConfig(codebook_dim=32, patch_size=16, encoder_ch_mult=(1, 2, 4, 4, 4),
                                     decoder_ch_mult=(1, 2, 4, 4, 4)),
    "infinity_vae_d56_f8_14_patchify": VAEConfig(codebook_dim=14, patch_size=8, encoder_ch_mult=(1, 2, 4, 4),
                                                 decoder_ch_mult=(1, 2, 4, 4)),
    # the tiny configuration of the shared golden data
    "tiny_vae": VAEConfig(codebook_dim=16, patch_size=16, base_ch=32, encoder_ch_mult=(1, 1, 1, 1, 2),
                          decoder_ch_mult=(1, 1, 1, 1, 2)),
}

PRESETS: dict[str, InfinityConfig] = {
    "infinity_2b": InfinityConfig(depth=32, embed_dim=2048, num_heads=16, block_chunks=8, codebook_dim=32,
                                  vae=VAE_PRESETS["infinity_vae_d32reg"]),
    "infinity_8b": InfinityConfig(depth=40, embed_dim=3584, num_heads=28, block_chunks=8, codebook_dim=14,
                                  apply_spatial_patchify=True, vae=VAE_PRESETS["infinity_vae_d56_f8_14_patchify"]),
    "tiny": InfinityConfig(depth=4, embed_dim=128, num_heads=4, block_chunks=2, text_channels=256, text_maxlen=32,
                           codebook_dim=16, vae=VAE_PRESETS["tiny_vae"]),
}

# The released models: family name, the words that identify their transformer and VAE files, which VAE
# file belongs to which transformer (loaders check the weights; the node checks file names before loading),
# and the public sampling setting of each (INFINITY_SPEC A.14): cfg 3 for both; tau 0.5 in the 2B's
# scripts and notebook (and TTS-VAR's run.bash), 1.0 in the 8B's notebooks.
RELEASES = {
    "Infinity-2B": {"model_words": ("2b",), "vae_words": ("d32reg", "d32"), "vae_file": "infinity_vae_d32reg.pth",
                    "cfg": 3.0, "tau": 0.5},
    "Infinity-8B": {"model_words": ("8b",), "vae_words": ("d56",), "vae_file": "infinity_vae_d56_f8_14_patchify.pth",
                    "cfg": 3.0, "tau": 1.0},
}
PAIRING_HINT = "Infinity-2B pairs with {}, Infinity-8B with {}".format(*(r["vae_file"] for r in RELEASES.values()))


def release_of(cfg: InfinityConfig) -> str:
    """The release a configuration belongs to for its defaults: the 8B is the one whose tokens cover 2x2
    latent cells (apply_spatial_patchify); every other configuration (2B, tiny and test models) is 2B-like."""
    return "Infinity-8B" if cfg.apply_spatial_patchify else "Infinity-2B"

# manifest checkpoint name -> preset
MANIFEST_PRESETS = {
    "infinity_2b_reg": ("infinity", "infinity_2b"),
    "infinity_8b_weights": ("infinity", "infinity_8b"),
    "infinity_vae_d32reg": ("vae", "infinity_vae_d32reg"),
    "infinity_vae_d56_f8_14_patchify": ("vae", "infinity_vae_d56_f8_14_patchify"),
}


def pixels_per_token(model_cfg: InfinityConfig, vae_cfg: VAEConfig) -> int:
    """Image pixels per token side: the VAE's patch, times 2 where a token covers 2x2 latent cells (8B)."""
    return vae_cfg.patch_size * (2 if model_cfg.apply_spatial_patchify else 1)


def preset(name: str, **overrides) -> InfinityConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown Infinity preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def config_from_golden(tiny: dict) -> InfinityConfig:
    """Builds the configuration described by a golden JSON's `tiny_config` section."""
    v, t = tiny["vae"], tiny["infinity"]
    vae = VAEConfig(codebook_dim=v["codebook_dim"], patch_size=v["patch_size"], base_ch=v["base_ch"],
                    encoder_ch_mult=tuple(v["encoder_ch_mult"]), decoder_ch_mult=tuple(v["decoder_ch_mult"]),
                    num_res_blocks=v.get("num_res_blocks", 2))
    return InfinityConfig(depth=t["depth"], embed_dim=t["embed_dim"], num_heads=t["num_heads"],
                          mlp_ratio=t.get("mlp_ratio", 4), block_chunks=t["block_chunks"],
                          text_channels=t["text_channels"], text_maxlen=t["text_maxlen"],
                          codebook_dim=v["codebook_dim"], apply_spatial_patchify=bool(t.get("apply_spatial_patchify", 0)),
                          vae=vae)
