"""The pack's nodes in a real ComfyUI, through POST /prompt and the websocket, on tiny random model files.

Graphs here are API-format prompts built by the helpers below. Every prompt uses a fresh seed (or other
fresh input) where a rerun must compute again: ComfyUI reuses cached outputs of unchanged nodes.
"""
import io
import itertools
import json
import math
import shutil

import pytest
from PIL import Image

SCALE_EVENT = "ttsvar.scale"
CANDIDATES_EVENT = "ttsvar.candidates"
TINY_13 = "1x1,1x1,2x2,2x2,2x2,3x3,3x3,3x3,4x4,4x4,4x4,4x4,4x4"   # 13 scales, 64 px
TINY_5 = "1x1,2x2,3x3,4x4,4x4"
TRICKY_PROMPT = 'a red cat <img src=x onerror="alert(1)"> & <b>dog</b>'
_seeds = itertools.count(1000)

NODES = {
    # id: (required inputs, optional inputs, outputs)
    "TTSVAR_ModelLoader": (["model", "vae", "text_encoder", "dtype"], ["weight_storage", "offload", "text_encoder_storage"],
                           ["TTSVAR_MODEL"]),
    "TTSVAR_RewardLoader": (["kind", "file", "dtype"], ["siglip_folder"], ["TTSVAR_REWARD"]),
    "TTSVAR_FeatureLoader": (["kind", "file", "dtype"], [], ["TTSVAR_FEATURES"]),
    "TTSVAR_TextEncode": (["model", "prompt", "negative_prompt"], [], ["TTSVAR_CONDITIONING"]),
    "TTSVAR_Start": (["model", "conditioning", "aspect_ratio", "pixel_budget", "seed", "cfg", "tau", "top_k",
                      "top_p", "candidates"], ["custom_scales"], ["TTSVAR_STATE"]),
    "TTSVAR_BatchSchedule": (["preset", "n", "pixel_budget", "batch_sizes", "cluster_scales", "resample_scales",
                              "potential", "lam", "feature_mode"], ["custom_scales", "selection_decode"],
                             ["TTSVAR_SCHEDULE"]),
    "TTSVAR_Step": (["candidates", "to_scale"], [], ["TTSVAR_STATE"]),
    "TTSVAR_Cluster": (["candidates", "features", "keep", "feature_mode"], [], ["TTSVAR_STATE"]),
    "TTSVAR_Resample": (["candidates", "reward", "keep", "potential", "lam"], [], ["TTSVAR_STATE"]),
    "TTSVAR_Decode": (["candidates"], [], ["IMAGE"]),
    "TTSVAR_PickBest": (["candidates", "mode", "lam"], ["reward"],
                        ["IMAGE", "IMAGE", "TTSVAR_STATE", "FLOAT", "STRING"]),
    "TTSVAR_Sampler": (["model", "conditioning", "schedule", "aspect_ratio", "seed", "cfg", "tau", "top_k",
                        "top_p"], ["reward", "features"], ["IMAGE", "IMAGE", "TTSVAR_STATE", "FLOAT", "STRING"]),
    "TTSVAR_Keep": (["candidates", "keep"], [], ["TTSVAR_STATE"]),
    "TTSVAR_Vary": (["candidates", "candidate", "to_scale", "copies", "seed"], [], ["TTSVAR_STATE"]),
    "TTSVAR_StartFromImage": (["model", "conditioning", "image", "pixel_budget", "to_scale", "seed", "cfg", "tau",
                               "top_k", "top_p", "candidates"], ["custom_scales"], ["TTSVAR_STATE"]),
    "TTSVAR_ScoreImages": (["images", "reward", "prompt"], [], ["FLOAT", "IMAGE"]),
}


