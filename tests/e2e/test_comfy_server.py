"""The pack inside a real ComfyUI: loading, node definitions, and prompts over HTTP + websocket."""

import re
import uuid

import pytest

PACK = "comfyui-ttsvar"


def unique(text):
    """Inputs never seen before, so ComfyUI's cache cannot skip the node."""
    return f"{text} {uuid.uuid4().hex}"


def test_pack_imports_without_errors(comfy_server, comfy):
    # The server listens only after every node module was imported, so the log is complete.
    log = comfy_server.log_text()
    failures = [line for line in log.splitlines()
                if PACK in line and re.search(r"Cannot import|IMPORT FAILED|Skip ", line)]
    assert not failures, "\n".join(failures) + "\n--- server log tail ---\n" + log[-4000:]
    assert "TTSVAR_Ping" in comfy.object_info()


def test_object_info_lists_ping_node(comfy):
    ping = comfy.object_info("TTSVAR_Ping")
    assert ping["category"] == "TTS-VAR"
    assert ping["display_name"] == "TTS-VAR Ping"
    assert ping["input"]["required"]["text"][0] == "STRING"
    assert ping["output"] == ["STRING"]
    assert ping["output_name"] == ["text"]
    assert ping["output_node"] is True
    assert ping["python_module"] == f"custom_nodes.{PACK}"


def test_model_folders_registered(comfy, comfy_server):
    folders = comfy.get_json("/models")
    for name in ("infinity", "infinity_vae", "text_encoders", "ttsvar_rewards", "ttsvar_features"):
        assert name in folders
    # A file in the session's extra folder is listed; files of other types are not.
    (comfy_server.models_dir / "infinity" / "tiny.safetensors").write_bytes(b"\0")
    (comfy_server.models_dir / "infinity" / "readme.txt").write_text("not a model")
    assert comfy.get_json("/models/infinity") == ["tiny.safetensors"]


def test_web_extension_served(comfy):
    scripts = comfy.get_json("/extensions")
    assert f"/extensions/{PACK}/ttsvar.js" in scripts
    response = comfy.get(f"/extensions/{PACK}/ttsvar.js")
    assert response.status_code == 200
    assert "ttsvar.core" in response.text


def test_ping_prompt_runs(comfy):
    text = unique("ping")
    run = comfy.run_prompt({"1": {"class_type": "TTSVAR_Ping", "inputs": {"text": text}}})
    assert run.succeeded, run.error
    assert run.executing_nodes == ["1"]
    assert run.executed_output("1") == {"text": [text]}
    assert run.outputs["1"]["text"] == [text]


def test_ping_linked_to_core_node(comfy):
    text = unique("from a core node")
    graph = {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": text}},
        "2": {"class_type": "TTSVAR_Ping", "inputs": {"text": ["1", 0]}},
    }
    run = comfy.run_prompt(graph)
    assert run.succeeded, run.error
    assert run.executing_nodes == ["1", "2"]
    assert run.executed_output("2") == {"text": [text]}


def test_invalid_prompt_rejected(comfy):
    with pytest.raises(comfy.PromptRejected) as rejected:
        comfy.queue_prompt({"1": {"class_type": "TTSVAR_Ping", "inputs": {}}})
    assert rejected.value.status == 400
    assert rejected.value.body["error"]["type"] == "prompt_outputs_failed_validation"
    assert "1" in rejected.value.body["node_errors"]

    with pytest.raises(comfy.PromptRejected) as unknown:
        comfy.queue_prompt({"1": {"class_type": "TTSVAR_NoSuchNode", "inputs": {}}})
    assert unknown.value.body["error"]["type"] == "invalid_prompt"
