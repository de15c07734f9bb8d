"""Issue 14, "No prompt, file or argument can take the server down", replayed against a real ComfyUI server
and the command line: every item as a hostile or careless user met it, each bounded to tiny models and
seconds, each ending with the server still running prompts and an error that says what to change.

This module is the index: where another test already replays an item, it is named here instead of repeated.

1. Limits before allocation: test_limits_are_enforced_before_anything_is_allocated (server); the command
   line's N, 16-scale, 200x200 and 500 GB cases in tests/engine/test_cli.py::test_user_mistakes_get_one_line;
   the estimate itself in tests/engine/test_memory.py; ComfyUI asked to make room first in
   tests/nodes/test_make_room.py; the Batch Schedule's N in tests/nodes/test_schedule_limits.py.
2. Schedules the model cannot run: test_schedules_the_model_cannot_run_are_refused (server);
   test_user_mistakes_get_one_line (command line: first scale, 16 scales).
3. Files changing under a running server: test_a_loaded_model_survives_its_file_changing (server);
   tests/core/test_file_changes.py (every loader, in process).
4. Links and names outside the model folders: test_linked_models_load_and_names_outside_are_refused
   (server), test_the_command_line_follows_links_and_refuses_shards_outside (command line);
   tests/nodes/test_model_links.py (the glue and the loaders).
5. The command line: one error line and exit 1 for every user mistake, tracebacks only with --debug, outputs
   checked before the run, no mixed runs: tests/engine/test_cli.py (every listed mistake in process, four in a
   real process, --overwrite, --debug); the server's side of an empty prompt in test_messages_say_what_to_change.
6. Cancel inside long work: test_cancel_stops_a_step_nodes_grid_decode (server);
   tests/e2e/test_nodes.py::test_interrupt_mid_run_then_next_run_works (between scales);
   tests/engine/test_cancel.py and tests/nodes/test_node_cancel.py (every decode and scorer batch).
7. Messages that mislead: test_messages_say_what_to_change (server); tests/core/test_checkpoints.py and
   tests/scorers (in process); test_nodes.py::test_wrong_file_in_the_model_slot_is_reported.
"""
from __future__ import annotations

import importlib.util
import itertools
import json
import shutil
import subprocess
import sys
import time
import uuid
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

E2E_DIR = Path(__file__).resolve().parent
REPO = E2E_DIR.parents[1]


