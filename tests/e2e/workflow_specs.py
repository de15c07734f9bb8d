"""The shipped workflows (the pack's templates), described as nodes, widget values and links.

test_build_workflows.py turns each spec into the UI-format JSON the ComfyUI frontend itself saves (by
building the graph in the real page and serialising it) and writes example_workflows/<name>.json plus a .jpg
thumbnail of the loaded graph. Rebuild after changing a node's inputs:

    TTSVAR_BUILD_WORKFLOWS=1 .venv/bin/python -m pytest tests/e2e/test_build_workflows.py

Workflow: {"nodes", "links", "min_width" (px, of nodes without a size)}.
Node: {"id", "type", "pos", optional "title", "size", "widgets": {widget name: value}, "properties"}.
Link: (source node id, output slot, target node id, input name).

Every node's properties name the pack it comes from (cnr_id, as ComfyUI-Manager's "Install missing nodes"
reads it), and loader nodes list the model files they name with their official page and model folder (the
"models" property the frontend's missing-models dialog reads), see properties().
"""

from ttsvar_core.shapesworld.demo import ASSETS, read_settings

PROMPT = "a photo of a red fox sitting in fresh snow in a pine forest, golden hour light"
NEGATIVE = ""
MIN_WIDTH = 340  # room for the node titles and file names
FIXED = "fixed"  # control_after_generate: keep the seed, so a rerun gives the same image

REAL_2B = {"model": "infinity_2b_reg.pth", "vae": "infinity_vae_d32reg.pth", "text_encoder": "flan-t5-xl",
           "dtype": "auto"}
REAL_REWARD = {"kind": "imagereward", "file": "ImageReward.pt", "dtype": "auto"}
REAL_FEATURES = {"kind": "dinov2", "file": "dinov2_vitl14_reg4_pretrain.pth", "dtype": "auto"}
# The tiny random files the tests write (ttsvar_core.testing): what the 2B workflows run on in tests.
SMALL_MODEL = {"model": "tiny_infinity.safetensors", "vae": "tiny_vae.safetensors", "text_encoder": "tiny-t5",
               "dtype": "fp32"}
SMALL_REWARD = {"kind": "clip", "file": "tiny-clip", "dtype": "fp32"}
SMALL_FEATURES = {"kind": "dinov2", "file": "tiny_dinov2_reg4.pth", "dtype": "fp32"}
SMALL_SCALES = "1x1,2x2,4x4,6x6,8x8"  # 128 px in five scales: a whole search in seconds on a CPU
# The ShapesWorld model that ships with the pack (nodes/shipped.py lists it in the loaders), with the
# settings of its sampling.json (read here, so the template follows the shipped model): cfg 1.5, tau 1, top-k 900,
# top-p 0.97, 0.06M (64 px, 7 scales), selections decoding at 32 px. Its small CLIP is the reward and (its image tower) the feature extractor.
SHIPPED_MODEL = {"model": "shapesworld/shapesworld_infinity.safetensors",
                 "vae": "shapesworld/shapesworld_vae.safetensors", "text_encoder": "shapesworld/t5", "dtype": "fp32"}
SHIPPED_REWARD = {"kind": "clip", "file": "shapesworld/clip", "dtype": "fp32"}
SHIPPED_FEATURES = {"kind": "clip-vision", "file": "shapesworld/clip", "dtype": "fp32"}
# A prompt and seed the shipped model draws right (the ShapesWorld evaluator says so; test_templates.py
# checks it in the browser): found by trying prompts and seeds with the demo's code.
SHIPPED_SAMPLING = {key: read_settings(ASSETS)[key] for key in ("cfg", "tau", "top_k", "top_p")}
FIRST_PROMPT = "a blue square"
FIRST_SEED = 3

