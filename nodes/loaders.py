"""Loader nodes: the Infinity model (transformer, VAE, T5), reward models and feature extractors."""
from __future__ import annotations

import re

from ..ttsvar_core.model.config import PAIRING_HINT, RELEASES
from ..ttsvar_core.model.pipeline import InfinityPipeline
from ..ttsvar_core.scorers import feature_extractor_kinds, load_feature_extractor, load_reward, reward_kinds
from . import comfy_glue as glue
from .options import DTYPE_CHOICES
from .types import FEATURES, MODEL, REWARD

NO_FILE = "none"

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


class TTSVARModelLoader:
    CATEGORY = "TTS-VAR"
    DESCRIPTION = ("Loads an Infinity text-to-image model: the transformer, its VAE and the flan-t5-xl text "
                   "encoder. The transformer and VAE must belong together.")
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (glue.list_models("infinity"), {
                "tooltip": "models/infinity: infinity_2b_reg.pth, or the infinity_8b_weights shard folder"}),
            "vae": (glue.list_models("infinity_vae"), {
                "tooltip": "models/infinity_vae: infinity_vae_d32reg.pth (2B) or "
                           "infinity_vae_d56_f8_14_patchify.pth (8B)"}),
            "text_encoder": (glue.list_models("text_encoders", files=False), {
                "tooltip": "a flan-t5-xl folder in models/text_encoders (config.json, tokenizer, weights)"}),
            "dtype": (DTYPE_CHOICES, {"default": "auto", "tooltip": "weights of the transformer blocks; auto: bf16 "
                                                                    "on GPUs that support it, fp32 on CPU"}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, model, vae, text_encoder):
        # a linked input arrives as None: it is known only at run time, when load() checks it
        problems = [glue.missing_model_message("infinity", model, "the Infinity model"),
                    glue.missing_model_message("infinity_vae", vae, "the VAE"),
                    glue.missing_model_message("text_encoders", text_encoder, "the text encoder folder"),
                    pairing_problem(model, vae) if model and vae else None]
        problems = [p for p in problems if p]
        return "; ".join(problems) if problems else True

    def load(self, model, vae, text_encoder, dtype):
        device = glue.compute_device()
        paths = (glue.resolve_model("infinity", model, "the Infinity model"),
                 glue.resolve_model("infinity_vae", vae, "the VAE"),
                 glue.resolve_model("text_encoders", text_encoder, "the text encoder folder"))
        glue.make_room(glue.disk_bytes(*paths[:2]), device)
        pipeline = InfinityPipeline.load(*paths, device=device, dtype=glue.auto_dtype(dtype, device))
        pipeline.text_encoder.to(glue.offload_device())  # T5 visits the GPU only while encoding
        return (pipeline,)


class TTSVARRewardLoader:
    CATEGORY = "TTS-VAR"
    DESCRIPTION = ("Loads a reward model that scores candidates against the prompt (ImageReward, HPS v2, "
                   "CLIP score, aesthetic). It waits on the CPU and visits the GPU only while scoring.")
    RETURN_TYPES = (REWARD,)
    RETURN_NAMES = ("reward",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "kind": (reward_kinds(), {"default": "imagereward"}),
            "file": (glue.list_models("ttsvar_rewards"), {
                "tooltip": "models/ttsvar_rewards: ImageReward.pt, HPS_v2.1_compressed.pt, a CLIP folder, or "
                           "aesthetic_predictor_v2_5.pth"}),
            "dtype": (DTYPE_CHOICES, {"default": "auto"}),
        }, "optional": {
            "siglip_folder": ([NO_FILE] + glue.list_models("ttsvar_rewards", files=False), {
                "default": NO_FILE, "tooltip": "aesthetic only: the siglip-so400m-patch14-384 folder"}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, kind, file):
        if kind is not None and kind not in reward_kinds():
            return f"unknown reward kind {kind!r}; choose one of {reward_kinds()}"
        return glue.missing_model_message("ttsvar_rewards", file, "the reward model") or True

    def load(self, kind, file, dtype, siglip_folder=NO_FILE):
        extra = {}
        if kind == "aesthetic":
            if siglip_folder == NO_FILE:
                raise ValueError("the aesthetic reward needs a SigLIP folder: put siglip-so400m-patch14-384 into "
                                 "models/ttsvar_rewards and choose it in siglip_folder")
            extra["siglip_path"] = glue.resolve_model("ttsvar_rewards", siglip_folder, "the SigLIP folder")
        path = glue.resolve_model("ttsvar_rewards", file, "the reward model")
        dtype = glue.auto_dtype(dtype, glue.compute_device())
        return (load_reward(kind, path, device=glue.offload_device(), dtype=dtype, **extra),)


class TTSVARFeatureLoader:
    CATEGORY = "TTS-VAR"
    DESCRIPTION = ("Loads the image feature extractor used to cluster candidates (DINOv2 with registers, "
                   "or InceptionV3). It waits on the CPU and visits the GPU only while extracting.")
    RETURN_TYPES = (FEATURES,)
    RETURN_NAMES = ("features",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "kind": (feature_extractor_kinds(), {"default": "dinov2"}),
            "file": (glue.list_models("ttsvar_features"), {
                "tooltip": "models/ttsvar_features: dinov2_vitl14_reg4_pretrain.pth, a "
                           "dinov2-with-registers-large folder, or inception_v3_google-0cc3c7bd.pth"}),
            "dtype": (DTYPE_CHOICES, {"default": "auto"}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, kind, file):
        if kind is not None and kind not in feature_extractor_kinds():
            return f"unknown feature extractor {kind!r}; choose one of {feature_extractor_kinds()}"
        return glue.missing_model_message("ttsvar_features", file, "the feature extractor") or True

    def load(self, kind, file, dtype):
        path = glue.resolve_model("ttsvar_features", file, "the feature extractor")
        dtype = glue.auto_dtype(dtype, glue.compute_device())
        return (load_feature_extractor(kind, path, device=glue.offload_device(), dtype=dtype),)
