"""The shipped workflows in the real frontend: opened from ComfyUI's template browser, run with the Run
button, and the candidate grids drawn on the nodes, in both node renderers: the classic canvas and the Vue
one ("Nodes 2.0", setting Comfy.VueNodes.Enabled), each after widgets were edited the way a user edits them.
Screenshots go to the artifacts folder.

As in test_workflows.py, the Infinity-2B workflows get the tiny random files and a 13-scale tiny schedule
(set on the loaded graph's widgets, the way a user would pick other files) before they run.
"""
import json
import uuid

import pytest

PACK = "comfyui-ttsvar"
NAMES = ["ttsvar_2b_node_by_node", "ttsvar_2b_sampler", "ttsvar_bon_vs_ttsvar", "ttsvar_small_model_cpu",
         "ttsvar_pick_and_vary_cpu"]
RUN_TIMEOUT_MS = 240_000
# onerror would set the flag if the prompt were ever parsed as HTML
TRICKY_PROMPT = 'a cat <img src="x" onerror="window.__ttsvarInjected = 1"> & <b>bold</b>'

GRID_STATE_JS = """
(ids) => ids.map((id) => {
  const node = window.app.graph.getNodeById(Number(id));
  const widget = node?.widgets?.find((w) => w.name === "ttsvar_candidates");
  const root = widget?.element;
  const images = root ? [...root.querySelectorAll("img")] : [];
  return {
    id,
    // on the page at all, and (Vue renderer) inside the node's own element
    connected: !!root?.isConnected,
    inNode: !!root?.closest(`[data-node-id="${id}"]`),
    stage: node?.ttsvarGrid?.stage ?? null,
    candidates: node?.ttsvarGrid?.candidates?.length ?? 0,
    figures: root ? root.querySelectorAll("figure").length : 0,
    loaded: images.length > 0 && images.every((img) => img.complete && img.naturalWidth > 0),
    head: root ? root.children[0].textContent : "",
    prompt: root ? root.children[1].textContent : "",
    promptElements: root ? root.children[1].childElementCount : -1,
  };
})
"""


# Widget values of every node as the frontend saves them.
SAVED_WIDGETS_JS = """
() => Object.fromEntries(JSON.parse(JSON.stringify(window.app.graph.serialize())).nodes
                           .map((n) => [n.id, n.widgets_values ?? null]))
"""


# Forgets the grids of earlier runs, so waiting for grids waits for this run's.
CLEAR_GRIDS_JS = """
(ids) => ids.forEach((id) => {
  const node = window.app.graph.getNodeById(Number(id));
  const widget = node?.widgets?.find((w) => w.name === "ttsvar_candidates");
  if (node) node.ttsvarGrid = null;
  if (widget) widget.element.children[2].replaceChildren();
})
"""


def run_and_wait_for_grids(comfy_page, comfy, ids):
    page = comfy_page.page
    page.evaluate(CLEAR_GRIDS_JS, ids)
    page.get_by_role("button", name="Run", exact=True).click()
    all_drawn = f"""() => {GRID_STATE_JS}({json.dumps(ids)})
                                .every((n) => n.stage && n.figures > 0 && n.loaded)"""
    page.wait_for_function(all_drawn, timeout=RUN_TIMEOUT_MS)
    comfy.wait_until_idle(timeout=RUN_TIMEOUT_MS / 1000)
    # the node's final "executed" message redraws its grid from the persisted ui output; wait for that
    # redraw too, so the state read below is the settled one
    page.wait_for_function(all_drawn, timeout=RUN_TIMEOUT_MS)
    return page.evaluate(GRID_STATE_JS, ids)


def fit_view(page, ids=()):
    """Zoom to fit the given nodes (all when none are given)."""
    page.evaluate("""async (ids) => {
        const canvas = window.app.canvas;
        canvas.deselectAll();
        if (ids.length) canvas.selectNodes(ids.map((id) => window.app.graph.getNodeById(Number(id))));
        await window.app.extensionManager.command.execute('Comfy.Canvas.FitView');
        canvas.deselectAll();
        canvas.setDirty(true, true);
    }""", list(ids))
    page.wait_for_timeout(500)


