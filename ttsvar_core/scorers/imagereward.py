"""ImageReward v1.0 from the original ImageReward.pt, on transformers' BLIP modules.

The original (zai-org/ImageReward) is BLIP's ViT-L/16 image encoder, BLIP's BERT text encoder
with cross-attention to the image, and a 5-layer MLP on the [CLS] output, standardised with
fixed constants. Here the ViT and BERT are transformers' BlipVisionModel and BlipTextModel,
whose weights map one-to-one onto the original names, so no package code is needed, and the
whole batch is scored in one forward pass instead of one image at a time.
"""

from pathlib import Path
from typing import Dict, List

import torch
from PIL import Image

from .base import Reward
from .checkpoints import StateDict, check_keys, empty_module, flat_tensors, load_into, read_tensors, require_file
from .errors import REWARDS_DIR, ModelFileNotFoundError, WrongFileError
from .images import CLIP_MEAN, CLIP_STD, center_crop, resize_shorter_side, to_normalized_tensor

EXPECTED = "ImageReward.pt (ImageReward v1.0, THUDM/ImageReward)"
VOCAB_DIR = Path(__file__).resolve().parent.parent / "assets" / "bert-base-uncased"

# Standardisation of the MLP output, fixed in the original model.
REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
MAX_PROMPT_TOKENS = 35
IMAGE_SIZE = 224
HEAD_DIM = 64  # BLIP-L: 1024 / 16 heads (vision) and 768 / 12 heads (text)
VISION_EPS = 1e-6  # BLIP's ViT uses 1e-6; transformers' default 1e-5 shifts rewards measurably
TEXT_EPS = 1e-12

# Sanity check for the shipped vocabulary: bert-base-uncased ids of "a photo of a red car".
VOCAB_SIZE = 30522
VOCAB_PROBE = ("a photo of a red car", [101, 1037, 6302, 1997, 1037, 2417, 2482, 102])

_VISION_RENAMES = (
    ("cls_token", "embeddings.class_embedding"),
    ("pos_embed", "embeddings.position_embedding"),
    ("patch_embed.proj.", "embeddings.patch_embedding."),
    ("norm.", "post_layernorm."),
)
_BLOCK_RENAMES = (
    ("norm1.", "layer_norm1."),
    ("norm2.", "layer_norm2."),
    ("attn.qkv.", "self_attn.qkv."),
    ("attn.proj.", "self_attn.projection."),
    ("mlp.", "mlp."),
)
# In the file but not used for the score (BLIP's contrastive projections) or recomputed.
_UNUSED_PREFIXES = ("blip.vision_proj.", "blip.text_proj.")
_UNUSED_KEYS = ("blip.text_encoder.embeddings.position_ids",)


class RewardHead(torch.nn.Module):
    """The original MLP: Linear layers with dropout between the first four, no activations.
    Kept in float32 like the original, which casts the text features to float first."""

    keep_float32 = True

    def __init__(self, width: int):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(width, 1024), torch.nn.Dropout(0.2),
            torch.nn.Linear(1024, 128), torch.nn.Dropout(0.2),
            torch.nn.Linear(128, 64), torch.nn.Dropout(0.1),
            torch.nn.Linear(64, 16),
            torch.nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def split_checkpoint(sd: StateDict, path: Path) -> Dict[str, StateDict]:
    """Rename ImageReward.pt keys into vision / text / head state dicts (transformers names)."""
    check_keys(path, sd, _required_keys(sd), EXPECTED, REWARDS_DIR, optional=_optional_keys(sd))
    parts: Dict[str, StateDict] = {"vision": {}, "text": {}, "head": {}}
    for key, value in sd.items():
        if key.startswith("blip.visual_encoder."):
            parts["vision"][_vision_name(key[len("blip.visual_encoder."):])] = value
        elif key.startswith("blip.text_encoder.") and key not in _UNUSED_KEYS:
            parts["text"][key[len("blip.text_encoder."):]] = value
        elif key.startswith("mlp."):
            parts["head"][key[len("mlp."):]] = value
    return parts


def _vision_name(name: str) -> str:
    if name.startswith("blocks."):
        _, index, rest = name.split(".", 2)
        for old, new in _BLOCK_RENAMES:
            if rest.startswith(old):
                return f"encoder.layers.{index}.{new}{rest[len(old):]}"
        return f"encoder.layers.{index}.{rest}"
    for old, new in _VISION_RENAMES:
        if name.startswith(old):
            return new + name[len(old):]
    return name


