"""The pack's node code in this process, without a ComfyUI server: fast checks of what the nodes decide.

`pack` imports the pack's `nodes` package from the ComfyUI tree prepared by scripts/setup_env.sh (for
comfy_api and folder_paths, which import cleanly), with two stand-ins: comfy.model_management, which would
probe the machine's devices at import, and server, which would start building a web server. The pack is
imported under its own package name without its root __init__.py, which would register model folders in the
ComfyUI tree; each test registers the folders it needs (`model_folder`).

Skipped, with the reason, when ComfyUI is not set up; TTSVAR_REQUIRE_E2E=1 (CI) turns that into an error.
"""
from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "comfyui_ttsvar_under_test"


def comfy_dir() -> Path:
    return Path(os.environ.get("TTSVAR_COMFY_DIR") or ROOT / ".cache" / "ComfyUI").resolve()


class FakeModelManagement(types.ModuleType):
    """comfy.model_management as the glue uses it, on the CPU, recording what it is asked to free."""

    def __init__(self):
        super().__init__("comfy.model_management")
        self.freed: list[tuple[int, torch.device]] = []
        self.loaded: list[tuple[object, int]] = []   # (patcher, memory_required) of each load_models_gpu

    def get_torch_device(self):
        return torch.device("cpu")

    def text_encoder_offload_device(self):
        return torch.device("cpu")

    def is_device_cpu(self, device):
        return torch.device(device).type == "cpu"

    def free_memory(self, memory_required, device, keep_loaded=()):
        self.freed.append((memory_required, torch.device(device)))

    def load_models_gpu(self, models, memory_required=0, force_full_load=False, **_):
        assert force_full_load, "our modules compute only from weights fully on the device"
        self.loaded.extend((m, memory_required) for m in models)

    def minimum_inference_memory(self):
        return 1024

    def soft_empty_cache(self, force=False):
        pass

    def throw_exception_if_processing_interrupted(self):
        pass

    def module_size(self, module):
        return sum(t.numel() * t.element_size() for t in module.state_dict().values())


class FakeModelPatcher:
    """comfy.model_patcher.ModelPatcher as far as the glue builds one (the real module imports ComfyUI's whole
    model code, which needs the real model_management)."""

    def __init__(self, model, load_device, offload_device, size=0):
        self.model, self.load_device, self.offload_device, self.size = model, load_device, offload_device, size


class FakeServer:
    last_prompt_id = "prompt"
    client_id = "client"

    def __init__(self):
        self.sent = []

    def send_sync(self, event, data, client_id=None):
        self.sent.append((event, data))


@pytest.fixture(scope="session")
def pack():
    """The pack's modules: pack.nodes.<module>, pack.core (its ttsvar_core), pack.mm (the stand-in),
    pack.folder_paths (ComfyUI's)."""
    comfy = comfy_dir()
    if not (comfy / "comfy_api").is_dir():
        problem = f"ComfyUI is not set up at {comfy} (run: bash scripts/setup_env.sh)"
        if os.environ.get("TTSVAR_REQUIRE_E2E") == "1":
            pytest.fail(f"TTSVAR_REQUIRE_E2E=1 but {problem}")
        pytest.skip(problem)
    saved_path, saved_modules = list(sys.path), dict(sys.modules)
    sys.path.insert(0, str(comfy))
    mm = FakeModelManagement()
    sys.modules["comfy.model_management"] = mm
    server = types.ModuleType("server")
    server.PromptServer = types.SimpleNamespace(instance=FakeServer())
    sys.modules["server"] = server
    patcher = types.ModuleType("comfy.model_patcher")
    patcher.ModelPatcher = FakeModelPatcher
    sys.modules["comfy.model_patcher"] = patcher
    import comfy as comfy_package
    comfy_package.model_management = mm
    comfy_package.model_patcher = patcher
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(ROOT)]  # its modules, without running the root __init__.py
    sys.modules[PACKAGE] = package
    import folder_paths
    yield types.SimpleNamespace(
        nodes=types.SimpleNamespace(**{name: importlib.import_module(f"{PACKAGE}.nodes.{name}")
                                       for name in ("comfy_glue", "sampler", "candidates", "schedule", "types")}),
        core=importlib.import_module(f"{PACKAGE}.ttsvar_core"), mm=mm, folder_paths=folder_paths)
    # ComfyUI's top-level modules (comfy, server, utils, ...) leave with the stand-ins: nothing else sees them
    sys.path[:] = saved_path
    for name in set(sys.modules) - set(saved_modules):
        del sys.modules[name]


@pytest.fixture
def model_folder(pack, monkeypatch, tmp_path):
    """register(name, *extensions) -> a fresh folder registered as ComfyUI's only search path of `name`."""
    folder_paths = pack.folder_paths

    def register(name: str, *extensions: str) -> Path:
        folder = tmp_path / "models" / name
        folder.mkdir(parents=True, exist_ok=True)
        monkeypatch.setitem(folder_paths.folder_names_and_paths, name, ([str(folder)], set(extensions)))
        monkeypatch.setattr(folder_paths, "filename_list_cache", {})
        return folder

    return register


@pytest.fixture(scope="session")
def pipeline(pack, tmp_path_factory):
    """(the tiny model loaded by the pack's own core and registered with the (stand-in) memory manager, as the
    loader node does it; 'a red cat' encoded)."""
    from ttsvar_core.testing.tiny_models import write_tiny_models
    files = write_tiny_models(tmp_path_factory.mktemp("tiny"))
    pipe = pack.core.model.pipeline.InfinityPipeline.load(files["infinity_safetensors"], files["vae_safetensors"],
                                                          files["t5"], device="cpu")
    return pack.nodes.comfy_glue.manage(pipe), pipe.encode(["a red cat"])
