"""Loading the official checkpoint formats strictly: every key checked, straight into device and dtype.

Formats: a flat `.pth` state dict (Infinity-2B), a sharded folder with an HF index json (Infinity-8B,
`.bin` or `.safetensors` shards), a VAE `.pth` with its weights under `'vae'` (wrapped or flux-style key
names), and `.safetensors` equivalents of each. Models are built on the meta device and every tensor is
converted on its way in, so no full float32 copy of a bf16 model is ever held in RAM.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open

from .config import PAIRING_HINT, PRESETS, VAE_PRESETS, InfinityConfig, VAEConfig
from .files import INDEX_FILES, holds_code, leaves_folder, shard_outside
from .infinity import Infinity
from .vae import BSQVAE

CONFIG_METADATA_KEY = "ttsvar_config"
_LEGACY_BUFFERS = ("lvl_1L", "attn_bias_for_masking", "Infinity_visible_kvlen", "Infinity_invisible_qlen")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with what was expected and how to fix it."""


# ---- reading files -------------------------------------------------------------------------------------
class TensorSource:
    """Name -> tensor access to a checkpoint without materialising more than one tensor at a time
    (safetensors are memory-mapped; `.pth` files are loaded with mmap where possible)."""

    def __init__(self, path: str | os.PathLike, subkey: str | None = None, prefix: str = ""):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"checkpoint not found: {self.path}")
        self._files: dict[str, Path] = {}
        self._open: dict[Path, object] = {}
        self.metadata: dict[str, str] = {}
        if self.path.is_dir():
            self._read_index()
        elif self.path.suffix == ".safetensors":
            handle = self._open_file(self.path)
            self._files = {k: self.path for k in handle.keys()}
            self.metadata = handle.metadata() or {}
        else:
            state = self._torch_load(self.path)
            if subkey and isinstance(state, dict) and subkey in state and isinstance(state[subkey], dict):
                state = state[subkey]
            self._check_flat(state)
            self._open[self.path] = state
            self._files = {k: self.path for k in state}
        if prefix:  # e.g. "transformer." in a combined golden file
            self._files = {k[len(prefix):]: f for k, f in self._files.items() if k.startswith(prefix)}
        self._prefix = prefix

    def _read_index(self):
        index = next((self.path / n for n in INDEX_FILES if (self.path / n).exists()), None)
        if index is None:
            raise CheckpointError(f"{self.path} is a folder but has no {' or '.join(INDEX_FILES)}: a sharded "
                                  "Infinity-8B checkpoint folder needs its index file next to the shards")
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index} is not a valid shard index ({e})") from e
        for key, shard in weight_map.items():
            if not isinstance(shard, str):
                raise CheckpointError(f"{index} is not a valid shard index (the entry of {key} is {shard!r}, not a "
                                      "file name); copy the checkpoint folder again from its source")
            if leaves_folder(shard):
                raise CheckpointError(shard_outside(self.path, index, shard))
            shard_path = self.path / shard
            if not shard_path.exists():
                raise CheckpointError(f"shard {shard} named in {index.name} is missing from {self.path}")
            self._files[key] = shard_path

    @staticmethod
    def _torch_load(path: Path):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise CheckpointError(f"cannot read {path}: the file is truncated or corrupted ({e}); "
                                      "download it again") from e
        except Exception as e:  # the unpickler raises many types for damaged or foreign files
            if holds_code(e):
                raise CheckpointError(f"{path} holds Python objects (code), not only tensors, and is refused "
                                      "unread for safety; use the official weights file") from e
            raise CheckpointError(f"cannot read {path} as a PyTorch checkpoint ({type(e).__name__}: {e}); "
                                  "the file is truncated, corrupted or not a weights file") from e
        try:  # legacy (non-zip) files cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"cannot read {path} as a PyTorch checkpoint ({type(e).__name__}: {e})") from e

    def _check_flat(self, state):
        if isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()):
            return
        nested = [(k, v) for k, v in state.items() if isinstance(v, dict)] if isinstance(state, dict) else []
        if len(nested) == 1:  # e.g. a VAE file ('vae': {...}) in the transformer slot
            key, inner = nested[0]
            found = describe_keys(inner)
            raise CheckpointError(f"{self.path} is {found} (its weights sit under '{key}'), not the flat state dict "
                                  "this slot takes: it belongs in another slot")
        kinds = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{self.path} does not hold a flat state dict of tensors (found {kinds})")

    def _open_file(self, path: Path):
        if path not in self._open:
            if path.suffix == ".safetensors":
                try:
                    self._open[path] = safe_open(str(path), framework="pt", device="cpu")
                except Exception as e:  # safetensors raises its own error type for damaged headers
                    raise CheckpointError(f"cannot read {path} as safetensors ({e}); the file is truncated or "
                                          "corrupted: download it again") from e
            else:
                state = self._torch_load(path)
                self._check_flat(state)
                self._open[path] = state
        return self._open[path]

    def keys(self) -> list[str]:
        return list(self._files)

    def shape(self, key: str) -> tuple[int, ...]:
        handle = self._open_file(self._files[key])
        if isinstance(handle, dict):
            return tuple(handle[self._prefix + key].shape)
        return tuple(handle.get_slice(self._prefix + key).get_shape())

    def get(self, key: str) -> torch.Tensor:
        handle = self._open_file(self._files[key])
        try:
            name = self._prefix + key
            return handle[name] if isinstance(handle, dict) else handle.get_tensor(name)
        except Exception as e:
            raise CheckpointError(f"cannot read tensor {key} from {self._files[key]} ({e}); "
                                  "the file is truncated or corrupted") from e

    def config_metadata(self) -> dict | None:
        raw = self.metadata.get(CONFIG_METADATA_KEY)
        return json.loads(raw) if raw else None