# ---------------------------------------------------------------------------------------------- graphs
def base(prompt="a red cat", model="tiny_infinity.safetensors", vae="tiny_vae.safetensors"):
    """Loaders and the text encoder: nodes m (model), r (reward), f (features), t (conditioning)."""
    return {
        "m": {"class_type": "TTSVAR_ModelLoader",
              "inputs": {"model": model, "vae": vae, "text_encoder": "tiny-t5", "dtype": "fp32"}},
        "r": {"class_type": "TTSVAR_RewardLoader", "inputs": {"kind": "clip", "file": "tiny-clip", "dtype": "fp32"}},
        "f": {"class_type": "TTSVAR_FeatureLoader",
              "inputs": {"kind": "dinov2", "file": "tiny_dinov2_reg4.pth", "dtype": "fp32"}},
        "t": {"class_type": "TTSVAR_TextEncode", "inputs": {"model": ["m", 0], "prompt": prompt,
                                                            "negative_prompt": ""}},
    }


def start(seed, candidates=8, scales=TINY_13):
    return {"class_type": "TTSVAR_Start", "inputs": {
        "model": ["m", 0], "conditioning": ["t", 0], "aspect_ratio": "1:1", "pixel_budget": "1M", "seed": seed,
        "cfg": 3.0, "tau": 0.5, "top_k": 900, "top_p": 0.97, "candidates": candidates, "custom_scales": scales}}


def step(source, to_scale):
    return {"class_type": "TTSVAR_Step", "inputs": {"candidates": [source, 0], "to_scale": to_scale}}


def decode_and_save(graph, source, key, prefix):
    graph[f"{key}_decode"] = {"class_type": "TTSVAR_Decode", "inputs": {"candidates": [source, 0]}}
    graph[f"{key}_save"] = {"class_type": "SaveImage",
                            "inputs": {"images": [f"{key}_decode", 0], "filename_prefix": prefix}}


def schedule(preset="TTS-VAR paper (2B)", n=1, scales=TINY_13, **edits):
    inputs = {"preset": preset, "n": n, "pixel_budget": "1M", "batch_sizes": "", "cluster_scales": "",
              "resample_scales": "", "potential": "value", "lam": 10.0, "feature_mode": "pca",
              "custom_scales": scales}
    inputs.update(edits)
    return {"class_type": "TTSVAR_BatchSchedule", "inputs": inputs}


def sampler_graph(seed, prompt="a red cat", **schedule_edits):
    graph = base(prompt)
    graph["s"] = schedule(**schedule_edits)
    graph["x"] = {"class_type": "TTSVAR_Sampler", "inputs": {
        "model": ["m", 0], "conditioning": ["t", 0], "schedule": ["s", 0], "aspect_ratio": "1:1", "seed": seed,
        "cfg": 3.0, "tau": 0.5, "top_k": 900, "top_p": 0.97, "reward": ["r", 0], "features": ["f", 0]}}
    graph["o"] = {"class_type": "SaveImage", "inputs": {"images": ["x", 0], "filename_prefix": "sampler"}}
    preview_scores(graph, "x")
    return graph


def node_by_node_graph(seed, prompt="a red cat"):
    """The paper's schedule node by node on 13 tiny scales: 8 -> cluster 6 (scale 2) -> cluster 4 (5)
    -> resample 2 (6) -> resample 1 (9) -> pick."""
    graph = base(prompt)
    graph["a"] = start(seed)
    graph["s2"] = step("a", 2)
    graph["c6"] = {"class_type": "TTSVAR_Cluster",
                   "inputs": {"candidates": ["s2", 0], "features": ["f", 0], "keep": 6, "feature_mode": "pca"}}
    graph["s5"] = step("c6", 5)
    graph["c4"] = {"class_type": "TTSVAR_Cluster",
                   "inputs": {"candidates": ["s5", 0], "features": ["f", 0], "keep": 4, "feature_mode": "pool"}}
    graph["s6"] = step("c4", 6)
    graph["r2"] = {"class_type": "TTSVAR_Resample", "inputs": {"candidates": ["s6", 0], "reward": ["r", 0],
                                                               "keep": 2, "potential": "value", "lam": 10.0}}
    graph["s9"] = step("r2", 9)
    graph["r1"] = {"class_type": "TTSVAR_Resample", "inputs": {"candidates": ["s9", 0], "reward": ["r", 0],
                                                               "keep": 1, "potential": "diff", "lam": 10.0}}
    graph["s12"] = step("r1", -1)
    graph["p"] = {"class_type": "TTSVAR_PickBest",
                  "inputs": {"candidates": ["s12", 0], "mode": "best", "lam": 10.0, "reward": ["r", 0]}}
    graph["o"] = {"class_type": "SaveImage", "inputs": {"images": ["p", 0], "filename_prefix": "nodes"}}
    return graph


