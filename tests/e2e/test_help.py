"""Help inside the UI: a help page for every node, as the frontend finds custom node docs (ComfyUI 0.3.75's
frontend 1.32.9 fetches /extensions/<pack>/docs/<node id>.md, after /docs/<node id>/<locale>.md, from the
pack's WEB_DIRECTORY, which is web/), and a tooltip on every input."""

PACK = "comfyui-ttsvar"
# Choices whose tooltip explains every option (the others list files, or the 15 aspect-ratio templates).
EXPLAINED_CHOICES = {"kind", "dtype", "weight_storage", "offload", "text_encoder_storage", "potential",
                     "feature_mode", "mode", "pixel_budget", "preset", "selection_decode"}


def pack_nodes(comfy) -> dict:
    return {name: info for name, info in comfy.object_info().items()
            if info["python_module"] == f"custom_nodes.{PACK}"}


def inputs_of(info) -> dict:
    return {**info["input"].get("required", {}), **info["input"].get("optional", {})}


def test_every_node_has_a_help_page_that_explains_each_input_and_output(comfy):
    nodes = pack_nodes(comfy)
    assert nodes
    for name, info in nodes.items():
        page = comfy.get(f"/extensions/{PACK}/docs/{name}.md")
        assert page.status_code == 200, f"{name}: no web/docs/{name}.md"
        text = page.text
        assert text.startswith(f"# {info['display_name']}\n"), name
        for item in [*inputs_of(info), *info["output_name"]]:
            assert f"**{item}**" in text, f"{name}: the help page does not explain {item}"


def test_every_input_has_a_tooltip_and_choices_explain_their_options(comfy):
    for name, info in pack_nodes(comfy).items():
        for input_name, spec in inputs_of(info).items():
            options = spec[1] if len(spec) > 1 else {}
            tooltip = options.get("tooltip", "")
            assert len(tooltip) > 20, f"{name}.{input_name} has no tooltip"
            if input_name in EXPLAINED_CHOICES:
                missing = [choice for choice in spec[0] if choice not in tooltip]
                assert not missing, f"{name}.{input_name}: the tooltip does not mention {missing}"


ADD_AND_SELECT_JS = """
(type) => {
  const graph = window.app.graph;
  graph.clear();
  const node = window.LiteGraph.createNode(type);
  node.pos = [650, 450];  // clear of the workflow breadcrumb, whose overlay would take the click
  graph.add(node);
  window.app.canvas.selectNode(node);
  window.app.canvas.setDirty(true, true);
}
"""


def test_help_opens_for_every_node(comfy_page, comfy):
    """The Info button of the selection toolbox opens the node's help in the side panel, as a user does."""
    page = comfy_page.page
    page.set_viewport_size({"width": 1400, "height": 900})
    for name, info in sorted(pack_nodes(comfy).items()):
        page.evaluate(ADD_AND_SELECT_JS, name)
        page.locator('[data-testid="info-button"]').click()
        heading = page.locator(".markdown-content h1", has_text=info["display_name"])
        heading.wait_for(timeout=30_000)
        if name == "TTSVAR_Sampler":
            comfy_page.screenshot("sampler-help")
    help_requests = [(status, url) for status, url in comfy_page.failed_responses
                     if f"/extensions/{PACK}/docs/" in url and not url.endswith("/en.md")]
    assert help_requests == []  # only the locale-specific page the frontend tries first is absent
