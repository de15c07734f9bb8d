"""The pack installed as the Comfy Registry installs it: the archive `comfy node pack` builds (the git-tracked
files minus .comfyignore, as tests/test_packaging.py builds it) unpacked into custom_nodes of a fresh copy of
the test ComfyUI tree, with nothing else (no link to this checkout, no test-only nodes, no model files).
That server must load every node without an import error, list the example workflows in its template list,
and run the shipped-ShapesWorld CPU template to an image. Beside it, a static check that requirements.txt
(next to ComfyUI's own requirements) covers every third-party module the archive's code imports."""
import ast
import importlib.metadata
import importlib.util
import io
import json
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
PACK = "comfyui-ttsvar"
CPU_TEMPLATE = "ttsvar_small_model_cpu"


def _packaging_module():
    """tests/test_packaging.py, by path (test modules cannot import each other under --import-mode=importlib)."""
    spec = importlib.util.spec_from_file_location("ttsvar_registry_packaging", REPO / "tests" / "test_packaging.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory) -> Path:
    """The registry archive, unpacked: what a user's custom_nodes/comfyui-ttsvar holds after installing."""
    work = tmp_path_factory.mktemp("registry")
    archive = work / "node.zip"
    _packaging_module().registry_archive(archive)
    pack = work / PACK
    with zipfile.ZipFile(archive) as z:
        z.extractall(pack)
    return pack


@pytest.fixture(scope="module")
def installed(e2e_harness, unpacked, tmp_path_factory, artifacts):
    """A ComfyUI started from a fresh copy of the test tree, with the unpacked pack as its only custom node
    pack; yields (server, client)."""
    source = e2e_harness.comfy_dir()
    tree = tmp_path_factory.mktemp("fresh") / "ComfyUI"

    def leave_out(folder, names):
        # this checkout's link and the tree's UI settings are not part of a fresh install; the compiled
        # files are kept (copied with their sources' times, they stay valid) so the start stays quick
        if Path(folder) == source / "custom_nodes":
            return [PACK]
        return ["user"] if Path(folder) == source else []

    shutil.copytree(source, tree, symlinks=True, ignore=leave_out)
    shutil.copytree(unpacked, tree / "custom_nodes" / PACK)
    server = e2e_harness.ComfyServer(tree, tmp_path_factory.mktemp("fresh_run"), e2e_harness.free_port(),
                                     support_nodes=False)
    try:
        server.start()
        yield server, e2e_harness.ComfyClient(server)
    finally:
        server.stop()
        if server.log_path.exists():
            shutil.copyfile(server.log_path, artifacts / "comfyui-registry-install.log")


def test_the_installed_pack_loads_every_node_and_lists_its_templates(installed, unpacked):
    server, client = installed
    log = server.log_text()
    pack_dir = str(server.comfy / "custom_nodes" / PACK)
    assert f": {pack_dir}" in log, f"ComfyUI did not report loading {pack_dir}:\n{server.log_tail()}"
    failures = [line for line in log.splitlines()
                if PACK in line and ("IMPORT FAILED" in line or "Cannot import" in line)]
    assert not failures, "\n".join(failures)

    ours = {name for name, info in client.object_info().items() if info["python_module"] == f"custom_nodes.{PACK}"}
    # every node has its help page (test_help.py), so the pages name the nodes the pack must register
    assert ours == {page.stem for page in (unpacked / "web" / "docs").glob("*.md")}

    templates = {p.stem for p in (unpacked / "example_workflows").glob("*.json")}
    assert CPU_TEMPLATE in templates
    assert set(client.get_json("/workflow_templates")[PACK]) == templates


def test_the_installed_cpu_template_draws_an_image(installed, unpacked, workflows):
    """The template README points to first, run through the API as shipped: only the files inside the pack."""
    _, client = installed
    workflow = json.loads((unpacked / "example_workflows" / f"{CPU_TEMPLATE}.json").read_text())
    run = client.run_prompt(workflows.to_api(workflow, client.object_info()), timeout=300)
    assert run.succeeded, run.error
    (save,) = [str(n["id"]) for n in workflow["nodes"] if n["type"] == "SaveImage"]
    (saved,) = run.outputs[save]["images"]
    image = Image.open(io.BytesIO(client.view(saved["filename"], subfolder=saved["subfolder"],
                                              folder_type=saved["type"])))
    assert image.size == (64, 64)


def test_a_comfyui_without_its_t5_tokenizer_is_named_with_the_fix(installed):
    """A single-file text encoder is read with ComfyUI's t5_tokenizer folder; in a ComfyUI that lacks it the
    loader names the folder and what to do, before loading anything (so any .safetensors shows it). Runs
    last in this module: it removes the folder from this test's own copy of ComfyUI."""
    from safetensors.torch import save_file

    server, client = installed
    tokenizer = server.comfy / "comfy" / "text_encoders" / "t5_tokenizer"
    shutil.rmtree(tokenizer)
    save_file({"shared.weight": torch.zeros(2, 2)}, server.models_dir / "text_encoders" / "t5-encoder.safetensors")
    run = client.run_prompt({"m": {"class_type": "TTSVAR_ModelLoader", "inputs": {
        "model": "shapesworld/shapesworld_infinity.safetensors", "vae": "shapesworld/shapesworld_vae.safetensors",
        "text_encoder": "t5-encoder.safetensors", "dtype": "auto"}},
        "show": {"class_type": "PreviewAny", "inputs": {"source": ["m", 0]}}})
    assert not run.succeeded
    message = run.error["exception_message"]
    assert f"the folder {tokenizer} is missing" in message
    assert "Reinstall or update ComfyUI" in message and "choose a flan-t5-xl folder as text_encoder" in message


# ---- requirements ----------------------------------------------------------------------------------------
def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    caught = handler.type
    names = caught.elts if isinstance(caught, ast.Tuple) else [caught]
    return caught is None or any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError")
                                 for n in names)


