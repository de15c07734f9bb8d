"""Local transformers model folders (CLIP, SigLIP): strict offline loading and preprocessing.

Models load with from_pretrained on a local folder only (never a hub id, local_files_only=True,
no remote code), and must receive every weight from the folder. Image preprocessing follows
the folder's preprocessor_config.json with the same PIL calls as transformers' PIL image
processors, so results do not depend on whether torchvision (the fast processors) is installed.
"""

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
from PIL import Image

from ..model.files import HF_WEIGHT_FILES as WEIGHT_FILES
from ..model.files import check_shard_index, unreadable_weights
from .checkpoints import require_folder
from .errors import ModelFileNotFoundError, WrongFileError
from .images import center_crop, resize_exact, resize_shorter_side, to_normalized_tensor

TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "spiece.model", "vocab.txt")


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelFileNotFoundError(f"{path} does not exist; {what} needs it.") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WrongFileError(f"{path} is not valid JSON ({exc}); {what} needs it.") from exc


def model_folder(path, model_types: Sequence[str], expected: str, folder_hint: str) -> Tuple[Path, dict]:
    """Check a local folder holds a config of one of model_types and a weights file."""
    folder = require_folder(path, expected, folder_hint)
    config = read_json(folder / "config.json", expected)
    found = config.get("model_type")
    if found not in model_types:
        raise WrongFileError(
            f"{folder} holds a '{found}' model (config.json model_type), but {expected} was expected "
            f"(model_type {' or '.join(repr(t) for t in model_types)}) in {folder_hint}."
        )
    if not any((folder / name).exists() for name in WEIGHT_FILES):
        raise ModelFileNotFoundError(
            f"{folder} has config.json but no weights ({' or '.join(WEIGHT_FILES[::2])}); "
            f"copy the complete {expected} folder into {folder_hint}."
        )
    problem = check_shard_index(folder)
    if problem:
        raise WrongFileError(problem)
    return folder, config


def load_pretrained(model_class, folder: Path, expected: str) -> torch.nn.Module:
    """from_pretrained on a local folder; every model weight must come from the folder."""
    from safetensors import SafetensorError
    try:
        model, info = model_class.from_pretrained(str(folder), local_files_only=True, output_loading_info=True)
    except (pickle.UnpicklingError, SafetensorError, EOFError) as exc:
        raise WrongFileError(f"{unreadable_weights(folder, exc)} ({expected} was expected).") from exc
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise WrongFileError(f"{folder} could not be loaded as {expected}: {exc}") from exc
    problems = {name: list(info.get(name) or []) for name in ("missing_keys", "mismatched_keys")}
    if any(problems.values()):
        raise WrongFileError(
            f"{folder} does not hold all weights of {expected}: missing {problems['missing_keys'][:3]}, "
            f"wrong shape {problems['mismatched_keys'][:3]}. Copy the complete model folder again."
        )
    model.eval()
    model.requires_grad_(False)
    return model


def load_tokenizer(folder: Path, expected: str, vocab_size: int):
    """The folder's own tokenizer, checked: transformers can return a tokenizer holding only
    special tokens (every word becomes unknown) when its files are missing."""
    from transformers import AutoTokenizer

    if not any((folder / name).exists() for name in TOKENIZER_FILES):
        raise ModelFileNotFoundError(
            f"{folder} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)}); {expected} needs the "
            "tokenizer that came with the model. Copy the complete model folder."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise WrongFileError(f"{folder}: the tokenizer could not be loaded ({exc}).") from exc
    specials = len(set(tokenizer.all_special_ids))
    if len(tokenizer) <= specials + 1 or len(tokenizer) > vocab_size:
        raise WrongFileError(
            f"{folder}: the tokenizer has {len(tokenizer)} tokens ({specials} special) for a model with "
            f"{vocab_size} token embeddings; the tokenizer files do not belong to this model."
        )
    return tokenizer


@dataclass(frozen=True)
class ImageSpec:
    """What a transformers PIL image processor does, read from preprocessor_config.json."""

    shortest_edge: Optional[int]
    resize_to: Optional[Tuple[int, int]]  # (height, width) for fixed-size resizing
    resample: int
    crop: Optional[Tuple[int, int]]
    rescale: Optional[float]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]

    @classmethod
    def from_folder(cls, folder: Path, expected: str, square_by_default: bool) -> "ImageSpec":
        cfg = read_json(folder / "preprocessor_config.json", expected)
        shortest, fixed = None, None
        if cfg.get("do_resize", True):
            shortest, fixed = _size(cfg.get("size"), square_by_default, folder)
        crop = None
        if cfg.get("do_center_crop", False):
            crop = _hw(cfg.get("crop_size"), folder)
        normalize = cfg.get("do_normalize", True)
        return cls(
            shortest_edge=shortest,
            resize_to=fixed,
            resample=int(cfg.get("resample", Image.BICUBIC)),
            crop=crop,
            rescale=float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else None,
            mean=tuple(cfg.get("image_mean", (0.0, 0.0, 0.0))) if normalize else (0.0, 0.0, 0.0),
            std=tuple(cfg.get("image_std", (1.0, 1.0, 1.0))) if normalize else (1.0, 1.0, 1.0),
        )

    def __call__(self, images: List[Image.Image]) -> torch.Tensor:
        out = []
        for im in images:
            if self.shortest_edge is not None:
                im = resize_shorter_side(im, self.shortest_edge, self.resample)
            elif self.resize_to is not None:
                im = resize_exact(im, *self.resize_to, self.resample)
            if self.crop is not None:
                im = center_crop(im, *self.crop, round_offsets=False)
            out.append(im)
        return to_normalized_tensor(out, self.mean, self.std, scale=self.rescale or 1.0)


def _size(size, square_by_default: bool, folder: Path):
    """transformers' size conventions: {'shortest_edge'}, {'height','width'} or a bare int."""
    if isinstance(size, int):
        return (None, (size, size)) if square_by_default else (size, None)
    if isinstance(size, dict) and "shortest_edge" in size:
        return int(size["shortest_edge"]), None
    return None, _hw(size, folder)


def _hw(size, folder: Path) -> Tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if isinstance(size, dict) and "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    raise WrongFileError(f"{folder / 'preprocessor_config.json'}: unsupported size setting {size!r}")