PACK_ID = "comfyui-ttsvar"  # the pack's registry id
CORE_NODES = {"cnr_id": "comfy-core", "ver": "0.3.75"}  # the ComfyUI release the workflows were built with
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # no Python node behind them: no pack to install
INFINITY_PAGE = "https://huggingface.co/FoundationVision/Infinity"
T5_PAGE = "https://huggingface.co/google/flan-t5-xl"
IMAGEREWARD_PAGE = "https://huggingface.co/THUDM/ImageReward"
DINOV2_PAGE = "https://huggingface.co/facebook/dinov2-with-registers-large"
# Model files the workflows name -> (model folder, official page). Each file gets its own page, as the
# frontend lists one missing file per distinct url. The DINOv2 file is torch.hub's (not on Hugging Face): its
# url is the page of the Hugging Face form the loader also takes. The text encoder is a folder, which the
# frontend's missing-model check (files only) would report missing even when installed: its page is in the
# workflow's note and the loader's help page instead.
MODEL_SOURCES = {
    "infinity_2b_reg.pth": ("infinity", f"{INFINITY_PAGE}/blob/main/infinity_2b_reg.pth"),
    "infinity_vae_d32reg.pth": ("infinity_vae", f"{INFINITY_PAGE}/blob/main/infinity_vae_d32reg.pth"),
    "ImageReward.pt": ("ttsvar_rewards", f"{IMAGEREWARD_PAGE}/blob/main/ImageReward.pt"),
    "dinov2_vitl14_reg4_pretrain.pth": ("ttsvar_features", DINOV2_PAGE),
}

NOTE_2B = ("Infinity-2B at 1024 px. Put these files into ComfyUI/models (see the pack's README):\n"
           "  infinity/infinity_2b_reg.pth, infinity_vae/infinity_vae_d32reg.pth\n"
           f"      from {INFINITY_PAGE}\n"
           "  text_encoders/flan-t5-xl/ (config.json, tokenizer, weights)\n"
           f"      from {T5_PAGE}\n"
           f"  ttsvar_rewards/ImageReward.pt from {IMAGEREWARD_PAGE}\n"
           "  ttsvar_features/dinov2_vitl14_reg4_pretrain.pth (DINOv2's torch.hub file), or the folder\n"
           f"      dinov2-with-registers-large from {DINOV2_PAGE}\n"
           "Press R after copying files so the lists refresh.")
NOTE_NODE_BY_NODE = ("TTS-VAR as in the paper, one node per decision: 8 candidates; after scale 2 and 5 "
                     "clustering keeps 6, then 4 diverse candidates; after scale 6 and 9 reward resampling "
                     "draws 2, then 1. Each node shows its candidates: kept, dropped, duplicated, with scores.")
NOTE_FIRST = ("Your first image: on a CPU, in seconds, with nothing to download. Press Run.\n\n"
              "The model is ShapesWorld, a small Infinity model that ships with the pack: 64 px pictures of "
              "circles, squares, triangles, stars, diamonds and crosses in red, green, blue, yellow, purple and "
              "cyan, one to four of them, side by side or above each other (\"two triangles\", \"a red circle "
              "to the left of a blue star\"). Alone it draws what a prompt asks about three times in ten on "
              "prompts like those it learned from, one time in ten on new ones: the search finds the right "
              "picture more often.\n\n"
              "The Sampler shows the search as it runs: 8 candidates; clustering keeps 6, then 4 different "
              "layouts; reward resampling draws 2, then 1; the final pick with its reward. The scores also "
              "leave the Sampler (chosen_scores, scores_json: shown on the right).\n\n"
              "Change the prompt or the seed and run again.")
def properties(node: dict) -> dict:
    """The node properties a workflow carries for installing what it needs: the pack of the node, and for
    loaders the model files they name (only those: the frontend matches entries to the node's widget values)."""
    if node["type"] in FRONTEND_ONLY:
        return {}
    props = {"cnr_id": PACK_ID} if node["type"].startswith("TTSVAR_") else dict(CORE_NODES)
    models = [{"name": value, "url": MODEL_SOURCES[value][1], "directory": MODEL_SOURCES[value][0]}
              for value in node.get("widgets", {}).values() if value in MODEL_SOURCES]
    if models:
        props["models"] = models
    return props


