"""Reading weight files safely and loading them strictly.

Rules kept here so every loader follows them: torch.load only with weights_only=True, every
tensor in the file must be used or explicitly known to be unused, every weight of the model
must come from the file, and a wrong file is named for what it looks like.
"""

import pickle
import zipfile
from pathlib import Path
from typing import Callable, Dict, Iterable

import torch

from ..model.files import holds_code
from .errors import WrongFileError, not_found

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SAFETENSORS_SUFFIXES = (".safetensors",)

StateDict = Dict[str, torch.Tensor]


def require_file(path, expected: str, folder: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise not_found(path, expected, folder)
    if path.is_dir():
        raise WrongFileError(f"{path} is a folder, but a file was expected: {expected} in {folder}.")
    return path


def require_folder(path, expected: str, folder: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise not_found(path, expected, folder)
    if not path.is_dir():
        raise WrongFileError(
            f"{path} is a file, but a folder was expected: {expected} in {folder}. "
            "Point to the folder that holds config.json, not to a file inside it."
        )
    return path


def read_tensors(path: Path, expected: str) -> dict:
    """Load a .safetensors file or a torch file (weights_only=True) onto the CPU."""
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return _read_safetensors(path, expected)
    if suffix in TORCH_SUFFIXES:
        return _read_torch(path, expected)
    raise WrongFileError(
        f"{path} has the extension '{path.suffix}', but {expected} was expected "
        f"(a {', '.join(TORCH_SUFFIXES + SAFETENSORS_SUFFIXES)} file)."
    )


def _read_safetensors(path: Path, expected: str) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WrongFileError(f"{path} is not a readable .safetensors file ({exc}); expected {expected}.") from exc


def _read_torch(path: Path, expected: str) -> dict:
    # mmap avoids a second in-memory copy of multi-GB files, but only works for the zip format
    # that torch.save has written since 1.6; older files are read normally.
    mmap = zipfile.is_zipfile(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        if not holds_code(exc):  # not refused, just not a torch file
            raise WrongFileError(f"{path} is not a readable PyTorch file; expected {expected}.") from exc
        raise WrongFileError(
            f"{path} cannot be loaded safely (torch.load with weights_only=True refused it: it holds "
            f"Python objects, not only tensors). Expected {expected}, which is a plain state dict. "
            "Download the file again from the source named in docs/scorers.md."
        ) from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise WrongFileError(f"{path} is not a readable PyTorch file ({exc}); expected {expected}.") from exc
    if not isinstance(obj, dict):
        raise WrongFileError(f"{path} holds a {type(obj).__name__}, not a state dict; expected {expected}.")
    return obj


def flat_tensors(obj: dict, path: Path, expected: str, folder: str) -> StateDict:
    """Keep a flat name -> tensor mapping; anything else means the wrong kind of file."""
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise wrong_file(path, obj, expected, folder,
                         f"It is not a flat state dict (entries such as {bad[:3]!r} are not tensors).")
    return obj


# What a file looks like, judged from its key names. Order matters: the first match wins.
_SIGNATURES = (
    ("an ImageReward checkpoint (ImageReward.pt)", lambda k: any(x.startswith("blip.visual_encoder.") for x in k)),
    ("an Aesthetic Predictor v2.5 head (aesthetic_predictor_v2_5.pth)", lambda k: "scoring_head.0.weight" in k),
    ("an HPS v2 checkpoint (HPS_v2.1_compressed.pt)", lambda k: "state_dict" in k),
    (
        "an open_clip / OpenAI CLIP checkpoint (such as HPS_v2.1_compressed.pt's state_dict)",
        lambda k: "visual.conv1.weight" in k and "token_embedding.weight" in k,
    ),
    ("an official DINOv2 checkpoint with registers (dinov2_vit*14_reg4_pretrain.pth)", lambda k: "register_tokens" in k),
    ("a timm DINOv2-with-registers checkpoint", lambda k: "reg_token" in k and "blocks.0.attn.qkv.weight" in k),
    ("a transformers DINOv2-with-registers checkpoint", lambda k: "embeddings.register_tokens" in k),
    (
        "a DINOv2 checkpoint without register tokens",
        lambda k: "blocks.0.ls1.gamma" in k or "encoder.layer.0.layer_scale1.lambda1" in k,
    ),
    ("an Inception V3 checkpoint", lambda k: "Mixed_5b.branch1x1.conv.weight" in k),
    ("a transformers SigLIP checkpoint", lambda k: any(x.startswith("vision_model.head.probe") for x in k)),
    (
        "a transformers CLIP checkpoint",
        lambda k: any(x.startswith("text_model.embeddings.token_embedding") for x in k)
        and any(x.startswith("vision_model.") for x in k),
    ),
    ("a transformers BLIP checkpoint", lambda k: any(x.startswith("text_encoder.encoder.layer.") for x in k)),
)


def describe_found(keys: Iterable[str]) -> str:
    keys = set(keys)
    for label, test in _SIGNATURES:
        if test(keys):
            return f"it looks like {label}"
    sample = ", ".join(sorted(str(k) for k in keys)[:4])
    return f"it is an unrecognised file with {len(keys)} entries (first names: {sample})"


def wrong_file(path: Path, keys: Iterable[str], expected: str, folder: str, detail: str = "") -> WrongFileError:
    found = describe_found(keys)
    message = f"{path}: {found}, but {expected} was expected in {folder}."
    if detail:
        message += f" {detail}"
    return WrongFileError(message)


def check_keys(
    path: Path,
    got: Iterable[str],
    required: Iterable[str],
    expected: str,
    folder: str,
    optional: Iterable[str] = (),
) -> None:
    """Every required key must be present and every present key must be required or optional."""
    got, required, optional = set(got), set(required), set(optional)
    missing = sorted(required - got)
    unexpected = sorted(got - required - optional)
    if not missing and not unexpected:
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} expected tensors are missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} tensors are not part of that model (e.g. {', '.join(unexpected[:3])})")
    raise wrong_file(path, got, expected, folder, "; ".join(parts) + ".")


def empty_module(factory: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Build a module without allocating or initialising its weights; the file supplies them."""
    with torch.device("meta"):
        return factory()


# Non-persistent buffers are not in checkpoints; after loading onto a meta-built module they
# are recreated from their definition. Anything else left on meta is a loader bug.
def _position_ids(t: torch.Tensor) -> torch.Tensor:
    return torch.arange(t.shape[-1], dtype=torch.long).expand(t.shape).clone()


def _causal_mask(t: torch.Tensor) -> torch.Tensor:
    return torch.full(t.shape, float("-inf")).triu_(1)


def _zero(t: torch.Tensor) -> torch.Tensor:
    return torch.zeros(t.shape, dtype=t.dtype)


_BUFFER_REBUILDERS = {"position_ids": _position_ids, "attn_mask": _causal_mask, "num_batches_tracked": _zero}


def load_into(
    module: torch.nn.Module, state_dict: StateDict, path: Path, expected: str, folder: str
) -> torch.nn.Module:
    """Load tensors into a meta-built module (assign=True, strict on weights), then rebuild buffers."""
    try:
        result = module.load_state_dict(state_dict, strict=False, assign=True)
    except RuntimeError as exc:
        raise wrong_file(path, state_dict, expected, folder, f"Tensor shapes do not match: {_first_line(exc)}") from exc
    missing = [k for k in result.missing_keys if k.rsplit(".", 1)[-1] not in _BUFFER_REBUILDERS]
    if missing or result.unexpected_keys:
        raise wrong_file(
            path, state_dict, expected, folder,
            f"Keys do not match the model (missing {missing[:3]}, unexpected {list(result.unexpected_keys)[:3]}).",
        )
    _rebuild_meta_buffers(module)
    module.eval()
    module.requires_grad_(False)
    return module


def _rebuild_meta_buffers(module: torch.nn.Module) -> None:
    for name, buf in list(module.named_buffers()):
        if not buf.is_meta:
            continue
        owner_name, _, leaf = name.rpartition(".")
        rebuild = _BUFFER_REBUILDERS.get(leaf)
        if rebuild is None:
            raise RuntimeError(f"internal error: buffer {name} was not loaded and cannot be rebuilt")
        owner = module.get_submodule(owner_name) if owner_name else module
        persistent = leaf not in owner._non_persistent_buffers_set
        owner.register_buffer(leaf, rebuild(buf), persistent=persistent)
    leftover = [n for n, p in module.named_parameters() if p.is_meta]
    if leftover:
        raise RuntimeError(f"internal error: parameters left unloaded: {leftover[:5]}")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    detail = [line.strip() for line in text if "size mismatch" in line]
    return (detail or text or [""])[0][:300]
