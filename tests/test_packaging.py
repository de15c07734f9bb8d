"""The Comfy Registry archive and its metadata.

`comfy node pack` / `comfy node publish` (PyPI package comfy-cli, comfy_cli/file_utils.py `zip_files`) archive
the git-tracked files (`git ls-files`, run in the pack's root) minus the paths that the .comfyignore patterns
match (pathspec's "gitwildmatch" rules on the path relative to the root; blank and `#` lines skipped), plus
the paths listed in [tool.comfy] includes. `registry_archive` below applies those rules with the same
library, so the archive checked here is the one users install. ComfyUI-Manager's "Install via Git URL"
clones the repository instead; requirements.txt serves both.
"""
import re
import subprocess
import tomllib
import warnings
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
# what ComfyUI loads: the entry point, the nodes and their web extension, the core, the example workflows
# (ComfyUI lists a custom node's workflows/ or example_workflows/ under Browse Templates)
SHIPPED_DIRS = ("nodes/", "web/", "ttsvar_core/", "workflows/", "example_workflows/")
SHIPPED_FILES = {"__init__.py", "requirements.txt", "pyproject.toml", "LICENSE", "NOTICE", "README.md"}
MUST_SHIP = ("__init__.py", "nodes/__init__.py", "ttsvar_core/__init__.py", "ttsvar_core/__main__.py",
             "ttsvar_core/assets/bert-base-uncased/vocab.txt",
             "ttsvar_core/assets/shapesworld/shapesworld_infinity.safetensors", *sorted(SHIPPED_FILES))
# comfy-cli's validate_version: a range it cannot parse is dropped from the registry entry with a warning
COMFY_VERSION_PART = re.compile(r"^(?:(==|>=|<=|!=|~=|>|<|<>|=)\s*)?(\d+\.\d+\.\d+(?:-[a-zA-Z0-9]+)?)?$")


def tracked_files() -> list[str]:
    try:
        listed = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: comfy node pack archives the git-tracked files")
    return [line for line in listed.stdout.splitlines() if line.strip()]


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def registry_archive(out: Path) -> list[str]:
    """Builds the archive as comfy-cli's zip_files does and returns its member names."""
    pathspec = pytest.importorskip("pathspec", reason="pathspec (requirements-test.txt) is missing: rerun "
                                                      "scripts/setup_env.sh")
    lines = (REPO / ".comfyignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pathspec 1.x renamed "gitwildmatch"; comfy-cli uses it
        ignore = pathspec.PathSpec.from_lines("gitwildmatch", patterns)
    includes = pyproject()["tool"]["comfy"].get("includes", [])
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in tracked_files():
            forced = any(name == inc or name.startswith(inc.rstrip("/") + "/") for inc in includes)
            if (forced or not ignore.match_file(name)) and (REPO / name).exists():
                archive.write(REPO / name, name)
        for inc in includes:  # [tool.comfy] includes: added even when untracked or ignored
            for path in [REPO / inc] if (REPO / inc).is_file() else sorted((REPO / inc).rglob("*")):
                name = path.relative_to(REPO).as_posix()
                if path.is_file() and name not in archive.namelist():
                    archive.write(path, name)
    with zipfile.ZipFile(out) as archive:
        return archive.namelist()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> list[str]:
    return registry_archive(tmp_path_factory.mktemp("registry") / "node.zip")


def test_archive_holds_what_comfyui_needs(archive):
    names = set(archive)
    assert not [f for f in MUST_SHIP if f not in names]
    lost = [f for f in tracked_files() if f.startswith(SHIPPED_DIRS) and f not in names]
    assert not lost, f"files of the pack left out of the archive (.comfyignore too broad?): {lost}"
    workflows = [f for f in names if f.startswith(("workflows/", "example_workflows/")) and f.endswith(".json")]
    assert workflows or not any(f.startswith(("workflows/", "example_workflows/")) for f in tracked_files())


def test_archive_holds_nothing_else(archive):
    def belongs(name: str) -> bool:
        # docs/*.md stay: README.md links to them; docs/images are shown from the repository
        return (name in SHIPPED_FILES or name.startswith(SHIPPED_DIRS)
                or (name.startswith("docs/") and name.count("/") == 1 and name.endswith(".md")))

    extra = sorted(name for name in archive if not belongs(name))
    assert not extra, f"development files in the registry archive (add them to .comfyignore): {extra}"
    for dev in ("tests/", "benchmarks/", "scripts/", ".ci/", "docs/images/"):
        assert not any(name.startswith(dev) for name in archive), dev


def runtime_requirements() -> list[str]:
    lines = (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_pyproject_dependencies_are_requirements_txt():
    """ComfyUI-Manager installs requirements.txt, the registry reads [project] dependencies: one list."""
    assert pyproject()["project"]["dependencies"] == runtime_requirements()


def test_every_runtime_requirement_has_a_floor():
    """The floors are what scripts/check_floors.sh installs and tests."""
    for line in runtime_requirements():
        req = Requirement(line)
        floors = [spec for spec in req.specifier if spec.operator == ">="]
        assert len(floors) == 1 and not req.marker, f"{line}: give one lower bound (>=) and nothing else"


def test_registry_metadata():
    data = pyproject()
    project, comfy = data["project"], data["tool"]["comfy"]
    assert project["name"] == "comfyui-ttsvar" and re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["description"] and project["license"] == {"file": "LICENSE"}
    assert (REPO / "LICENSE").read_text().lstrip().startswith("Apache License\n")
    assert comfy["PublisherId"] and comfy["DisplayName"]
    # comfy-cli drops a requires-comfyui it cannot parse; ComfyUI's version under test is the floor
    required = comfy["requires-comfyui"]
    assert all(COMFY_VERSION_PART.match(part.strip()) for part in required.split(","))
    tested = re.search(r"^COMFY_VERSION=(\S+)", (REPO / "scripts" / "setup_env.sh").read_text(), re.M).group(1)
    assert required == f">={tested}"
    repository = project["urls"]["Repository"]
    owner_name = re.fullmatch(r"https://github\.com/([^/]+/[^/]+)", repository).group(1)
    icon = comfy["Icon"]
    assert icon.startswith(f"https://raw.githubusercontent.com/{owner_name}/")
    icon_file = icon.split("/", 6)[-1]  # after https://raw.githubusercontent.com/OWNER/NAME/BRANCH/
    assert icon_file in tracked_files(), f"the registry icon {icon_file} is not in the repository"


def test_notice_names_the_shipped_vocabulary(archive):
    notice = (REPO / "NOTICE").read_text()
    vocab = "ttsvar_core/assets/bert-base-uncased/vocab.txt"
    assert vocab in notice and vocab in archive
    assert "bert-base-uncased" in notice and "Apache License, Version 2.0" in notice
