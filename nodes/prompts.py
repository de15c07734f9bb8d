"""The text encoding node: a prompt (and an optional negative prompt) through the model's T5 encoder.

An empty prompt is not refused here: the search that uses the conditioning checks its prompts
(SearchRequest.check_inputs) and says what to type.
"""
from __future__ import annotations

from comfy_api.latest import io

from . import comfy_glue as glue
from .options import CATEGORY
from .types import CONDITIONING, MODEL


class TTSVARTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TTSVAR_TextEncode", display_name="TTS-VAR Text Encode", category=CATEGORY,
            description="Encodes the prompt (and an optional negative prompt) with the model's T5 text encoder.",
            inputs=[
                MODEL.Input("model", tooltip="the loaded Infinity model; its T5 encoder does the work"),
                io.String.Input("prompt", multiline=True, default="", dynamic_prompts=False,
                                tooltip="what the image should show"),
                io.String.Input("negative_prompt", multiline=True, default="", dynamic_prompts=False,
                                tooltip="optional: what the image should not show; empty uses the model's learned "
                                        "unconditional text for guidance"),
            ],
            outputs=[CONDITIONING.Output(display_name="conditioning", tooltip="the encoded prompt")],
        )

    @classmethod
    def execute(cls, model, prompt, negative_prompt):
        with glue.text_encoder_on_device(model):
            prompts = model.encode([prompt], negative_prompt.strip() or None)
        # the compute device, not the transformer's: ComfyUI may have moved the transformer off it for now
        return io.NodeOutput(prompts.to(glue.compute_device()))
