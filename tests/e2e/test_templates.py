"""The pack's templates as ComfyUI offers them: the template browser lists example_workflows/, every node names
the pack it comes from and every loader the model files it needs with their official pages, and the first
template draws a right picture with the model that ships with the pack, and nothing else.
"""
import io
import time

import numpy as np
from PIL import Image

from ttsvar_core.shapesworld.demo import parse_prompt
from ttsvar_core.shapesworld.evaluate import evaluate

PACK = "comfyui-ttsvar"
NAMES = ["ttsvar_2b_node_by_node", "ttsvar_2b_sampler", "ttsvar_bon_vs_ttsvar", "ttsvar_small_model_cpu"]
FIRST = "ttsvar_small_model_cpu"
INFINITY_FILES = "https://huggingface.co/FoundationVision/Infinity/blob/main"
REAL_2B_MODELS = {  # (model folder, file, official page) of every file a 2B template names
    ("infinity", "infinity_2b_reg.pth", f"{INFINITY_FILES}/infinity_2b_reg.pth"),
    ("infinity_vae", "infinity_vae_d32reg.pth", f"{INFINITY_FILES}/infinity_vae_d32reg.pth"),
    ("ttsvar_rewards", "ImageReward.pt", "https://huggingface.co/THUDM/ImageReward/blob/main/ImageReward.pt"),
    ("ttsvar_features", "dinov2_vitl14_reg4_pretrain.pth",
     "https://huggingface.co/facebook/dinov2-with-registers-large"),
}
RUN_TIMEOUT_MS = 240_000


def test_nodes_name_their_pack_and_loaders_their_model_files(comfy, workflows):
    """properties.cnr_id tells ComfyUI-Manager which pack installs a missing node; properties.models tells
    the frontend which files a loader needs, where they go and where they come from (entries are matched to
    the node's widget values, so each must name one)."""
    folders = set(comfy.get_json("/models"))
    ours = {name for name, info in comfy.object_info().items() if info["python_module"] == f"custom_nodes.{PACK}"}
    for name in NAMES:
        named = set()
        for node in workflows.load(name)["nodes"]:
            properties = node["properties"]
            if node["type"] == "Note":
                assert "cnr_id" not in properties  # frontend-only: no pack to install
            else:
                assert properties["cnr_id"] == (PACK if node["type"] in ours else "comfy-core"), node["type"]
            values = [v for v in node.get("widgets_values") or [] if isinstance(v, str)]
            for model in properties.get("models", []):
                assert model["name"] in values and model["directory"] in folders, model
                named.add((model["directory"], model["name"], model["url"]))
        assert named == (set() if name == FIRST else REAL_2B_MODELS), name


def test_template_browser_lists_every_template(comfy_page):
    page = comfy_page.page
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    dialog = page.get_by_role("dialog")
    dialog.get_by_text(PACK, exact=True).click()
    for name in NAMES:
        dialog.get_by_text(name, exact=True).wait_for(timeout=30_000)
    comfy_page.screenshot("templates")


def set_setting(page, setting, value):
    page.evaluate("([id, value]) => window.app.extensionManager.setting.set(id, value)", [setting, value])


def test_missing_models_dialog_names_each_file_and_its_folder(comfy_page):
    """With the frontend's missing-models warning on (the tests' settings turn it off), opening a 2B
    template with none of its files lists each with its model folder."""
    page = comfy_page.page
    set_setting(page, "Comfy.Workflow.ShowMissingModelsWarning", True)
    try:
        page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        templates = page.get_by_role("dialog")
        templates.get_by_text(PACK, exact=True).click()
        templates.get_by_text("ttsvar_2b_sampler", exact=True).click()
        dialog = page.get_by_role("dialog").filter(has_text="Missing Models")
        for folder, file, _ in sorted(REAL_2B_MODELS):
            dialog.get_by_text(f"{folder} / {file}").wait_for(timeout=30_000)
        comfy_page.screenshot("missing-models")
    finally:
        set_setting(page, "Comfy.Workflow.ShowMissingModelsWarning", False)


STAGES_JS = """
() => {
  window.__ttsvarStages = [];
  const api = window.comfyAPI.api.api;
  api.addEventListener("ttsvar.candidates", ({ detail }) => window.__ttsvarStages.push(detail.stage));
}
"""


def test_first_template_draws_a_right_picture_with_the_shipped_model_alone(comfy_page, comfy, workflows):
    """The template README points to first, run as shipped (its prompt and seed): it loads nothing but the
    ShapesWorld files inside the pack, shows the search on the Sampler, and the ShapesWorld evaluator finds
    in its image what the prompt asks."""
    page = comfy_page.page
    page.set_viewport_size({"width": 1600, "height": 1000})
    workflows.open_template(page, FIRST)
    loaders = page.evaluate("""() => Object.fromEntries(window.app.graph.nodes
        .filter((n) => n.type.endsWith("Loader"))
        .map((n) => [n.type, n.widgets.filter((w) => typeof w.value === "string").map((w) => w.value)]))""")
    assert loaders == {
        "TTSVAR_ModelLoader": ["shapesworld/shapesworld_infinity.safetensors",
                               "shapesworld/shapesworld_vae.safetensors", "shapesworld/t5", "fp32", "auto",
                               "none", "auto"],
        "TTSVAR_RewardLoader": ["clip", "shapesworld/clip", "fp32", "none"],
        "TTSVAR_FeatureLoader": ["clip-vision", "shapesworld/clip", "fp32"],
    }
    page.evaluate(STAGES_JS)
    started = time.monotonic()
    page.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_function("() => window.app.graph.getNodeById(6).ttsvarGrid?.stage === 'final'",
                           timeout=RUN_TIMEOUT_MS)
    comfy.wait_until_idle(timeout=RUN_TIMEOUT_MS / 1000)
    seconds = time.monotonic() - started
    print(f"\n[e2e] first template: {seconds:.1f} s from Run to the final image")
    comfy_page.clean_screenshot("first-image")

    # the search as the Sampler showed it: clustering twice, reward resampling twice, the final pick
    assert page.evaluate("() => window.__ttsvarStages") == ["cluster", "cluster", "resample", "resample", "final"]
    (run,) = comfy.get_json("/history", max_items=1).values()
    assert run["status"]["status_str"] == "success"
    (saved,) = run["outputs"]["7"]["images"]
    png = comfy.view(saved["filename"], subfolder=saved["subfolder"], folder_type=saved["type"])
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    (prompt,) = [n["widgets_values"][0] for n in workflows.load(FIRST)["nodes"] if n["type"] == "TTSVAR_TextEncode"]
    verdict = evaluate(image, parse_prompt(prompt))
    assert image.shape == (64, 64, 3) and verdict.correct, verdict.details
    assert '"chosen"' in run["outputs"]["8"]["text"][0]  # the scores, shown as text beside the image
