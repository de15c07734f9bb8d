"""Our model as ComfyUI's memory manager sees it: one ModelPatcher over the transformer and VAE (the streamed
blocks left out), loaded through ComfyUI before a node computes. The eviction and reload themselves run in a
real ComfyUI: tests/e2e/test_model_management.py."""
import copy
import types

import torch

SCALES = ((1, 1), (2, 2), (3, 3), (4, 4), (4, 4))


def run_sampler(pack, managed, prompts, monkeypatch):
    sampler = pack.nodes.sampler.TTSVARSampler
    monkeypatch.setattr(sampler, "hidden", types.SimpleNamespace(unique_id="9"), raising=False)
    batch = pack.core.engine.preset("raw", n=2, num_scales=len(SCALES))
    schedule = pack.nodes.types.SearchSchedule(batch, "Plain sampling", "1M", SCALES)
    return sampler.execute(managed, prompts, schedule, "1:1", 3, 3.0, 0.5, 900, 0.97)


def test_the_patcher_holds_the_transformer_and_vae(pack, pipeline):
    managed, _ = pipeline
    patcher = managed.patcher
    held = {id(p) for p in patcher.model.parameters()}
    assert held == {id(p) for p in managed.model.parameters()} | {id(p) for p in managed.vae.parameters()}
    assert patcher.size == pack.mm.module_size(patcher.model)
    # the weights are on the device already: the first load moves nothing and evicts nothing for them
    assert patcher.model.device == torch.device("cpu")
    assert patcher.model.model_loaded_weight_memory == patcher.size
    assert managed.vae is managed.pipeline.vae and managed.schedule == managed.pipeline.schedule


def test_streamed_blocks_stay_out_of_comfyuis_hands(pack, pipeline):
    """ComfyUI moves what its patcher holds as a whole: streamed blocks in it would all land on the device."""
    managed, _ = pipeline
    streamed = pack.nodes.comfy_glue.manage(managed.pipeline, streamed=True)
    held = {id(p) for p in streamed.patcher.model.parameters()}
    blocks = {id(p) for p in managed.model.block_chunks.parameters()}
    assert blocks and not held & blocks
    assert {id(p) for p in managed.vae.parameters()} <= held


def test_nodes_load_the_model_through_comfyui_before_computing(pack, pipeline, monkeypatch, tmp_path):
    managed, prompts = pipeline
    monkeypatch.setattr(pack.folder_paths, "temp_directory", str(tmp_path))
    pack.mm.loaded.clear()
    run_sampler(pack, managed, prompts, monkeypatch)
    assert [patcher for patcher, _ in pack.mm.loaded] == [managed.patcher]

    pack.mm.loaded.clear()
    start = pack.nodes.candidates.TTSVARStart
    monkeypatch.setattr(start, "hidden", types.SimpleNamespace(unique_id="3"), raising=False)
    custom = ",".join(f"{h}x{w}" for h, w in SCALES)
    state = start.execute(managed, prompts, "1:1", "1M", 1, 3.0, 0.5, 900, 0.97, 2, custom_scales=custom).result[0]
    step = pack.nodes.candidates.TTSVARStep
    monkeypatch.setattr(step, "hidden", types.SimpleNamespace(unique_id="4"), raising=False)
    step.execute(state, -1)
    assert [patcher for patcher, _ in pack.mm.loaded] == [managed.patcher, managed.patcher]


def test_the_managed_model_copies_without_recursing(pipeline):
    """copy looks up dunders on an instance whose fields are not set yet: the pass-through must not loop."""
    managed, _ = pipeline
    assert copy.copy(managed).pipeline is managed.pipeline
