"""DINOv2 ViT with register tokens (TTS-VAR uses dinov2_vitl14_reg) as a feature extractor.

A small ViT written here with the official (torch.hub) parameter names, so neither torch.hub,
timm nor transformers code is needed at run time. Three on-disk layouts are accepted and
converted to that naming:
- official: dinov2_vitl14_reg4_pretrain.pth (torch.hub checkpoint), or the same keys in .safetensors;
- transformers: a facebook/dinov2-with-registers-large folder, or its model.safetensors alone;
- timm: vit_large_patch14_reg4_dinov2 weights (.safetensors / .pth / .bin).
All give the same patch tokens (the official `x_norm_patchtokens`).
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from PIL import Image

from .base import FeatureExtractor, Features
from .checkpoints import (StateDict, check_keys, empty_module, flat_tensors, load_into, read_tensors,
                          require_file, wrong_file)
from .errors import FEATURES_DIR, WrongFileError, not_found
from .hf_folders import read_json
from .images import IMAGENET_MEAN, IMAGENET_STD, resize_exact, to_normalized_tensor

EXPECTED = ("DINOv2 ViT-L/14 with registers: dinov2_vitl14_reg4_pretrain.pth, a "
            "facebook/dinov2-with-registers-large folder, or timm vit_large_patch14_reg4_dinov2 weights")
HEAD_DIM = 64  # every official DINOv2 size uses 64-dimensional heads
EPS = 1e-6
DEFAULT_IMAGE_SIZE = 224  # TTS-VAR resizes to 16 x 14 pixels per side


@dataclass(frozen=True)
class VitShape:
    dim: int
    depth: int
    heads: int
    patch: int
    registers: int
    pos_tokens: int  # positional embeddings including the class token's
    mlp_hidden: int
    eps: float = EPS


class _Attention(torch.nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _LayerScale(torch.nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = torch.nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _Mlp(torch.nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = torch.nn.Linear(dim, hidden)
        self.fc2 = torch.nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(torch.nn.Module):
    def __init__(self, shape: VitShape):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(shape.dim, eps=shape.eps)
        self.attn = _Attention(shape.dim, shape.heads)
        self.ls1 = _LayerScale(shape.dim)
        self.norm2 = torch.nn.LayerNorm(shape.dim, eps=shape.eps)
        self.mlp = _Mlp(shape.dim, shape.mlp_hidden)
        self.ls2 = _LayerScale(shape.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _PatchEmbed(torch.nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = torch.nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoV2(torch.nn.Module):
    """ViT with class token, register tokens (inserted after the class token, without positional
    embedding) and LayerScale; official parameter names."""

    def __init__(self, shape: VitShape):
        super().__init__()
        self.shape = shape
        self.patch_embed = _PatchEmbed(shape.patch, shape.dim)
        self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, shape.dim))
        self.register_tokens = torch.nn.Parameter(torch.zeros(1, shape.registers, shape.dim))
        self.mask_token = torch.nn.Parameter(torch.zeros(1, shape.dim))  # training only; kept for the key set
        self.pos_embed = torch.nn.Parameter(torch.zeros(1, shape.pos_tokens, shape.dim))
        self.blocks = torch.nn.ModuleList(_Block(shape) for _ in range(shape.depth))
        self.norm = torch.nn.LayerNorm(shape.dim, eps=shape.eps)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Returns the final-normed token sequence [B, 1 + registers + patches, dim]."""
        b, _, h, w = pixels.shape
        x = self.patch_embed(pixels)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        x = x + self._positions(h // self.shape.patch, w // self.shape.patch).to(x.dtype)
        x = torch.cat([x[:, :1], self.register_tokens.expand(b, -1, -1), x[:, 1:]], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def _positions(self, rows: int, cols: int) -> torch.Tensor:
        """Patch position embeddings resized to the input grid the way the official code does for
        the _reg models: bicubic, antialiased, by output size, in float32."""
        pos = self.pos_embed
        grid = math.isqrt(pos.shape[1] - 1)
        if rows == cols == grid:
            return pos
        patch_pos = pos[:, 1:].float().reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=(rows, cols), mode="bicubic", antialias=True)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, rows * cols, -1).to(pos.dtype)
        return torch.cat([pos[:, :1], patch_pos], dim=1)


# ---- on-disk layouts -> official names -------------------------------------------------------