def preview_scores(graph, source):
    """Preview as Text nodes (ComfyUI's PreviewAny) on the two score outputs of a picking node:
    "<source>_scores" (one run per chosen score) and "<source>_json"."""
    graph[f"{source}_scores"] = {"class_type": "PreviewAny", "inputs": {"source": [source, 3]}}
    graph[f"{source}_json"] = {"class_type": "PreviewAny", "inputs": {"source": [source, 4]}}


def previewed_scores(run, source):
    """(the chosen scores, the parsed scores JSON) as the preview nodes showed them."""
    chosen = [float(text) for text in run.outputs[f"{source}_scores"]["text"]]
    (report,) = run.outputs[f"{source}_json"]["text"]
    return chosen, json.loads(report)


def images_of(comfy, run, node_id):
    """The images a SaveImage node wrote, as PIL images."""
    return [Image.open(io.BytesIO(comfy.view(i["filename"], subfolder=i["subfolder"], folder_type=i["type"])))
            for i in run.outputs[node_id]["images"]]


def grids(run, node=None):
    return [g for g in run.of_type(CANDIDATES_EVENT) if g["prompt_id"] == run.prompt_id
            and (node is None or g["node"] == node)]


def assert_serves(comfy):
    """The server still runs prompts after a failure (a one-candidate search: quick)."""
    graph = base()
    graph["a"] = start(next(_seeds), candidates=1, scales=TINY_5)
    graph["s"] = step("a", -1)
    decode_and_save(graph, "s", "ok", "serving")
    run = comfy.run_prompt(graph)
    assert run.succeeded, run.error
    assert len(run.outputs["ok_save"]["images"]) == 1


# ----------------------------------------------------------------------------------------------- tests
def test_object_info_lists_every_node_with_its_inputs(comfy):
    info = comfy.object_info()
    ours = {name for name in info if name.startswith("TTSVAR_")}
    assert ours == set(NODES)
    for name, (required, optional, outputs) in NODES.items():
        node = info[name]
        assert node["category"] == "TTS-VAR"
        assert node["display_name"].startswith("TTS-VAR ")
        assert node["python_module"] == "custom_nodes.comfyui-ttsvar"
        assert node["description"]
        assert node["input_order"]["required"] == required, name
        assert node["input_order"].get("optional", []) == optional, name
        assert node["output"] == outputs, name
    assert info["TTSVAR_Sampler"]["output_node"] and info["TTSVAR_PickBest"]["output_node"]
    for name in ("TTSVAR_Sampler", "TTSVAR_PickBest"):
        # the scores come last, so links saved before they existed keep their slots
        assert info[name]["output_name"] == ["chosen", "finalists", "candidates", "chosen_scores", "scores_json"]
        assert info[name]["output_is_list"] == [False, False, False, True, False]
    schedule_presets = info["TTSVAR_BatchSchedule"]["input"]["required"]["preset"][0]
    assert schedule_presets == ["TTS-VAR paper (2B)", "TTS-VAR paper (8B)", "Best-of-N", "Importance sampling",
                                "Plain sampling"]


def test_model_lists_group_shard_and_model_folders(comfy, tiny_models):
    loader = comfy.object_info("TTSVAR_ModelLoader")["input"]["required"]
    models = loader["model"][0]
    # the 8B-style shard folders are one entry each; their shard files are not listed
    assert {"tiny_infinity.pth", "tiny_infinity.safetensors", "tiny_infinity_patchify_shards",
            "tiny_infinity_patchify_shards_bin"} <= set(models)
    assert not [m for m in models if "/" in m and not m.startswith("shapesworld/")]
    assert "tiny_vae_patchify.safetensors" in loader["vae"][0]
    assert loader["text_encoder"][0] == ["shapesworld/t5", "tiny-t5"]
    assert "tiny-clip" in comfy.object_info("TTSVAR_RewardLoader")["input"]["required"]["file"][0]
    assert "tiny_dinov2_reg4.pth" in comfy.object_info("TTSVAR_FeatureLoader")["input"]["required"]["file"][0]


