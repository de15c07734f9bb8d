"""Training pieces of the ShapesWorld models: the straight-through quantiser is the VAE's own quantiser,
teacher forcing feeds the inputs generation would build, hard negatives change one fact, runs resume."""

import shutil

import numpy as np
import torch

from ttsvar_core.shapesworld.experiments import diversity, plan_runs, spread, token_passes, wilson, eval_items
from ttsvar_core.model.sampling import Geometry, SamplingParams, generate
from ttsvar_core.model.infinity import Infinity
from ttsvar_core.shapesworld import test_prompts
from ttsvar_core.shapesworld import train as T
from ttsvar_core.model.vae import BSQVAE


def test_straight_through_quantiser_equals_encode_bits():
    torch.manual_seed(0)
    vae = BSQVAE(T.VAE_CFG).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        h, _, z = vae.encode_bits(x, T.SCHEDULE)
        z_ste, _ = T.quantise_ste(h, T.SCHEDULE)
    torch.testing.assert_close(z_ste, z, atol=1e-5, rtol=0)


def test_self_correction_without_flips_is_the_vae_quantiser():
    torch.manual_seed(0)
    vae = BSQVAE(T.VAE_CFG).eval()
    with torch.no_grad():
        h, bits, _ = vae.encode_bits(torch.rand(2, 3, 64, 64) * 2 - 1, T.SCHEDULE)
    fed, targets = T.self_correcting_bits(h, T.SCHEDULE, 0.0, torch.Generator().manual_seed(0))
    for mine, theirs, target in zip(fed, bits, targets):
        assert torch.equal(mine, theirs) and torch.equal(target, theirs)


def test_self_correction_targets_repair_the_flipped_bits():
    """A flipped bit at a coarse scale leaves a residual pointing the other way; the next scale's target
    follows that residual (so it differs from the clean bits there), and the last scale is never flipped."""
    h = torch.randn(4, 16, 16, 16)
    gen = torch.Generator().manual_seed(0)
    fed, targets = T.self_correcting_bits(h, T.SCHEDULE, 0.5, gen)
    _, clean = T.self_correcting_bits(h, T.SCHEDULE, 0.0, gen)
    assert not torch.equal(fed[0], targets[0])             # some bits of the first scale were flipped
    assert torch.equal(fed[-1], targets[-1])
    assert torch.equal(targets[0], clean[0])               # the first target does not depend on flips
    assert not torch.equal(targets[1], clean[1])           # later targets correct the fed mistakes
    flipped = fed[0] != targets[0]
    assert 0 < flipped.float().mean() < 0.5


def test_teacher_inputs_are_what_generation_feeds():
    torch.manual_seed(0)
    model = T.init_infinity(Infinity(T.MODEL_CFG), 0).eval()
    model.head.weight.data.normal_(0, 0.02)
    features, lens = torch.randn(5, T.MODEL_CFG.text_channels), [5]
    out = generate(model, features, lens, T.SCHEDULE, SamplingParams(cfg=1.0, tau=1.0), record=True,
                   generator=torch.Generator().manual_seed(0))
    inputs, targets = T.teacher_inputs(out.bits, Geometry.build(model, T.SCHEDULE))
    for mine, theirs in zip(inputs, out.next_inputs):
        torch.testing.assert_close(mine, theirs)
    assert targets.shape == (1, 521, 16)


def test_hard_negatives_change_exactly_one_fact():
    rng = np.random.default_rng(0)
    for prompt in test_prompts()[::7]:
        negative = T.hard_negative(prompt, rng)
        assert negative.category == prompt.category and negative.key != prompt.key


def test_reward_loss_with_image_negatives(tmp_path):
    """Image-side hard negatives (renders of an edited caption) join each caption's softmax, and the model
    gets finite gradients through them."""
    tok, clip = T.build_clip(tmp_path / "clip", seed=0)
    pairs = T.sample_training_pairs(6, seed=1)
    without = T.clip_loss(clip, tok, pairs, np.random.default_rng(2), negatives=2)[0]
    with_images = T.clip_loss(clip, tok, pairs, np.random.default_rng(2), negatives=2, image_negatives=2)[0]
    assert torch.isfinite(with_images) and not torch.equal(with_images, without)
    with_images.backward()
    assert all(torch.isfinite(p.grad).all() for p in clip.parameters() if p.grad is not None)
    # the reward stage takes them from the command line (--hparams), as the transformer stage does
    T.main(["reward", "--out", str(tmp_path / "run"), "--steps", "2", "--threads", "1",
            "--hparams", '{"batch": 4, "image_negatives": 1}'])
    assert (tmp_path / "run" / T.CLIP_DIR / "model.safetensors").is_file()


def test_vae_training_resumes(tmp_path):
    T.train_vae(tmp_path, seed=0, steps=2, minutes=None, batch=2)
    first = torch.load(tmp_path / "vae.ckpt", weights_only=False)
    assert first["step"] == 2 and (tmp_path / T.VAE_FILE).is_file()
    T.train_vae(tmp_path, seed=0, steps=3, minutes=None, batch=2)
    assert torch.load(tmp_path / "vae.ckpt", weights_only=False)["step"] == 3


