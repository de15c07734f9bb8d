"""Low-memory operation: move idle models off the accelerator, stream transformer blocks from CPU memory."""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def on_device(module, device, enabled: bool = True):
    """Runs a block of work with `module` on `device` (when enabled). Scorers are offloaded afterwards
    (they move back to their device on their next call by themselves); a plain nn.Module returns to
    where it was, so keep it in CPU memory between uses to save device memory."""
    if not enabled:
        yield module
        return
    home = None if hasattr(module, "offload") else next(module.parameters()).device
    module.to(device)
    try:
        yield module
    finally:
        if home is None:
            module.offload()
        else:
            module.to(home)


class BlockStreamer:
    """Keeps the transformer blocks in (pinned) CPU memory and copies one block at a time to the device
    just before it runs; afterwards its parameters point back at the CPU copies (weights never change,
    so nothing is copied back). The 2B model's blocks are ~4 GB in bf16; with streaming only the
    embeddings, head, one block, the KV cache and activations need device memory. Nothing is prefetched:
    a block's copy is freed before the next one is made, so `visiting_bytes` is all the device holds of
    them at any moment (the memory estimate counts it). While it streams, the model's `block_streamer`
    is this object."""

    def __init__(self, model: nn.Module, device):
        self.device = torch.device(device)
        self.handles = []
        self.host: dict[int, list[torch.Tensor]] = {}
        for block in model.blocks():
            tensors = list(block.parameters()) + list(block.buffers())
            host = [t.data.to("cpu") for t in tensors]
            if self.device.type == "cuda":
                host = [h.pin_memory() for h in host]
            for t, h in zip(tensors, host):
                t.data = h
            self.host[id(block)] = host
            self.handles.append(block.register_forward_pre_hook(self._load))
            self.handles.append(block.register_forward_hook(self._unload))
        self.visiting_bytes = max(sum(h.numel() * h.element_size() for h in host) for host in self.host.values())
        self.model = model
        model.block_streamer = self

    def _tensors(self, block):
        return list(block.parameters()) + list(block.buffers())

    def _load(self, block, args):
        for t, h in zip(self._tensors(block), self.host[id(block)]):
            # copy=True: on a CPU too the block runs from a copy, so the CPU tests exercise (and measure) the
            # copy a GPU makes, at the price of one block's copy time per visit on a CPU
            t.data = h.to(self.device, non_blocking=True, copy=True)

    def _unload(self, block, args, output):
        for t, h in zip(self._tensors(block), self.host[id(block)]):
            t.data = h

    def remove(self):
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        if getattr(self.model, "block_streamer", None) is self:
            del self.model.block_streamer


def stream_blocks(model: nn.Module, device) -> BlockStreamer:
    """Puts the transformer on `device` except its blocks, which stay in CPU memory and visit the device one
    at a time as they run. Load the model into CPU memory first: the blocks never need to fit on the device
    together (the 2B's are 4.3 GB in bf16, the 8B's 16.4 GB; the rest of either is a few hundred MB)."""
    streamer = BlockStreamer(model, device)
    device = torch.device(device)
    for name, child in model.named_children():
        if name != "block_chunks":
            child.to(device)
    # the model's own tensors (pos_start, cfg_uncond, ...) are replaced, not given new .data: that works
    # between any two devices
    for name, p in list(model.named_parameters(recurse=False)):
        setattr(model, name, nn.Parameter(p.detach().to(device), requires_grad=p.requires_grad))
    for name, b in list(model.named_buffers(recurse=False)):
        setattr(model, name, b.to(device))
    return streamer