def test_loaders_offer_the_shipped_model_and_only_their_own_part_of_it(comfy):
    """ttsvar_core/assets is a search path of each model folder: every loader lists its own part of the
    ShapesWorld model (the small CLIP is both reward and feature extractor) and no other file of that folder."""
    def shipped(node, name):
        return [e for e in comfy.object_info(node)["input"]["required"][name][0] if e.startswith("shapesworld/")]

    assert shipped("TTSVAR_ModelLoader", "model") == ["shapesworld/shapesworld_infinity.safetensors"]
    assert shipped("TTSVAR_ModelLoader", "vae") == ["shapesworld/shapesworld_vae.safetensors"]
    assert shipped("TTSVAR_ModelLoader", "text_encoder") == ["shapesworld/t5"]
    assert shipped("TTSVAR_RewardLoader", "file") == ["shapesworld/clip"]
    assert shipped("TTSVAR_FeatureLoader", "file") == ["shapesworld/clip"]


def test_node_by_node_search_sends_scale_events_and_candidate_grids(comfy, tiny_models):
    run = comfy.run_prompt(node_by_node_graph(next(_seeds), prompt=TRICKY_PROMPT), timeout=300)
    assert run.succeeded, run.error

    scale_events = [e for e in run.of_type(SCALE_EVENT) if e["prompt_id"] == run.prompt_id]
    assert [e["scale"] for e in scale_events] == list(range(13))
    assert [e["node"] for e in scale_events] == ["s2"] * 3 + ["s5"] * 3 + ["s6"] + ["s9"] * 3 + ["s12"] * 3
    assert [e["live"] for e in scale_events] == [8] * 3 + [6] * 3 + [4] + [2] * 3 + [1] * 3
    progress = [p for p in run.of_type("progress") if p["node"] == "s5"]
    assert [(p["value"], p["max"]) for p in progress] == [(1, 3), (2, 3), (3, 3)]

    stages = [(g["node"], g["stage"], g["scale"], len(g["candidates"])) for g in grids(run)]
    assert stages == [("s2", "step", 2, 8), ("c6", "cluster", 2, 8), ("s5", "step", 5, 6),
                      ("c4", "cluster", 5, 6), ("s6", "step", 6, 4), ("r2", "resample", 6, 4),
                      ("s9", "step", 9, 2), ("r1", "resample", 9, 2), ("s12", "step", 12, 1),
                      ("p", "final", 12, 1)]
    by_node = {g["node"]: g for g in grids(run)}
    for node, kept in (("c6", 6), ("c4", 4)):
        statuses = [c["status"] for c in by_node[node]["candidates"]]
        assert statuses.count("kept") == kept and set(statuses) <= {"kept", "dropped"}
    for node, drawn in (("r2", 2), ("r1", 1)):
        candidates = by_node[node]["candidates"]
        assert sum(c["copies"] for c in candidates) == drawn
        assert all(isinstance(c["score"], float) for c in candidates)
        for c in candidates:
            expected = "dropped" if c["copies"] == 0 else "kept" if c["copies"] == 1 else "duplicated"
            assert c["status"] == expected
        assert by_node[node]["note"].startswith("potential ")
    final = by_node["p"]["candidates"]
    assert [c["status"] for c in final] == ["picked"] and isinstance(final[0]["score"], float)

    for grid in grids(run):
        assert grid["prompts"] == [TRICKY_PROMPT]  # plain text, passed through untouched
        assert grid["scales"] == 13 and grid["size"] == [64, 64]
        for candidate in grid["candidates"]:
            png = comfy.view(candidate["image"]["filename"], subfolder=candidate["image"]["subfolder"],
                             folder_type=candidate["image"]["type"])
            assert Image.open(io.BytesIO(png)).size == (64, 64)
        # the grid stays on the node: it is the node's executed output, and in the history
        assert run.executed_output(grid["node"])["ttsvar_grid"] == [{k: v for k, v in grid.items()
                                                                     if k not in ("node", "prompt_id")}]
    (chosen,) = images_of(comfy, run, "o")
    assert chosen.size == (64, 64)