def _workflow(nodes, links) -> dict:
    return {"nodes": [{**node, "properties": properties(node)} for node in nodes], "links": links,
            "min_width": MIN_WIDTH}


def _loaders(model, reward, features, note, y_note=660, prompt=PROMPT):
    return [
        {"id": 1, "type": "TTSVAR_ModelLoader", "pos": [20, 40], "widgets": model},
        {"id": 2, "type": "TTSVAR_RewardLoader", "pos": [20, 300], "widgets": reward},
        {"id": 3, "type": "TTSVAR_FeatureLoader", "pos": [20, 500], "widgets": features},
        {"id": 4, "type": "TTSVAR_TextEncode", "pos": [400, 40], "size": [400, 220],
         "widgets": {"prompt": prompt, "negative_prompt": NEGATIVE}},
        {"id": 90, "type": "Note", "pos": [20, y_note], "size": [360, 320], "widgets": {"text": note}},
    ]


def _sampler_widgets(seed=42, cfg=3.0, tau=0.5, top_k=900, top_p=0.97):
    return {"aspect_ratio": "1:1", "seed": seed, "control_after_generate": FIXED, "cfg": cfg, "tau": tau,
            "top_k": top_k, "top_p": top_p}


def _schedule_widgets(preset, n=1, pixel_budget="1M", custom_scales="", selection_decode="448 px"):
    return {"preset": preset, "n": n, "pixel_budget": pixel_budget, "batch_sizes": "", "cluster_scales": "",
            "resample_scales": "", "potential": "value", "lam": 10.0, "feature_mode": "pca",
            "custom_scales": custom_scales, "selection_decode": selection_decode}


def node_by_node_2b():
    step = lambda i, x, y, to: {"id": i, "type": "TTSVAR_Step", "pos": [x, y],  # noqa: E731
                                "title": f"Step to scale {to}" if to >= 0 else "Step to the last scale",
                                "widgets": {"to_scale": to}}
    nodes = _loaders(REAL_2B, REAL_REWARD, REAL_FEATURES, NOTE_2B + "\n\n" + NOTE_NODE_BY_NODE, y_note=680) + [
        {"id": 5, "type": "TTSVAR_Start", "pos": [400, 300], "title": "Start 8 candidates",
         "widgets": {"aspect_ratio": "1:1", "pixel_budget": "1M", "seed": 42, "control_after_generate": FIXED,
                     "cfg": 3.0, "tau": 0.5, "top_k": 900, "top_p": 0.97, "candidates": 8, "custom_scales": ""}},
        step(6, 840, 40, 2),
        {"id": 7, "type": "TTSVAR_Cluster", "pos": [1260, 40], "title": "Cluster: keep 6",
         "widgets": {"keep": 6, "feature_mode": "pca"}},
        step(8, 1680, 40, 5),
        {"id": 9, "type": "TTSVAR_Cluster", "pos": [2100, 40], "title": "Cluster: keep 4",
         "widgets": {"keep": 4, "feature_mode": "pca"}},
        step(10, 840, 560, 6),
        {"id": 11, "type": "TTSVAR_Resample", "pos": [1260, 560], "title": "Resample by reward: keep 2",
         "widgets": {"keep": 2, "potential": "value", "lam": 10.0}},
        step(12, 1680, 560, 9),
        {"id": 13, "type": "TTSVAR_Resample", "pos": [2100, 560], "title": "Resample by reward: keep 1",
         "widgets": {"keep": 1, "potential": "value", "lam": 10.0}},
        step(14, 840, 1080, -1),
        {"id": 15, "type": "TTSVAR_PickBest", "pos": [1260, 1080], "widgets": {"mode": "best", "lam": 10.0}},
        {"id": 16, "type": "SaveImage", "pos": [1680, 1080], "size": [400, 420],
         "widgets": {"filename_prefix": "ttsvar_2b"}},
    ]
    links = [(1, 0, 4, "model"), (1, 0, 5, "model"), (4, 0, 5, "conditioning"),
             (5, 0, 6, "candidates"), (6, 0, 7, "candidates"), (3, 0, 7, "features"),
             (7, 0, 8, "candidates"), (8, 0, 9, "candidates"), (3, 0, 9, "features"),
             (9, 0, 10, "candidates"), (10, 0, 11, "candidates"), (2, 0, 11, "reward"),
             (11, 0, 12, "candidates"), (12, 0, 13, "candidates"), (2, 0, 13, "reward"),
             (13, 0, 14, "candidates"), (14, 0, 15, "candidates"), (2, 0, 15, "reward"),
             (15, 0, 16, "images")]
    return _workflow(nodes, links)


