"""Helpers shared by the scorer tests: images, random weights, real key lists, and reference
preprocessing written with torchvision transforms (independent of the package's PIL code)."""

import ast
import json
from pathlib import Path
from typing import Dict, List

import torch
from PIL import Image

DATA = Path(__file__).resolve().parent / "data"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def random_images(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """uint8 [n, H, W, 3]: smooth colour fields plus noise, different per image."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=g)
    smooth = torch.nn.functional.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
    noisy = smooth + 0.15 * torch.rand(n, 3, height, width, generator=g)
    return (noisy.clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def to_pils(images: torch.Tensor) -> List[Image.Image]:
    return [Image.fromarray(row.numpy()) for row in images]


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """Perturb every parameter and float buffer so that a swapped or dropped tensor changes the
    output (fresh LayerNorms are all ones and zeros, BatchNorm statistics are 0 and 1)."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(scale * torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype))
    saved = module.state_dict().keys()  # non-persistent buffers (causal masks, ids) are derived, not weights
    for name, b in module.named_buffers():
        if b.is_floating_point() and name in saved:
            b.add_(scale * torch.rand(b.shape, generator=g).to(b.dtype))
    return module


def key_list(name: str) -> Dict[str, tuple]:
    """Key names and shapes of a real checkpoint, as dumped from the real model."""
    shapes = {}
    for line in (DATA / name).read_text().splitlines():
        if line.strip():
            key, shape = line.split("\t")
            shapes[key] = ast.literal_eval(shape)
    return shapes


def fake_full_size(name: str) -> Dict[str, torch.Tensor]:
    """Tensors with the real names and shapes, backed by one element each (stride-0 views), so
    real-size key sets can be loaded and saved without gigabytes of memory."""
    return {k: torch.zeros(()) if s == () else torch.zeros(1).expand(s) for k, s in key_list(name).items()}


def torchvision_clip_transform(size: int):
    """ImageReward's original transform: Resize(size, bicubic), CenterCrop(size), ToTensor, Normalize."""
    from torchvision import transforms as T

    return T.Compose([
        T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(size),
        lambda im: im.convert("RGB"),
        T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])


def torchvision_hps_transform(size: int):
    """HPS v2's ResizeMaxSize(size) (bicubic, black padding) + ToTensor + Normalize, written
    with torchvision's functional ops as the hpsv2 package does."""
    from torchvision import transforms as T
    from torchvision.transforms import functional as F

    def resize_max(im):
        width, height = im.size
        scale = size / float(max(height, width))
        if scale != 1.0:
            new_size = tuple(round(dim * scale) for dim in (height, width))
            im = F.resize(im, new_size, T.InterpolationMode.BICUBIC)
            pad_h, pad_w = size - new_size[0], size - new_size[1]
            im = F.pad(im, padding=[pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
        return im

    return T.Compose([resize_max, T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])


def torchvision_fixed_transform(size: int):
    """TTS-VAR's feature transform: Resize((size, size)) (bilinear on PIL), ToTensor, ImageNet Normalize."""
    from torchvision import transforms as T

    return T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def stack(transform, images: List[Image.Image]) -> torch.Tensor:
    return torch.stack([transform(im) for im in images])


def pil_image_processor(name: str):
    """transformers' PIL-based image processor class (transformers 5 names it *Pil; in 4 the
    plain class is the PIL one)."""
    import transformers

    return getattr(transformers, name + "Pil", None) or getattr(transformers, name)


def write_tiny_clip_tokenizer(folder: Path) -> None:
    """A real CLIP BPE tokenizer (vocab.json + merges.txt) over lowercase letters and a few merges."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(letters)}
    vocab.update({c + "</w>": len(letters) + i for i, c in enumerate(letters)})
    merges = ["r e", "re d</w>", "c a", "ca r</w>", "o g</w>", "d og</w>"]
    for merge in merges:
        vocab["".join(merge.split())] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 16, "unk_token": "<|endoftext|>",
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
    }))


def write_preprocessor_config(folder: Path, **settings) -> None:
    (folder / "preprocessor_config.json").write_text(json.dumps(settings))


def write_tiny_clip_folder(folder: Path, seed: int = 0):
    """A tiny transformers CLIP folder: random weights, tokenizer, preprocessor_config.json."""
    from transformers import CLIPConfig, CLIPModel

    folder.mkdir(parents=True, exist_ok=True)
    write_tiny_clip_tokenizer(folder)
    vocab_size = len(json.loads((folder / "vocab.json").read_text()))
    config = CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=vocab_size - 2,
                         eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    model = randomize_(CLIPModel(config), seed=seed, scale=0.2).eval()
    model.save_pretrained(folder)
    write_preprocessor_config(
        folder, image_processor_type="CLIPImageProcessor", do_resize=True, size={"shortest_edge": 32}, resample=3,
        do_center_crop=True, crop_size={"height": 32, "width": 32}, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD), do_convert_rgb=True,
    )
    return model
