"""Everything the nodes need from ComfyUI, in one place, so ttsvar_core never imports comfy.

- devices and memory: the compute and offload devices, making room before loading, moving a scorer to the
  GPU only while it works;
- progress and interrupts: one callback per generated scale that honours Cancel, advances the node's
  progress bar and reports the scale on the websocket;
- previews: sending the candidate grid as the websocket event `ttsvar.candidates`;
  the events name the node by the id ComfyUI hands it (the schema's hidden unique_id);
- model folders: listing files and model folders (8B shard folders, Hugging Face folders) as one entry each,
  the shipped ShapesWorld model among them (shipped.py).
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths
import torch
from server import PromptServer

from ..ttsvar_core.engine import RunOptions
from ..ttsvar_core.model.files import INDEX_FILES
from ..ttsvar_core.model.pipeline import InfinityPipeline
from . import previews, shipped

CANDIDATES_EVENT = "ttsvar.candidates"
SCALE_EVENT = "ttsvar.scale"
THUMBNAIL_SUBFOLDER = "ttsvar"

# A folder holding one of these is one model (Hugging Face layout or 8B shards), listed as one entry.
FOLDER_MARKERS = INDEX_FILES + ("config.json",)


# ---- devices and memory ----------------------------------------------------------------------------------
def compute_device() -> torch.device:
    return mm.get_torch_device()


def offload_device() -> torch.device:
    return mm.text_encoder_offload_device()


def auto_dtype(choice: str, device: torch.device) -> str:
    """'auto': bf16 where the GPU supports it (the released models' dtype), else fp16 on a GPU, fp32 on CPU."""
    if choice != "auto":
        return choice
    if mm.is_device_cpu(device):
        return "fp32"
    if mm.should_use_bf16(device):
        return "bf16"
    return "fp16" if mm.should_use_fp16(device) else "fp32"


def module_bytes(*modules) -> int:
    return sum(mm.module_size(m) for m in modules)


def disk_bytes(*paths: str) -> int:
    """Size on disk of files and model folders: the estimate of what loading them will need."""
    total = 0
    for path in paths:
        if os.path.isdir(path):
            total += sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)
        else:
            total += os.path.getsize(path)
    return total


def make_room(num_bytes: int, device: torch.device | None = None) -> None:
    """Asks ComfyUI to unload its own models until num_bytes (plus its inference reserve) fit."""
    device = device or compute_device()
    if not mm.is_device_cpu(device):
        mm.free_memory(num_bytes + mm.minimum_inference_memory(), device)


@contextmanager
def scorer_on_device(scorer):
    """A reward model or feature extractor on the compute device for the duration of the block, then back
    on the offload device, so it holds no GPU memory between uses."""
    if scorer is None:
        yield None
        return
    device = compute_device()
    # the scorer's torch modules hold its weights: their size is what must fit on the device
    make_room(module_bytes(*getattr(scorer, "_modules", {}).values()), device)
    scorer.to(device)
    try:
        yield scorer
    finally:
        scorer.offload()
        mm.soft_empty_cache()


@contextmanager
def text_encoder_on_device(pipeline):
    """T5 is only needed while encoding: it lives on the offload device and visits the GPU for one call."""
    encoder = pipeline.text_encoder
    device = compute_device()
    make_room(module_bytes(encoder.model), device)
    encoder.to(device)
    try:
        yield encoder
    finally:
        encoder.to(offload_device())
        mm.soft_empty_cache()


# ---- ComfyUI's model management -----------------------------------------------------------------------------
class InfinityWeights(torch.nn.Module):
    """The modules of a pipeline that ComfyUI's ModelPatcher moves, as one module. A plain container: the
    patcher records where it put a model in a `device` attribute, which our modules expose as a read-only
    property. (The class name is what ComfyUI's log prints when it loads the model.)"""

    def __init__(self, parts: list[torch.nn.Module]):
        super().__init__()
        self.parts = torch.nn.ModuleList(parts)


@dataclass(frozen=True, eq=False)
class ManagedPipeline:
    """An InfinityPipeline known to ComfyUI's memory manager. Its transformer and VAE are one ModelPatcher:
    ComfyUI moves them to the offload device when another model needs the GPU (or the user frees memory),
    and `ready` brings them back before one of our nodes computes. When ComfyUI drops the loader's output,
    the patcher goes with it and ComfyUI forgets the model. Everything else reads through to the pipeline
    (model, vae, text_encoder, schedule, encode)."""

    pipeline: InfinityPipeline
    patcher: object

    def __getattr__(self, name):
        # only called for names the dataclass lacks; the guard keeps copy/pickle (which look up dunders on a
        # half-built object) from recursing
        if name.startswith("__") or name in ("pipeline", "patcher"):
            raise AttributeError(name)
        return getattr(self.pipeline, name)