# ---- recognising what a file is -------------------------------------------------------------------------
LOOKS_LIKE_VAE = "a VAE checkpoint"
LOOKS_LIKE_TRANSFORMER = "an Infinity transformer checkpoint"


def describe_keys(keys) -> str:
    keys = set(keys)
    # before the VAE test: T5's keys start with encoder. too
    if any(k.startswith(("encoder.block.", "shared.")) for k in keys):
        return "a T5 text encoder"
    if any(k.startswith(("encoder.", "decoder.")) for k in keys):
        return LOOKS_LIKE_VAE
    if "pos_start" in keys or any(k.startswith("block_chunks.") for k in keys):
        return LOOKS_LIKE_TRANSFORMER
    if any(k.startswith(("blocks.", "module.", "model.")) for k in keys):
        return "a transformer with a different key layout (expected block_chunks.{i}.module.{j}.*)"
    if any("text_model" in k or "vision_model" in k or "visual." in k for k in keys):
        return "a CLIP/BLIP-style checkpoint (reward or feature model)"
    return "an unknown checkpoint"


def wrong_kind(path, keys, looks_like: str, wanted: str, missing: str, slot_hint: str) -> CheckpointError:
    """A file the loader cannot use: of another kind (it goes into another slot), or of the wanted kind
    with `missing` absent (incomplete: an interrupted download, a shard index naming too few keys)."""
    found = describe_keys(keys)
    if found == looks_like:
        return CheckpointError(f"{path} looks like {found} but has no {missing}: the file is incomplete or "
                               "damaged; download it again (every shard, for a folder)")
    return CheckpointError(f"{path} is {found}, not {wanted}; {slot_hint}")


