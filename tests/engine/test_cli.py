"""`python -m ttsvar_core generate` end to end on tiny model files, every strategy."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import generate_args

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from ttsvar_core.testing.tiny_models import write_tiny_models
    from ttsvar_core.testing.tiny_scorers import write_tiny_scorers
    root = tmp_path_factory.mktemp("cli_models")
    return {**write_tiny_models(root), **write_tiny_scorers(root)}


@pytest.mark.parametrize("strategy,n,finals", [("raw", 2, 2), ("bon", 2, 2), ("is", 2, 2), ("tts-var", 1, 1)])
def test_generate(files, tmp_path, strategy, n, finals):
    out = tmp_path / "out"
    trace = tmp_path / "trace.json"
    cmd = [sys.executable, "-m", "ttsvar_core", "generate", "--model", str(files["infinity_safetensors"]),
           "--vae", str(files["vae_pth"]), "--text-encoder", str(files["t5"]), "--prompt", "a red circle",
           "--strategy", strategy, "--n", str(n), "--seed", "3", "--out", str(out), "--schedule",
           "1x1,2x2,3x3,4x4,5x5", "--reward", "clip", "--reward-file", str(files["clip"]), "--features", "dinov2",
           "--features-file", str(files["dinov2"]), "--trace", str(trace), "--device", "cpu"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "scale" in done.stderr  # the progress bar
    record = json.loads(trace.read_text())
    assert record["strategy"] == strategy and len(record["scales"]) == 5
    assert (record["sampling"]["cfg"], record["sampling"]["tau"]) == (3.0, 0.5)  # a 2B-like model's defaults
    live = [s.get("live_after", s["live"]) for s in record["scales"]]
    assert live == record["sizes"]  # the batch schedule is followed exactly at every scale
    assert len(list(out.glob("prompt0_final*.png"))) == finals and (out / "prompt0_chosen.png").exists()
    if strategy == "tts-var":
        # five custom scales: the paper has no schedule for them, and the trace says so
        assert "rescaled to 5 scales: not in the paper" in record["batch_schedule"]
        assert [e["event"] for e in record["events"]] == ["cluster", "cluster", "resample", "resample", "final"]
        resample = record["events"][2]["groups"][0]
        assert len(resample["weights"]) == len(resample["scores"]) and len(resample["kept"]) == record["sizes"][3]


def test_an_8b_like_model_samples_with_the_8b_defaults(files, tmp_path):
    """Infinity's public 8B setting is tau 1.0 (the 2B's 0.5): keeping the defaults must give it."""
    trace = tmp_path / "trace.json"
    cmd = [sys.executable, "-m", "ttsvar_core", "generate", "--model", str(files["infinity_patchify_safetensors"]),
           "--vae", str(files["vae_patchify_pth"]), "--text-encoder", str(files["t5"]), "--prompt", "a red circle",
           "--strategy", "raw", "--out", str(tmp_path / "out"), "--schedule", "1x1,2x2,3x3", "--trace", str(trace),
           "--device", "cpu"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    sampling = json.loads(trace.read_text())["sampling"]
    assert (sampling["cfg"], sampling["tau"]) == (3.0, 1.0)


def test_generate_with_two_rewards_combined(files, tmp_path):
    """The paper's averaged softmax of two rewards, here two tiny CLIPs of different seeds."""
    from ttsvar_core.testing.tiny_scorers import write_tiny_clip
    second = write_tiny_clip(tmp_path / "clip-b", seed=1)
    trace = tmp_path / "trace.json"
    cmd = [sys.executable, "-m", "ttsvar_core", "generate", "--model", str(files["infinity_safetensors"]),
           "--vae", str(files["vae_pth"]), "--text-encoder", str(files["t5"]), "--prompt", "a red circle",
           "--strategy", "bon", "--n", "3", "--out", str(tmp_path / "out"), "--schedule", "1x1,2x2,3x3",
           "--reward", "clip+clip", "--reward-file", str(files["clip"]), "--reward-file", str(second),
           "--reward-weights", "2,1", "--trace", str(trace), "--device", "cpu"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(trace.read_text())
    assert record["reward"] == "CombinedReward(clip x 2, clip x 1)"
    scores = record["events"][-1]["groups"][0]["scores"]
    assert sum(scores) == pytest.approx(1.0)  # a weighted mean of softmaxes over the prompt's candidates


def test_reward_files_must_match_the_rewards():
    from ttsvar_core.cli import reward_parts
    with pytest.raises(SystemExit, match="one --reward-file per reward"):
        reward_parts(generate_args("--reward", "imagereward+hps", "--reward-file", "ir.pt"))
    with pytest.raises(SystemExit, match="one weight per reward"):
        reward_parts(generate_args("--reward", "imagereward+hps", "--reward-weights", "1,2,3"))
    parts, weights = reward_parts(generate_args("--reward", "ir+hps", "--reward-file", "a", "--reward-file", "b"))
    assert parts == [("ir", "a"), ("hps", "b")] and weights is None


def test_missing_reward_file_is_explained(files, tmp_path):
    cmd = [sys.executable, "-m", "ttsvar_core", "generate", "--model", str(files["infinity_safetensors"]),
           "--vae", str(files["vae_pth"]), "--text-encoder", str(files["t5"]), "--prompt", "x", "--strategy", "bon",
           "--n", "2", "--out", str(tmp_path), "--schedule", "1x1,2x2"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    assert done.returncode != 0 and "--reward-file" in done.stderr
