"""The real ComfyUI frontend in headless Chromium, with the pack's web extension."""

PACK = "comfyui-ttsvar"


def test_page_loads_with_extension(comfy_page):
    page = comfy_page.page
    page.wait_for_function("() => window.app.extensions.some(e => e.name === 'ttsvar.core')",
                           timeout=30_000)
    shot = comfy_page.screenshot("loaded")
    assert shot.stat().st_size > 0
    assert "ttsvar.core" in comfy_page.extension_names()
    assert comfy_page.errors_mentioning(f"/extensions/{PACK}/") == []
    assert [r for r in comfy_page.failed_responses if f"/extensions/{PACK}/" in r[1]] == []


def test_start_node_can_be_added_to_canvas(comfy_page):
    page = comfy_page.page
    # Only errors caused by adding our node count; the stock frontend may log its own while loading.
    errors_before = len(comfy_page.page_errors)
    added = page.evaluate("""() => {
        window.app.graph.clear();
        const node = window.LiteGraph.createNode("TTSVAR_Start");
        if (!node) return null;
        node.pos = [200, 200];
        window.app.graph.add(node);
        window.app.canvas.setDirty(true, true);
        return {type: node.type, title: node.title, widgets: (node.widgets || []).map(w => w.name)};
    }""")
    assert added == {"type": "TTSVAR_Start", "title": "TTS-VAR Start Candidates",
                     "widgets": ["aspect_ratio", "pixel_budget", "seed", "control_after_generate", "cfg", "tau",
                                 "top_k", "top_p", "candidates", "custom_scales"]}
    comfy_page.screenshot("start-node")
    assert [e.message for e in comfy_page.page_errors[errors_before:]] == []