def test_interrupt_mid_run_then_next_run_works(comfy, tiny_models):
    graph = base()
    graph["a"] = start(next(_seeds), candidates=24)
    graph["s"] = step("a", -1)
    decode_and_save(graph, "s", "all", "interrupt")

    def interrupt_at_scale_3(message, run):
        if message.type == SCALE_EVENT and message.data["scale"] == 3:
            comfy.interrupt(run.prompt_id)

    run = comfy.run_prompt(graph, on_message=interrupt_at_scale_3, timeout=300)
    assert run.interrupted and run.error is None
    assert run.status == "error"
    done = [e["scale"] for e in run.of_type(SCALE_EVENT) if e["prompt_id"] == run.prompt_id]
    assert 3 <= max(done) < 12
    assert not grids(run)
    comfy.wait_until_idle()

    graph["a"] = start(next(_seeds), candidates=4)
    again = comfy.run_prompt(graph, timeout=300)
    assert again.succeeded, again.error
    assert len(images_of(comfy, again, "all_save")) == 4


def test_two_branches_from_one_state_match_separate_runs(comfy, tiny_models):
    """One Step output feeds a plain continuation and a clustering branch; each must equal the same search
    computed on its own (split into steps differently, so nothing is served from ComfyUI's cache)."""
    seed = next(_seeds)
    branched = base()
    branched["a"] = start(seed, candidates=4)
    branched["s2"] = step("a", 2)
    branched["plain"] = step("s2", -1)
    branched["c"] = {"class_type": "TTSVAR_Cluster",
                     "inputs": {"candidates": ["s2", 0], "features": ["f", 0], "keep": 2, "feature_mode": "pca"}}
    branched["clustered"] = step("c", -1)
    decode_and_save(branched, "plain", "plain", "branch_plain")
    decode_and_save(branched, "clustered", "clustered", "branch_clustered")
    run = comfy.run_prompt(branched, timeout=300)
    assert run.succeeded, run.error

    alone = base()
    alone["a"] = start(seed, candidates=4)
    alone["plain"] = step("a", -1)
    alone["s1"] = step("a", 1)
    alone["s2"] = step("s1", 2)
    alone["c"] = {"class_type": "TTSVAR_Cluster",
                  "inputs": {"candidates": ["s2", 0], "features": ["f", 0], "keep": 2, "feature_mode": "pca"}}
    alone["s7"] = step("c", 7)
    alone["clustered"] = step("s7", -1)
    decode_and_save(alone, "plain", "plain", "alone_plain")
    decode_and_save(alone, "clustered", "clustered", "alone_clustered")
    reference = comfy.run_prompt(alone, timeout=300)
    assert reference.succeeded, reference.error

    for key, count in (("plain", 4), ("clustered", 2)):
        got = [i.tobytes() for i in images_of(comfy, run, f"{key}_save")]
        expected = [i.tobytes() for i in images_of(comfy, reference, f"{key}_save")]
        assert len(got) == count
        assert got == expected, key
        assert len(set(got)) > 1  # the candidates differ from each other


def _loader_graph(seed, model, vae):
    graph = base(model=model, vae=vae)
    graph["a"] = start(seed, candidates=2, scales=TINY_5)
    graph["s"] = step("a", -1)
    graph["p"] = {"class_type": "TTSVAR_PickBest", "inputs": {"candidates": ["s", 0], "mode": "first", "lam": 1.0}}
    return graph


