"""The memory a search needs at its peak, estimated before anything is allocated, and the check that refuses
a search that cannot fit (instead of the kernel killing the process, or CUDA failing, halfway through).

The estimate follows run_search's allocations moment by moment: every scale step (KV cache, activations,
code sums), every selection (its decode, its scoring, the cache re-indexing) and the final decode. Each
device's peak is its most demanding moment. Byte counts are exact for the KV caches, codes and images; the
transformer's and the decoder's working memory are measured factors (see the constants).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..model.config import pixels_per_token
from ..model.vae import decoder_widest
from .state import decode_grid

# A scale step holds about 13 float32 vectors of the model width per network row and token at its peak
# (the RoPE rotation of q and k in float32; measured 13.0 on the tiny model on a CPU).
STEP_BYTES_PER_ROW_TOKEN_WIDTH = 13 * 4
# The VAE decoder holds about four float32 copies of its widest activation per image at its peak: 16 bytes
# per element (measured 16.0 on the tiny VAE on a CPU, and 16 for the 2B VAE in bf16 on an H200:
# 4.0 GiB per 1024 px image in benchmarks/results-gpu-2b.json).
DECODER_BYTES_PER_ELEMENT = 16


@dataclass(frozen=True)
class Peak:
    """A device's most demanding moment: what is held then, in bytes."""

    device: torch.device
    moment: str
    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())


class NotEnoughMemory(ValueError):
    """A search that cannot fit in the memory available, with the estimate and what to change."""


def gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


class _Moments:
    """Per device, the moment with the most bytes held."""

    def __init__(self):
        self.peaks: dict[torch.device, Peak] = {}

    def add(self, moment: str, held: list[tuple[torch.device, str, int]]):
        per_device: dict[torch.device, dict[str, int]] = {}
        for device, part, size in held:
            parts = per_device.setdefault(torch.device(device), {})
            parts[part] = parts.get(part, 0) + int(size)
        for device, parts in per_device.items():
            peak = Peak(device, moment, parts)
            if device not in self.peaks or peak.total > self.peaks[device].total:
                self.peaks[device] = peak


def estimate_search_memory(model, vae, request) -> dict[torch.device, Peak]:
    """Peak bytes per device that `run_search(model, vae, request)` will allocate beyond the loaded weights
    (a streamed transformer's blocks are not loaded on its device: the one visiting it is counted).
    `request` must have passed its other checks (the schedules are consistent)."""
    cfg, batch, options = model.cfg, request.batch, request.options
    schedule, prompts = request.image_schedule, len(request.prompts.texts)
    scales = len(schedule)
    guided = request.sampling.guided(scales)
    starts = [0]
    for h, w in schedule:
        starts.append(starts[-1] + h * w)
    block_bytes = model.block_dtype.itemsize
    per_latent = 2 if cfg.apply_spatial_patchify else 1
    latent = (schedule[-1][0] * per_latent, schedule[-1][1] * per_latent)
    patch = vae.cfg.patch_size
    cpu = torch.device("cpu")
    here = model.device
    visiting = options.offload_idle
    vae_device = here if visiting else vae.device
    # a streamed transformer (offload.BlockStreamer) holds one block's copy on its device while it runs
    streamer = getattr(model, "block_streamer", None)
    streamed = [(here, "streamed block", streamer.visiting_bytes)] if streamer is not None else []
    moments = _Moments()

    def rows(live: int) -> int:
        return live * (2 if guided else 1)

    def kv(live: int, capacity: int) -> int:
        return 2 * cfg.depth * rows(live) * cfg.embed_dim * capacity * block_bytes

    def codes(live: int, done: int) -> int:
        """Bits of every scale so far (uint8) and the code sum at full latent size (float32), per candidate."""
        bits = sum(h * w * per_latent ** 2 for h, w in schedule[:done]) * cfg.codebook_dim
        return live * (bits + cfg.codebook_dim * latent[0] * latent[1] * 4)

    text_rows = sum(request.prompts.lens) * (2 if guided else 1)
    text = 2 * cfg.depth * text_rows * cfg.embed_dim * block_bytes  # every block's projected text, kept

    def weights(module) -> int:
        return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))

    def decoding(live: int, side: int | None, chunk: int) -> list[tuple[torch.device, str, int]]:
        """A chunked decode of `live` candidates at `side` px: the decoder's working memory for one chunk
        beside the images decoded so far, and to_uint8's three float copies of all of them at the end."""
        h, w = decode_grid(*latent, patch, side)
        pixels = h * w * patch * patch
        floats = live * 3 * pixels * 4
        work = min(chunk, live) * decoder_widest(vae.cfg, h, w) * DECODER_BYTES_PER_ELEMENT
        held = [(vae_device, "decoding", max(floats + work, 3 * floats)), (cpu, "decoded images", live * 3 * pixels)]
        if visiting and vae.device != here:
            held.append((here, "VAE weights (visiting)", weights(vae)))
        return held

    def scoring(scorer, live: int, side: int | None) -> list[tuple[torch.device, str, int]]:
        h, w = decode_grid(*latent, patch, side)
        held = [(cpu, "decoded images", live * 3 * h * w * patch * patch)]
        if scorer is None:
            return held
        home = torch.device(getattr(scorer, "device", here))
        # scorers that do not report their memory (plain callables) count as needing none
        held.append((here if visiting else home, "scorer batch", getattr(scorer, "batch_bytes", 0)))
        if visiting and home != here:
            held.append((here, "scorer weights (visiting)", getattr(scorer, "weight_bytes", 0)))
        return held

    live = batch.sizes[0] * prompts
    capacity = starts[batch.cache_room(-1, scales)]
    per_token = pixels_per_token(cfg, vae.cfg)
    full_side = max(schedule[-1]) * per_token
    final_images = min(batch.sizes[-1] * prompts, options.decode_chunk)
    policy = batch.decode_policy
    for si, (h, w) in enumerate(schedule):
        state = [(here, "KV cache", kv(live, capacity)), (here, "text", text)]
        tokens = rows(live) * h * w
        moments.add(f"scale {si}", state + [
            (here, "codes", codes(live, si + 1) + 2 * live * cfg.codebook_dim * latent[0] * latent[1] * 4),
            (here, "activations", tokens * cfg.embed_dim * STEP_BYTES_PER_ROW_TOKEN_WIDTH)] + streamed)
        event = batch.selection_at(si)
        if event is None:
            continue
        side = policy.side_at(si, schedule, per_token)
        chunk = policy.chunk(side, full_side, final_images)
        state.append((here, "codes", codes(live, si + 1)))
        moments.add(f"{event} after scale {si}: decode", state + decoding(live, side, chunk))
        scorer = request.scorers.reward if event == "resample" else request.scorers.features
        moments.add(f"{event} after scale {si}: scoring", state + scoring(scorer, live, side))
        # re-indexing: the kept prefix is gathered compactly before the source is freed (SearchState.select)
        kept = batch.sizes[si] * prompts
        new_capacity = starts[batch.cache_room(si, scales)]
        compact = kv(kept, starts[si + 1])
        moments.add(f"{event} after scale {si}: re-index", [
            (here, "KV cache", kv(live, capacity) + compact), (here, "text", text),
            (here, "codes", codes(live, si + 1) + codes(kept, si + 1))])
        moments.add(f"{event} after scale {si}: re-index", [
            (here, "KV cache", compact + kv(kept, new_capacity)), (here, "text", text),
            (here, "codes", codes(kept, si + 1))])
        live, capacity = kept, new_capacity
    state = [(here, "KV cache", kv(live, capacity)), (here, "text", text), (here, "codes", codes(live, scales))]
    moments.add("final decode", state + decoding(live, None, options.decode_chunk))
    if batch.score_final and request.scorers.reward is not None:
        moments.add("final scoring", state + scoring(request.scorers.reward, live, None))
    return moments.peaks


