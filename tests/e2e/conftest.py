"""Fixtures of the end-to-end tests: a real ComfyUI server (CPU) with this pack, plus headless Chromium.
The machinery behind them is in harness.py.

Fixtures for tests:
    comfy_server  (session) harness.ComfyServer: the running process, its URL, log and folders
    comfy         (session) harness.ComfyClient: HTTP + websocket helpers (queue, run, history, ...)
    comfy_page    (function) harness.ComfyPage: a Playwright page with the ComfyUI frontend loaded
    artifacts     (session) Path of the artifacts folder (TTSVAR_ARTIFACTS)
    tiny_models   (session) tiny random Infinity/VAE/T5 files and a tiny CLIP reward and DINOv2
                  written into the server's model folders: {name: Path} (ttsvar_core.testing.tiny_models,
                  ttsvar_core.testing.tiny_scorers)
    e2e_harness   (session) the harness module, for tests that start a ComfyUI of their own
    workflows     (session) the workflow_lib module: shipped workflows, UI -> API conversion, the
                  test-time swaps to tiny files, and page scripts that build and edit workflows

Every test in this folder is skipped, with the reason, when ComfyUI is not set up;
TTSVAR_REQUIRE_E2E=1 (set by .ci/run) turns that skip into an error.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

E2E_DIR = Path(__file__).resolve().parent


def _load(module_file: str):
    """A sibling module, by path: under --import-mode=importlib this folder is not on sys.path."""
    name = f"ttsvar_e2e_{Path(module_file).stem}"
    spec = importlib.util.spec_from_file_location(name, E2E_DIR / module_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


harness = _load("harness.py")


def pytest_collection_modifyitems(config, items):
    ours = [item for item in items if E2E_DIR in Path(item.path).parents]
    for item in ours:
        item.add_marker(pytest.mark.e2e)
    problem = harness.setup_problem()
    if problem is None or not ours:
        return
    if harness.e2e_required():
        raise pytest.UsageError(f"TTSVAR_REQUIRE_E2E=1 but {problem}")
    for item in ours:
        item.add_marker(pytest.mark.skip(reason=f"e2e: {problem}"))


@pytest.fixture(scope="session")
def e2e_harness():
    """The harness module itself, for tests that start a server of their own."""
    return harness


@pytest.fixture(scope="session")
def workflows():
    return _load("workflow_lib.py")


@pytest.fixture(scope="session")
def tiny_models(comfy_server) -> dict:
    """Written after the server started: ComfyUI lists model folders afresh when their contents change."""
    from ttsvar_core.testing.tiny_models import write_tiny_models
    from ttsvar_core.testing.tiny_scorers import write_tiny_scorers

    paths = write_tiny_models(comfy_server.models_dir)
    paths.update(write_tiny_scorers(comfy_server.models_dir))
    return paths


@pytest.fixture(scope="session")
def artifacts() -> Path:
    return harness.artifacts_dir()


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory, artifacts):
    with harness.running_server(tmp_path_factory.mktemp("comfyui"), artifacts) as server:
        yield server


@pytest.fixture(scope="session")
def comfy(comfy_server):
    return harness.ComfyClient(comfy_server)


@pytest.fixture(scope="session")
def _browser():
    with harness.chromium() as browser:
        yield browser


@pytest.fixture
def comfy_page(_browser, comfy_server, artifacts, request):
    with harness.open_page(_browser, comfy_server.url, artifacts, request.node.name) as page:
        yield page