def vae_config_from_source(src: TensorSource) -> VAEConfig:
    meta = src.config_metadata()
    if meta and "vae" in meta:
        return _vae_from_dict(meta["vae"])
    keys = set(src.keys())

    def find(wrapped: str) -> str | None:
        plain = _plain_vae_name(wrapped)
        return wrapped if wrapped in keys else plain if plain in keys else None

    if find("decoder.conv_in.conv.weight") is None:
        raise wrong_kind(src.path, keys, LOOKS_LIKE_VAE, "an Infinity VAE", "decoder.conv_in weights",
                         "put the VAE file into the VAE slot")
    d = src.shape(find("decoder.conv_in.conv.weight"))[1]
    enc_in = find("encoder.conv_in.conv.weight")
    base = src.shape(enc_in)[0] if enc_in else 128
    levels = sorted({int(m.group(1)) for k in keys if (m := re.match(r"decoder\.up\.(\d+)\.", k))})
    mult = tuple(src.shape(find(f"decoder.up.{lv}.block.0.conv2.conv.weight"))[0] // base for lv in levels)
    ups = sum(1 for lv in levels if find(f"decoder.up.{lv}.upsample.conv.conv.weight"))
    return VAEConfig(codebook_dim=d, patch_size=2 ** ups, base_ch=base, encoder_ch_mult=mult, decoder_ch_mult=mult)


def _vae_from_dict(d: dict) -> VAEConfig:
    d = dict(d)
    for k in ("encoder_ch_mult", "decoder_ch_mult"):
        d[k] = tuple(d[k])
    return VAEConfig(**d)


def infinity_config_from_source(src: TensorSource, vae: VAEConfig | None = None) -> InfinityConfig:
    meta = src.config_metadata()
    if meta and "infinity" in meta:
        d = dict(meta["infinity"])
        d["vae"] = _vae_from_dict(d["vae"])
        return InfinityConfig(**d)
    keys = set(src.keys())
    missing = [k for k in ("pos_start", "word_embed.weight") if k not in keys]
    if missing:
        raise wrong_kind(src.path, keys, LOOKS_LIKE_TRANSFORMER, "an Infinity transformer", " or ".join(missing),
                         "put the transformer file (e.g. infinity_2b_reg.pth) into the model slot")
    embed_dim = src.shape("pos_start")[-1]
    for name, cfg in PRESETS.items():  # a released model: its preset (and so its VAE) is known
        if cfg.embed_dim == embed_dim and src.shape("word_embed.weight")[1] == cfg.token_dim \
                and f"block_chunks.{cfg.block_chunks - 1}.module.{cfg.blocks_per_chunk - 1}.ada_gss" in keys \
                and name != "tiny":
            return cfg
    chunks = {int(m.group(1)) for k in keys if (m := re.match(r"block_chunks\.(\d+)\.module\.(\d+)\.", k))}
    per_chunk = {int(m.group(2)) for k in keys if (m := re.match(r"block_chunks\.(\d+)\.module\.(\d+)\.", k))}
    token_dim = src.shape("word_embed.weight")[1]
    if vae is None:
        raise CheckpointError(f"{src.path} is a custom-size Infinity model: load its VAE first so the token "
                              "layout can be determined, or save the model with its config metadata")
    if token_dim not in (vae.codebook_dim, 4 * vae.codebook_dim):
        raise CheckpointError(f"the transformer {src.path} takes {token_dim}-channel tokens but the VAE has "
                              f"{vae.codebook_dim} bits per latent pixel: they do not belong together")
    return InfinityConfig(depth=len(chunks) * len(per_chunk), embed_dim=embed_dim,
                          num_heads=src.shape("block_chunks.0.module.0.sa.scale_mul_1H11")[1],
                          block_chunks=len(chunks), text_channels=src.shape("text_norm.weight")[0],
                          text_maxlen=src.shape("cfg_uncond")[0], codebook_dim=vae.codebook_dim,
                          apply_spatial_patchify=token_dim == 4 * vae.codebook_dim, vae=vae)


def config_metadata(cfg: InfinityConfig | VAEConfig) -> dict[str, str]:
    """safetensors metadata that lets custom-size models load without guessing."""
    key = "vae" if isinstance(cfg, VAEConfig) else "infinity"
    return {CONFIG_METADATA_KEY: json.dumps({key: asdict(cfg)})}


# ---- strict loading ------------------------------------------------------------------------------------
def _plain_vae_name(key: str) -> str:
    """The flux-style spelling of a wrapped VAE key: `conv_in.conv.weight` -> `conv_in.weight`,
    `norm1.norm.bias` -> `norm1.bias`. The official loader accepts both."""
    return re.sub(r"\.(conv|norm)\.(weight|bias)$", r".\2", key)


def summarize_keys(keys: list[str], limit: int = 12) -> str:
    """Readable key lists: whole blocks collapse to `block_chunks.1.module.0.* (19 keys)`."""
    groups: dict[str, list[str]] = {}
    for k in keys:
        m = re.match(r"((?:block_chunks\.\d+\.module\.\d+|blocks\.\d+|(?:en|de)coder\.\w+\.\d+)\.)", k)
        groups.setdefault(m.group(1) + "*" if m else k, []).append(k)
    items = [g if len(v) == 1 and g == v[0] else f"{g} ({len(v)} keys)" for g, v in groups.items()]
    return ", ".join(items[:limit]) + (f" ... (+{len(items) - limit} more)" if len(items) > limit else "")


def mismatch_report(path, kind, missing, unexpected, mismatched, found_desc, hint):
    """The error for a file whose keys or shapes do not match the model (also used for the T5 single file)."""
    lines = [f"{path} does not match the expected {kind}."]
    if found_desc:
        lines.append(f"It looks like {found_desc}.")
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected)):
        if items:
            lines.append(f"{len(items)} {title}: {summarize_keys(items)}")
    if mismatched:
        lines.append(f"{len(mismatched)} shape mismatches: " + "; ".join(mismatched[:8]))
    if hint:
        lines.append(hint)
    return CheckpointError("\n".join(lines))