def set_widgets(page, workflows, changes):
    return page.evaluate(workflows.SWAP_JS, changes)


def fresh_seeds(page, workflows):
    """A new seed, so ComfyUI's cache cannot skip nodes an earlier test ran with identical inputs."""
    seed = uuid.uuid4().int % 2 ** 32
    set_widgets(page, workflows, {"TTSVAR_Start": {"seed": seed}, "TTSVAR_Sampler": {"seed": seed}})


def set_renderer(page, renderer):
    """The node renderer of the page: "litegraph" (the canvas) or "vue" (Nodes 2.0). Settings are stored on the
    server, so the next page keeps it: the fixture below sets it back."""
    page.evaluate("(on) => window.app.extensionManager.setting.set('Comfy.VueNodes.Enabled', on)",
                  renderer == "vue")


@pytest.fixture(params=["litegraph", "vue"])
def renderer(request, comfy_page):
    set_renderer(comfy_page.page, request.param)
    yield request.param
    set_renderer(comfy_page.page, "litegraph")


# Sets a widget as the canvas's own editor does (value, then the widget's callback).
CANVAS_EDIT_JS = """
([id, name, value]) => {
  const widget = window.app.graph.getNodeById(Number(id)).widgets.find((w) => w.name === name);
  widget.value = value;
  widget.callback?.(value, window.app.canvas, widget.node);
}
"""


def edit_widget(page, renderer, node_id, name, value):
    """A user's edit of a number widget: typed into the node's input in the Vue renderer (whose node state
    is rebuilt, and its widget list frozen, on every edit), through the canvas editor's path otherwise."""
    if renderer == "vue":
        fit_view(page, [node_id])  # the input must be on screen to be typed into
        box = page.locator(f'[data-node-id="{node_id}"] input[aria-label="{name}"]')
        box.click()
        box.press("Control+a")
        box.press_sequentially(str(value))
        box.press("Tab")
    else:
        page.evaluate(CANVAS_EDIT_JS, [node_id, name, value])
    assert page.evaluate(f"() => window.app.graph.getNodeById({node_id}).widgets.find((w) => w.name === "
                         f"'{name}').value") == value


def user_edits(page, renderer, shipped):
    """Before the run, edit a number widget of every search node the way a user would: a new seed for Start and
    the Sampler (so nothing is served from ComfyUI's cache), and lambda for Pick Best (no effect on 'best')."""
    seed = uuid.uuid4().int % 100_000
    edits = {"TTSVAR_Start": ("seed", seed), "TTSVAR_Sampler": ("seed", seed), "TTSVAR_PickBest": ("lam", 11)}
    for node in shipped["nodes"]:
        if node["type"] in edits:
            edit_widget(page, renderer, node["id"], *edits[node["type"]])


@pytest.mark.parametrize("name", NAMES)
def test_workflow_from_template_browser_runs_and_shows_candidates(name, renderer, comfy_page, comfy, workflows,
                                                                  tiny_models):
    page = comfy_page.page
    page.set_viewport_size({"width": 1600, "height": 1000})
    errors_before = len(comfy_page.page_errors)
    workflows.open_template(page, name)
    shipped = workflows.load(name)
    loaded = page.evaluate("() => window.app.graph.nodes.map((n) => [n.id, n.type]).sort((a, b) => a[0] - b[0])")
    assert loaded == sorted([n["id"], n["type"]] for n in shipped["nodes"])
    comfy_page.clean_screenshot("loaded")

    if name in workflows.specs.NEEDS_SWAPS:
        set_widgets(page, workflows, workflows.specs.TINY_SWAPS)
    user_edits(page, renderer, shipped)
    ids = workflows.specs.GRID_NODES[name]
    saved_before = page.evaluate(SAVED_WIDGETS_JS)
    fit_view(page)  # every node, and so every grid, in view
    grids = run_and_wait_for_grids(comfy_page, comfy, ids)
    # the grid is not part of the saved workflow: saving after a run gives the same widget values
    assert page.evaluate(SAVED_WIDGETS_JS) == saved_before
    fit_view(page)
    comfy_page.clean_screenshot("candidates")
    fit_view(page, ids[:4])
    comfy_page.clean_screenshot("candidates-closeup")

    (prompt,) = [n["widgets_values"][0] for n in shipped["nodes"] if n["type"] == "TTSVAR_TextEncode"]
    for grid in grids:
        assert grid["figures"] == grid["candidates"] > 0, grid
        assert grid["connected"] and (grid["inNode"] or renderer == "litegraph"), grid
        assert grid["prompt"] == prompt and grid["promptElements"] == 0
    assert grids[-1]["stage"] == "final"
    assert comfy_page.errors_mentioning(f"/extensions/{PACK}/") == []
    assert [e.message for e in comfy_page.page_errors[errors_before:]] == []