def manage(pipeline: InfinityPipeline, streamed: bool = False) -> ManagedPipeline:
    """Registers a pipeline just loaded onto the compute device with ComfyUI's memory manager. Streamed
    blocks are left out: they live in CPU memory and visit the device one at a time (offload.stream_blocks),
    so moving them with the rest would put the whole transformer on the device at once."""
    model = pipeline.model
    parts = [c for name, c in model.named_children() if name != "block_chunks"] if streamed else [model]
    weights = InfinityWeights(parts + [pipeline.vae])
    size, device = module_bytes(weights), compute_device()
    # the weights are already on the compute device: say so before the patcher reads these two attributes,
    # so that the first `ready` neither evicts other models for room we hold nor moves anything
    weights.device, weights.model_loaded_weight_memory = device, size
    patcher = comfy.model_patcher.ModelPatcher(weights, load_device=device, offload_device=offload_device(),
                                               size=size)
    return ManagedPipeline(pipeline, patcher)


def ready(model: ManagedPipeline, memory_required: int = 0) -> ManagedPipeline:
    """Puts the model's weights on the compute device through ComfyUI, which first evicts other models until
    the weights and `memory_required` more (the run's caches and decodes) fit. A full load: our modules do
    not compute from weights left on the CPU, which ComfyUI's partial loads assume."""
    mm.load_models_gpu([model.patcher], memory_required=memory_required, force_full_load=True)
    return model


def check_interrupt() -> None:
    """Raises ComfyUI's interrupt exception when the user pressed Cancel."""
    mm.throw_exception_if_processing_interrupted()


def run_options() -> RunOptions:
    """How a search runs inside ComfyUI: Cancel is honoured inside long decodes and scoring, not only between
    scales, and a search whose memory estimate does not fit first asks ComfyUI to unload its own models, and
    is refused only if it still does not fit."""
    return RunOptions(should_stop=check_interrupt, make_room=make_room)


# ---- progress and websocket events ---------------------------------------------------------------------
def send_event(node: str, event: str, data: dict) -> None:
    """Sends an event about `node` to the client that queued the prompt. The prompt id is the server's
    running prompt, as ComfyUI's own progress messages take it."""
    server = PromptServer.instance
    server.send_sync(event, {"node": node, "prompt_id": server.last_prompt_id, **data}, server.client_id)


class ScaleProgress:
    """The per-scale callback of a stepping node: Cancel is honoured between scales, the node's progress
    bar moves one step per scale, and a light `ttsvar.scale` event reports the scale just generated
    (0 = the 1x1 scale), the number of scales and the live candidates."""

    def __init__(self, node: str, first_scale: int, last_scale: int):
        self.node, self.first = node, first_scale
        self.bar = comfy.utils.ProgressBar(max(last_scale - first_scale, 1), node_id=node)

    def __call__(self, state) -> None:
        check_interrupt()
        self.bar.update_absolute(state.scale - self.first)
        send_event(self.node, SCALE_EVENT, {"scale": state.scale - 1, "scales": state.geometry.num_scales,
                                            "live": state.num_candidates})


def save_thumbnail(image: torch.Tensor) -> dict:
    """Saves a candidate's thumbnail into ComfyUI's temp folder (emptied at every server start) and returns
    the reference the page loads it by, as PreviewImage does for its images. Cancel is honoured between
    thumbnails, as between decode chunks."""
    check_interrupt()
    folder = os.path.join(folder_paths.get_temp_directory(), THUMBNAIL_SUBFOLDER)
    os.makedirs(folder, exist_ok=True)
    filename = f"{uuid.uuid4().hex}.png"
    previews.thumbnail(image).save(os.path.join(folder, filename), compress_level=1)
    return {"filename": filename, "subfolder": THUMBNAIL_SUBFOLDER, "type": "temp"}


def send_candidates(node: str, payload: dict) -> dict:
    """Sends a candidate grid (see previews.py) and returns the node's ui dict, so the grid stays on the
    node after the run and comes back from the history."""
    send_event(node, CANDIDATES_EVENT, payload)
    return {"ttsvar_grid": [payload]}


# ---- model folders ---------------------------------------------------------------------------------------
def _grouped_folders(base: str, max_depth: int = 3) -> list[str]:
    """Sub-folders of base that are one model each (they hold an index or config json), relative paths.
    The depth limit keeps a symlink loop or a huge unrelated tree from stalling the node list."""
    found = []
    for root, dirs, files in os.walk(base, followlinks=True):
        relative = os.path.relpath(root, base).replace(os.sep, "/")
        if root != base and any(marker in files for marker in FOLDER_MARKERS):
            found.append(relative)
            dirs[:] = []  # the files inside belong to this model
        elif root != base and relative.count("/") + 1 >= max_depth:
            dirs[:] = []
        else:
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return found