def _count_layers(sd: StateDict, prefix: str) -> int:
    indices = {int(k[len(prefix):].split(".", 1)[0]) for k in sd if k.startswith(prefix)}
    return max(indices) + 1 if indices else 0


def _required_keys(sd: StateDict) -> List[str]:
    """The key set of a genuine ImageReward.pt with as many layers as this file has."""
    keys = ["blip.visual_encoder." + k for k in ("cls_token", "pos_embed", "patch_embed.proj.weight",
                                                 "patch_embed.proj.bias", "norm.weight", "norm.bias")]
    for i in range(max(1, _count_layers(sd, "blip.visual_encoder.blocks."))):
        for sub in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            keys += [f"blip.visual_encoder.blocks.{i}.{sub}.weight", f"blip.visual_encoder.blocks.{i}.{sub}.bias"]
    text = "blip.text_encoder."
    keys += [text + f"embeddings.{n}" for n in ("word_embeddings.weight", "position_embeddings.weight",
                                                "LayerNorm.weight", "LayerNorm.bias")]
    for i in range(max(1, _count_layers(sd, text + "encoder.layer."))):
        layer = f"{text}encoder.layer.{i}."
        for att in ("attention", "crossattention"):
            for sub in ("self.query", "self.key", "self.value", "output.dense", "output.LayerNorm"):
                keys += [f"{layer}{att}.{sub}.weight", f"{layer}{att}.{sub}.bias"]
        for sub in ("intermediate.dense", "output.dense", "output.LayerNorm"):
            keys += [f"{layer}{sub}.weight", f"{layer}{sub}.bias"]
    for i in (0, 2, 4, 6, 7):
        keys += [f"mlp.layers.{i}.weight", f"mlp.layers.{i}.bias"]
    return keys


def _optional_keys(sd: StateDict) -> List[str]:
    return [k for k in sd if k.startswith(_UNUSED_PREFIXES) or k in _UNUSED_KEYS]


def blip_configs(parts: Dict[str, StateDict]):
    """transformers configs for the BLIP towers, read off the tensor shapes.

    For the real ImageReward.pt this gives exactly BLIP-L: ViT 1024 wide, 24 layers, 16 heads,
    patch 16 at 224 px; BERT 768 wide, 12 layers, 12 heads, vocabulary 30524. Head counts are
    not stored in the file; both towers use 64-dimensional heads.
    """
    from transformers import BlipTextConfig, BlipVisionConfig

    vision, text = parts["vision"], parts["text"]
    width = vision["embeddings.class_embedding"].shape[-1]
    patch = vision["embeddings.patch_embedding.weight"].shape[-1]
    grid = int(round((vision["embeddings.position_embedding"].shape[1] - 1) ** 0.5))
    text_width = text["embeddings.word_embeddings.weight"].shape[1]
    vision_cfg = BlipVisionConfig(
        hidden_size=width, num_hidden_layers=_count_layers(vision, "encoder.layers."),
        num_attention_heads=_heads(width), intermediate_size=vision["encoder.layers.0.mlp.fc1.weight"].shape[0],
        image_size=grid * patch, patch_size=patch, layer_norm_eps=VISION_EPS, hidden_act="gelu",
    )
    text_cfg = BlipTextConfig(
        vocab_size=text["embeddings.word_embeddings.weight"].shape[0], hidden_size=text_width,
        num_hidden_layers=_count_layers(text, "encoder.layer."), num_attention_heads=_heads(text_width),
        intermediate_size=text["encoder.layer.0.intermediate.dense.weight"].shape[0],
        encoder_hidden_size=text["encoder.layer.0.crossattention.self.key.weight"].shape[1],
        max_position_embeddings=text["embeddings.position_embeddings.weight"].shape[0],
        layer_norm_eps=TEXT_EPS, hidden_act="gelu",
    )
    return vision_cfg, text_cfg


def _heads(width: int) -> int:
    if width % HEAD_DIM:
        raise WrongFileError(f"a BLIP width of {width} is not a multiple of {HEAD_DIM}; this is not an ImageReward file")
    return width // HEAD_DIM