def test_prompt_shown_as_text_and_errors_shown_in_the_ui(comfy_page, comfy, workflows, tiny_models):
    page = comfy_page.page
    workflows.open_template(page, "ttsvar_small_model_cpu")

    # prompt text with markup: shown as text, never parsed as HTML
    set_widgets(page, workflows, {"TTSVAR_TextEncode": {"prompt": TRICKY_PROMPT}})
    fresh_seeds(page, workflows)
    (grid,) = run_and_wait_for_grids(comfy_page, comfy, ["6"])
    assert grid["prompt"] == TRICKY_PROMPT and grid["promptElements"] == 0
    assert page.evaluate("() => window.__ttsvarInjected ?? null") is None
    assert page.evaluate("() => document.querySelectorAll('.ttsvar-panel b, .ttsvar-panel img[src=\"x\"]').length") == 0

    # an invalid schedule is refused before the run, naming the schedule node's problem
    set_widgets(page, workflows, {"TTSVAR_BatchSchedule": {"batch_sizes": "8,4"}})
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("batch sizes: 2 values given but the image schedule has 7 scales").first.wait_for(timeout=30_000)
    page.wait_for_timeout(600)  # the dialog fades in
    comfy_page.screenshot("invalid-schedule")
    page.keyboard.press("Escape")

    # a 2B/8B mismatch (the tiny files are named as the releases) fails in the loader, with the pairing in the
    # message
    set_widgets(page, workflows, {"TTSVAR_BatchSchedule": {"batch_sizes": ""},
                                  "TTSVAR_ModelLoader": {**workflows.specs.SMALL_MODEL,
                                                         "vae": "tiny_vae_patchify.safetensors"}})
    fresh_seeds(page, workflows)
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Infinity-2B pairs with infinity_vae_d32reg.pth").first.wait_for(timeout=60_000)
    page.wait_for_timeout(600)
    comfy_page.screenshot("model-mismatch")
    page.keyboard.press("Escape")
    comfy.wait_until_idle()

    # fixed, the same page runs the workflow again
    set_widgets(page, workflows, {"TTSVAR_ModelLoader": workflows.specs.SMALL_MODEL})
    fresh_seeds(page, workflows)
    (grid,) = run_and_wait_for_grids(comfy_page, comfy, ["6"])
    assert grid["stage"] == "final"


# Adds, beside the workflow, the engine's own select on the explore node's candidates (then stepped to the end as
# the workflow steps the kept ones) and state digests of both (support_nodes/ttsvar_e2e_support.py).
ADD_ENGINE_SELECT_JS = """
([explore, finish, indices]) => {
  const graph = window.app.graph;
  const add = (type, pos, widgets = {}) => {
    const node = window.LiteGraph.createNode(type);
    graph.add(node);
    node.pos = pos;
    for (const [name, value] of Object.entries(widgets)) node.widgets.find((w) => w.name === name).value = value;
    return node;
  };
  const select = add("TTSVARTest_StateSelect", [840, 1700], {indices});
  const step = add("TTSVAR_Step", [1260, 1700], {to_scale: -1});
  const kept = add("TTSVARTest_StateDigest", [2100, 1400]);
  const engine = add("TTSVARTest_StateDigest", [1680, 1700]);
  graph.getNodeById(Number(explore)).connect(0, select, 0);
  select.connect(0, step, 0);
  graph.getNodeById(Number(finish)).connect(0, kept, 0);
  step.connect(0, engine, 0);
  return {select: String(select.id), step: String(step.id), kept: String(kept.id), engine: String(engine.id)};
}
"""


