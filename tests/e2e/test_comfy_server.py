"""The pack inside a real ComfyUI: loading, node definitions, and prompts over HTTP + websocket."""

import re

import pytest

PACK = "comfyui-ttsvar"


def test_pack_imports_without_errors(comfy_server, comfy):
    # The server listens only after every node module was imported, so the log is complete.
    log = comfy_server.log_text()
    failures = [line for line in log.splitlines()
                if PACK in line and re.search(r"Cannot import|IMPORT FAILED|Skip ", line)]
    assert not failures, "\n".join(failures) + "\n--- server log tail ---\n" + log[-4000:]
    assert "TTSVAR_Sampler" in comfy.object_info()


def test_model_folders_registered(comfy, comfy_server):
    folders = comfy.get_json("/models")
    for name in ("infinity", "infinity_vae", "text_encoders", "ttsvar_rewards", "ttsvar_features"):
        assert name in folders
    # A file in the session's extra folder is listed; files of other types are not.
    model = comfy_server.models_dir / "infinity" / "listing_check.safetensors"
    readme = comfy_server.models_dir / "infinity" / "readme.txt"
    model.write_bytes(b"\0")
    readme.write_text("not a model")
    try:
        listed = comfy.get_json("/models/infinity")
        assert "listing_check.safetensors" in listed
        assert "readme.txt" not in listed
    finally:
        model.unlink()
        readme.unlink()


def test_web_extension_served(comfy):
    scripts = comfy.get_json("/extensions")
    assert f"/extensions/{PACK}/ttsvar.js" in scripts
    response = comfy.get(f"/extensions/{PACK}/ttsvar.js")
    assert response.status_code == 200
    assert "ttsvar.core" in response.text


def test_invalid_prompt_rejected(comfy):
    with pytest.raises(comfy.PromptRejected) as rejected:
        comfy.queue_prompt({"1": {"class_type": "TTSVAR_PickBest", "inputs": {}}})
    assert rejected.value.status == 400
    assert rejected.value.body["error"]["type"] == "prompt_outputs_failed_validation"
    assert "1" in rejected.value.body["node_errors"]

    with pytest.raises(comfy.PromptRejected) as unknown:
        comfy.queue_prompt({"1": {"class_type": "TTSVAR_NoSuchNode", "inputs": {}}})
    assert unknown.value.body["error"]["type"] == "invalid_prompt"
