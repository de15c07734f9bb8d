"""T5 text encoding (flan-t5-xl for the released models) from local files only.

Two forms of the encoder load: a Hugging Face model folder (config.json, tokenizer, weights), or one
encoder-only `.safetensors` file written by `python -m ttsvar_core convert-t5` (the encoder and the shared
embedding, about a fifth of the folder, with the T5 config in its metadata). A single file carries no
tokenizer: the caller passes a tokenizer folder, e.g. ComfyUI's comfy/text_encoders/t5_tokenizer (T5 v1.1's
32k sentencepiece vocabulary, which flan-t5 shares).
"""
from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoints import (CONFIG_METADATA_KEY, WEIGHT_STORAGE, CheckpointError, TensorSource, describe_keys,
                          mismatch_report, storage_dtype)
from .dtypes import parse_dtype
from .files import HF_WEIGHT_FILES as WEIGHT_FILES
from .files import INDEX_FILES, check_shard_index, in_process_memory, unreadable_weights

TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
# T5EncoderModel ties the encoder's token embedding to `shared`: a single file stores the matrix once
TIED_KEYS = ("encoder.embed_tokens.weight",)
CONVERT_HINT = "python -m ttsvar_core convert-t5 FLAN_T5_XL_FOLDER OUT.safetensors"


class TextEncoderError(ValueError):
    pass


def check_text(text: str, what: str = "the prompt") -> None:
    """Refuses text the tokenizer cannot take: a lone surrogate (half of a UTF-16 pair, from a broken paste
    or a JSON escape such as \\ud800) is no character at all, and the tokenizer fails on it with a TypeError."""
    if not isinstance(text, str):
        raise TextEncoderError(f"{what} must be text, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise TextEncoderError(f"{what} holds an invalid character at position {e.start} ({text[e.start]!r}, half "
                               "of a UTF-16 surrogate pair, often from a broken copy and paste): retype that part "
                               "of the prompt") from None


def check_folder(folder: Path, *, own_tokenizer: bool = True) -> dict:
    """Fails early, naming what is missing, before transformers gets a chance to fail silently; returns the
    folder's config.json."""
    if not folder.is_dir():
        raise FileNotFoundError(f"text encoder folder not found: {folder} (expected a local flan-t5-xl folder with "
                                "config.json, tokenizer.json or spiece.model, and the weights)")
    config = read_t5_config(folder)
    if own_tokenizer:
        check_tokenizer_folder(folder)
    if not any((folder / f).exists() for f in WEIGHT_FILES):
        raise TextEncoderError(f"{folder} has no weights ({' / '.join(WEIGHT_FILES)})")
    problem = check_shard_index(folder)
    if problem:
        raise TextEncoderError(problem)
    return config


def read_t5_config(folder: Path) -> dict:
    if not (folder / "config.json").exists():
        raise TextEncoderError(f"{folder} has no config.json: point the text encoder at the flan-t5-xl folder itself")
    config = json.loads((folder / "config.json").read_text())
    _check_t5(config, folder)
    return config


def _check_t5(config: dict, where: Path) -> None:
    if "t5" not in str(config.get("model_type", "")).lower():
        raise TextEncoderError(f"{where} holds a {config.get('model_type')!r} model, not T5: Infinity needs "
                               "google/flan-t5-xl")


def check_tokenizer_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise FileNotFoundError(f"tokenizer folder not found: {folder} (expected a folder with tokenizer.json or "
                                "spiece.model, e.g. flan-t5-xl's or ComfyUI's comfy/text_encoders/t5_tokenizer)")
    if not any((folder / f).exists() for f in TOKENIZER_FILES):
        raise TextEncoderError(f"{folder} has no tokenizer (tokenizer.json or spiece.model): copy the tokenizer "
                               "files of flan-t5-xl into it")


def load_tokenizer(folder: Path, vocab_size: int):
    from transformers import AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), legacy=True, local_files_only=True)
    except (OSError, ValueError) as e:
        raise TextEncoderError(f"cannot load the tokenizer in {folder}: {e}. With only spiece.model, install "
                               "sentencepiece and protobuf, or add flan-t5-xl's tokenizer.json") from e
    # transformers 5 can return a tokenizer holding only special tokens when files are unusable: it
    # maps every word to <unk> without an error, which would silently wreck every prompt
    probe = tok("a photo of a cat").input_ids
    words = [i for i in probe if i not in tok.all_special_ids]
    if len(tok) < vocab_size - 256 or len(tok) > vocab_size or not words:
        raise TextEncoderError(f"the tokenizer in {folder} is unusable: {len(tok)} tokens for a model with "
                               f"{vocab_size} embeddings (a file is missing or damaged, or it belongs to another "
                               "model); copy flan-t5-xl's tokenizer.json (or spiece.model) again")
    return tok


