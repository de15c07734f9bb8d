"""The nodes an artist steers the search with (Keep Candidates, Vary from Scale, Start from Image, Score
Images) in a real ComfyUI, through POST /prompt, on tiny random model files.

Each result is checked against the engine's own operation on the same state: the support nodes
(support_nodes/ttsvar_e2e_support.py) call SearchState.select and .forced directly and show a state's bits as
digests, and the rewards and the VAE encoder are also run here, in the test process, on the same files.
"""
import hashlib
import io
import itertools

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

TINY_5 = "1x1,2x2,3x3,4x4,4x4"
PROMPT = "a red cat"
_seeds = itertools.count(5000)


# ---------------------------------------------------------------------------------------------- graphs
def base():
    """Loaders and the text encoder: nodes m (model), r (reward), t (conditioning)."""
    return {
        "m": {"class_type": "TTSVAR_ModelLoader", "inputs": {"model": "tiny_infinity.safetensors",
                                                            "vae": "tiny_vae.safetensors", "text_encoder": "tiny-t5",
                                                            "dtype": "fp32"}},
        "r": {"class_type": "TTSVAR_RewardLoader", "inputs": {"kind": "clip", "file": "tiny-clip", "dtype": "fp32"}},
        "t": {"class_type": "TTSVAR_TextEncode", "inputs": {"model": ["m", 0], "prompt": PROMPT,
                                                            "negative_prompt": ""}},
    }


SAMPLING = {"seed": 0, "cfg": 3.0, "tau": 0.5, "top_k": 900, "top_p": 0.97}


def start(seed, candidates, scales=TINY_5):
    return {"class_type": "TTSVAR_Start", "inputs": {
        "model": ["m", 0], "conditioning": ["t", 0], "aspect_ratio": "1:1", "pixel_budget": "1M", **SAMPLING,
        "seed": seed, "candidates": candidates, "custom_scales": scales}}


def step(source, to_scale):
    return {"class_type": "TTSVAR_Step", "inputs": {"candidates": [source, 0], "to_scale": to_scale}}


def keep(source, text):
    return {"class_type": "TTSVAR_Keep", "inputs": {"candidates": [source, 0], "keep": text}}


def vary(source, candidate, to_scale, copies, seed):
    return {"class_type": "TTSVAR_Vary", "inputs": {"candidates": [source, 0], "candidate": candidate,
                                                    "to_scale": to_scale, "copies": copies, "seed": seed}}


def digest(source):
    return {"class_type": "TTSVARTest_StateDigest", "inputs": {"candidates": [source, 0]}}


def from_image(image_node, to_scale, candidates=2, pixel_budget="0.06M", custom_scales="", seed=None):
    return {"class_type": "TTSVAR_StartFromImage", "inputs": {
        "model": ["m", 0], "conditioning": ["t", 0], "image": [image_node, 0], "pixel_budget": pixel_budget,
        "to_scale": to_scale, **SAMPLING, "seed": next(_seeds) if seed is None else seed, "candidates": candidates,
        "custom_scales": custom_scales}}


def state_of(run, node):
    (state,) = run.outputs[node]["ttsvar_state"]
    return state


def grid_of(run, node):
    (grid,) = run.executed_output(node)["ttsvar_grid"]
    return grid


def run_ok(comfy, graph):
    run = comfy.run_prompt(graph, timeout=300)
    assert run.succeeded, run.error
    return run


def run_error(comfy, graph, node_type):
    run = comfy.run_prompt(graph, timeout=300)
    assert run.error is not None and run.error["node_type"] == node_type, run.error
    return run.error["exception_message"].strip()


def rejected_details(comfy, graph, node):
    """What POST /prompt answered about `node`'s inputs when it refused the graph: {input: [details]}."""
    with pytest.raises(comfy.PromptRejected) as rejected:
        comfy.queue_prompt(graph)
    found = {}
    for error in rejected.value.body["node_errors"][node]["errors"]:
        found.setdefault(error["extra_info"]["input_name"], []).append(error["details"])
    return found


