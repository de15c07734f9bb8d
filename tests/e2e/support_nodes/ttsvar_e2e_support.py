"""Test-only ComfyUI nodes that exercise what the harness follows.

Loaded only by the e2e harness (tests/e2e/conftest.py adds this folder to
ComfyUI's custom_nodes search path); never part of the pack. They emit the
traffic real TTS-VAR nodes will: progress with binary previews, a custom event,
interrupt checks, and an exception. The TTSVARTest_State* nodes call the engine
directly on the pack's candidates, so tests can compare a node's result with the
engine's own operation on the same state, bit for bit.
"""

import dataclasses
import hashlib
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


class TTSVARTestStateDigest:
    """Shows a candidate state in its ui: per candidate, a digest of its bits at every scale, its origin and
    its prompt."""

    CATEGORY = "TTS-VAR/e2e"
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"candidates": ("TTSVAR_STATE",)}}

    def run(self, candidates):
        state = candidates.state
        bits = [[hashlib.sha256(scale[i].cpu().contiguous().numpy().tobytes()).hexdigest()[:20]
                 for scale in state.bits] for i in range(state.num_candidates)]
        return {"ui": {"ttsvar_state": [{"scale": state.scale, "bits": bits, "origin": state.origin.tolist(),
                                         "prompt_of": state.prompt_of.tolist()}]}}


class TTSVARTestStateSelect:
    """The engine's SearchState.select with the given indices ("0,3,5,5")."""

    CATEGORY = "TTS-VAR/e2e"
    RETURN_TYPES = ("TTSVAR_STATE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"candidates": ("TTSVAR_STATE",), "indices": ("STRING", {"default": "0"})}}

    def run(self, candidates, indices):
        chosen = candidates.state.select([int(i) for i in indices.split(",")])
        return (dataclasses.replace(candidates, state=chosen),)


class TTSVARTestStateForce:
    """The engine's SearchState.forced: candidates take scales 0..to_scale of candidate `index` of `source`."""

    CATEGORY = "TTS-VAR/e2e"
    RETURN_TYPES = ("TTSVAR_STATE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"candidates": ("TTSVAR_STATE",), "source": ("TTSVAR_STATE",),
                             "index": ("INT", {"default": 0, "min": 0}),
                             "to_scale": ("INT", {"default": 0, "min": 0})}}

    def run(self, candidates, source, index, to_scale):
        prefix = [scale[index:index + 1] for scale in source.state.bits[:to_scale + 1]]
        return (dataclasses.replace(candidates, state=candidates.state.forced(prefix)),)


class TTSVARTestFloats:
    """Shows a FLOAT list output (one that ComfyUI hands over as a list) in its ui."""

    CATEGORY = "TTS-VAR/e2e"
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    INPUT_IS_LIST = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"values": ("FLOAT", {"forceInput": True})}}

    def run(self, values):
        return {"ui": {"values": [float(v) for v in values]}}


class TTSVARTestTextFeatures:
    """Shows the T5 rows of encoded prompts (the Text Encode node's output) in its ui: the features and
    their lengths per prompt."""

    CATEGORY = "TTS-VAR/e2e"
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("TTSVAR_CONDITIONING",)}}

    def run(self, conditioning):
        return {"ui": {"ttsvar_text": [{"features": conditioning.features.float().cpu().tolist(),
                                        "lens": list(conditioning.lens)}]}}


NODE_CLASS_MAPPINGS = {
    "TTSVARTest_Steps": TTSVARTestSteps,
    "TTSVARTest_Fail": TTSVARTestFail,
    "TTSVARTest_StateDigest": TTSVARTestStateDigest,
    "TTSVARTest_StateSelect": TTSVARTestStateSelect,
    "TTSVARTest_StateForce": TTSVARTestStateForce,
    "TTSVARTest_Floats": TTSVARTestFloats,
    "TTSVARTest_TextFeatures": TTSVARTestTextFeatures,
}
