"""T5 text encoding (flan-t5-xl for the released models) from a local folder only."""
from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from .files import HF_WEIGHT_FILES as WEIGHT_FILES
from .files import in_process_memory, unreadable_weights

TOKENIZER_FILES = ("tokenizer.json", "spiece.model")


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


def check_folder(folder: Path) -> None:
    """Fails early, naming what is missing, before transformers gets a chance to fail silently."""
    if not folder.is_dir():
        raise FileNotFoundError(f"text encoder folder not found: {folder} (expected a local flan-t5-xl folder with "
                                "config.json, tokenizer.json or spiece.model, and the weights)")
    if not (folder / "config.json").exists():
        raise TextEncoderError(f"{folder} has no config.json: point the text encoder at the flan-t5-xl folder itself")
    config = json.loads((folder / "config.json").read_text())
    if "t5" not in str(config.get("model_type", "")).lower():
        raise TextEncoderError(f"{folder} holds a {config.get('model_type')!r} model, not T5: Infinity needs "
                               "google/flan-t5-xl")
    if not any((folder / f).exists() for f in TOKENIZER_FILES):
        raise TextEncoderError(f"{folder} has no tokenizer (tokenizer.json or spiece.model): copy the tokenizer "
                               "files of flan-t5-xl into it")
    if not any((folder / f).exists() for f in WEIGHT_FILES):
        raise TextEncoderError(f"{folder} has no weights ({' / '.join(WEIGHT_FILES)})")


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
    if len(tok) < vocab_size - 256 or not words:
        raise TextEncoderError(f"the tokenizer in {folder} is unusable: {len(tok)} tokens for a model with "
                               f"{vocab_size} embeddings (a file is missing or damaged); copy flan-t5-xl's "
                               "tokenizer.json (or spiece.model) again")
    return tok


class TextEncoder:
    """Encodes prompts into the compact T5 rows Infinity takes: [sum(len_i), C_t5] plus the lengths.
    Each distinct prompt is encoded once however many candidates use it."""

    def __init__(self, folder, *, device="cpu", dtype=None, max_length: int = 512):
        from transformers import T5EncoderModel
        self.folder = Path(folder)
        check_folder(self.folder)
        self.device = torch.device(device)
        # the official pipeline runs T5 in fp16; fp16 matmuls are slow or missing on CPU
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        from safetensors import SafetensorError
        try:
            self.model = T5EncoderModel.from_pretrained(str(self.folder), dtype=self.dtype, local_files_only=True)
        except (pickle.UnpicklingError, SafetensorError, EOFError) as e:
            raise TextEncoderError(unreadable_weights(self.folder, e)) from e
        in_process_memory(self.model.to(self.device).eval().requires_grad_(False))
        self.tokenizer = load_tokenizer(self.folder, self.model.config.vocab_size)
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