def test_evaluation_helpers():
    lo, hi = wilson(5, 10)
    assert 0.23 < lo < 0.24 and 0.76 < hi < 0.77
    assert diversity(torch.eye(3)) == 1.0 and np.isnan(diversity(torch.ones(1, 4)))
    items = eval_items("test", None)
    assert len(items) == 432 and len(spread(items, 10)) == 10
    assert {i.prompt.category for i in spread(items, 12)} == {p.category for p in test_prompts()}
    trace = {"scales": [{"scale": 0, "live": 4}, {"scale": 1, "live": 2}]}
    assert token_passes(trace, [(1, 1), (2, 2)], guided=True) == 2 * (4 * 1 + 2 * 4)
    assert plan_runs(("raw", "is", "bon", "tts-var"), (1, 2)) == [
        ("raw", 1, ("raw",)), ("bon", 1, ("bon", "is")), ("tts-var", 1, ("tts-var",)),
        ("bon", 2, ("bon", "is")), ("tts-var", 2, ("tts-var",))]


def test_transformer_training_resumes_and_exports_a_loadable_model(tmp_path):
    """Two steps of a non-default shape (width 256, depth 2), resumed for a third: the checkpoint loads
    with weights_only=True, a resumed run may lengthen its schedule, and the export loads through the
    pack's loader with the trained shape."""
    from ttsvar_core.model.checkpoints import load_infinity
    from ttsvar_core.shapesworld.demo import ASSETS

    shutil.copy(ASSETS / T.VAE_FILE, tmp_path)
    T.train_transformer(tmp_path, seed=0, steps=2, minutes=None, batch=3, full=1, width=256, depth=2)
    first = torch.load(tmp_path / "transformer.ckpt", weights_only=True)
    assert (first["step"], first["steps"], first["fitted"]) == (2, 2, False)
    T.train_transformer(tmp_path, seed=0, steps=3, minutes=None, batch=3, full=1, width=256, depth=2)
    second = torch.load(tmp_path / "transformer.ckpt", weights_only=True)
    assert (second["step"], second["steps"]) == (3, 3)
    assert not torch.equal(first["model"]["head.weight"], second["model"]["head.weight"])
    model = load_infinity(tmp_path / T.MODEL_FILE)
    assert (model.cfg.embed_dim, model.cfg.depth, model.cfg.text_channels) == (256, 2, 256)
    assert torch.equal(model.head.weight, second["model"]["head.weight"])


def test_fitted_steps():
    # 50 steps done in 60 s, 1 s per step from here, 600 s budget -> 50 + 540 steps, capped by the schedule
    assert T.fitted_steps(10_000, 50, 60.0, 1.0, 600.0) == 590
    assert T.fitted_steps(400, 50, 60.0, 1.0, 600.0) == 400
    assert T.fitted_steps(10_000, 50, 700.0, 1.0, 600.0) == 50  # already over: stop where it is


def test_second_stage_starts_from_the_shipped_weights(tmp_path):
    """A self-correcting second stage starts from the shipped model: step 0 of the new run holds exactly the
    shipped weights, and one step with flips moves them."""
    from safetensors.torch import load_file
    from ttsvar_core.shapesworld.demo import ASSETS

    shutil.copy(ASSETS / T.VAE_FILE, tmp_path)
    T.train_transformer(tmp_path, seed=0, steps=1, minutes=None, batch=2, full=1, flip_max=0.3,
                        init_from=str(ASSETS), lr=1e-9)
    shipped, trained = load_file(ASSETS / T.MODEL_FILE), load_file(tmp_path / T.MODEL_FILE)
    torch.testing.assert_close(trained["head.weight"], shipped["head.weight"], atol=1e-6, rtol=0)
    wrong_seed = tmp_path / "other"
    wrong_seed.mkdir()
    shutil.copy(ASSETS / T.VAE_FILE, wrong_seed)
    import pytest
    with pytest.raises(ValueError, match="another tokenizer"):
        T.train_transformer(wrong_seed, seed=5, steps=1, minutes=None, batch=2, full=1, init_from=str(ASSETS))


def test_sampling_sweep_writes_the_best_setting(tmp_path):
    """The sweep scores plain sampling on training prompts at every seed and writes the best (cfg, tau)
    next to the model, where the demo and evaluate read it."""
    import json
    from ttsvar_core.shapesworld.demo import ASSETS, read_settings

    shutil.copytree(ASSETS, tmp_path / "model")
    settings = T.choose_sampling(tmp_path / "model", prompts=3, seeds=(7, 8), grid=[(1.0, 1.0), (3.0, 0.5)])
    assert set(settings["sweep"]) == {"cfg=1.0 tau=1.0", "cfg=3.0 tau=0.5"}
    best = max(settings["sweep"], key=settings["sweep"].get)
    assert best == f"cfg={settings['cfg']} tau={settings['tau']}"
    assert settings["chosen_on"] == "3 training-split prompts, plain sampling, seeds 7, 8"
    written = read_settings(tmp_path / "model")
    assert (written["cfg"], written["tau"]) == (settings["cfg"], settings["tau"])
    assert json.loads((tmp_path / "model" / "sampling.json").read_text())["sweep"] == settings["sweep"]
