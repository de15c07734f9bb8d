"""Every shipped workflow (example_workflows/*.json, UI format) converted to API format and run through POST /prompt.

The workflows for Infinity-2B name real files CI does not have (infinity_2b_reg.pth, ImageReward.pt, ...):
the test swaps in the tiny random files and a 13-scale schedule of tiny token grids (64 px), keeping every
node, link, scale number and selection of the graph as shipped (workflow_specs.TINY_SWAPS).
"""
import io
import uuid

import pytest
from PIL import Image

PACK = "comfyui-ttsvar"
NAMES = ["ttsvar_2b_node_by_node", "ttsvar_2b_sampler", "ttsvar_bon_vs_ttsvar", "ttsvar_small_model_cpu",
         "ttsvar_pick_and_vary_cpu"]


def test_every_shipped_workflow_is_tested(workflows):
    assert workflows.names() == sorted(NAMES)
    assert sorted(workflows.specs.WORKFLOWS) == sorted(NAMES)


def test_workflows_are_templates_with_thumbnails(comfy, workflows):
    listed = comfy.get_json("/workflow_templates")
    assert sorted(listed[PACK]) == sorted(NAMES)
    for name in NAMES:
        served = comfy.get(f"/api/workflow_templates/{PACK}/{name}.json")
        assert served.status_code == 200 and served.json() == workflows.load(name)
        thumbnail = comfy.get(f"/api/workflow_templates/{PACK}/{name}.jpg")
        assert thumbnail.status_code == 200 and thumbnail.content[:3] == b"\xff\xd8\xff"  # a JPEG
        picture = Image.open(io.BytesIO(thumbnail.content))
        assert picture.format == "JPEG" and picture.width >= 320


def fresh_seed(workflows, prompt):
    """A new seed for every search node: an earlier test may have run nodes with identical inputs, and
    ComfyUI would serve those from its cache without running them (and without their events)."""
    seed = uuid.uuid4().int % 2 ** 32
    return workflows.with_inputs(prompt, {"TTSVAR_Start": {"seed": seed}, "TTSVAR_Sampler": {"seed": seed}})


@pytest.mark.parametrize("name", NAMES)
def test_workflow_runs_through_the_api(name, comfy, workflows, tiny_models):
    prompt = workflows.tiny(name, workflows.to_api(workflows.load(name), comfy.object_info()))
    prompt = fresh_seed(workflows, prompt)
    run = comfy.run_prompt(prompt, timeout=300)
    assert run.succeeded, run.error

    for node_id, (count, height, width) in workflows.specs.EXPECTED_IMAGES[name].items():
        images = run.outputs[node_id]["images"]
        assert len(images) == count, node_id
        for image in images:
            png = comfy.view(image["filename"], subfolder=image["subfolder"], folder_type=image["type"])
            assert Image.open(io.BytesIO(png)).size == (width, height)

    mine = [g for g in run.of_type("ttsvar.candidates") if g["prompt_id"] == run.prompt_id]
    assert sorted({g["node"] for g in mine}, key=int) == workflows.specs.GRID_NODES[name]
    assert all(g["candidates"] and all(c["image"] for c in g["candidates"]) for g in mine)
    last_grid_node = workflows.specs.GRID_NODES[name][-1]
    assert [g for g in mine if g["node"] == last_grid_node][-1]["stage"] == "final"
    scales = [e for e in run.of_type("ttsvar.scale") if e["prompt_id"] == run.prompt_id]
    samplers = sum(1 for node in prompt.values() if node["class_type"] == "TTSVAR_Sampler")
    total = scales[0]["scales"]
    assert len(scales) == workflows.specs.SCALE_EVENTS.get(name, total * max(samplers, 1))
    assert [e["scale"] for e in scales[:total]] == list(range(total))