def _graphs():
    """The API-format graph builders of test_nodes.py, with seeds of their own (ComfyUI serves a graph it has
    run before from its cache)."""
    spec = importlib.util.spec_from_file_location("ttsvar_e2e_reliability_graphs", E2E_DIR / "test_nodes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module._seeds = itertools.count(70_000)
    return module


g = _graphs()
seeds = g._seeds
SIXTEEN = ",".join(f"{i}x{i}" for i in range(1, 17))
# 15 scales (the most the model has) of the largest grid (128x128): 256 candidates need about 540 GB
WIDEST = ",".join(["1x1"] + ["128x128"] * 14)


def refusal(comfy, graph) -> tuple[str, str]:
    """(when, message) of a graph the pack must refuse: 'validation' with its details, or 'run' with the
    node's exception message."""
    try:
        run = comfy.run_prompt(graph, timeout=120)
    except comfy.PromptRejected as rejected:
        errors = [e for node in rejected.body["node_errors"].values() for e in node["errors"]]
        return "validation", " ".join(e["details"] for e in errors)
    assert not run.succeeded, "the graph ran"
    assert not run.interrupted, run.error
    return "run", run.error["exception_message"]


def serves(comfy, comfy_server):
    comfy_server.check_alive()
    g.assert_serves(comfy)


def start_only(candidates, scales, **inputs):
    graph = g.base(**inputs)
    graph["a"] = g.start(next(seeds), candidates=candidates, scales=scales)
    graph["s"] = g.step("a", 0)
    g.decode_and_save(graph, "s", "x", "reliability")
    return graph


# ---- 1 and 2: limits and schedules ----------------------------------------------------------------------
def test_limits_are_enforced_before_anything_is_allocated(comfy, comfy_server, tiny_models):
    # custom scales had no maximum: 10000x10000 passed and the kernel killed the server at 24 GB
    _, message = refusal(comfy, start_only(1, "1x1,10000x10000"))
    assert "larger than the 128x128 grid the position table covers (2048 px)" in message

    # a linked N went around the widget's limit (N = 10000 ran for 8 minutes)
    graph = g.sampler_graph(next(seeds))
    graph["N"] = {"class_type": "PrimitiveInt", "inputs": {"value": 10000}}
    graph["s"]["inputs"]["n"] = ["N", 0]
    when, message = refusal(comfy, graph)
    assert when == "run" and "use N <= 32 with this schedule" in message

    # the widget's own N is checked against the preset before the run
    when, message = refusal(comfy, g.sampler_graph(next(seeds), n=33))
    assert when == "validation" and "use N <= 32 with this schedule" in message

    # what the limits allow can still be far too big: the memory estimate refuses it, in seconds
    started = time.monotonic()
    when, message = refusal(comfy, start_only(256, WIDEST))
    assert when == "run" and time.monotonic() - started < 60
    assert "this search needs about" in message and "is available: use fewer candidates" in message
    serves(comfy, comfy_server)


def test_schedules_the_model_cannot_run_are_refused(comfy, comfy_server, tiny_models):
    cases = [(SIXTEEN, "the schedule has 16 scales but the model has scale embeddings for 15: use at most 15"),
             ("2x2,4x4", "the first scale is 2x2, but it must be 1x1")]
    for scales, says in cases:
        _, message = refusal(comfy, start_only(1, scales))
        assert says in message, scales
        _, message = refusal(comfy, g.sampler_graph(next(seeds), scales=scales, preset="Plain sampling"))
        assert says in message, scales
    serves(comfy, comfy_server)


# ---- 3: files that change --------------------------------------------------------------------------------
def test_a_loaded_model_survives_its_file_changing(comfy, comfy_server, tiny_models):
    """A download manager or a second copy overwrites or truncates a model file the server has loaded: the
    server keeps running on what it loaded (ComfyUI's cached loader output; before, its weights were still
    mapped from the file and the next use killed the server with SIGBUS), and a new load names the file."""
    name = f"changing_{uuid.uuid4().hex[:8]}.safetensors"
    path = comfy_server.models_dir / "infinity" / name
    shutil.copyfile(tiny_models["infinity_safetensors"], path)
    try:
        assert comfy.run_prompt(_one_image(name)).succeeded
        with open(path, "r+b") as f:
            f.truncate(100)
        run = comfy.run_prompt(_one_image(name))
        assert run.succeeded, run.error
        path.write_bytes(b"\0" * 4096)
        run = comfy.run_prompt(_one_image(name))
        assert run.succeeded, run.error
        graph = _one_image(name)
        graph["m"]["inputs"]["dtype"] = "auto"  # new loader inputs: the file is read again
        _, message = refusal(comfy, graph)
        assert name in message and "cannot read" in message and "download it again" in message
    finally:
        path.unlink()
    serves(comfy, comfy_server)


def _one_image(model):
    graph = g.base(model=model)
    graph["a"] = g.start(next(seeds), candidates=1, scales=g.TINY_5)
    graph["s"] = g.step("a", -1)
    g.decode_and_save(graph, "s", "x", "reliability")
    return graph


# ---- 4: links ----------------------------------------------------------------------------------------------
def test_linked_models_load_and_names_outside_are_refused(comfy, comfy_server, tiny_models, tmp_path):
    shared = tmp_path / "shared_downloads"
    shared.mkdir()
    shutil.copyfile(tiny_models["infinity_safetensors"], shared / "infinity.safetensors")
    link = comfy_server.models_dir / "infinity" / f"linked_{uuid.uuid4().hex[:8]}.safetensors"
    link.symlink_to(shared / "infinity.safetensors")
    shards = comfy_server.models_dir / "infinity" / f"outside_shards_{uuid.uuid4().hex[:8]}"
    shutil.copytree(tiny_models["infinity_patchify_shards"], shards)
    index = shards / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"] = {key: f"../../../{shard}" for key, shard in data["weight_map"].items()}
    index.write_text(json.dumps(data))
    try:
        options = comfy.object_info("TTSVAR_ModelLoader")["input"]["required"]["model"][1]["options"]
        assert link.name in options and shards.name in options
        run = comfy.run_prompt(_one_image(link.name))
        assert run.succeeded, run.error

        when, message = refusal(comfy, _one_image(f"../{link.parent.parent.name}/infinity/{link.name}"))
        assert when == "validation" and "is not a name inside models/infinity" in message

        graph = _one_image(shards.name)
        graph["m"]["inputs"]["vae"] = "tiny_vae_patchify.safetensors"
        when, message = refusal(comfy, graph)
        assert when == "run" and "lies outside that folder" in message
        assert "may only name files in its own folder" in message
    finally:
        link.unlink()
        shutil.rmtree(shards)
    serves(comfy, comfy_server)


def test_the_command_line_follows_links_and_refuses_shards_outside(tiny_models, tmp_path):
    (tmp_path / "model.safetensors").symlink_to(tiny_models["infinity_safetensors"])
    shards = tmp_path / "shards"
    shutil.copytree(tiny_models["infinity_patchify_shards"], shards)
    index = shards / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"] = {key: f"/elsewhere/{shard}" for key, shard in data["weight_map"].items()}
    index.write_text(json.dumps(data))

    def generate(model, vae, out):
        return subprocess.run(
            [sys.executable, "-m", "ttsvar_core", "generate", "--model", str(model), "--vae", str(vae),
             "--text-encoder", str(tiny_models["t5"]), "--prompt", "a red circle", "--strategy", "raw",
             "--schedule", "1x1,2x2,3x3", "--out", str(out), "--device", "cpu"],
            cwd=REPO, capture_output=True, text=True, timeout=300,
            env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})

    done = generate(tmp_path / "model.safetensors", tiny_models["vae_safetensors"], tmp_path / "linked")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "linked" / "prompt0_chosen.png").exists()
    done = generate(shards, tiny_models["vae_patchify_safetensors"], tmp_path / "outside")
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(errors) == 1 and "lies outside that folder" in errors[0]