def test_wrong_file_in_the_model_slot_is_reported(comfy, comfy_server, tiny_models):
    wrong = comfy_server.models_dir / "infinity" / "actually_a_vae.safetensors"
    shutil.copyfile(tiny_models["vae_safetensors"], wrong)
    try:
        run = comfy.run_prompt(_loader_graph(next(_seeds), wrong.name, "tiny_vae.safetensors"))
    finally:
        wrong.unlink()
    assert not run.succeeded
    assert run.error["node_type"] == "TTSVAR_ModelLoader"
    assert "is a VAE checkpoint, not an Infinity transformer" in run.error["exception_message"]
    assert "model slot" in run.error["exception_message"]
    assert_serves(comfy)


def test_2b_8b_mismatch_is_reported(comfy, tiny_models):
    """The tiny transformer with the tiny patchify (8B-style) VAE: the same check a real 2B model with the
    8B VAE goes through."""
    run = comfy.run_prompt(_loader_graph(next(_seeds), "tiny_infinity.safetensors", "tiny_vae_patchify.safetensors"))
    assert not run.succeeded
    assert run.error["node_type"] == "TTSVAR_ModelLoader"
    message = run.error["exception_message"]
    assert "does not belong" in message
    assert "Infinity-2B pairs with infinity_vae_d32reg.pth, Infinity-8B with infinity_vae_d56_f8_14_patchify.pth" \
        in message
    assert_serves(comfy)


def test_2b_8b_pairing_of_released_files_is_refused_before_the_run(comfy, comfy_server, tiny_models):
    model = comfy_server.models_dir / "infinity" / "infinity_2b_reg.pth"
    vae = comfy_server.models_dir / "infinity_vae" / "infinity_vae_d56_f8_14_patchify.pth"
    model.write_bytes(b"not loaded: the names alone are checked")
    vae.write_bytes(b"not loaded")
    try:
        with pytest.raises(comfy.PromptRejected) as rejected:
            comfy.queue_prompt(_loader_graph(next(_seeds), model.name, vae.name))
    finally:
        model.unlink()
        vae.unlink()
    errors = rejected.value.body["node_errors"]["m"]["errors"]
    details = " ".join(e["details"] for e in errors)
    assert "belongs to Infinity-8B but the model infinity_2b_reg.pth is Infinity-2B" in details
    assert "infinity_vae_d32reg.pth" in details
    assert_serves(comfy)


def test_missing_model_file_is_refused_before_the_run(comfy, tiny_models):
    with pytest.raises(comfy.PromptRejected) as rejected:
        comfy.queue_prompt(_loader_graph(next(_seeds), "no_such_model.pth", "tiny_vae.safetensors"))
    details = " ".join(e["details"] for e in rejected.value.body["node_errors"]["m"]["errors"])
    assert "'no_such_model.pth' was not found in models/infinity" in details


INVALID_SCHEDULES = [
    ({"batch_sizes": "8,8,6"}, "batch sizes: 3 values given but the image schedule has 13 scales"),
    ({"cluster_scales": "2,5", "resample_scales": "5,9"}, "are both clustering and resampling scales"),
    ({"batch_sizes": "8,8,8,6,6,6,6,6,6,6,6,6,6"}, "the size changes from 8 to 6 after scale 3"),
    ({"resample_scales": "6,13"}, "selection scale 13 is out of range 0..12"),
    ({"custom_scales": "1x1,4x4,2x2"}, "custom scales: scale 2 (2x2) is smaller than scale 1 (4x4)"),
    ({"batch_sizes": "eight"}, "batch sizes: 'eight' is not a list of whole numbers"),
]


def test_invalid_schedules_are_refused_before_the_run(comfy, tiny_models):
    for edits, message in INVALID_SCHEDULES:
        with pytest.raises(comfy.PromptRejected) as rejected:
            comfy.queue_prompt(sampler_graph(next(_seeds), **edits))
        assert rejected.value.body["error"]["type"] == "prompt_outputs_failed_validation"
        errors = rejected.value.body["node_errors"]["s"]["errors"]
        assert all(e["type"] == "custom_validation_failed" for e in errors)
        assert message in errors[0]["details"] and "invalid schedule" in errors[0]["details"], edits
    assert_serves(comfy)