# ---- the single-file form ------------------------------------------------------------------------------
def _encoder_keys(config) -> dict[str, tuple[int, ...]]:
    """Key -> shape of what a single file must hold for `config`: the meta-built encoder's state dict
    without the tied copy of the embedding."""
    from transformers import T5EncoderModel
    with torch.device("meta"):
        model = T5EncoderModel(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in TIED_KEYS}


def _describe_t5_file(src: TensorSource) -> str:
    keys = src.keys()
    found = describe_keys(keys)
    if "shared.weight" in keys:
        vocab, width = src.shape("shared.weight")
        blocks = len({k.split(".")[2] for k in keys if k.startswith("encoder.block.")})
        found += f" ({blocks} encoder blocks, width {width}, {vocab} embeddings; flan-t5-xl has 24, 2048, 32128)"
    return found


def open_t5_file(path: Path):
    """The T5 config and the tensors of a single file, checked key by key before anything is read or built."""
    from transformers import T5Config
    if path.suffix != ".safetensors":
        raise TextEncoderError(f"{path} is not a .safetensors file: a single-file text encoder is loaded only as "
                               f"safetensors (never unpickled); write one with `{CONVERT_HINT}`, or use the "
                               "flan-t5-xl folder")
    src = TensorSource(path)
    meta = src.config_metadata() or {}
    if "t5" not in meta:
        raise TextEncoderError(f"{path} has no T5 config in its metadata; it looks like {_describe_t5_file(src)}. "
                               f"Infinity needs flan-t5-xl's encoder: write it with `{CONVERT_HINT}`, or use the "
                               "flan-t5-xl folder")
    _check_t5(meta["t5"], path)
    config = T5Config.from_dict(meta["t5"])
    expected = _encoder_keys(config)
    file_keys = set(src.keys())
    missing = sorted(set(expected) - file_keys)
    unexpected = sorted(file_keys - set(expected))
    mismatched = [f"{k}: file {list(src.shape(k))} vs model {list(shape)}"
                  for k, shape in expected.items() if k in file_keys and src.shape(k) != shape]
    if missing or unexpected or mismatched:
        raise mismatch_report(path, "T5 encoder", missing, unexpected, mismatched, _describe_t5_file(src),
                              f"Write the file again with `{CONVERT_HINT}`.")
    return config, src


def convert_t5_folder(folder, out, dtype="bf16") -> Path:
    """Writes flan-t5-xl's encoder and shared embedding from a model folder into one safetensors file, with
    the folder's config.json in the metadata (so the file describes itself)."""
    from safetensors.torch import save_file
    folder, out, dtype = Path(folder), Path(out), parse_dtype(dtype)
    config = check_folder(folder, own_tokenizer=False)
    src = _folder_weights(folder)
    keys = src.keys()
    shared = "shared.weight" if "shared.weight" in keys else TIED_KEYS[0]
    if shared not in keys:
        raise CheckpointError(f"the weights in {folder} have no shared.weight (the token embedding); it looks like "
                              f"{describe_keys(keys)}: is this the flan-t5-xl folder?")
    state = {"shared.weight": src.get(shared).to(dtype).contiguous()}
    state.update({k: src.get(k).to(dtype).contiguous() for k in keys
                  if k.startswith("encoder.") and k not in TIED_KEYS})
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={CONFIG_METADATA_KEY: json.dumps({"t5": config})})
    return out


def _folder_weights(folder: Path) -> TensorSource:
    """A Hugging Face folder's weights: the index of its shards, or its one weights file."""
    if any((folder / name).exists() for name in INDEX_FILES):
        return TensorSource(folder)
    return TensorSource(next(folder / name for name in WEIGHT_FILES if (folder / name).exists()))