def detect_layout(keys) -> Optional[str]:
    keys = set(keys)
    if "register_tokens" in keys and "blocks.0.attn.qkv.weight" in keys:
        return "official"
    if "reg_token" in keys and "blocks.0.attn.qkv.weight" in keys:
        return "timm"
    if "embeddings.register_tokens" in keys:
        return "transformers"
    return None


def from_timm(sd: StateDict) -> StateDict:
    """timm stores patch positions only (no_embed_class) and has folded the class token's
    position embedding into cls_token; a zero class slot in pos_embed plus timm's cls_token
    therefore gives the official model identical outputs."""
    out = {k: v for k, v in sd.items() if k not in ("reg_token", "pos_embed")}
    out["register_tokens"] = sd["reg_token"]
    pos = sd["pos_embed"]
    out["pos_embed"] = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)
    out["mask_token"] = torch.zeros(1, pos.shape[-1], dtype=pos.dtype)
    return out


_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.mask_token": "mask_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.register_tokens": "register_tokens",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
# Per-layer renames; transformers 4 (and saved folders) use attention.attention.query/...,
# transformers 5 in memory uses q_proj/k_proj/v_proj/o_proj.
_HF_LAYER = {
    "norm1": "norm1", "norm2": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
    "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma",
    "attention.output.dense": "attn.proj", "attention.o_proj": "attn.proj",
}
# transformers stores query, key and value separately; the official model fuses them, in
# that order, into one qkv projection.
_HF_QKV = {
    "attention.attention.query": 0, "attention.attention.key": 1, "attention.attention.value": 2,
    "attention.q_proj": 0, "attention.k_proj": 1, "attention.v_proj": 2,
}


def from_transformers(sd: StateDict, path: Path) -> StateDict:
    out: StateDict = {}
    qkv: Dict[str, list] = {}
    for key, value in sd.items():
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
            continue
        if not key.startswith("encoder.layer."):
            out[key] = value  # left for the strict key check to report
            continue
        _, _, index, rest = key.split(".", 3)
        name, _, leaf = rest.rpartition(".")
        if rest in _HF_LAYER:  # LayerScale's lambda1 has no weight/bias suffix
            out[f"blocks.{index}.{_HF_LAYER[rest]}"] = value
        elif name in _HF_LAYER:
            out[f"blocks.{index}.{_HF_LAYER[name]}.{leaf}"] = value
        elif name in _HF_QKV:
            qkv.setdefault(f"blocks.{index}.attn.qkv.{leaf}", [None, None, None])[_HF_QKV[name]] = value
        else:
            out[f"blocks.{index}.{rest}"] = value
    for key, parts in qkv.items():
        if any(p is None for p in parts):
            raise wrong_file(path, sd, EXPECTED, FEATURES_DIR, f"{key}: incomplete query/key/value weights.")
        out[key] = torch.cat(parts, dim=0)
    return out


def official_state_dict(sd: StateDict, path: Path) -> StateDict:
    layout = detect_layout(sd)
    if layout is None:
        raise wrong_file(path, sd, EXPECTED, FEATURES_DIR, _no_registers_hint(sd))
    if layout == "timm":
        return from_timm(sd)
    if layout == "transformers":
        return from_transformers(sd, path)
    return sd


def _no_registers_hint(sd: StateDict) -> str:
    if "blocks.0.ls1.gamma" in sd or "encoder.layer.0.layer_scale1.lambda1" in sd:
        return ("This DINOv2 has no register tokens; TTS-VAR uses the '_reg' model "
                "(dinov2_vitl14_reg4_pretrain.pth), whose features differ.")
    return ""


def infer_shape(sd: StateDict, path: Path, heads: Optional[int] = None, eps: float = EPS) -> VitShape:
    if any(".mlp.w12." in k or ".mlp.weights_in." in k for k in sd):
        raise wrong_file(path, sd, EXPECTED, FEATURES_DIR,
                         "It uses a SwiGLU MLP (ViT-g); only ViT-S/B/L with registers are supported.")
    try:
        dim = sd["cls_token"].shape[-1]
        shape = VitShape(
            dim=dim,
            depth=1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks.")),
            heads=heads or dim // HEAD_DIM,
            patch=sd["patch_embed.proj.weight"].shape[-1],
            registers=sd["register_tokens"].shape[1],
            pos_tokens=sd["pos_embed"].shape[1],
            mlp_hidden=sd["blocks.0.mlp.fc1.weight"].shape[0],
            eps=eps,
        )
    except (KeyError, ValueError, IndexError) as exc:
        raise wrong_file(path, sd, EXPECTED, FEATURES_DIR, f"Missing or malformed tensor {exc}.") from exc
    if shape.dim % shape.heads or math.isqrt(shape.pos_tokens - 1) ** 2 != shape.pos_tokens - 1:
        raise wrong_file(path, sd, EXPECTED, FEATURES_DIR, "Its tensor shapes are not those of a DINOv2 ViT.")
    return shape


