"""The files we read: the Hugging Face layouts' names (sharded checkpoints, model folders), in one place, and
the rule that loaded weights never stay backed by their file."""
from pathlib import Path

import torch

# an index json maps every key to its shard file (the Infinity-8B release, large transformers folders)
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# the weights of a Hugging Face model folder: one file, or an index and its shards
HF_WEIGHT_FILES = ("model.safetensors", INDEX_FILES[0], "pytorch_model.bin", INDEX_FILES[1])


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
