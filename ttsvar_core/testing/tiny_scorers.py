"""Writes a tiny random reward model and feature extractor in real on-disk layouts (tests, CPU demos).

    python -m ttsvar_core.testing.tiny_scorers OUT_DIR [--seed 0]
    write_tiny_scorers(OUT_DIR) -> {"clip": OUT_DIR/ttsvar_rewards/tiny-clip,
                                    "dinov2": OUT_DIR/ttsvar_features/tiny_dinov2_reg4.pth}

- tiny-clip/: a complete transformers CLIP folder (config.json, model.safetensors, a real BPE tokenizer
  built offline, preprocessor_config.json), loadable by load_reward("clip", folder);
- tiny_dinov2_reg4.pth: a DINOv2-with-registers state dict under the official torch.hub key names,
  loadable by load_feature_extractor("dinov2", file).

The weights are random, so scores and features are meaningless but deterministic for a seed; they let the
whole TTS-VAR search (clustering, resampling, final pick) run in seconds on a CPU. Nothing is downloaded.
"""
from __future__ import annotations

import json
import string
from pathlib import Path

import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# a few merges so the BPE model is a real one, not a character table
_MERGES = ("r e", "re d</w>", "c a", "ca t</w>", "o g</w>", "d og</w>", "t h", "th e</w>", "o f</w>")


def _randomize(module: torch.nn.Module, seed: int, scale: float) -> torch.nn.Module:
    """Perturbs every parameter: fresh LayerNorms are exactly 1 and 0, which would make many weights
    interchangeable and scores nearly constant."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return module


def write_clip_tokenizer(folder: Path) -> int:
    """A CLIP BPE tokenizer (vocab.json + merges.txt) over lowercase letters and digits; returns its size."""
    symbols = string.ascii_lowercase + string.digits
    vocab = {c: i for i, c in enumerate(symbols)}
    vocab.update({c + "</w>": len(symbols) + i for i, c in enumerate(symbols)})
    for merge in _MERGES:
        vocab.setdefault(merge.replace(" ", ""), len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(_MERGES) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 16, "unk_token": "<|endoftext|>",
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
    return len(vocab)


def write_tiny_clip(folder: Path, seed: int = 0) -> Path:
    from transformers import CLIPConfig, CLIPModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = write_clip_tokenizer(folder)
    config = CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=vocab_size - 2,
                         eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    with torch.random.fork_rng():  # seeded construction without touching the caller's random state
        torch.manual_seed(seed)
        model = CLIPModel(config)
    _randomize(model, seed, 0.2).eval().save_pretrained(str(folder))
    (folder / "preprocessor_config.json").write_text(json.dumps(dict(
        image_processor_type="CLIPImageProcessor", do_resize=True, size={"shortest_edge": 32}, resample=3,
        do_center_crop=True, crop_size={"height": 32, "width": 32}, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD), do_convert_rgb=True)))
    return folder


def write_tiny_dinov2(path: Path, seed: int = 0) -> Path:
    """One 64-wide block with 4 registers; 16x16 patch positions, as the real model at 224 px."""
    from ..scorers.dinov2 import DinoV2, VitShape

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = VitShape(dim=64, depth=1, heads=1, patch=14, registers=4, pos_tokens=1 + 16 * 16, mlp_hidden=128)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = _randomize(DinoV2(shape), seed, 0.2)
    torch.save({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, path)
    return path


def write_tiny_scorers(out_dir, seed: int = 0) -> dict[str, Path]:
    """Writes into ComfyUI-style model folders under out_dir (ttsvar_rewards/, ttsvar_features/)."""
    out = Path(out_dir)
    return {"clip": write_tiny_clip(out / "ttsvar_rewards" / "tiny-clip", seed),
            "dinov2": write_tiny_dinov2(out / "ttsvar_features" / "tiny_dinov2_reg4.pth", seed)}


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m ttsvar_core.testing.tiny_scorers",
                                     description="write a tiny random CLIP reward and DINOv2 feature extractor")
    parser.add_argument("out", help="models folder (gets ttsvar_rewards/ and ttsvar_features/)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, path in write_tiny_scorers(args.out, args.seed).items():
        print(f"{name:8s} {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