def _one_sampler(model, reward, features, note, schedule, prompt=PROMPT, sampler=None, extra_nodes=(),
                 extra_links=()):
    nodes = _loaders(model, reward, features, note, prompt=prompt) + [
        {"id": 5, "type": "TTSVAR_BatchSchedule", "pos": [400, 300], "widgets": schedule},
        {"id": 6, "type": "TTSVAR_Sampler", "pos": [840, 40], "widgets": sampler or _sampler_widgets()},
        {"id": 7, "type": "SaveImage", "pos": [1280, 40], "size": [420, 460],
         "widgets": {"filename_prefix": "ttsvar"}},
        *extra_nodes,
    ]
    links = [(1, 0, 4, "model"), (1, 0, 6, "model"), (4, 0, 6, "conditioning"), (5, 0, 6, "schedule"),
             (2, 0, 6, "reward"), (3, 0, 6, "features"), (6, 0, 7, "images"), *extra_links]
    return _workflow(nodes, links)


def sampler_2b():
    return _one_sampler(REAL_2B, REAL_REWARD, REAL_FEATURES, NOTE_2B, _schedule_widgets("TTS-VAR paper (2B)"))


def small_model_cpu():
    """The first template: the shipped model, its sampling settings, and the scores shown as text."""
    scores = {"id": 8, "type": "PreviewAny", "pos": [1280, 540], "size": [420, 300], "title": "Scores"}
    return _one_sampler(SHIPPED_MODEL, SHIPPED_REWARD, SHIPPED_FEATURES, NOTE_FIRST,
                        _schedule_widgets("TTS-VAR paper (2B)", pixel_budget="0.06M",
                                          selection_decode="32 px (ShapesWorld)"),
                        prompt=FIRST_PROMPT, sampler=_sampler_widgets(FIRST_SEED, **SHIPPED_SAMPLING),
                        extra_nodes=[scores],
                        extra_links=[(6, 4, 8, "source")])


def bon_vs_ttsvar():
    note = (NOTE_2B + "\n\nBest-of-N with N=8 (8 full images, the best by reward) next to TTS-VAR with N=1 "
            "(8 candidates narrowed by clustering and resampling), same prompt and seed.")
    nodes = _loaders(REAL_2B, REAL_REWARD, REAL_FEATURES, note, y_note=680) + [
        {"id": 5, "type": "TTSVAR_BatchSchedule", "pos": [400, 300], "title": "Schedule: Best-of-N",
         "widgets": _schedule_widgets("Best-of-N", n=8)},
        {"id": 6, "type": "TTSVAR_Sampler", "pos": [840, 40], "title": "Best-of-N (N=8)",
         "widgets": _sampler_widgets()},
        {"id": 7, "type": "SaveImage", "pos": [1280, 40], "size": [420, 460], "title": "Best-of-N",
         "widgets": {"filename_prefix": "compare_bon"}},
        {"id": 8, "type": "TTSVAR_BatchSchedule", "pos": [400, 740], "title": "Schedule: TTS-VAR",
         "widgets": _schedule_widgets("TTS-VAR paper (2B)", n=1)},
        {"id": 9, "type": "TTSVAR_Sampler", "pos": [840, 740], "title": "TTS-VAR (N=1)",
         "widgets": _sampler_widgets()},
        {"id": 10, "type": "SaveImage", "pos": [1720, 40], "size": [420, 460], "title": "TTS-VAR",
         "widgets": {"filename_prefix": "compare_ttsvar"}},
    ]
    links = [(1, 0, 4, "model"), (1, 0, 6, "model"), (1, 0, 9, "model"), (4, 0, 6, "conditioning"),
             (4, 0, 9, "conditioning"), (5, 0, 6, "schedule"), (8, 0, 9, "schedule"), (2, 0, 6, "reward"),
             (2, 0, 9, "reward"), (3, 0, 9, "features"), (6, 0, 7, "images"), (9, 0, 10, "images")]
    return _workflow(nodes, links)


