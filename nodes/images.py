"""Nodes between ComfyUI's images and the search: start candidates from an image, score any images.

ComfyUI's IMAGE is a float batch [B, H, W, 3] in 0..1; the engine and the rewards take uint8 images, so both
nodes convert with types.from_image (exact for images the pack made) and check the batch first.
"""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..ttsvar_core.engine.text_inputs import parse_scales
from ..ttsvar_core.model.sampling import encode_images
from ..ttsvar_core.model.schedules import snap_aspect_ratio
from . import comfy_glue as glue
from . import previews
from .candidates import candidates_output, start_state
from .options import (ASPECT_RATIOS, CATEGORY, SELECTION_SIDE, custom_scales_input, image_schedule, num_scales,
                      pixel_budget_input, sampling, sampling_inputs)
from .types import CONDITIONING, IMAGE, MODEL, REWARD, Candidates, from_image

# Infinity's template keys (height / width) -> the width:height labels the Start node shows.
TEMPLATE_LABELS = {key: label for label, key in ASPECT_RATIOS.items()}


def rgb_images(images: torch.Tensor, what: str) -> torch.Tensor:
    """A ComfyUI IMAGE batch as uint8 [B, H, W, 3]; refuses anything else, saying what arrived."""
    if images.ndim != 4 or images.shape[0] == 0 or images.shape[-1] != 3:
        shape = "x".join(map(str, images.shape))
        hint = (" (it has an alpha channel: take the image before Join Image with Alpha)"
                if images.ndim == 4 and images.shape[-1] == 4 else "")
        raise ValueError(f"{what} needs RGB images (a batch shaped [B, H, W, 3]) but got one shaped {shape}{hint}")
    return from_image(images)


def image_scale_problem(to_scale: int, scales: int) -> str | None:
    if 0 <= to_scale < scales:
        return None
    return (f"to_scale {to_scale} is beyond the schedule: it has scales 0 to {scales - 1}; choose one of those "
            f"({scales - 1} takes every scale from the image)")


class TTSVARStartFromImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TTSVAR_StartFromImage", display_name="TTS-VAR Start from Image", category=CATEGORY,
            description="Starts N candidates from an image's composition: the model's own VAE encodes the image "
                        "into Infinity's scales, scales 0 to to_scale are taken from it, and Step nodes draw the "
                        "rest from the prompt. An early to_scale keeps the layout and colours, a late one the "
                        "details; the last scale gives back the image as the VAE sees it. The image is resized "
                        "to the nearest of Infinity's aspect-ratio templates at the pixel budget (or to "
                        "custom_scales). One image: a batch is refused.",
            inputs=[
                MODEL.Input("model", tooltip="the loaded Infinity model; its VAE encodes the image"),
                CONDITIONING.Input("conditioning", tooltip="the prompt, encoded by TTS-VAR Text Encode"),
                IMAGE.Input("image", tooltip="one image (a batch of one), any size and aspect ratio"),
                pixel_budget_input(),
                io.Int.Input("to_scale", default=3, min=0, max=63,
                             tooltip="the last scale taken from the image (0 is the 1x1 scale): early keeps the "
                                     "layout, late the details"),
                *sampling_inputs(),
                io.Int.Input("candidates", default=4, min=1, max=256, tooltip="N: how many candidates start"),
                custom_scales_input(),
            ],
            outputs=[candidates_output()],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, pixel_budget, to_scale, custom_scales=""):
        # ComfyUI lists a message under every input named here, and leaves the named inputs' own checks (the
        # budget's options, to_scale's minimum) to this function: num_scales and the range check do them.
        if pixel_budget is None or to_scale is None or custom_scales is None:
            return True  # a linked value is known only at run time; execute checks it then
        try:
            scales = num_scales(pixel_budget, parse_scales(custom_scales))
        except ValueError as e:
            return str(e)
        return image_scale_problem(to_scale, scales) or True

    @classmethod
    def execute(cls, model, conditioning, image, pixel_budget, to_scale, seed, cfg, tau, top_k, top_p, candidates,
                custom_scales=""):
        picture = rgb_images(image, "Start from Image")
        if picture.shape[0] != 1:
            raise ValueError(f"Start from Image starts from one image but got a batch of {picture.shape[0]}: pick "
                             "one with an Image From Batch node (batch_index), or use one Start from Image per image")
        height, width = picture.shape[1:3]
        template = TEMPLATE_LABELS[snap_aspect_ratio(height / width)]
        scales = image_schedule(model, template, pixel_budget, parse_scales(custom_scales))
        problem = image_scale_problem(to_scale, len(scales))
        if problem:
            raise ValueError(problem)
        glue.ready(model)
        # room for the forced scales only: each Step node allocates room for the scales it generates
        state = start_state(model, conditioning, scales, sampling(cfg, tau, top_k, top_p), candidates, seed,
                            capacity_scales=to_scale + 1)
        state = state.forced(encode_images(model.vae, picture, state.geometry)[:to_scale + 1])
        size = f"{scales[-1][1] * model.pixels_per_token}x{scales[-1][0] * model.pixels_per_token}"
        note = f"{width}x{height} image as {template} at {size}: scales 0 to {to_scale} from it"
        grid = previews.image_grid(state, model.vae, conditioning.texts, note, SELECTION_SIDE, glue.save_thumbnail,
                                   should_stop=glue.check_interrupt)
        return io.NodeOutput(Candidates(state, model, conditioning.texts),
                             ui=glue.send_candidates(cls.hidden.unique_id, grid))


class TTSVARScoreImages(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TTSVAR_ScoreImages", display_name="TTS-VAR Score Images", category=CATEGORY,
            description="Scores any images against a prompt with a loaded reward model (the one the search uses), "
                        "shows them with their scores, and sorts them best first.",
            inputs=[
                IMAGE.Input("images", tooltip="the images to score: any IMAGE batch"),
                REWARD.Input("reward", tooltip="a reward model (TTS-VAR Load Reward Model)"),
                io.String.Input("prompt", multiline=True, default="", dynamic_prompts=False,
                                tooltip="the text the images are scored against"),
            ],
            outputs=[
                io.Float.Output(display_name="scores", is_output_list=True,
                                tooltip="one score per input image, in input order"),
                IMAGE.Output(display_name="sorted", tooltip="the images, best score first"),
            ],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, reward, prompt):
        if not prompt.strip():
            raise ValueError("Score Images needs the prompt the images should match: type it in the prompt box")
        pictures = rgb_images(images, "Score Images")
        glue.check_interrupt()
        with glue.scorer_on_device(reward):
            scores = reward.score(pictures, prompt).float().reshape(-1)
        order = torch.sort(torch.where(torch.isnan(scores), -torch.inf, scores), descending=True, stable=True).indices
        grid = previews.score_grid(pictures, prompt, scores, glue.save_thumbnail)
        return io.NodeOutput(scores.tolist(), images[order],
                             ui=glue.send_candidates(cls.hidden.unique_id, grid))
