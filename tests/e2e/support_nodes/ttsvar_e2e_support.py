"""Test-only ComfyUI nodes that exercise what the harness follows.

Loaded only by the e2e harness (tests/e2e/conftest.py adds this folder to
ComfyUI's custom_nodes search path); never part of the pack. They emit the
traffic real TTS-VAR nodes will: progress with binary previews, a custom event,
interrupt checks, and an exception.
"""

import time

import comfy.model_management
import comfy.utils
from PIL import Image
from server import PromptServer

STEP_EVENT = "ttsvar.e2e.step"


class TTSVARTestSteps:
    """Counts steps, each with a progress update, a PNG preview and a custom event."""

    CATEGORY = "TTS-VAR/e2e"
    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text": ("STRING", {"default": ""}),
                "steps": ("INT", {"default": 4, "min": 1, "max": 1000}),
                "delay": ("FLOAT", {"default": 0.05, "min": 0.0, "max": 10.0}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def run(self, text, steps, delay, unique_id):
        progress = comfy.utils.ProgressBar(steps)
        for step in range(1, steps + 1):
            comfy.model_management.throw_exception_if_processing_interrupted()
            time.sleep(delay)
            shade = int(255 * step / steps)
            preview = Image.new("RGB", (64, 48), (shade, 64, 255 - shade))
            progress.update_absolute(step, steps, ("PNG", preview, None))
            PromptServer.instance.send_sync(
                STEP_EVENT, {"node": unique_id, "step": step, "total": steps},
                PromptServer.instance.client_id,
            )
        return {"ui": {"text": [text]}, "result": (text,)}


class TTSVARTestFail:
    """Raises, so tests can check how node exceptions are reported."""

    CATEGORY = "TTS-VAR/e2e"
    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"message": ("STRING", {"default": "boom"})}}

    def run(self, message):
        raise RuntimeError(f"e2e failure: {message}")


NODE_CLASS_MAPPINGS = {
    "TTSVARTest_Steps": TTSVARTestSteps,
    "TTSVARTest_Fail": TTSVARTestFail,
}