def list_models(folder_name: str, files: bool = True, folders: bool = True) -> list[str]:
    """Entries of a model folder for a combo widget: single files, and model folders as one entry each.

    ComfyUI's own listing names every shard of an 8B checkpoint separately; those are hidden here and the
    shard folder is listed instead."""
    grouped: set[str] = set()
    for base in folder_paths.get_folder_paths(folder_name):
        grouped.update(_grouped_folders(base))
    entries = set(grouped) if folders else set()
    if files:
        for name in folder_paths.get_filename_list(folder_name):
            name = name.replace(os.sep, "/")
            if not any(name.startswith(g + "/") for g in grouped):
                entries.add(name)
    return sorted(name for name in entries if _belongs_here(folder_name, name))


def _climbs_out(name: str) -> bool:
    """Whether an entry name leads out of its model folder by its spelling: an absolute path or a '..' part.
    Only the name is judged: links inside the folder are followed (see _locate)."""
    parts = name.replace("\\", "/").split("/")
    return os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts or os.path.normpath(name) == "."


def _locate(folder_name: str, name: str) -> tuple[str, str] | None:
    """(search path, full path) of the first search path of the model folder that holds the entry.

    Links are followed, as ComfyUI's own loaders (folder_paths.get_full_path) do: one download shared between
    installs is usually a link in each model folder, and the lists show it. What is refused is a name that
    climbs out of the folder ('..', an absolute path): the lists never offer one."""
    if _climbs_out(name):
        return None
    for base in folder_paths.get_folder_paths(folder_name):
        candidate = os.path.join(base, name)
        if os.path.exists(candidate):
            return base, candidate
    return None


def _belongs_here(folder_name: str, name: str) -> bool:
    """False for the shipped model's parts that belong to other model folders (its VAE under infinity...)."""
    found = _locate(folder_name, name)
    return found is None or found[0] != shipped.SHIPPED_DIR or shipped.ENTRIES.get(folder_name) == name


def resolve_model(folder_name: str, name: str, what: str) -> str:
    """Full path of an entry of list_models; a clear error when it is not there (renamed, deleted, typed, a
    broken link, or a name outside the model folder)."""
    found = _locate(folder_name, name)
    if found is not None:
        return found[1]
    if _climbs_out(name):
        raise FileNotFoundError(f"{what} {name!r} is not a name inside models/{folder_name}: names with '..' or an "
                                "absolute path are refused; put the file (or a link to it) into the folder and "
                                "choose it from the list")
    bases = folder_paths.get_folder_paths(folder_name)
    broken = next((os.path.join(b, name) for b in bases if os.path.islink(os.path.join(b, name))), None)
    if broken is not None:
        raise FileNotFoundError(f"{what} {name!r} is a link to {os.readlink(broken)}, which does not exist: "
                                f"point the link {broken} at the file again, or replace it with the file")
    searched = ", ".join(bases) or "(no folder registered)"
    raise FileNotFoundError(f"{what} {name!r} was not found in models/{folder_name} (searched: {searched}). "
                            "Put the file there and press R in ComfyUI to refresh the lists.")


def missing_model_message(folder_name: str, name: str, what: str) -> str | None:
    """For validate_inputs: None when the entry exists (or is not known yet: a linked input validates as
    None), else the message resolve_model would raise."""
    if name is None:
        return None
    try:
        resolve_model(folder_name, name, what)
    except FileNotFoundError as e:
        return str(e)
    return None


# ---- text encoders ---------------------------------------------------------------------------------------
def list_text_encoders() -> list[str]:
    """The model loader's text encoder entries: T5 model folders, and the .safetensors files of
    models/text_encoders (a convert-t5 single file; ComfyUI's own text encoders lie there too, and loading
    one of those says what is wrong and what to use instead)."""
    files = [name for name in list_models("text_encoders", folders=False) if name.lower().endswith(".safetensors")]
    return sorted(list_models("text_encoders", files=False) + files)


def t5_tokenizer_folder(text_encoder: str) -> str:
    """The T5 tokenizer ComfyUI ships (its SD3 and Flux T5-XXL use T5 v1.1's 32k vocabulary, which flan-t5
    shares): what a single-file text encoder, which holds no tokenizer, is read with."""
    try:
        import comfy.text_encoders.sd3_clip as sd3_clip
        here = os.path.dirname(os.path.realpath(sd3_clip.__file__))
    except ImportError:  # a ComfyUI that moved its T5 code: the error names where the folder used to be
        here = os.path.join(os.path.dirname(os.path.realpath(mm.__file__)), "text_encoders")
    folder = os.path.join(here, "t5_tokenizer")
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"the single-file text encoder {text_encoder!r} holds no tokenizer and is read with the T5 tokenizer "
            f"ComfyUI ships, but the folder {folder} is missing. Reinstall or update ComfyUI (it ships that "
            "folder), or copy flan-t5-xl's tokenizer.json into it, or choose a flan-t5-xl folder as text_encoder")
    return folder
