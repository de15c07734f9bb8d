"""Writes tiny random models in every real on-disk format (tests, end-to-end runs, CI).

    python -m ttsvar_core make-tiny OUT_DIR [--seed 0]

Layout (ComfyUI model folders): infinity/ (flat .pth, .safetensors, 8B-style shard folders in .safetensors
and .bin), infinity_vae/ (.pth with 'vae' key in wrapped and flux-style names, .safetensors),
text_encoders/tiny-t5/ (a T5 encoder folder with a real, offline-built tokenizer).
"""
from __future__ import annotations

import json
import random
import shutil
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..model.checkpoints import _plain_vae_name, build_random, config_metadata
from ..model.config import PRESETS, VAEConfig
from ..shapesworld.tokenizer import unigram_t5_tokenizer

TINY = PRESETS["tiny"]
# an 8B-like tiny model: spatial patchify (one token = 2x2 latent pixels) with an f8 VAE
TINY_PATCHIFY = replace(TINY, apply_spatial_patchify=True,
                        vae=VAEConfig(codebook_dim=16, patch_size=8, base_ch=32, encoder_ch_mult=(1, 1, 1, 2),
                                      decoder_ch_mult=(1, 1, 1, 2)))

_WORDS = ("a an the one two three four red green blue yellow purple orange white black gray pink circle "
          "square triangle star heart photo picture of cat dog car tree house left right above below and on in "
          "with next to big small large tiny bright dark image painting").split()


def _state(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}


def write_shards(state: dict[str, torch.Tensor], folder: Path, shards: int = 2, fmt: str = "safetensors"):
    """An HF-style sharded checkpoint: index json + shard files, as the 8B release is laid out."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(state)
    per = -(-len(keys) // shards)
    weight_map = {}
    for i in range(shards):
        part = {k: state[k] for k in keys[i * per:(i + 1) * per]}
        if fmt == "safetensors":
            name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            save_file(part, folder / name)
        else:
            name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
            torch.save(part, folder / name)
        weight_map.update({k: name for k in part})
    index = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
    (folder / index).write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}, indent=1))


def build_tokenizer(folder: Path, seed: int = 0):
    """A real unigram T5 tokenizer trained offline on a small word list, saved as tokenizer.json."""
    rng = random.Random(seed)
    sentences = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 10))) for _ in range(4000)]
    return unigram_t5_tokenizer(folder, sentences, vocab_size=96, max_length=512)


def _save_random_t5(folder: Path, vocab_size: int, d_model: int, seed: int) -> None:
    from transformers import T5Config, T5EncoderModel
    torch.manual_seed(seed)
    config = T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=32, d_ff=2 * d_model, num_layers=2,
                      num_heads=max(1, d_model // 64), feed_forward_proj="gated-gelu", is_encoder_decoder=False)
    T5EncoderModel(config).save_pretrained(str(folder))


def write_t5(folder: Path, d_model: int, seed: int = 0):
    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(folder, seed)
    _save_random_t5(folder, len(tok), d_model, seed)
    return folder


def write_t5_for_tokenizer(folder: Path, tokenizer: Path, d_model: int, seed: int = 0) -> Path:
    """A tiny random T5 encoder folder holding a copy of an existing tokenizer folder, with an embedding row
    per token rounded up to a multiple of 128, as flan-t5-xl's 32128 rows are for T5 v1.1's 32100 tokens
    (so ComfyUI's t5_tokenizer reads it; d_model keeps it small: 32128 x 256 floats are 33 MB)."""
    from transformers import AutoTokenizer
    folder.mkdir(parents=True, exist_ok=True)
    for file in Path(tokenizer).iterdir():
        if file.is_file():
            shutil.copyfile(file, folder / file.name)
    size = len(AutoTokenizer.from_pretrained(str(folder), legacy=True, local_files_only=True))
    _save_random_t5(folder, -(-size // 128) * 128, d_model, seed)
    return folder


def write_tiny_models(out: Path, seed: int = 0) -> dict[str, Path]:
    out = Path(out)
    paths: dict[str, Path] = {}
    for tag, cfg in (("", TINY), ("_patchify", TINY_PATCHIFY)):
        model, vae = build_random(cfg, seed=seed)
        tdir, vdir = out / "infinity", out / "infinity_vae"
        tdir.mkdir(parents=True, exist_ok=True)
        vdir.mkdir(parents=True, exist_ok=True)
        tstate, vstate = _state(model), _state(vae)
        if tag:
            write_shards(tstate, tdir / f"tiny_infinity{tag}_shards")
            write_shards(tstate, tdir / f"tiny_infinity{tag}_shards_bin", fmt="bin")
            paths["infinity_patchify_shards"] = tdir / f"tiny_infinity{tag}_shards"
            paths["infinity_patchify_shards_bin"] = tdir / f"tiny_infinity{tag}_shards_bin"
        else:
            torch.save(tstate, tdir / "tiny_infinity.pth")
            paths["infinity_pth"] = tdir / "tiny_infinity.pth"
        save_file(tstate, tdir / f"tiny_infinity{tag}.safetensors", metadata=config_metadata(cfg))
        paths[f"infinity{tag}_safetensors"] = tdir / f"tiny_infinity{tag}.safetensors"
        torch.save({"vae": vstate}, vdir / f"tiny_vae{tag}.pth")
        paths[f"vae{tag}_pth"] = vdir / f"tiny_vae{tag}.pth"
        save_file(vstate, vdir / f"tiny_vae{tag}.safetensors", metadata=config_metadata(cfg.vae))
        paths[f"vae{tag}_safetensors"] = vdir / f"tiny_vae{tag}.safetensors"
        if not tag:
            torch.save({"vae": {_plain_vae_name(k): v for k, v in vstate.items()}}, vdir / "tiny_vae_flux_names.pth")
            paths["vae_flux_pth"] = vdir / "tiny_vae_flux_names.pth"
    paths["t5"] = write_t5(out / "text_encoders" / "tiny-t5", TINY.text_channels, seed)
    return paths