def picture_with_layout(width, height, shade=0):
    """A picture with a layout worth keeping: a gradient, a disc and a bar."""
    picture = Image.new("RGB", (width, height))
    pixels = picture.load()
    for y in range(height):
        for x in range(width):
            pixels[x, y] = ((x * 255) // width, (y * 255) // height, (shade * 50) % 256)
    draw = ImageDraw.Draw(picture)
    draw.ellipse((width // 5, height // 5, width // 2, height // 2 + height // 4), fill=(230, 40, 30))
    draw.rectangle((width // 2, height // 3, width - 4, height // 3 + 8), fill=(20, 20, 220 - 30 * shade))
    return picture


def put_input(comfy_server, name, picture) -> str:
    picture.save(comfy_server.input_dir / name)
    return name


def load_image(name):
    return {"class_type": "LoadImage", "inputs": {"image": name}}


# ------------------------------------------------------------------------------------------ Keep Candidates
def test_keep_continues_exactly_the_candidates_named(comfy, tiny_models):
    """Keep 0,3,5x2 after scale 2, then step to the end: the same bits as the engine's select([0, 3, 5, 5]) on
    the same state, stepped the same way."""
    graph = base()
    graph["a"] = start(next(_seeds), candidates=8)
    graph["s2"] = step("a", 2)
    graph["k"] = keep("s2", "0, 3, 5x2")
    graph["ks"] = step("k", -1)
    graph["kd"] = digest("ks")
    graph["e"] = {"class_type": "TTSVARTest_StateSelect", "inputs": {"candidates": ["s2", 0], "indices": "0,3,5,5"}}
    graph["es"] = step("e", -1)
    graph["ed"] = digest("es")
    graph["before"] = digest("s2")
    run = run_ok(comfy, graph)

    kept, engine, before = state_of(run, "kd"), state_of(run, "ed"), state_of(run, "before")
    assert kept == engine
    assert kept["scale"] == 5 and len(kept["bits"]) == 4 and kept["origin"] == [0, 3, 5, 5]
    assert [bits[:3] for bits in kept["bits"]] == [before["bits"][i] for i in (0, 3, 5, 5)]
    assert kept["bits"][2][3:] != kept["bits"][3][3:]  # the second copy of #5 draws its own scales

    grid = grid_of(run, "k")
    assert grid["stage"] == "keep" and grid["scale"] == 2 and len(grid["candidates"]) == 8
    assert [(c["status"], c["copies"]) for c in grid["candidates"]] == [
        ("kept", 1), ("dropped", 0), ("dropped", 0), ("kept", 1), ("dropped", 0), ("duplicated", 2), ("dropped", 0),
        ("dropped", 0)]
    assert all(c["image"] for c in grid["candidates"])


def test_empty_keep_list_keeps_every_candidate(comfy, tiny_models):
    graph = base()
    graph["a"] = start(next(_seeds), candidates=3)
    graph["s1"] = step("a", 1)
    graph["k"] = keep("s1", " ")
    graph["kd"] = digest("k")
    graph["before"] = digest("s1")
    run = run_ok(comfy, graph)
    assert state_of(run, "kd")["bits"] == state_of(run, "before")["bits"]
    grid = grid_of(run, "k")
    assert [c["status"] for c in grid["candidates"]] == ["kept"] * 3 and "click candidates" in grid["note"]


@pytest.mark.parametrize("text,words", [
    ("0,3,five", "keep: 'five' is not a candidate; write candidate numbers separated by commas, xN for N copies, "
                 "e.g. 0,3,5x2"),
    ("1x0", "keep: '1x0' asks for no copies; leave candidate 1 out instead"),
    ("-1", "keep: '-1' is not a candidate"),
])
def test_keep_list_syntax_is_refused_before_the_run(comfy, tiny_models, text, words):
    graph = base()
    graph["a"] = start(next(_seeds), candidates=2)
    graph["s"] = step("a", 1)
    graph["k"] = keep("s", text)
    graph["kd"] = digest("k")
    details = rejected_details(comfy, graph, "k")
    assert list(details) == ["keep"] and len(details["keep"]) == 1
    assert words in details["keep"][0]


def test_keep_of_missing_candidates_or_before_any_scale_says_what_to_do(comfy, tiny_models):
    graph = base()
    graph["a"] = start(next(_seeds), candidates=4)
    graph["s"] = step("a", 1)
    graph["k"] = keep("s", "1,4,9x2")
    graph["kd"] = digest("k")
    assert run_error(comfy, graph, "TTSVAR_Keep") == (
        "keep: there is no candidate #4, #9; these candidates are #0 to #3: name only those (or click them in the "
        "grid)")
    graph["k"] = keep("a", "0")
    assert "keeping candidates needs generated images: put a TTS-VAR Step node before this one" in \
        run_error(comfy, graph, "TTSVAR_Keep")


# ----------------------------------------------------------------------------------------- Vary from Scale
def test_vary_equals_a_fresh_run_that_shares_the_prefix(comfy, tiny_models):
    """Three variations of finished candidate #2 from scale 1 with seed s: bit for bit a fresh start of three
    candidates with seed s whose scales 0 and 1 are forced to #2's, stepped to the end."""
    seed = next(_seeds)
    graph = base()
    graph["a"] = start(seed, candidates=4)
    graph["done"] = step("a", -1)
    graph["v"] = vary("done", candidate=2, to_scale=1, copies=3, seed=seed + 1)
    graph["vs"] = step("v", -1)
    graph["vd"] = digest("vs")
    graph["fresh"] = start(seed + 1, candidates=3)
    graph["f"] = {"class_type": "TTSVARTest_StateForce", "inputs": {"candidates": ["fresh", 0],
                                                                    "source": ["done", 0], "index": 2, "to_scale": 1}}
    graph["fs"] = step("f", -1)
    graph["fd"] = digest("fs")
    graph["dd"] = digest("done")
    run = run_ok(comfy, graph)

    varied, fresh, done = state_of(run, "vd"), state_of(run, "fd"), state_of(run, "dd")
    assert varied["bits"] == fresh["bits"] and len(varied["bits"]) == 3
    assert all(bits[:2] == done["bits"][2][:2] for bits in varied["bits"])   # the shared prefix
    assert len({bits[4] for bits in varied["bits"]}) == 3                      # three different finishes
    assert varied["origin"] == [2, 2, 2]
    grid = grid_of(run, "v")
    assert grid["stage"] == "vary" and grid["scale"] == 4
    assert [(c["status"], c["copies"]) for c in grid["candidates"]] == [
        ("dropped", 0), ("dropped", 0), ("duplicated", 3), ("dropped", 0)]


def test_vary_inputs_out_of_range_say_what_exists(comfy, tiny_models):
    graph = base()
    graph["a"] = start(next(_seeds), candidates=2)
    graph["s"] = step("a", 2)
    graph["v"] = vary("s", candidate=5, to_scale=1, copies=2, seed=1)
    graph["vd"] = digest("v")
    assert run_error(comfy, graph, "TTSVAR_Vary") == "candidate 5 does not exist: choose 0 to 1"
    graph["v"] = vary("s", candidate=1, to_scale=3, copies=2, seed=1)
    assert run_error(comfy, graph, "TTSVAR_Vary") == "scale 3 has not been generated: choose 0 to 2"
    graph["v"] = vary("s", candidate=1, to_scale=7, copies=2, seed=1)
    assert run_error(comfy, graph, "TTSVAR_Vary") == (
        "to_scale 7: the new candidates must have a scale left to draw, and these have scales 0 to 4; choose at "
        "most 3")


# ---------------------------------------------------------------------------------------- Start from Image
def expected_bits(tiny_models, picture, schedule):
    """The picture's bits per scale, encoded here by the same VAE file: digests as the support node makes them."""
    from ttsvar_core.model.pipeline import InfinityPipeline
    from ttsvar_core.model.sampling import Geometry, encode_images

    pipeline = InfinityPipeline.load(tiny_models["infinity_safetensors"], tiny_models["vae_safetensors"],
                                     tiny_models["t5"])
    images = torch.from_numpy(np.array(picture)).unsqueeze(0)
    bits = encode_images(pipeline.vae, images, Geometry.build(pipeline.model, schedule))
    return [hashlib.sha256(b[0].contiguous().numpy().tobytes()).hexdigest()[:20] for b in bits]


def test_start_from_image_at_the_last_scale_reproduces_the_encoded_bits(comfy, comfy_server, tiny_models):
    """A 100x60 picture snaps to the 7:4 template (h/w 0.571 is nearest 0.6); at 0.06M that is 7 scales up to
    12x21 tokens (192x336 px). With to_scale 6 every scale is the picture's own, as the VAE encodes it."""
    from ttsvar_core.model.schedules import get_schedule

    picture = picture_with_layout(100, 60)
    graph = base()
    graph["i"] = load_image(put_input(comfy_server, "artist_100x60.png", picture))
    graph["a"] = from_image("i", to_scale=6)
    graph["ad"] = digest("a")
    run = run_ok(comfy, graph)

    encoded = expected_bits(tiny_models, picture, get_schedule("0.571", "0.06M"))
    state = state_of(run, "ad")
    assert state["scale"] == 7 and state["bits"] == [encoded, encoded]
    grid = grid_of(run, "a")
    assert grid["stage"] == "image" and grid["scale"] == 6 and grid["size"] == [192, 336]
    assert grid["note"] == "100x60 image as 7:4 at 336x192: scales 0 to 6 from it"
    assert [c["status"] for c in grid["candidates"]] == ["live", "live"]
    assert grid["candidates"][0]["image"] == grid["candidates"][1]["image"]  # one thumbnail for identical cells


def test_start_from_image_keeps_the_first_scales_and_draws_the_rest(comfy, comfy_server, tiny_models):
    picture = picture_with_layout(64, 64, shade=1)
    graph = base()
    graph["i"] = load_image(put_input(comfy_server, "artist_64.png", picture))
    graph["a"] = from_image("i", to_scale=2, candidates=3, custom_scales=TINY_5)
    graph["s"] = step("a", -1)
    graph["sd"] = digest("s")
    run = run_ok(comfy, graph)
    encoded = expected_bits(tiny_models, picture, [(1, 1), (2, 2), (3, 3), (4, 4), (4, 4)])
    bits = state_of(run, "sd")["bits"]
    assert all(b[:3] == encoded[:3] for b in bits)
    assert len({b[4] for b in bits}) == 3


def test_start_from_image_refuses_what_it_cannot_use(comfy, comfy_server, tiny_models):
    name = put_input(comfy_server, "artist_small.png", picture_with_layout(40, 40))
    graph = base()
    graph["i"] = load_image(name)
    graph["a"] = from_image("i", to_scale=7)        # 0.06M has scales 0 to 6
    graph["ad"] = digest("a")
    details = rejected_details(comfy, graph, "a")
    assert set(details) == {"pixel_budget", "to_scale", "custom_scales"}
    assert "to_scale 7 is beyond the schedule: it has scales 0 to 6; choose one of those (6 takes every scale " \
           "from the image)" in details["to_scale"][0]
    graph["a"] = from_image("i", to_scale=5, custom_scales=TINY_5)
    assert "it has scales 0 to 4" in rejected_details(comfy, graph, "a")["to_scale"][0]

    graph["b"] = {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 2, "color": 0}}
    graph["a"] = from_image("b", to_scale=2)
    assert run_error(comfy, graph, "TTSVAR_StartFromImage") == (
        "Start from Image starts from one image but got a batch of 2: pick one with an Image From Batch node "
        "(batch_index), or use one Start from Image per image")

    graph["rgba"] = {"class_type": "JoinImageWithAlpha", "inputs": {"image": ["i", 0], "alpha": ["i", 1]}}
    graph["a"] = from_image("rgba", to_scale=2)
    assert run_error(comfy, graph, "TTSVAR_StartFromImage") == (
        "Start from Image needs RGB images (a batch shaped [B, H, W, 3]) but got one shaped 1x40x40x4 (it has an "
        "alpha channel: take the image before Join Image with Alpha)")


# ------------------------------------------------------------------------------------------- Score Images
def test_score_images_matches_the_rewards_own_scores(comfy, comfy_server, tiny_models):
    from ttsvar_core.scorers import load_reward

    pictures = [picture_with_layout(48, 48, shade=i) for i in range(3)]
    graph = base()
    for i, picture in enumerate(pictures):
        graph[f"i{i}"] = load_image(put_input(comfy_server, f"artist_score_{i}.png", picture))
    graph["b01"] = {"class_type": "ImageBatch", "inputs": {"image1": ["i0", 0], "image2": ["i1", 0]}}
    graph["b"] = {"class_type": "ImageBatch", "inputs": {"image1": ["b01", 0], "image2": ["i2", 0]}}
    graph["score"] = {"class_type": "TTSVAR_ScoreImages", "inputs": {"images": ["b", 0], "reward": ["r", 0],
                                                                     "prompt": PROMPT}}
    graph["values"] = {"class_type": "TTSVARTest_Floats", "inputs": {"values": ["score", 0]}}
    graph["save"] = {"class_type": "SaveImage", "inputs": {"images": ["score", 1], "filename_prefix": "scored"}}
    run = run_ok(comfy, graph)

    reward = load_reward("clip", tiny_models["clip"], device="cpu", dtype="fp32")
    batch = torch.stack([torch.from_numpy(np.array(p)) for p in pictures])
    expected = reward.score(batch, PROMPT)
    scores = torch.tensor(run.outputs["values"]["values"])
    assert torch.allclose(scores, expected, rtol=1e-5, atol=1e-6), (scores, expected)
    assert len(set(expected.tolist())) == 3

    order = torch.argsort(expected, descending=True).tolist()
    saved = [Image.open(io.BytesIO(comfy.view(i["filename"], subfolder=i["subfolder"], folder_type=i["type"])))
             for i in run.outputs["save"]["images"]]
    assert [s.tobytes() for s in saved] == [pictures[i].tobytes() for i in order]   # best first

    grid = grid_of(run, "score")
    assert grid["stage"] == "score" and grid["scale"] is None and grid["prompts"] == [PROMPT]
    assert [c["score"] for c in grid["candidates"]] == pytest.approx(scores.tolist())
    assert [c["status"] for c in grid["candidates"]].count("picked") == 1
    assert grid["candidates"][order[0]]["status"] == "picked"


def test_score_images_refuses_an_empty_prompt_and_images_with_alpha(comfy, comfy_server, tiny_models):
    graph = base()
    graph["i"] = load_image(put_input(comfy_server, "artist_alpha.png", picture_with_layout(32, 32)))
    graph["score"] = {"class_type": "TTSVAR_ScoreImages", "inputs": {"images": ["i", 0], "reward": ["r", 0],
                                                                     "prompt": "  "}}
    assert run_error(comfy, graph, "TTSVAR_ScoreImages") == (
        "Score Images needs the prompt the images should match: type it in the prompt box")
    graph["rgba"] = {"class_type": "JoinImageWithAlpha", "inputs": {"image": ["i", 0], "alpha": ["i", 1]}}
    graph["score"]["inputs"].update(images=["rgba", 0], prompt=PROMPT)
    assert "Score Images needs RGB images (a batch shaped [B, H, W, 3]) but got one shaped 1x32x32x4" in \
        run_error(comfy, graph, "TTSVAR_ScoreImages")