# A problem with one input, before the run: (node, input, value, words of the message). ComfyUI files what a
# node's validate_inputs returns under every input that function names, and checks combos (their options are
# their type) itself: each of these must come back once, under its own input, and on no other node.
ONE_INPUT_PROBLEMS = [
    ("a", "custom_scales", "1x1,4x4,2x2", "custom scales: scale 2 (2x2) is smaller than scale 1 (4x4)"),
    ("r", "file", "no_such_reward.pt", "the reward model 'no_such_reward.pt' was not found in models/ttsvar_rewards"),
    ("f", "file", "no_such_dinov2.pth", "the feature extractor 'no_such_dinov2.pth' was not found"),
    ("m", "text_encoder", "no-such-t5", "text_encoder: 'no-such-t5' not in"),
    ("a", "aspect_ratio", "9:9", "aspect_ratio: '9:9' not in"),
    ("r2", "potential", "median", "potential: 'median' not in"),
]


@pytest.mark.parametrize("node,name,value,words", ONE_INPUT_PROBLEMS, ids=[f"{n}.{i}" for n, i, _, _ in
                                                                           ONE_INPUT_PROBLEMS])
def test_validation_message_is_listed_once_on_its_input(comfy, tiny_models, node, name, value, words):
    graph = node_by_node_graph(next(_seeds))
    graph[node]["inputs"][name] = value
    with pytest.raises(comfy.PromptRejected) as rejected:
        comfy.queue_prompt(graph)
    node_errors = rejected.value.body["node_errors"]
    assert list(node_errors) == [node]
    (error,) = node_errors[node]["errors"]
    assert error["extra_info"]["input_name"] == name
    assert words in error["details"]


def test_linked_schedule_values_are_checked_at_run_time(comfy, tiny_models):
    """A value that comes through a link is unknown before the run: validation lets it pass and the node
    reports it when it runs."""
    graph = sampler_graph(next(_seeds))
    graph["v"] = {"class_type": "PrimitiveString", "inputs": {"value": "8,8,6"}}
    graph["s"]["inputs"]["batch_sizes"] = ["v", 0]
    run = comfy.run_prompt(graph)
    assert run.error["node_type"] == "TTSVAR_BatchSchedule"
    assert "batch sizes: 3 values given but the image schedule has 13 scales" in run.error["exception_message"]


def test_misuse_at_run_time_gives_a_clear_error(comfy, tiny_models):
    graph = base()
    graph["a"] = start(next(_seeds), candidates=2, scales=TINY_5)
    graph["s"] = step("a", 9)
    decode_and_save(graph, "s", "x", "misuse")
    run = comfy.run_prompt(graph)
    assert run.error["node_type"] == "TTSVAR_Step"
    assert "cannot step to scale 9" in run.error["exception_message"]
    assert "no scale yet of 0 to 4; choose a scale from 0 to 4 (or -1 for all)" in run.error["exception_message"]

    graph = base()
    graph["a"] = start(next(_seeds), candidates=2, scales=TINY_5)
    graph["s"] = step("a", 2)
    graph["p"] = {"class_type": "TTSVAR_PickBest", "inputs": {"candidates": ["s", 0], "mode": "first", "lam": 1.0}}
    run = comfy.run_prompt(graph)
    assert run.error["node_type"] == "TTSVAR_PickBest"
    assert "have 3 of their 5 scales: add a TTS-VAR Step node with to_scale -1" in run.error["exception_message"]

    graph = sampler_graph(next(_seeds))
    del graph["x"]["inputs"]["features"]
    run = comfy.run_prompt(graph)
    assert run.error["node_type"] == "TTSVAR_Sampler"
    assert "schedule clusters candidates: connect a TTS-VAR Load Feature Extractor" in run.error["exception_message"]
    assert_serves(comfy)