def _load_strict(model: torch.nn.Module, src: TensorSource, name_map: dict[str, str], optional: dict,
                 dtype_of, device, kind: str, hint: str = "", adapt=None):
    """Fills a meta-device model from `src`: name_map maps model key -> file key; `optional` gives
    defaults for buffers that may be absent. Raises with a full key report on any mismatch."""
    expected = model.state_dict(keep_vars=True)
    file_keys = set(src.keys())
    missing = sorted(k for k in expected if name_map.get(k) not in file_keys and k not in optional)
    used = {name_map[k] for k in expected if name_map.get(k) in file_keys}
    ignorable = {k for k in file_keys if k.split(".")[-1] in _LEGACY_BUFFERS or k.endswith("lfq.mask")}
    unexpected = sorted(file_keys - used - ignorable)
    mismatched = []
    for k, param in expected.items():
        fk = name_map.get(k)
        if fk in file_keys:
            shape = src.shape(fk)
            if adapt and k in adapt:
                continue
            if tuple(shape) != tuple(param.shape):
                mismatched.append(f"{k}: file {list(shape)} vs model {list(param.shape)}")
    if missing or unexpected or mismatched:
        raise mismatch_report(src.path, kind, missing, unexpected, mismatched,
                              describe_keys(file_keys) if missing else "", hint)
    state = {}
    for k, param in expected.items():
        fk = name_map.get(k)
        tensor = src.get(fk) if fk in file_keys else optional[k]()
        if adapt and k in adapt:
            tensor = adapt[k](tensor)
        target = tensor.dtype if not tensor.is_floating_point() else dtype_of(k)
        # always a copy: a CPU tensor of the right dtype would otherwise stay memory-mapped from the file
        # (files.in_process_memory says why that must not happen)
        state[k] = tensor.to(device=device, dtype=target, copy=True)
    model.load_state_dict(state, strict=True, assign=True)
    return model


def _pair_hint(slot: str, found_cfg_desc: str) -> str:
    return (f"The {slot} slot expects the file of the chosen model; found {found_cfg_desc}. "
            f"{PAIRING_HINT}.")


