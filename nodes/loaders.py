"""Loader nodes: the Infinity model (transformer, VAE, T5), reward models and feature extractors.

Before the run, ComfyUI checks each combo against its list (a file that is gone is refused on its own
input); validate_inputs adds what the lists cannot know: the message naming the folders searched, and
which VAE belongs to which transformer.
"""
from __future__ import annotations

import os
import re

from comfy_api.latest import io

from ..ttsvar_core.model.config import PAIRING_HINT, RELEASES
from ..ttsvar_core.model.pipeline import InfinityPipeline
from ..ttsvar_core.scorers import feature_extractor_kinds, load_feature_extractor, load_reward, reward_kinds
from . import comfy_glue as glue
from .options import CATEGORY, DTYPE_CHOICES
from .types import FEATURES, MODEL, REWARD, Choice

NO_FILE = "none"
# How the transformer blocks' (and T5's) matmul weights are kept, as the widget names them -> the core's
# weight_storage and text_storage (fp8_e4m3fn is ComfyUI's own name for that format in its model loaders).
WEIGHT_STORAGE = {"auto": None, "bf16": "bf16", "fp16": "fp16", "fp8_e4m3fn": "fp8"}
# Where the transformer blocks wait between uses -> InfinityPipeline.load's stream.
OFFLOAD = {"none": False, "stream blocks from CPU memory": True}
# weight_storage, offload and text_encoder_storage are optional inputs: prompts and workflows saved before
# they existed still run.

# Released file names (lower case, split at non-alphanumerics) -> which model they belong to.
_MODEL_FAMILY = {word: family for family, r in RELEASES.items() for word in r["model_words"]}
_VAE_FAMILY = {word: family for family, r in RELEASES.items() for word in r["vae_words"]}


def _family(name: str, table: dict) -> str | None:
    words = set(re.split(r"[^a-z0-9]+", name.lower()))
    found = {family for word, family in table.items() if word in words}
    return found.pop() if len(found) == 1 else None


def pairing_problem(model: str, vae: str) -> str | None:
    """Checks the released file names before anything is loaded (the loader checks the weights too)."""
    model_family, vae_family = _family(model, _MODEL_FAMILY), _family(vae, _VAE_FAMILY)
    if model_family and vae_family and model_family != vae_family:
        return (f"the VAE {vae} belongs to {vae_family} but the model {model} is {model_family}: "
                f"choose the matching VAE ({PAIRING_HINT})")
    return None


def dtype_input(weights: str) -> Choice:
    return Choice("dtype", options=DTYPE_CHOICES, default="auto",
                  tooltip=f"number format of the {weights}: auto is bf16 on GPUs that support it (the released "
                          "models' format), fp16 on other GPUs and fp32 on a CPU; fp32 is the most exact and needs "
                          "twice the memory of bf16 or fp16")


class TTSVARModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TTSVAR_ModelLoader", display_name="TTS-VAR Load Infinity Model", category=CATEGORY,
            description="Loads an Infinity text-to-image model: the transformer, its VAE and the flan-t5-xl text "
                        "encoder. The transformer and VAE must belong together.",
            inputs=[
                Choice("model", options=glue.list_models("infinity"),
                       tooltip="models/infinity: infinity_2b_reg.pth, or the infinity_8b_weights shard folder; "
                               "shapesworld/... is the small model that ships with the pack"),
                Choice("vae", options=glue.list_models("infinity_vae"),
                       tooltip="models/infinity_vae: infinity_vae_d32reg.pth (2B) or "
                               "infinity_vae_d56_f8_14_patchify.pth (8B); the shipped small model has its own"),
                Choice("text_encoder", options=glue.list_text_encoders(),
                       tooltip="models/text_encoders: the flan-t5-xl folder (config.json, tokenizer, weights), or "
                               "its encoder alone as one .safetensors file made by `python -m ttsvar_core "
                               "convert-t5` (read with the T5 tokenizer ComfyUI ships); shapesworld/t5 for the "
                               "shipped small model"),
                Choice("dtype", options=DTYPE_CHOICES, default="auto",
                       tooltip="number format the transformer blocks compute in: auto is bf16 on GPUs that support "
                               "it (the released models' format), fp16 on other GPUs and fp32 on a CPU; fp32 is the "
                               "most exact and needs twice the memory of bf16 or fp16"),
                Choice("weight_storage", options=list(WEIGHT_STORAGE), default="auto", optional=True,
                       tooltip="how the transformer blocks' weights (98% of the model) are kept in memory, "
                               "each layer's weights widened to dtype just before it computes: auto keeps them in "
                               "dtype; fp8_e4m3fn halves bf16's memory (Infinity-2B's blocks take 2.1 GB instead of "
                               "4.3, 8B's 8.2 instead of 16.4; images change, and on the small ShapesWorld model "
                               "TTS-VAR got fewer prompts right: see the help page); bf16 or fp16 halve fp32's, "
                               "so they go with dtype fp32 (beside the other 16-bit dtype they save nothing and are "
                               "refused)"),
                Choice("offload", options=list(OFFLOAD), default="none", optional=True,
                       tooltip="none: the whole transformer stays on the GPU. stream blocks from CPU memory: the "
                               "blocks wait in CPU memory and are copied to the GPU one at a time as they run, so "
                               "the GPU holds one block instead of all (4.3 GB less for Infinity-2B in bf16, 16.4 "
                               "GB less for 8B, half that with fp8_e4m3fn) at the cost of copying every block at "
                               "every scale (slower). No effect on a CPU"),
                Choice("text_encoder_storage", options=list(WEIGHT_STORAGE), default="auto", optional=True,
                       tooltip="how the T5 text encoder's weights are kept; it runs once per prompt and waits in "
                               "CPU memory otherwise. auto: fp16 on a GPU, fp32 on a CPU; bf16 or fp16: T5 "
                               "computes in that format on a GPU, and on a CPU is kept in it and widened to fp32 "
                               "layer by layer; fp8_e4m3fn: kept in fp8 and widened layer by layer (flan-t5-xl's "
                               "encoder takes about 1.3 GB instead of 2.9 in fp16; the prompt's features change "
                               "a little)"),
            ],
            outputs=[MODEL.Output(display_name="model", tooltip="transformer, VAE and text encoder")],
        )

    @classmethod
    def validate_inputs(cls, model, vae):
        # ComfyUI lists a returned message once per input named here: only the two the pairing needs.
        # A linked input arrives as None: it is known only at run time, when execute checks it.
        problems = [glue.missing_model_message("infinity", model, "the Infinity model"),
                    glue.missing_model_message("infinity_vae", vae, "the VAE"),
                    pairing_problem(model, vae) if model and vae else None]
        problems = [p for p in problems if p]
        return "; ".join(problems) if problems else True

    @classmethod
    def execute(cls, model, vae, text_encoder, dtype, weight_storage="auto", offload="none",
                text_encoder_storage="auto"):
        device = glue.compute_device()
        paths = (glue.resolve_model("infinity", model, "the Infinity model"),
                 glue.resolve_model("infinity_vae", vae, "the VAE"),
                 glue.resolve_model("text_encoders", text_encoder, "the text encoder"))
        # a single file holds no tokenizer: it is read with the one ComfyUI ships
        tokenizer = glue.t5_tokenizer_folder(text_encoder) if os.path.isfile(paths[2]) else None
        stream = OFFLOAD[offload]
        # streamed blocks stay in CPU memory: only the VAE (and the transformer's small rest) needs GPU room
        glue.make_room(glue.disk_bytes(*paths[1:2] if stream else paths[:2]), device)
        pipeline = InfinityPipeline.load(*paths, text_tokenizer=tokenizer, device=device,
                                         dtype=glue.auto_dtype(dtype, device),
                                         weight_storage=WEIGHT_STORAGE[weight_storage], stream=stream,
                                         text_storage=WEIGHT_STORAGE[text_encoder_storage])
        pipeline.text_encoder.to(glue.offload_device())  # T5 visits the GPU only while encoding
        return io.NodeOutput(glue.manage(pipeline, streamed=stream))


class TTSVARRewardLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TTSVAR_RewardLoader", display_name="TTS-VAR Load Reward Model", category=CATEGORY,
            description="Loads a reward model that scores candidates against the prompt (ImageReward, HPS v2, "
                        "CLIP score, aesthetic). It waits on the CPU and visits the GPU only while scoring.",
            inputs=[
                Choice("kind", options=reward_kinds(), default="imagereward",
                       tooltip="which reward model the file is: imagereward (ImageReward.pt, TTS-VAR's default), "
                               "hps (HPS v2.1), clip (a CLIP folder: how well image and prompt match, e.g. the "
                               "shipped small model's), aesthetic (how good it looks, ignoring the prompt; needs "
                               "siglip_folder)"),
                Choice("file", options=glue.list_models("ttsvar_rewards"),
                       tooltip="models/ttsvar_rewards: ImageReward.pt, HPS_v2.1_compressed.pt, a CLIP folder, or "
                               "aesthetic_predictor_v2_5.pth"),
                dtype_input("reward model's weights"),
                Choice("siglip_folder", options=[NO_FILE] + glue.list_models("ttsvar_rewards", files=False),
                       default=NO_FILE, optional=True, tooltip="aesthetic only: the siglip-so400m-patch14-384 folder"),
            ],
            outputs=[REWARD.Output(display_name="reward", tooltip="scores candidates against their prompt")],
        )

    @classmethod
    def validate_inputs(cls, file):
        return glue.missing_model_message("ttsvar_rewards", file, "the reward model") or True

    @classmethod
    def execute(cls, kind, file, dtype, siglip_folder=NO_FILE):
        extra = {}
        if kind == "aesthetic":
            if siglip_folder == NO_FILE:
                raise ValueError("the aesthetic reward needs a SigLIP folder: put siglip-so400m-patch14-384 into "
                                 "models/ttsvar_rewards and choose it in siglip_folder")
            extra["siglip_path"] = glue.resolve_model("ttsvar_rewards", siglip_folder, "the SigLIP folder")
        path = glue.resolve_model("ttsvar_rewards", file, "the reward model")
        dtype = glue.auto_dtype(dtype, glue.compute_device())
        return io.NodeOutput(load_reward(kind, path, device=glue.offload_device(), dtype=dtype, **extra))


class TTSVARFeatureLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TTSVAR_FeatureLoader", display_name="TTS-VAR Load Feature Extractor", category=CATEGORY,
            description="Loads the image feature extractor used to cluster candidates (DINOv2 with registers, "
                        "or InceptionV3). It waits on the CPU and visits the GPU only while extracting.",
            inputs=[
                Choice("kind", options=feature_extractor_kinds(), default="dinov2",
                       tooltip="which feature extractor the file is: dinov2 (DINOv2 with registers, TTS-VAR's "
                               "default), inception (InceptionV3), clip-vision (the image tower of a CLIP folder, "
                               "e.g. the shipped small model's)"),
                Choice("file", options=glue.list_models("ttsvar_features"),
                       tooltip="models/ttsvar_features: dinov2_vitl14_reg4_pretrain.pth, a "
                               "dinov2-with-registers-large folder, or inception_v3_google-0cc3c7bd.pth"),
                dtype_input("extractor's weights"),
            ],
            outputs=[FEATURES.Output(display_name="features", tooltip="image features for clustering")],
        )

    @classmethod
    def validate_inputs(cls, file):
        return glue.missing_model_message("ttsvar_features", file, "the feature extractor") or True

    @classmethod
    def execute(cls, kind, file, dtype):
        path = glue.resolve_model("ttsvar_features", file, "the feature extractor")
        dtype = glue.auto_dtype(dtype, glue.compute_device())
        return io.NodeOutput(load_feature_extractor(kind, path, device=glue.offload_device(), dtype=dtype))