def test_sampler_follows_the_schedule(comfy, tiny_models):
    """The paper's preset on 5 scales is 8,6,4,2,1 with clustering after scales 1 and 2 and resampling after
    3 and 4; N=2 doubles every size."""
    run = comfy.run_prompt(sampler_graph(next(_seeds), n=2, scales=TINY_5), timeout=300)
    assert run.succeeded, run.error
    live = [e["live"] for e in run.of_type(SCALE_EVENT) if e["prompt_id"] == run.prompt_id]
    assert live == [16, 16, 12, 8, 4]  # each scale is generated by the candidates the previous one left
    stages = [(g["stage"], g["scale"]) for g in grids(run, "x")]
    assert stages == [("cluster", 1), ("cluster", 2), ("resample", 3), ("resample", 4), ("final", 4)]
    assert len(grids(run, "x")[-1]["candidates"]) == 2
    assert [c["status"] for c in grids(run, "x")[-1]["candidates"]].count("picked") == 1
    (chosen,) = images_of(comfy, run, "o")
    assert chosen.size == (64, 64)

    # the scores leave the node: the chosen image's reward, and every finalist's as JSON, as the grid shows them
    final = grids(run, "x")[-1]["candidates"]
    (picked,) = [c for c in final if c["status"] == "picked"]
    scores, report = previewed_scores(run, "x")
    assert scores == [pytest.approx(picked["score"])]
    assert report["mode"] == "best"
    assert report["chosen"] == [{"prompt": "a red cat", "finalist": picked["index"], "score": scores[0]}]
    assert [(f["index"], f["origin"], f["chosen"]) for f in report["finalists"]] == [
        (c["index"], c["origin"], c["status"] == "picked") for c in final]


def test_pick_best_outputs_the_scores_of_what_it_returns(comfy, tiny_models):
    graph = base()
    graph["a"] = start(next(_seeds), candidates=3, scales=TINY_5)
    graph["s"] = step("a", -1)
    graph["p"] = {"class_type": "TTSVAR_PickBest",
                  "inputs": {"candidates": ["s", 0], "mode": "best", "lam": 10.0, "reward": ["r", 0]}}
    graph["o"] = {"class_type": "SaveImage", "inputs": {"images": ["p", 0], "filename_prefix": "scores"}}
    preview_scores(graph, "p")
    run = comfy.run_prompt(graph, timeout=300)
    assert run.succeeded, run.error
    final = grids(run, "p")[-1]["candidates"]
    scores, report = previewed_scores(run, "p")
    assert scores == [pytest.approx(max(c["score"] for c in final))]
    assert [f["score"] for f in report["finalists"]] == pytest.approx([c["score"] for c in final])
    assert [f["chosen"] for f in report["finalists"]] == [c["status"] == "picked" for c in final]

    # mode 'first' scores nothing: NaN on the wire, null in the JSON
    graph["p"]["inputs"] = {"candidates": ["s", 0], "mode": "first", "lam": 10.0}
    run = comfy.run_prompt(graph, timeout=300)
    assert run.succeeded, run.error
    scores, report = previewed_scores(run, "p")
    assert math.isnan(scores[0]) and report["chosen"][0]["score"] is None and report["mode"] == "none"


@pytest.mark.parametrize("decode,sides", [("448 px", [64, 64, 64, 64]), ("scale grid (fast)", [32, 48, 64, 64])])
def test_sampler_selections_decode_at_the_chosen_size(comfy, tiny_models, decode, sides):
    """The selection grids show the images the selections scored: at the scale's own token grid (16 px per
    token) with 'scale grid', at the full 64 px otherwise; the output image is full size either way."""
    run = comfy.run_prompt(sampler_graph(next(_seeds), scales=TINY_5, selection_decode=decode), timeout=300)
    assert run.succeeded, run.error
    selections = [g for g in grids(run, "x") if g["stage"] != "final"]
    seen = []
    for grid in selections:
        image = grid["candidates"][0]["image"]
        png = comfy.view(image["filename"], subfolder=image["subfolder"], folder_type=image["type"])
        seen.append(Image.open(io.BytesIO(png)).size[0])
    assert seen == sides
    (chosen,) = images_of(comfy, run, "o")
    assert chosen.size == (64, 64)