def load_vae(path, *, device="cpu", dtype=torch.float32, expected: VAEConfig | None = None) -> BSQVAE:
    src = path if isinstance(path, TensorSource) else TensorSource(path, subkey="vae")
    cfg = vae_config_from_source(src)
    if expected is not None and cfg != expected:
        names = {v: k for k, v in VAE_PRESETS.items()}
        raise CheckpointError(f"{src.path} is the VAE {names.get(cfg, f'with {cfg.codebook_dim} bits, patch {cfg.patch_size}')}"
                              f" but this transformer needs {names.get(expected, f'{expected.codebook_dim} bits')}. "
                              + _pair_hint("VAE", "a VAE of the other model"))
    with torch.device("meta"):
        model = BSQVAE(cfg)
    file_keys = set(src.keys())
    name_map = {k: k if k in file_keys else _plain_vae_name(k) for k in model.state_dict()}
    mask = lambda: 2 ** torch.arange(cfg.codebook_dim - 1, -1, -1)  # noqa: E731 (a lazy default)
    optional = {k: mask for k in model.state_dict() if k.endswith("lfq.mask")}
    _load_strict(model, src, name_map, optional, lambda k: dtype, device, "Infinity VAE")
    return model.eval().requires_grad_(False)


# How the blocks' matmul weights can be stored (load_infinity's weight_storage), each narrower than a compute
# dtype it serves: a stored weight is upcast to its layer's compute dtype just before its matmul.
WEIGHT_STORAGE = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.float8_e4m3fn}


def is_storage_slot(key: str, ndim: int) -> bool:
    """The tensors a weight storage applies to: the blocks' matmul weights (90% of the parameters). Biases,
    norms and AdaLN tables stay in the compute dtype: they are small and sensitive."""
    return key.startswith("block_chunks.") and key.endswith(".weight") and ndim == 2


def store_fp8(model: Infinity, fp8_dtype: torch.dtype = torch.float8_e4m3fn) -> Infinity:
    """Stores the blocks' matmul weights in fp8 (in place); they are upcast per layer when they run."""
    for name, p in model.named_parameters():
        if is_storage_slot(name, p.ndim):
            p.data = p.data.to(fp8_dtype)
    return model


def storage_dtype(weight_storage: str | None, dtype: torch.dtype, device="cpu") -> torch.dtype | None:
    """The dtype the blocks' matmul weights are stored in, None when they are stored as they compute.
    Refuses a storage that saves nothing (as wide as the compute dtype: it would only round the weights
    twice) and fp8 where the device has no float8 type."""
    if weight_storage is None:
        return None
    if weight_storage not in WEIGHT_STORAGE:
        raise ValueError(f"unknown weight storage {weight_storage!r}; choose None (stored as computed) or one of "
                         f"{list(WEIGHT_STORAGE)}")
    stored = WEIGHT_STORAGE[weight_storage]
    if stored == dtype:
        return None
    compute = str(dtype).removeprefix("torch.")
    if stored.itemsize >= dtype.itemsize:
        raise ValueError(f"weight storage {weight_storage} is no smaller than the compute dtype {compute}: it saves "
                         "no memory and rounds the weights twice. Store the weights as they compute (auto), choose "
                         "fp8 storage, or compute in fp32")
    if stored.itemsize == 1 and torch.device(device).type == "mps":
        raise ValueError("fp8 weight storage does not run on Apple MPS (it has no float8 type): choose bf16 or "
                         "fp16 storage")
    return stored


