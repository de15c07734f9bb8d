"""Shipped workflows for the e2e tests: reading them, converting UI format to API format, test-time swaps,
and the page script that builds a workflow from a spec (workflow_specs.py).

Loaded by conftest.py (test modules cannot import siblings under --import-mode=importlib) and handed to
tests through the `workflows` fixture.
"""
from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

# The folder ComfyUI's template browser lists for a custom node pack (Workflow > Browse Templates).
WORKFLOWS_DIR = Path(__file__).resolve().parents[2] / "example_workflows"
PACK = "comfyui-ttsvar"  # the template browser's category: the pack's folder name under custom_nodes
_WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Frontend-only nodes: they are never part of a prompt.
_VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
_MUTED, _BYPASSED = 2, 4


def _load_specs():
    spec = importlib.util.spec_from_file_location("ttsvar_e2e_workflow_specs",
                                                  Path(__file__).with_name("workflow_specs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


specs = _load_specs()


def names() -> list[str]:
    """Base names of the shipped workflows (example_workflows/*.json)."""
    return sorted(p.stem for p in WORKFLOWS_DIR.glob("*.json"))


def load(name: str) -> dict:
    return json.loads((WORKFLOWS_DIR / f"{name}.json").read_text())


def open_template(page, name: str) -> None:
    """Templates dialog -> the pack's category -> the workflow's card, as a user does."""
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    dialog = page.get_by_role("dialog")
    dialog.get_by_text(PACK, exact=True).click()
    dialog.get_by_text(name, exact=True).click()
    dialog.wait_for(state="detached", timeout=30_000)


_MISSING = object()


def _has_widget(spec) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in _WIDGET_TYPES


def _has_control_widget(name: str, spec) -> bool:
    """The frontend adds a 'control after generate' widget (one more widgets_values entry) after these."""
    options = spec[1] if len(spec) > 1 else {}
    return spec[0] == "INT" and (options.get("control_after_generate") or name in ("seed", "noise_seed"))


def to_api(workflow: dict, object_info: dict) -> dict:
    """UI-format workflow (what the frontend saves) -> API-format prompt (what POST /prompt takes).

    Widget values are matched to inputs in /object_info's input order, as the frontend lays out widgets;
    a linked input takes its link instead of its widget value. An optional input added after the workflow
    was saved has no value in it: it is left out, so the server gives it its default, as the frontend does
    for such a widget."""
    links = {link[0]: (str(link[1]), link[2]) for link in workflow.get("links", [])}
    prompt = {}
    for node in workflow["nodes"]:
        kind = node["type"]
        if kind in _VIRTUAL_NODES or node.get("mode") in (_MUTED, _BYPASSED):
            continue
        if kind not in object_info:
            raise KeyError(f"node {node['id']} is a {kind}, which the server does not know")
        info = object_info[kind]
        specs_by_name = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        order = info["input_order"].get("required", []) + info["input_order"].get("optional", [])
        linked = {i["name"]: links[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
        values = iter(node.get("widgets_values") or [])
        inputs = {}
        for name in order:
            spec = specs_by_name[name]
            if _has_widget(spec):
                value = next(values, _MISSING)
                if value is _MISSING:
                    if name not in info["input"].get("optional", {}):
                        raise ValueError(f"node {node['id']} ({kind}) has no value for its widget {name}")
                    continue
                if _has_control_widget(name, spec):
                    next(values)
                inputs[name] = value
            if name in linked:
                source, slot = linked[name]
                inputs[name] = [source, slot]
        prompt[str(node["id"])] = {"class_type": kind, "inputs": inputs}
    return prompt


def with_inputs(prompt: dict, changes: dict) -> dict:
    """A copy of an API prompt where every node of a class gets the given input values:
    changes = {class_type: {input: value}}."""
    out = copy.deepcopy(prompt)
    for node in out.values():
        node["inputs"].update(changes.get(node["class_type"], {}))
    return out


def tiny(name: str, prompt: dict) -> dict:
    """The prompt as the tests run it: real model files and the 1M budget swapped for tiny ones where the
    workflow names files CI does not have (see workflow_specs.TINY_SWAPS)."""
    return with_inputs(prompt, specs.TINY_SWAPS) if name in specs.NEEDS_SWAPS else copy.deepcopy(prompt)


# Builds a spec (workflow_specs.py) in the real page and returns app.graph.serialize() as JSON text: exactly
# what the frontend saves for that graph (stringified in the page, where absent fields are undefined and
# must stay absent rather than become null).
BUILD_JS = """
(spec) => {
  const graph = window.app.graph;
  graph.clear();
  const byId = {};
  for (const n of spec.nodes) {
    const node = window.LiteGraph.createNode(n.type);
    if (!node) throw new Error(`unknown node type ${n.type}`);
    node.id = n.id;
    if (n.title) node.title = n.title;
    Object.assign(node.properties, n.properties || {});
    graph.add(node);
    node.pos = n.pos;
    for (const [name, value] of Object.entries(n.widgets || {})) {
      const widget = (node.widgets || []).find((w) => w.name === name);
      if (!widget) throw new Error(`${n.type} has no widget ${name}`);
      widget.value = value;
    }
    const computed = node.computeSize();
    node.setSize(n.size || [Math.max(computed[0], spec.min_width || 0), computed[1]]);
    byId[n.id] = node;
  }
  for (const [source, slot, target, input] of spec.links) {
    const index = byId[target].findInputSlot(input);
    if (index < 0) throw new Error(`node ${target} has no input ${input}`);
    if (!byId[source].connect(slot, byId[target], index)) throw new Error(`cannot link ${source} -> ${target}.${input}`);
  }
  window.app.canvas.setDirty(true, true);
  return JSON.stringify(graph.serialize());
}
"""

# Sets widget values by node class in the page: {class_type: {widget: value}}.
SWAP_JS = """
(changes) => {
  let count = 0;
  for (const node of window.app.graph.nodes) {
    for (const [name, value] of Object.entries(changes[node.type] || {})) {
      const widget = (node.widgets || []).find((w) => w.name === name);
      if (!widget) throw new Error(`${node.type} has no widget ${name}`);
      widget.value = value;
      count += 1;
    }
  }
  window.app.graph.setDirtyCanvas(true, true);
  return count;
}
"""
