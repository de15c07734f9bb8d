"""A model file overwritten or truncated while its model is loaded must not crash the process: memory-mapped
weights would die with SIGBUS at the next forward pass, so every loader copies them into process memory."""
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Loads every format, damages every file it came from (truncated, or overwritten in place), then runs the
# models again: the outputs must not change. Runs in a child process so a SIGBUS shows as its exit signal.
SCRIPT = r'''
import sys
from pathlib import Path

import torch

from ttsvar_core.model.checkpoints import load_infinity, load_vae
from ttsvar_core.model.sampling import SamplingParams, decode_images, generate
from ttsvar_core.model.text import TextEncoder
from ttsvar_core.scorers import load_feature_extractor, load_reward

root = Path(sys.argv[1])
vae = load_vae(root / "infinity_vae" / "tiny_vae.pth")
vae_safetensors = load_vae(root / "infinity_vae" / "tiny_vae.safetensors")
models = [load_infinity(root / "infinity" / "tiny_infinity.pth", vae_cfg=vae.cfg),
          load_infinity(root / "infinity" / "tiny_infinity.safetensors")]
text = TextEncoder(root / "text_encoders" / "tiny-t5", max_length=models[0].cfg.text_maxlen)
reward = load_reward("clip", root / "ttsvar_rewards" / "tiny-clip")
features = load_feature_extractor("dinov2", root / "ttsvar_features" / "tiny_dinov2_reg4.pth")


def outputs():
    feats, lens = text.encode(["a red circle"])
    out = [feats]
    for model in models:
        run = generate(model, feats, lens, [(1, 1), (2, 2), (3, 3)], SamplingParams(),
                       generator=torch.Generator().manual_seed(0))
        for decoder in (vae, vae_safetensors):
            images = ((decode_images(decoder, run.summed_codes) + 1) * 127.5).to(torch.uint8).permute(0, 2, 3, 1)
            out += [images, reward.score(images, "a red circle"), features.extract(images).pooled]
    return out


before = outputs()
for i, path in enumerate(sorted(p for p in root.rglob("*") if p.is_file())):
    if i % 2:
        path.write_bytes(b"")                    # truncated (a download restarting)
    else:
        with open(path, "r+b") as f:             # overwritten in place (a copy over the same name)
            f.write(bytes(path.stat().st_size))
after = outputs()
assert all(torch.equal(a, b) for a, b in zip(before, after))
print("unchanged")
'''


def test_loaded_models_survive_their_files_changing(tiny_files, tmp_path):
    from ttsvar_core.testing.tiny_scorers import write_tiny_scorers
    root = tmp_path / "models"
    for kind in ("infinity", "infinity_vae", "text_encoders"):
        shutil.copytree(Path(tiny_files["infinity_pth"]).parents[1] / kind, root / kind)
    write_tiny_scorers(root)
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(root)], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, f"exit {done.returncode} (-7 is SIGBUS)\n{done.stderr[-3000:]}"
    assert "unchanged" in done.stdout