def build_model(sd: StateDict, path: Path, heads: Optional[int] = None, eps: float = EPS) -> DinoV2:
    sd = official_state_dict(sd, path)
    shape = infer_shape(sd, path, heads, eps)
    model = empty_module(lambda: DinoV2(shape))
    check_keys(path, sd, model.state_dict().keys(), EXPECTED, FEATURES_DIR)
    return load_into(model, sd, path, EXPECTED, FEATURES_DIR)


# ---- files and folders ----------------------------------------------------------------------

_HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def read_weights(path) -> Dict:
    """Returns dict(state_dict=..., path=..., heads=..., eps=...) for a file or a transformers folder."""
    path = Path(path)
    if not path.exists():
        raise not_found(path, EXPECTED, FEATURES_DIR)
    if path.is_dir():
        return _read_folder(path)
    path = require_file(path, EXPECTED, FEATURES_DIR)
    return {"state_dict": flat_tensors(read_tensors(path, EXPECTED), path, EXPECTED, FEATURES_DIR), "path": path,
            "heads": None, "eps": EPS}


def _read_folder(folder: Path) -> Dict:
    config = read_json(folder / "config.json", EXPECTED)
    if config.get("model_type") != "dinov2_with_registers":
        raise WrongFileError(
            f"{folder} holds a '{config.get('model_type')}' model (config.json), but {EXPECTED} was "
            f"expected in {FEATURES_DIR}; the folder must be facebook/dinov2-with-registers-large."
        )
    if config.get("use_swiglu_ffn"):
        raise WrongFileError(f"{folder}: SwiGLU DINOv2 (ViT-g) is not supported; use ViT-L/14 with registers.")
    weights = next((folder / n for n in _HF_WEIGHTS if (folder / n).exists()), None)
    if weights is None:
        raise not_found(folder / _HF_WEIGHTS[0], "the weights of " + EXPECTED, FEATURES_DIR)
    sd = flat_tensors(read_tensors(weights, EXPECTED), weights, EXPECTED, FEATURES_DIR)
    return {"state_dict": sd, "path": weights, "heads": config.get("num_attention_heads"),
            "eps": config.get("layer_norm_eps", EPS)}


class DinoV2Extractor(FeatureExtractor):
    """patch_tokens: the official x_norm_patchtokens [B, (size/14)^2, dim]; pooled: x_norm_clstoken."""

    name = "dinov2"

    def __init__(self, path, *, device="cpu", dtype=torch.float32, max_batch=8, image_size=DEFAULT_IMAGE_SIZE):
        found = read_weights(path)
        model = build_model(found["state_dict"], found["path"], found["heads"], found["eps"])
        if image_size % model.shape.patch:
            raise ValueError(f"image_size must be a multiple of the patch size {model.shape.patch}, got {image_size}")
        self.image_size = image_size
        super().__init__({"vit": model}, device=device, dtype=dtype, max_batch=max_batch)

    def preprocess(self, images: List[Image.Image]) -> torch.Tensor:
        """TTS-VAR: transforms.Resize((224, 224)) on PIL (bilinear), ToTensor, ImageNet normalisation."""
        size = self.image_size
        resized = [resize_exact(im, size, size, Image.BILINEAR) for im in images]
        return to_normalized_tensor(resized, IMAGENET_MEAN, IMAGENET_STD)

    def _extract_chunk(self, images: List[Image.Image]) -> Features:
        vit = self._modules["vit"]
        tokens = vit(self.preprocess(images).to(self.device, self.dtype))
        first_patch = 1 + vit.shape.registers
        return Features(patch_tokens=tokens[:, first_patch:], pooled=tokens[:, 0])