def build_modules(sd: StateDict, path: Path) -> Dict[str, torch.nn.Module]:
    """Meta-build the towers and head from the file's shapes and load them strictly."""
    from transformers import BlipTextModel, BlipVisionModel

    parts = split_checkpoint(sd, path)
    vision_cfg, text_cfg = blip_configs(parts)
    vision = empty_module(lambda: BlipVisionModel(vision_cfg))
    text = empty_module(lambda: BlipTextModel(text_cfg, add_pooling_layer=False))
    head = empty_module(lambda: RewardHead(text_cfg.hidden_size))
    return {
        "vision": load_into(vision, parts["vision"], path, EXPECTED, REWARDS_DIR),
        "text": load_into(text, parts["text"], path, EXPECTED, REWARDS_DIR),
        "head": load_into(head, parts["head"], path, EXPECTED, REWARDS_DIR),
    }


def load_vocabulary(vocab_dir=None):
    """bert-base-uncased tokenizer from the vocab.txt shipped with the pack, plus BLIP's two
    extra tokens, checked so that a silently empty tokenizer cannot slip through."""
    from transformers import BertTokenizer

    folder = Path(vocab_dir) if vocab_dir is not None else VOCAB_DIR
    if not (folder / "vocab.txt").is_file():
        raise ModelFileNotFoundError(
            f"{folder / 'vocab.txt'} does not exist. ImageReward needs the bert-base-uncased vocabulary "
            f"(vocab.txt, {VOCAB_SIZE} lines). It ships with the node pack in ttsvar_core/assets/bert-base-uncased/; "
            "reinstall the pack, or pass vocab_dir=<folder with vocab.txt>."
        )
    tokenizer = BertTokenizer.from_pretrained(str(folder), local_files_only=True)
    text, ids = VOCAB_PROBE
    if len(tokenizer) != VOCAB_SIZE or tokenizer(text).input_ids != ids:
        raise WrongFileError(
            f"{folder / 'vocab.txt'} is not the bert-base-uncased vocabulary ({len(tokenizer)} tokens, "
            f"expected {VOCAB_SIZE}); ImageReward needs exactly that vocabulary."
        )
    # BLIP's tokenizer adds [DEC] (bos) and [ENC]; they only matter if a prompt contains them.
    tokenizer.add_tokens(["[DEC]", "[ENC]"], special_tokens=True)
    return tokenizer


class ImageReward(Reward):
    name = "imagereward"

    def __init__(self, path, *, device="cpu", dtype=torch.float32, max_batch=8, vocab_dir=None):
        path = require_file(path, EXPECTED, REWARDS_DIR)
        self.tokenizer = load_vocabulary(vocab_dir)
        sd = flat_tensors(read_tensors(path, EXPECTED), path, EXPECTED, REWARDS_DIR)
        modules = build_modules(sd, path)
        vocab_rows = modules["text"].config.vocab_size
        if vocab_rows < len(self.tokenizer):
            raise WrongFileError(f"{path}: the text encoder has {vocab_rows} token rows, fewer than the "
                                 f"{len(self.tokenizer)} of BLIP's vocabulary; expected {EXPECTED}.")
        self.image_size = modules["vision"].config.image_size
        super().__init__(modules, device=device, dtype=dtype, max_batch=max_batch)

    def _encode_prompt(self, prompt: str):
        tokens = self.tokenizer(prompt, padding="max_length", truncation=True,
                                max_length=MAX_PROMPT_TOKENS, return_tensors="pt")
        return tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)

    def preprocess(self, images: List[Image.Image]) -> torch.Tensor:
        """Resize(224, bicubic) on the shorter side, CenterCrop(224), ToTensor, CLIP normalisation."""
        size = self.image_size
        crops = [center_crop(resize_shorter_side(im, size, Image.BICUBIC), size, size, round_offsets=True)
                 for im in images]
        return to_normalized_tensor(crops, CLIP_MEAN, CLIP_STD)

    def _score_chunk(self, images: List[Image.Image], text) -> torch.Tensor:
        input_ids, attention_mask = text
        pixels = self.preprocess(images).to(self.device, self.dtype)
        image_embeds = self._modules["vision"](pixel_values=pixels).last_hidden_state
        count = image_embeds.shape[0]
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        out = self._modules["text"](
            input_ids=input_ids.expand(count, -1), attention_mask=attention_mask.expand(count, -1),
            encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask,
        )
        rewards = self._modules["head"](out.last_hidden_state[:, 0, :].float())
        return (rewards.squeeze(-1) - REWARD_MEAN) / REWARD_STD

