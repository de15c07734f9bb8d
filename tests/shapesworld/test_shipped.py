"""The shipped ShapesWorld model: it loads through the pack's real loaders, generates, and the demo and
evaluate commands run end to end on it (also sharded over two gloo processes)."""

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ttsvar_core.shapesworld.demo import (ASSETS, CLIP_DIR, MODEL_FILE, T5_DIR, VAE_FILE, demo_prompts, load_shipped,
                                         run_strategy)

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["a green cross", "two triangles"]


@pytest.fixture(scope="module")
def shipped():
    return load_shipped()


def run_cli(*args, timeout=600):
    """Runs `python -m ttsvar_core ARGS`; returns its stdout and the CPU seconds it used (wall time would
    measure whatever else shares the machine)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-m", "ttsvar_core", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def test_assets_are_small_and_complete():
    files = [p for p in ASSETS.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    assert total < 16 * 2**20, f"shipped assets are {total / 2**20:.1f} MB"
    for name in (MODEL_FILE, VAE_FILE, f"{T5_DIR}/config.json", f"{T5_DIR}/tokenizer.json",
                 f"{CLIP_DIR}/config.json", f"{CLIP_DIR}/preprocessor_config.json", "sampling.json"):
        assert (ASSETS / name).is_file(), name


def test_loads_through_the_real_loaders(shipped):
    cfg = shipped.pipe.model.cfg
    assert (cfg.text_channels, cfg.codebook_dim) == (shipped.pipe.text_encoder.channels, 16)
    assert shipped.pipe.pixels_per_token == 4
    assert shipped.schedule[-1] == (16, 16)
    feats = shipped.extractor.extract(torch.zeros(2, 64, 64, 3, dtype=torch.uint8))
    assert feats.patch_tokens.shape[:2] == (2, 64) and feats.pooled.shape[0] == 2


def test_plain_generation_gives_64px_images_the_reward_scores(shipped):
    result, _ = run_strategy(shipped, PROMPTS, "raw", 1, seed=3)
    assert result.images.shape == (2, 64, 64, 3) and result.images.dtype == torch.uint8
    assert result.images.float().std() > 5  # not a blank canvas
    scores = shipped.reward.score(result.images, PROMPTS[0])
    assert torch.isfinite(scores).all()


def test_importance_sampling_pick_is_the_engines(shipped):
    """evaluate derives IS from the Best-of-N run of the same N and seed; it must equal the engine's IS run."""
    from ttsvar_core.shapesworld.experiments import importance_picks

    bon, _ = run_strategy(shipped, PROMPTS, "bon", 3, seed=11)
    is_run, _ = run_strategy(shipped, PROMPTS, "is", 3, seed=11)
    assert torch.equal(bon.images, is_run.images)
    assert importance_picks(bon, 11, 10.0) == is_run.picks


def test_demo_writes_its_grid(tmp_path):
    # speed is measured by the benchmark and reported, not asserted here (a loaded CI machine would flake)
    out, _ = run_cli("demo", "--out", str(tmp_path), "--threads", "2")
    assert (tmp_path / "demo_grid.png").is_file()
    assert "tts-var@2" in out and "bon@2" in out
    # the prompts follow the stated rule, and the verdicts are counted per strategy
    assert "first held-out prompt of each GenEval category" in out
    assert all(text in out for text in demo_prompts()) and len(demo_prompts()) == 6
    assert "correct (corrected evaluator): raw " in out


def test_evaluate_every_strategy_single_and_two_gloo_processes(tmp_path):
    args = ["evaluate", "--prompts", "test", "--limit", "4", "--n", "1,2", "--chunk", "2",
            "--strategies", "raw,is,bon,tts-var"]
    # one thread everywhere: the same chunks then run the same float operations in both layouts
    run_cli(*args, "--out", str(tmp_path / "one"), "--threads", "1")
    run_cli(*args, "--out", str(tmp_path / "two"), "--procs", "2", "--threads", "1")
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert {(r["strategy"], r["n"]) for r in one["summary"]} == {
        ("raw", 1), ("is", 1), ("is", 2), ("bon", 1), ("bon", 2), ("tts-var", 1), ("tts-var", 2)}
    assert all(r["items"] == 4 for r in one["summary"])
    key = lambda r: (r["strategy"], r["n"], r["item"], r["correct"], round(r["reward"], 4))  # noqa: E731
    assert sorted(map(key, one["records"])) == sorted(map(key, two["records"]))  # sharding changes nothing
    assert (tmp_path / "one" / "accuracy_vs_n.png").is_file()
    assert "| tts-var | 2 |" in (tmp_path / "one" / "results.md").read_text()


def test_evaluate_keeps_selection_resolutions_apart(tmp_path):
    """A scale-grid run in a folder that holds a fixed-side run computes its own chunks instead of reusing
    the journal of the other setting, and says which setting it measured."""
    args = ["evaluate", "--prompts", "test", "--limit", "2", "--n", "1", "--chunk", "2", "--strategies", "tts-var",
            "--out", str(tmp_path), "--threads", "1"]
    run_cli(*args)
    run_cli(*args, "--selection-decode", "grid")
    lines = [json.loads(line) for line in (tmp_path / "journal-rank0.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and len({line["key"] for line in lines}) == 2
    config = json.loads((tmp_path / "results.json").read_text())["config"]
    assert config["selection_decode"] == "grid" and config["chunks_done"] == 1


def test_evaluate_with_fp8_storage_saves_picks_that_compare_pairs_by_psnr(tmp_path):
    """--weight-storage reaches the model and the results; --save-images keeps the picks, and compare names
    the runs by their storage and reports the PSNR between their picks."""
    from ttsvar_core.shapesworld.experiments import compare_runs, load_picks

    args = ["evaluate", "--prompts", "test", "--limit", "2", "--n", "1", "--chunk", "2", "--strategies", "raw",
            "--threads", "1", "--save-images"]
    run_cli(*args, "--out", str(tmp_path / "fp32"))
    run_cli(*args, "--out", str(tmp_path / "fp8"), "--weight-storage", "fp8")
    config = json.loads((tmp_path / "fp8" / "results.json").read_text())["config"]
    assert config["weight_storage"] == "fp8" and "--weight-storage fp8" in config["command"]
    picks = load_picks(tmp_path / "fp8" / "images", "raw", 1)
    assert len(picks) == 2 and all(image.shape == (64, 64, 3) for image in picks.values())
    row = next(line for line in compare_runs([tmp_path / "fp32", tmp_path / "fp8"]).splitlines()
               if line.startswith("| fp8 | raw | 1 | 2 |"))
    assert row.endswith("/2] |") and "| – |" not in row


def test_shipped_model_draws_what_prompts_ask_often_but_not_always(shipped):
    """Plain sampling at the shipped settings on 48 training-split prompts: the exact evaluator accepts a
    fair share of images (the shipped v3 scored 0.34 on 192 such prompts x 2 seeds when its settings were chosen), and
    leaves room for search.
    Guards against shipping untrained or broken weights."""
    from ttsvar_core.shapesworld.data import sample_prompts
    from ttsvar_core.shapesworld.evaluate import evaluate

    prompts = sample_prompts(48, seed=21)
    result, _ = run_strategy(shipped, [p.text for p in prompts], "raw", 1, 21)
    correct = np.mean([evaluate(image.numpy(), p).correct for image, p in zip(result.images, prompts)])
    assert 0.08 <= correct <= 0.8, correct