NOTE_PICK_AND_VARY = (
    "Steer the search by hand (small model files: see ttsvar_small_model_cpu's note for writing them).\n"
    "1. Explore: 8 candidates drawn to scale 2 only, the layout.\n"
    "2. Keep by hand: click candidates in the Explore grid (or in Keep's own) to keep or drop them; shift-click "
    "adds a copy. Queue again: only Keep and what follows run.\n"
    "3. The kept ones are finished; Score Images shows which the reward prefers.\n"
    "4. Vary: click one in the Vary grid; 4 new candidates share its scales 0-2 and draw the rest anew (a later "
    "to_scale varies less).\n"
    "5. Reward resampling keeps 2 after scale 3, Pick Best chooses.\n"
    "Start from Image can take Start Candidates' place to begin from a picture's layout.")


def pick_and_vary_cpu():
    step = lambda i, x, y, to, title: {"id": i, "type": "TTSVAR_Step", "pos": [x, y], "title": title,  # noqa: E731
                                       "widgets": {"to_scale": to}}
    nodes = [
        {"id": 1, "type": "TTSVAR_ModelLoader", "pos": [20, 40], "widgets": SMALL_MODEL},
        {"id": 2, "type": "TTSVAR_RewardLoader", "pos": [20, 300], "widgets": SMALL_REWARD},
        {"id": 4, "type": "TTSVAR_TextEncode", "pos": [400, 40], "size": [400, 220],
         "widgets": {"prompt": PROMPT, "negative_prompt": NEGATIVE}},
        {"id": 90, "type": "Note", "pos": [20, 510], "size": [360, 420], "widgets": {"text": NOTE_PICK_AND_VARY}},
        {"id": 5, "type": "TTSVAR_Start", "pos": [400, 300], "title": "Start 8 candidates",
         "widgets": {"aspect_ratio": "1:1", "pixel_budget": "1M", "seed": 42, "control_after_generate": FIXED,
                     "cfg": 3.0, "tau": 0.5, "top_k": 900, "top_p": 0.97, "candidates": 8,
                     "custom_scales": SMALL_SCALES}},
        step(6, 840, 40, 2, "Explore: step to scale 2"),
        {"id": 7, "type": "TTSVAR_Keep", "pos": [1260, 40], "title": "Keep by hand", "widgets": {"keep": "1,4,6"}},
        step(8, 1680, 40, -1, "Finish the kept ones"),
        {"id": 9, "type": "TTSVAR_Decode", "pos": [2100, 40]},
        {"id": 10, "type": "TTSVAR_ScoreImages", "pos": [2100, 200], "widgets": {"prompt": PROMPT}},
        {"id": 11, "type": "TTSVAR_Vary", "pos": [840, 620], "title": "Vary from scale 2",
         "widgets": {"candidate": 0, "to_scale": 2, "copies": 4, "seed": 7, "control_after_generate": FIXED}},
        step(12, 1260, 620, 3, "Step to scale 3"),
        {"id": 13, "type": "TTSVAR_Resample", "pos": [1680, 620], "title": "Resample by reward: keep 2",
         "widgets": {"keep": 2, "potential": "value", "lam": 10.0}},
        step(14, 2100, 620, -1, "Step to the last scale"),
        {"id": 15, "type": "TTSVAR_PickBest", "pos": [840, 1140], "widgets": {"mode": "best", "lam": 10.0}},
        {"id": 16, "type": "SaveImage", "pos": [1260, 1140], "size": [400, 420],
         "widgets": {"filename_prefix": "ttsvar_pick_and_vary"}},
    ]
    links = [(1, 0, 4, "model"), (1, 0, 5, "model"), (4, 0, 5, "conditioning"), (5, 0, 6, "candidates"),
             (6, 0, 7, "candidates"), (7, 0, 8, "candidates"), (8, 0, 9, "candidates"), (9, 0, 10, "images"),
             (2, 0, 10, "reward"), (8, 0, 11, "candidates"), (11, 0, 12, "candidates"), (12, 0, 13, "candidates"),
             (2, 0, 13, "reward"), (13, 0, 14, "candidates"), (14, 0, 15, "candidates"), (2, 0, 15, "reward"),
             (15, 0, 16, "images")]
    return _workflow(nodes, links)