class _Upcast(torch.nn.Module):
    """A parametrization: the weight is held in its storage dtype and read in `dtype`, so every use (the
    matmul, and T5's own dtype checks on `wo.weight`) sees the compute dtype."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.to(self.dtype)


def store_t5_weights(model: torch.nn.Module, stored: torch.dtype) -> torch.nn.Module:
    """Holds the encoder blocks' matmul weights (about 95% of flan-t5-xl's encoder) in `stored`, each upcast
    to its own dtype when read (in place). The shared embedding, norms and relative position tables keep
    their dtype: the embedding is only looked up, not multiplied, and the rest is small."""
    from torch.nn.utils import parametrize
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".block." in f".{name}":
            parametrize.register_parametrization(module, "weight", _Upcast(module.weight.dtype), unsafe=True)
            # narrowed after registering: a parametrization's right_inverse may not change the dtype
            original = module.parametrizations.weight.original
            original.data = original.data.to(stored)
    return model


def text_dtypes(weight_storage: str | None, dtype: torch.dtype | None, device: torch.device):
    """(compute dtype, storage dtype or None) of a TextEncoder. T5 computes in fp16 on a GPU (as the official
    pipeline runs it) and in fp32 on a CPU (fp16 matmuls are slow or missing there). A 16-bit storage on a
    16-bit default computes in that storage (bf16 on a GPU: T5 runs in bf16; nothing to upcast); narrower
    storages (fp8; bf16 or fp16 under fp32) are upcast layer by layer."""
    compute = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    wanted = WEIGHT_STORAGE.get(weight_storage)
    if dtype is None and wanted is not None and wanted.itemsize == 2 == compute.itemsize:
        return wanted, None
    try:
        return compute, storage_dtype(weight_storage, compute, device)
    except ValueError as e:
        raise TextEncoderError(f"text encoder storage: {e}") from None


class TextEncoder:
    """Encodes prompts into the compact T5 rows Infinity takes: [sum(len_i), C_t5] plus the lengths.
    Each distinct prompt is encoded once however many candidates use it.

    `source` is a flan-t5-xl folder or a single `.safetensors` file from convert-t5; `tokenizer` is a
    tokenizer folder (needed for a single file; for a folder it replaces the folder's own tokenizer).
    `weight_storage` (a checkpoints.WEIGHT_STORAGE name, see text_dtypes): how the encoder blocks' matmul
    weights are held; they are stored before the encoder moves to `device`."""

    def __init__(self, source, *, tokenizer=None, device="cpu", dtype=None, max_length: int = 512,
                 weight_storage: str | None = None):
        from transformers import T5EncoderModel
        self.source = Path(source)
        self.device = torch.device(device)
        self.dtype, stored = text_dtypes(weight_storage, dtype, self.device)
        if tokenizer is not None:
            check_tokenizer_folder(Path(tokenizer))
        if self.source.is_dir():
            check_folder(self.source, own_tokenizer=tokenizer is None)
            from safetensors import SafetensorError
            try:
                self.model = T5EncoderModel.from_pretrained(str(self.source), dtype=self.dtype, local_files_only=True)
            except (pickle.UnpicklingError, SafetensorError, EOFError) as e:
                raise TextEncoderError(unreadable_weights(self.source, e)) from e
        elif not self.source.exists():
            raise FileNotFoundError(f"text encoder not found: {self.source} (expected a local flan-t5-xl folder with "
                                    "config.json, tokenizer and weights, or the .safetensors file written by "
                                    f"`{CONVERT_HINT}`)")
        else:
            config, src = open_t5_file(self.source)
            if tokenizer is None:
                raise TextEncoderError(f"{self.source} is a single-file text encoder, which holds no tokenizer: "
                                       "pass a tokenizer folder with flan-t5's tokenizer (e.g. ComfyUI's "
                                       "comfy/text_encoders/t5_tokenizer), or use the flan-t5-xl folder")
            state = {k: src.get(k) for k in src.keys()}
            # from_pretrained, not load_state_dict: the same dtype rules (fp32 feed-forward outputs under
            # fp16) and the same attention implementation as a folder load, so both give the same features
            self.model = T5EncoderModel.from_pretrained(None, config=config, state_dict=state, dtype=self.dtype)
        if stored is not None:
            store_t5_weights(self.model, stored)
        in_process_memory(self.model.to(self.device).eval().requires_grad_(False))
        self.tokenizer = load_tokenizer(Path(tokenizer) if tokenizer is not None else self.source,
                                        self.model.config.vocab_size)
        self.max_length = max_length

    @property
    def channels(self) -> int:
        return self.model.config.d_model

    def to(self, device) -> "TextEncoder":
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, list[int]]:
        if isinstance(prompts, str):
            prompts = [prompts]
        for i, prompt in enumerate(prompts):
            check_text(prompt, f"prompt {i + 1}" if len(prompts) > 1 else "the prompt")
        unique = list(dict.fromkeys(prompts))
        batch = self.tokenizer(unique, max_length=self.max_length, padding="longest", truncation=True,
                               return_tensors="pt")
        ids, mask = batch.input_ids.to(self.device), batch.attention_mask.to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        lens = mask.sum(1).tolist()
        rows = {p: hidden[i, :n] for i, (p, n) in enumerate(zip(unique, lens))}
        features = torch.cat([rows[p] for p in prompts], 0)
        return features, [rows[p].shape[0] for p in prompts]


# eq=False: values holding tensors compare (and hash) by identity, never element by element
@dataclass(frozen=True, eq=False)
class Prompts:
    """Encoded prompts: the T5 rows of every prompt (concatenated), their lengths, and optionally the
    negative prompt's rows (one copy per prompt)."""

    texts: tuple[str, ...]
    features: torch.Tensor                          # [sum(lens), C]
    lens: tuple[int, ...]
    negative: tuple[torch.Tensor, tuple[int, ...]] | None = None
    negative_text: str = ""

    @property
    def channels(self) -> int:
        return int(self.features.shape[-1])

    def to(self, device) -> "Prompts":
        negative = None if self.negative is None else (self.negative[0].to(device), tuple(self.negative[1]))
        return Prompts(self.texts, self.features.to(device), self.lens, negative, self.negative_text)
