"""The import layering of the pack: a lower package never imports a higher one, and nothing ComfyUI loads
reaches the test builders. Imports are read from the source (function-level imports included), so a
lazy import inside a function counts like one at the top."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "ttsvar_core"

# package -> the packages it may import (besides itself)
ALLOWED = {
    "model": set(),
    "scorers": {"model"},
    "engine": {"model"},
    "shapesworld": {"model", "scorers", "engine"},
    "testing": {"model", "scorers", "engine", "shapesworld"},
    "cli": {"model", "scorers", "engine", "shapesworld", "testing"},     # cli.py and __main__.py
    "nodes": {"model", "scorers", "engine", "shapesworld"},
}


def unit_of(path: Path) -> str:
    """The layer a file belongs to."""
    if path.is_relative_to(ROOT / "nodes") or path == ROOT / "__init__.py":
        return "nodes"
    part = path.relative_to(CORE).parts[0]
    return "cli" if part in ("cli.py", "__main__.py", "__init__.py") else part


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Dotted names (relative to the repository root) of every module `path` imports from the pack."""
    return imports_of(path.read_text(), module_name(path), path.name == "__init__.py")


def imports_of(source: str, module: str, is_package: bool) -> set[str]:
    parts = module.split(".") if module else []   # "" is the repository root's __init__.py
    package = parts if is_package else parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in ("ttsvar_core", "nodes"))
    return found


def pack_files():
    files = sorted(CORE.rglob("*.py")) + sorted((ROOT / "nodes").rglob("*.py")) + [ROOT / "__init__.py"]
    return [f for f in files if "__pycache__" not in f.parts]


def file_of(name: str) -> Path | None:
    """The source file of a dotted module name (None for names of objects inside modules)."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def layer_of_module(name: str) -> str | None:
    path = file_of(name)
    return None if path is None else unit_of(path)


def test_no_package_imports_a_higher_one():
    wrong = []
    for path in pack_files():
        unit = unit_of(path)
        for name in imported_modules(path):
            target = layer_of_module(name)
            if target is not None and target != unit and target not in ALLOWED[unit]:
                wrong.append(f"{path.relative_to(ROOT)} ({unit}) imports {name} ({target})")
    assert not wrong, "\n".join(wrong)


def test_nothing_comfyui_loads_reaches_the_test_builders():
    # what ComfyUI imports: the pack's __init__.py, which imports the nodes, and everything they import
    todo, seen = [ROOT / "__init__.py"], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path):
            target = file_of(name)
            if target is not None:
                todo.append(target)
    loaded = {str(p.relative_to(ROOT)) for p in seen}
    assert "ttsvar_core/engine/state.py" in loaded  # the walk does follow the nodes into the core
    assert not [p for p in loaded if p.startswith("ttsvar_core/testing")], sorted(loaded)


def test_the_checker_reads_relative_and_lazy_imports():
    source = "def f():\n    from ..engine import state\nfrom .infinity import Infinity\n"
    found = imports_of(source, "ttsvar_core.model.probe", is_package=False)
    assert {"ttsvar_core.engine", "ttsvar_core.engine.state", "ttsvar_core.model.infinity"} <= found
    assert layer_of_module("ttsvar_core.engine.state") == "engine" and "engine" not in ALLOWED["model"]