# ---- 6: cancel -----------------------------------------------------------------------------------------------
def test_cancel_stops_a_step_nodes_grid_decode(comfy, comfy_server, tiny_models):
    """Cancel pressed as the last scale is generated lands inside the node's grid building (between decode
    chunks or thumbnails): before, the whole grid was decoded, written and sent first."""
    graph = g.base()
    graph["a"] = g.start(next(seeds), candidates=24, scales="1x1,2x2,8x8")
    graph["s"] = g.step("a", -1)
    g.decode_and_save(graph, "s", "x", "reliability")

    def cancel_at_the_last_scale(message, run):
        if message.type == g.SCALE_EVENT and message.data["scale"] == 2:
            comfy.interrupt(run.prompt_id)

    run = comfy.run_prompt(graph, on_message=cancel_at_the_last_scale, timeout=120)
    assert run.interrupted and run.error is None
    assert not g.grids(run), "the grid was decoded and sent after Cancel"
    comfy.wait_until_idle()
    serves(comfy, comfy_server)


# ---- 7 (and 5 on the server): messages ---------------------------------------------------------------
def test_messages_say_what_to_change(comfy, comfy_server, tiny_models, tmp_path):
    infinity = comfy_server.models_dir / "infinity"
    rewards = comfy_server.models_dir / "ttsvar_rewards"
    tag = uuid.uuid4().hex[:8]
    incomplete = infinity / f"incomplete_{tag}.safetensors"
    state = load_file(tiny_models["infinity_safetensors"])
    save_file({k: v for k, v in state.items() if not k.startswith("head")}, incomplete)
    code = rewards / f"code_{tag}.pt"
    torch.save({"weights": torch.zeros(2), "hook": Fraction(1, 2)}, code)  # a class: code, for weights_only
    t5 = comfy_server.models_dir / "text_encoders" / f"bad_bin_t5_{tag}"
    shutil.copytree(tiny_models["t5"], t5)
    (t5 / "model.safetensors").unlink()
    (t5 / "pytorch_model.bin").write_bytes(b"\x80\x02garbage, not a pickle of tensors")
    try:
        _, message = refusal(comfy, _one_image(incomplete.name))
        assert "incomplete" in message and "not an Infinity transformer" not in message

        graph = g.sampler_graph(next(seeds))
        graph["r"]["inputs"].update(kind="imagereward", file=code.name)
        _, message = refusal(comfy, graph)
        assert code.name in message and "cannot be loaded safely" in message

        graph = _one_image("tiny_infinity.safetensors")
        graph["m"]["inputs"]["text_encoder"] = t5.name
        _, message = refusal(comfy, graph)
        assert "pytorch_model.bin" in message and "cannot be read" in message

        for prompt, says in (("a \ud800 cat", "holds an invalid character at position 2"),
                             ("   ", "the prompt is empty: type what the image should show")):
            _, message = refusal(comfy, start_only(1, g.TINY_5, prompt=prompt))
            assert says in message, prompt
    finally:
        incomplete.unlink()
        code.unlink()
        shutil.rmtree(t5)
    serves(comfy, comfy_server)