def cpu_available() -> int:
    """Memory this process can still allocate on the CPU: the kernel's MemAvailable, or less where a cgroup
    (a container) limits the process."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        try:
            import psutil
        except ImportError:
            return None
        available = psutil.virtual_memory().available
    limit, used = Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")
    try:
        maximum = limit.read_text().strip()
        if maximum != "max":
            available = min(available, int(maximum) - int(used.read_text()))
    except (OSError, ValueError):
        pass
    return available


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on `device` (None: unknown, so not checked)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # blocks torch's caching allocator holds without using them are free to this process too
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "cpu":
        return cpu_available()
    return None


def check_memory(model, vae, request) -> dict[torch.device, Peak]:
    """Raises NotEnoughMemory when a device cannot hold the search's peak; returns the estimate. Where the
    request's options give make_room, the host is asked to free memory on a device that falls short, and the
    device is looked at again before the search is refused."""
    peaks = estimate_search_memory(model, vae, request)
    make_room = request.options.make_room
    for device, peak in peaks.items():
        available = available_memory(device)
        if make_room is not None and available is not None and peak.total > available:
            make_room(peak.total, device)
            available = available_memory(device)
        if available is None or peak.total <= available:
            continue
        parts = ", ".join(f"{name} {gb(size)}" for name, size in sorted(peak.parts.items(), key=lambda p: -p[1])
                          if size >= peak.total / 100)
        biggest = max(peak.parts, key=peak.parts.get)
        fixes = {"KV cache": "fewer candidates (a smaller N), a smaller pixel budget or fewer prompts",
                 "decoding": "a smaller decode chunk, fewer candidates or a smaller pixel budget",
                 "activations": "fewer candidates (a smaller N) or a smaller pixel budget"}
        fix = fixes.get(biggest, "fewer candidates (a smaller N) or a smaller pixel budget")
        offload = " or offload idle models (the VAE and scorers then visit the GPU only while they work)" \
            if device.type == "cuda" and not request.options.offload_idle else ""
        raise NotEnoughMemory(
            f"this search needs about {gb(peak.total)} on {device} at its peak ({peak.moment}: {parts}) but only "
            f"{gb(available)} is available: use {fix}{offload}")
    return peaks
