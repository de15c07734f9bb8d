"""Before a node refuses a search for memory, ComfyUI is asked to make room (unload its own models), and the
memory is looked at again. The engine knows nothing of ComfyUI: the glue hands it make_room."""
import types

import pytest
import torch

SCALES = ((1, 1), (2, 2), (3, 3), (4, 4), (4, 4))
CPU = torch.device("cpu")


@pytest.fixture
def memory(pack, monkeypatch, tmp_path):
    """A machine with `free` bytes available, where glue.make_room frees `frees` bytes; `asked` records
    make_room's calls."""
    state = types.SimpleNamespace(free=0, frees=0, asked=[])

    def make_room(num_bytes, device):
        state.asked.append((num_bytes, torch.device(device)))
        state.free += state.frees

    monkeypatch.setattr(pack.core.engine.memory, "available_memory", lambda device: state.free)
    monkeypatch.setattr(pack.nodes.comfy_glue, "make_room", make_room)
    monkeypatch.setattr(pack.folder_paths, "temp_directory", str(tmp_path))  # the candidate thumbnails
    return state


def _estimate(pack, pipe, prompts, batch):
    engine = pack.core.engine
    request = engine.SearchRequest(prompts, SCALES, pack.core.model.sampling.SamplingParams(), batch)
    return engine.estimate_search_memory(pipe.model, pipe.vae, request)[CPU].total


def run_sampler(pack, pipeline, monkeypatch):
    pipe, prompts = pipeline
    sampler = pack.nodes.sampler.TTSVARSampler
    monkeypatch.setattr(sampler, "hidden", types.SimpleNamespace(unique_id="9"), raising=False)
    batch = pack.core.engine.preset("raw", n=2, num_scales=len(SCALES))
    schedule = pack.nodes.types.SearchSchedule(batch, "Plain sampling", "1M", SCALES)
    return sampler.execute(pipe, prompts, schedule, "1:1", 3, 3.0, 0.5, 900, 0.97)


def test_the_sampler_asks_for_room_before_refusing(pack, pipeline, memory, monkeypatch):
    pipe, prompts = pipeline
    need = _estimate(pack, pipe, prompts, pack.core.engine.preset("raw", n=2, num_scales=len(SCALES)))
    memory.free, memory.frees = need // 2, need
    output = run_sampler(pack, pipeline, monkeypatch)
    assert memory.asked == [(need, CPU)]
    assert output.result[1].shape[0] == 2  # every candidate's image: the search ran

    memory.asked, memory.free, memory.frees = [], need // 2, 0
    with pytest.raises(pack.core.engine.NotEnoughMemory, match="this search needs about .* is available: use"):
        run_sampler(pack, pipeline, monkeypatch)
    assert memory.asked == [(need, CPU)]


def test_start_asks_for_room_before_refusing(pack, pipeline, memory):
    pipe, prompts = pipeline
    need = _estimate(pack, pipe, prompts, pack.core.engine.preset("raw", n=3, num_scales=len(SCALES)))
    start = pack.nodes.candidates.TTSVARStart

    def run():
        return start.execute(pipe, prompts, "1:1", "1M", 3, 3.0, 0.5, 900, 0.97, 3,
                             custom_scales="1x1,2x2,3x3,4x4,4x4")
    memory.free, memory.frees = need - 1, 1
    assert run().result[0].state.num_candidates == 3
    assert memory.asked == [(need, CPU)]
    memory.asked, memory.free, memory.frees = [], need - 1, 0
    with pytest.raises(pack.core.engine.NotEnoughMemory):
        run()
    assert memory.asked == [(need, CPU)]


def test_make_room_asks_comfyui_to_free_a_gpu_and_leaves_the_cpu_alone(pack):
    glue = pack.nodes.comfy_glue
    pack.mm.freed.clear()
    glue.make_room(5000, torch.device("cpu"))
    assert pack.mm.freed == []  # ComfyUI's unloading frees nothing in CPU memory
    glue.make_room(5000, torch.device("cuda", 0))
    assert pack.mm.freed == [(5000 + pack.mm.minimum_inference_memory(), torch.device("cuda", 0))]
    assert glue.run_options().make_room is glue.make_room
    assert glue.run_options().should_stop is glue.check_interrupt