def load_infinity(path, *, vae_cfg: VAEConfig | None = None, device="cpu", dtype=torch.float32,
                  cfg: InfinityConfig | None = None, weight_storage: str | None = None) -> Infinity:
    """Blocks compute in `dtype`; embeddings, text modules, shared AdaLN and head stay float32 (as the
    official bf16 inference keeps them). `weight_storage` (a WEIGHT_STORAGE name narrower than `dtype`, e.g.
    "fp8": float8 e4m3fn, half the memory of bf16) stores the blocks' matmul weights in that dtype, upcast
    to `dtype` layer by layer as they run."""
    stored = storage_dtype(weight_storage, dtype, device)
    src = path if isinstance(path, TensorSource) else TensorSource(path)
    cfg = cfg or infinity_config_from_source(src, vae_cfg)
    if vae_cfg is not None and cfg.vae != vae_cfg:
        preset_name = next((n for n, c in PRESETS.items() if c == cfg), "this transformer")
        raise CheckpointError(f"the VAE does not belong to {preset_name} ({src.path}): "
                              + _pair_hint("VAE", f"a VAE with {vae_cfg.codebook_dim} bits per latent pixel"))
    with torch.device("meta"):
        model = Infinity(cfg)
    name_map = {k: k for k in model.state_dict()}
    optional = {k: (lambda n=model.state_dict()[k].shape[0]: torch.zeros(n))
                for k in model.state_dict() if k.endswith("zero_k_bias")}

    def fit_uncond(t: torch.Tensor) -> torch.Tensor:
        # the official loader adapts the learned unconditional table to text_maxlen; rows it would
        # initialise at random are zeros here (only prompts longer than the stored table reach them)
        if t.shape[1] != cfg.text_channels:
            raise mismatch_report(src.path, "Infinity transformer", [], [],
                                  [f"cfg_uncond width {t.shape[1]} vs {cfg.text_channels}"], "", "")
        if t.shape[0] >= cfg.text_maxlen:
            return t[: cfg.text_maxlen]
        return torch.cat([t, t.new_zeros(cfg.text_maxlen - t.shape[0], t.shape[1])])

    shapes = model.state_dict()

    def dtype_of(key: str):
        if stored is not None and is_storage_slot(key, shapes[key].ndim):
            return stored
        return dtype if key.startswith("block_chunks.") else torch.float32

    hint = ""
    if "pos_start" in src.keys() and tuple(src.shape("pos_start"))[-1] != cfg.embed_dim:
        hint = f"The file has width {src.shape('pos_start')[-1]}, the chosen configuration {cfg.embed_dim}."
    _load_strict(model, src, name_map, optional, dtype_of, device, "Infinity transformer", hint,
                 adapt={"cfg_uncond": fit_uncond})
    return model.eval().requires_grad_(False)


def build_random(cfg: InfinityConfig, seed: int = 0, std: float = 0.02, device="cpu",
                 dtype=torch.float32) -> tuple[Infinity, BSQVAE]:
    """A seeded random model pair (tests, benchmarks, tiny demos): non-trivial weights everywhere, made
    directly on `device` (a 2B-shaped model never exists on the CPU). Blocks in `dtype`, the rest fp32."""
    device = torch.device(device)
    with torch.device("meta"):
        model, vae = Infinity(cfg), BSQVAE(cfg.vae)
    model.to_empty(device=device)
    vae.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in list(model.named_parameters()) + list(vae.named_parameters()):
            noise = torch.randn(p.shape, generator=gen, device=device)
            if name.endswith("scale_mul_1H11"):
                p.copy_(math.log(4.0) + 0.3 * noise)
            elif p.ndim == 1 and "norm" in name:
                p.copy_(1 + 0.1 * noise)
            elif p.ndim >= 2 and ".conv." in name:
                p.copy_(noise * (1.6 / math.sqrt(p[0].numel())))
            elif name in ("pos_start", "lvl_embed.weight", "cfg_uncond"):
                p.copy_(0.3 * noise)
            else:
                p.copy_(noise * (std if p.ndim >= 2 else 0.1))
        for name, b in list(model.named_buffers()) + list(vae.named_buffers()):
            if name.endswith("lfq.mask"):
                b.copy_(2 ** torch.arange(cfg.codebook_dim - 1, -1, -1, device=device))
            else:
                b.zero_()
    for chunk in model.block_chunks:
        chunk.to(dtype)
    return model.eval().requires_grad_(False), vae.eval().requires_grad_(False)