def imported_modules(source: str) -> tuple[set[str], set[str]]:
    """(required, optional) top-level modules a file imports by absolute name, at any depth (lazy imports
    too). Optional: imported inside a try whose handler catches ImportError, i.e. a dependency the pack
    explains when it is missing (open_clip for HPS, torchvision for Inception, psutil)."""
    required, optional = set(), set()

    def visit(node, guarded):
        if isinstance(node, ast.Try):
            catches = guarded or any(_catches_import_error(h) for h in node.handlers)
            for child in node.body:
                visit(child, catches)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, guarded)
            return
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        for name in names:
            (optional if guarded else required).add(name.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(ast.parse(source), False)
    return required, optional


def requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        try:
            names.add(canonicalize_name(Requirement(line).name))
        except InvalidRequirement:  # blank lines and pip options
            continue
    return names


def test_requirements_txt_covers_every_import_of_the_archive(unpacked, e2e_harness):
    comfy = e2e_harness.comfy_dir()
    allowed = requirement_names(unpacked / "requirements.txt") | requirement_names(comfy / "requirements.txt")
    # modules that are no distribution: the standard library, ComfyUI's own (comfy, folder_paths, server, ...)
    # and the pack's
    local = set(sys.stdlib_module_names) | {p.stem for p in comfy.iterdir()} | {p.stem for p in unpacked.iterdir()}
    providers = importlib.metadata.packages_distributions()
    uncovered = {}
    for path in unpacked.rglob("*.py"):
        required, _ = imported_modules(path.read_text(encoding="utf-8"))
        for module in sorted(required - local):
            dists = {canonicalize_name(d) for d in providers.get(module, [])}
            if not dists & allowed:
                uncovered.setdefault(module, []).append(str(path.relative_to(unpacked)))
    assert not uncovered, (f"imported without a requirement (add it to requirements.txt and pyproject.toml, or "
                           f"import it inside try/except ImportError with a message): {uncovered}")