WORKFLOWS = {
    "ttsvar_2b_node_by_node": node_by_node_2b,
    "ttsvar_2b_sampler": sampler_2b,
    "ttsvar_bon_vs_ttsvar": bon_vs_ttsvar,
    "ttsvar_small_model_cpu": small_model_cpu,
    "ttsvar_pick_and_vary_cpu": pick_and_vary_cpu,
}

# How the tests run the workflows that name real model files CI does not have: the same graph with the
# tiny random files, and a 13-scale custom schedule of tiny token grids (64 px) in place of the 1M budget,
# so every to_scale and every selection scale of the graph stays as shipped.
TINY_SCALES_13 = "1x1,1x1,2x2,2x2,2x2,3x3,3x3,3x3,4x4,4x4,4x4,4x4,4x4"
TINY_SWAPS = {
    "TTSVAR_ModelLoader": SMALL_MODEL,
    "TTSVAR_RewardLoader": SMALL_REWARD,
    "TTSVAR_FeatureLoader": SMALL_FEATURES,
    "TTSVAR_Start": {"custom_scales": TINY_SCALES_13},
    "TTSVAR_BatchSchedule": {"custom_scales": TINY_SCALES_13},
}
NEEDS_SWAPS = {"ttsvar_2b_node_by_node", "ttsvar_2b_sampler", "ttsvar_bon_vs_ttsvar"}
# SaveImage node id -> (images, height, width) each workflow must produce (after the swaps above).
EXPECTED_IMAGES = {
    "ttsvar_2b_node_by_node": {"16": (1, 64, 64)},
    "ttsvar_2b_sampler": {"7": (1, 64, 64)},
    "ttsvar_bon_vs_ttsvar": {"7": (1, 64, 64), "10": (1, 64, 64)},
    "ttsvar_small_model_cpu": {"7": (1, 64, 64)},
    "ttsvar_pick_and_vary_cpu": {"16": (1, 128, 128)},
}
# Nodes that must show a candidate grid after a run.
GRID_NODES = {
    "ttsvar_2b_node_by_node": ["6", "7", "8", "9", "10", "11", "12", "13", "14", "15"],
    "ttsvar_2b_sampler": ["6"],
    "ttsvar_bon_vs_ttsvar": ["6", "9"],
    "ttsvar_small_model_cpu": ["6"],
    "ttsvar_pick_and_vary_cpu": ["6", "7", "8", "10", "11", "12", "13", "14", "15"],
}
# ttsvar.scale events of a run, where the graph steps some scales more than once (default: each scale once per
# sampler or chain of Step nodes). Pick and vary: scales 0-2 explored, 3-4 finish the kept ones, then the
# variations generate 3-4 again.
SCALE_EVENTS = {"ttsvar_pick_and_vary_cpu": 3 + 2 + 2}