def widget_value(page, node_id, name):
    return page.evaluate("([id, name]) => window.app.graph.getNodeById(Number(id)).widgets"
                         ".find((w) => w.name === name).value", [node_id, name])


def cell(page, node_id, index):
    return page.locator(f'.ttsvar-panel[data-ttsvar-node="{node_id}"] figure[data-index="{index}"]')


def chosen_marks(page, node_id):
    """{candidate: copies} as the grid of a node marks them (0: not chosen)."""
    figures = page.locator(f'.ttsvar-panel[data-ttsvar-node="{node_id}"] figure')
    return {int(f.get_attribute("data-index")): int(f.get_attribute("data-chosen")) for f in figures.all()}


def test_clicked_candidates_are_kept_and_the_rerun_continues_exactly_those(comfy_page, comfy, workflows,
                                                                           tiny_models):
    """In ttsvar_pick_and_vary_cpu: clicks in the explore grid and in Keep's own grid edit Keep's list, a click in
    the Vary grid chooses the candidate to vary, a click in the resampling grid does nothing. Queued again, only
    Keep and what follows run, and the kept candidates finish exactly as the engine's select of the same
    candidates on the same state does."""
    name, explore, keep, finish, vary, resample = "ttsvar_pick_and_vary_cpu", "6", "7", "8", "11", "13"
    page = comfy_page.page
    page.set_viewport_size({"width": 1600, "height": 1000})
    workflows.open_template(page, name)
    fresh_seeds(page, workflows)
    run_and_wait_for_grids(comfy_page, comfy, workflows.specs.GRID_NODES[name])

    fit_view(page, [explore, keep])
    assert widget_value(page, keep, "keep") == "1,4,6"
    cell(page, explore, 1).click()                          # drops #1
    assert widget_value(page, keep, "keep") == "4,6"
    cell(page, explore, 2).click()                          # keeps #2
    cell(page, explore, 2).click(modifiers=["Shift"])       # and a second copy of it
    assert widget_value(page, keep, "keep") == "2x2,4,6"
    cell(page, keep, 6).click()                             # Keep's own grid shows its input: drops #6
    assert widget_value(page, keep, "keep") == "2x2,4"
    expected_marks = {i: {2: 2, 4: 1}.get(i, 0) for i in range(8)}
    assert chosen_marks(page, explore) == expected_marks == chosen_marks(page, keep)
    comfy_page.clean_screenshot("picked")

    fit_view(page, [vary, resample])
    saved = page.evaluate(SAVED_WIDGETS_JS)
    cell(page, resample, 0).click()                         # a selection's grid shows its input: no target
    assert page.evaluate(SAVED_WIDGETS_JS) == saved
    cell(page, vary, 2).click()
    assert widget_value(page, vary, "candidate") == 2

    added = page.evaluate(ADD_ENGINE_SELECT_JS, [explore, finish, "2,2,4"])
    run_and_wait_for_grids(comfy_page, comfy, [keep, finish, vary])
    (entry,) = comfy.get_json("/history", max_items=1).values()
    prompt, outputs = entry["prompt"][2], entry["outputs"]
    (cached,) = [data["nodes"] for event, data in entry["status"]["messages"] if event == "execution_cached"]
    downstream = {keep, finish, "9", "10", vary, "12", resample, "14", "15", "16"}
    assert set(prompt) - set(cached) == downstream | set(added.values())

    kept, engine = outputs[added["kept"]]["ttsvar_state"], outputs[added["engine"]]["ttsvar_state"]
    assert kept == engine and kept[0]["origin"] == [2, 2, 4]
    grid = outputs[keep]["ttsvar_grid"][0]
    assert [(c["status"], c["copies"]) for c in grid["candidates"]][1:5] == [
        ("dropped", 0), ("duplicated", 2), ("dropped", 0), ("kept", 1)]
    statuses = [c["status"] for c in outputs[vary]["ttsvar_grid"][0]["candidates"]]
    assert statuses == ["dropped", "dropped", "duplicated"]
    fit_view(page, [explore, keep, finish, "10", vary, "12", resample, "14"])
    comfy_page.clean_screenshot("rerun")
    assert comfy_page.errors_mentioning(f"/extensions/{PACK}/") == []
