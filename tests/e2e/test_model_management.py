"""Our model in ComfyUI's memory manager, in a real ComfyUI: the loader registers the transformer and VAE
with it, a second run finds them loaded, and after the user frees memory (POST /free, what the Manager's
"Unload models" button sends) ComfyUI has evicted them and the next run loads them back through it."""
import itertools
import time

LOADED = "Requested to load InfinityWeights"   # ComfyUI's log line when it (re)loads our weights
_seeds = itertools.count(9000)
TINY_5 = "1x1,2x2,3x3,4x4,4x4"


def sampler_graph(seed):
    """Plain sampling of two candidates on the tiny model, saved."""
    return {
        "m": {"class_type": "TTSVAR_ModelLoader", "inputs": {
            "model": "tiny_infinity.safetensors", "vae": "tiny_vae.safetensors", "text_encoder": "tiny-t5",
            "dtype": "fp32"}},
        "t": {"class_type": "TTSVAR_TextEncode", "inputs": {"model": ["m", 0], "prompt": "a red cat",
                                                            "negative_prompt": ""}},
        "s": {"class_type": "TTSVAR_BatchSchedule", "inputs": {
            "preset": "Plain sampling", "n": 2, "pixel_budget": "1M", "batch_sizes": "", "cluster_scales": "",
            "resample_scales": "", "potential": "value", "lam": 10.0, "feature_mode": "pca",
            "custom_scales": TINY_5}},
        "x": {"class_type": "TTSVAR_Sampler", "inputs": {
            "model": ["m", 0], "conditioning": ["t", 0], "schedule": ["s", 0], "aspect_ratio": "1:1",
            "seed": seed, "cfg": 3.0, "tau": 0.5, "top_k": 900, "top_p": 0.97}},
        "o": {"class_type": "PreviewImage", "inputs": {"images": ["x", 0]}},
    }


def test_comfyui_evicts_and_reloads_our_model(comfy, comfy_server, tiny_models):
    first = comfy.run_prompt(sampler_graph(next(_seeds)), timeout=300)
    assert first.succeeded, first.error
    loads = comfy_server.log_text().count(LOADED)
    assert loads >= 1  # registered when a node first needed it

    again = comfy.run_prompt(sampler_graph(next(_seeds)), timeout=300)
    assert again.succeeded, again.error
    assert comfy_server.log_text().count(LOADED) == loads  # still loaded: nothing moved

    comfy.free(unload_models=True, free_memory=True)
    time.sleep(2.0)  # the prompt worker acts on /free between prompts, within a second
    after = comfy.run_prompt(sampler_graph(next(_seeds)), timeout=300)
    assert after.succeeded, after.error
    assert comfy_server.log_text().count(LOADED) == loads + 1  # evicted by ComfyUI, loaded back through it
