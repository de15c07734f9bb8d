"""What ComfyUI drops is freed: the nodes keep no reference to a state they returned (no module-level registry,
no preview or patcher holding it), so when ComfyUI's output cache lets go of a candidates output, its KV cache
tensors go with it. ComfyUI holds node outputs by plain references, as this test does."""
import gc
import types
import weakref

SCALES = "1x1,2x2,3x3,4x4,4x4"


def test_a_dropped_candidates_output_frees_its_kv_cache(pack, pipeline, monkeypatch, tmp_path):
    managed, prompts = pipeline
    monkeypatch.setattr(pack.folder_paths, "temp_directory", str(tmp_path))
    start, step = pack.nodes.candidates.TTSVARStart, pack.nodes.candidates.TTSVARStep
    monkeypatch.setattr(start, "hidden", types.SimpleNamespace(unique_id="3"), raising=False)
    monkeypatch.setattr(step, "hidden", types.SimpleNamespace(unique_id="4"), raising=False)
    outputs = {"3": start.execute(managed, prompts, "1:1", "1M", 1, 3.0, 0.5, 900, 0.97, 2, custom_scales=SCALES)}
    outputs["4"] = step.execute(outputs["3"].result[0], 2)
    caches = {node: outputs[node].result[0].state.cache_ref.cache for node in outputs}
    watched = {node: (weakref.ref(cache.k), weakref.ref(cache.v)) for node, cache in caches.items()}
    del caches
    # the Step's state is a new state with its own cache: dropping it leaves the Start's output whole
    del outputs["4"]
    gc.collect()
    assert all(ref() is None for ref in watched["4"]), "the Step's dropped output still holds its KV cache"
    assert all(ref() is not None for ref in watched["3"]), "the Start's output lost its cache while still held"
    del outputs["3"]
    gc.collect()
    assert all(ref() is None for ref in watched["3"]), "the Start's dropped output still holds its KV cache"
