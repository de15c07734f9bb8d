"""The files we read: the Hugging Face layouts' names (sharded checkpoints, model folders), in one place, and
the rule that loaded weights never stay backed by their file."""
import json
from pathlib import Path, PurePosixPath, PureWindowsPath

import torch

# an index json maps every key to its shard file (the Infinity-8B release, large transformers folders)
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# the weights of a Hugging Face model folder: one file, or an index and its shards
HF_WEIGHT_FILES = ("model.safetensors", INDEX_FILES[0], "pytorch_model.bin", INDEX_FILES[1])


def leaves_folder(name: str) -> bool:
    """Whether a file name written in a shard index leads out of the index's folder: an absolute path or a
    '..' part. Only the name is judged, not where links lead: a shard that is a link to a shared download
    stays loadable, as ComfyUI's own loaders follow links."""
    posix = PurePosixPath(name.replace("\\", "/"))
    return posix.is_absolute() or ".." in posix.parts or bool(PureWindowsPath(name).drive)


def shard_outside(folder: Path, index: Path, shard: str) -> str:
    """What to say about an index entry naming a file outside its folder. An index is data downloaded with the
    weights; it must not make a loader read arbitrary files of the machine."""
    return (f"{index.name} in {folder} names the shard {shard!r}, which lies outside that folder: a shard index may "
            "only name files in its own folder (link a shared file into the folder instead); copy the model folder "
            "again from its source")


def check_shard_index(folder: Path) -> str | None:
    """For a Hugging Face folder that transformers will load: the problem with its shard index (an entry outside
    the folder), or None. A damaged index is left to transformers, which names it."""
    for name in INDEX_FILES:
        index = folder / name
        if not index.exists():
            continue
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        outside = sorted(s for s in shards if isinstance(s, str) and leaves_folder(s))
        if outside:
            return shard_outside(folder, index, outside[0])
    return None


def holds_code(error: Exception) -> bool:
    """Whether torch.load(weights_only=True) refused a file for holding Python objects (classes, functions)
    besides tensors. torch words it 'Unsupported global: GLOBAL x' or 'unsupported GLOBAL x ... blocked'."""
    return "unsupported global" in str(error).lower()


def unreadable_weights(folder: Path, error: Exception) -> str:
    """What to say when the weights of a model folder cannot be read (transformers passes torch's and
    safetensors' errors on without the file name)."""
    names = ", ".join(n for n in HF_WEIGHT_FILES if (folder / n).exists()) or "no weights file"
    if holds_code(error):
        problem = "hold Python objects (code), not only tensors, and are refused unread for safety"
    else:
        problem = f"cannot be read ({type(error).__name__}): the file is truncated, damaged or not a weights file"
    return f"the weights in {folder} ({names}) {problem}; copy the model folder again from its source"


@torch.no_grad()
def in_process_memory(module: torch.nn.Module) -> torch.nn.Module:
    """Copies the module's CPU tensors into process memory. safetensors and torch.load(mmap=True) leave them
    memory-mapped from the file, and a file overwritten or truncated while mapped kills the process with
    SIGBUS at its next use: a server must survive its model folder changing. Tensors on a GPU are copies
    already."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.device.type == "cpu":
            tensor.data = tensor.data.clone()
    return module
