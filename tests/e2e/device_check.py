"""Device check of the node pack (not a pytest module): the real node classes with ComfyUI's own
model_management, utils and folder_paths (from .cache/ComfyUI, set up by scripts/setup_env.sh), and a
stand-in for the websocket server that records events. Run on a GPU machine (with .cache/ComfyUI carried
along), or with --cpu --b-preset tiny here to try its code:

    python tests/e2e/device_check.py [--cpu] [--skip-2b] [--b-preset tiny] --out DIR

Part A, tiny random files: node-by-node search, branches, sampler, interrupt, offloading, on the device.
Part B, a 2B-shaped random model at 1024 px (files written and loaded through the loader node): time and
peak GPU memory of the node-by-node search (all node outputs kept alive, as ComfyUI's cache does) and of
the sampler.
"""
import argparse
import asyncio
import importlib.util
import json
import sys
import time
import traceback
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMFY = REPO / ".cache" / "ComfyUI"
TINY_13 = "1x1,1x1,2x2,2x2,2x2,3x3,3x3,3x3,4x4,4x4,4x4,4x4,4x4"

ap = argparse.ArgumentParser()
ap.add_argument("--cpu", action="store_true")
ap.add_argument("--skip-2b", action="store_true")
ap.add_argument("--b-preset", default="infinity_2b", help="tiny: try part B's code on a CPU")
ap.add_argument("--out", default="/tmp/gpu_check_out")
ap.add_argument("--work", default="/tmp/gpu_check_work")
args = ap.parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
work = Path(args.work)
report = {"checks": {}, "errors": []}


def check(name, ok, detail=""):
    report["checks"][name] = {"ok": bool(ok), "detail": detail}
    print(("PASS " if ok else "FAIL ") + name + (f": {detail}" if detail else ""), flush=True)


sys.path.insert(0, str(COMFY))
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
sys.argv = [sys.argv[0]] + (["--cpu"] if args.cpu else [])


class _Server:
    instance = None

    def __init__(self):
        self.client_id = "device-check"
        self.last_prompt_id = "check"
        self.events = []

    def send_sync(self, event, data, sid=None):
        self.events.append((event, data))


server = types.ModuleType("server")
server.PromptServer = _Server
_Server.instance = _Server()
sys.modules["server"] = server

import torch  # noqa: E402
import folder_paths  # noqa: E402
import comfy.model_management as mm  # noqa: E402
from comfy_api.latest import io  # noqa: E402

folder_paths.set_temp_directory(str(work / "temp"))
spec = importlib.util.spec_from_file_location("ttsvar_pack", REPO / "__init__.py",
                                              submodule_search_locations=[str(REPO)])
pack = importlib.util.module_from_spec(spec)
sys.modules["ttsvar_pack"] = pack
spec.loader.exec_module(pack)
N = {cls.GET_SCHEMA().node_id: cls for cls in asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())}
from ttsvar_pack.ttsvar_core.testing.tiny_models import write_tiny_models, write_t5  # noqa: E402
from ttsvar_pack.ttsvar_core.testing.tiny_scorers import write_tiny_scorers  # noqa: E402

models = work / "models"
for name in ("infinity", "infinity_vae", "text_encoders", "ttsvar_rewards", "ttsvar_features"):
    (models / name).mkdir(parents=True, exist_ok=True)
    folder_paths.add_model_folder_path(name, str(models / name))
device = mm.get_torch_device()
cuda = device.type == "cuda"
print("device", device, "torch", torch.__version__, flush=True)


def sync():
    if cuda:
        torch.cuda.synchronize()


def empty():
    if cuda:
        torch.cuda.empty_cache()


def allocated():
    return torch.cuda.memory_allocated() if cuda else 0
_node_ids = iter(range(1, 10 ** 6))


def run(node_type, *a, **kw):
    """One node call as ComfyUI makes it (inputs by name, a hidden node id of its own); returns its outputs.
    Positional values go to the schema's inputs in order."""
    cls = N[node_type]
    names = [i.id for i in cls.GET_SCHEMA().inputs]
    node = cls.PREPARE_CLASS_CLONE({io.Hidden.unique_id: str(next(_node_ids))})
    return node.execute(**dict(zip(names, a)), **kw).args


def param_device(module):
    return next(module.parameters()).device


def scorer_device(scorer):
    return param_device(next(iter(scorer._modules.values())))


def node_by_node(pipe, cond, reward, feats, seed, scales, n=8, keep_all=None, budget="1M"):
    """The paper's schedule node by node; keep_all collects every output (ComfyUI's cache keeps them)."""
    keep = keep_all if keep_all is not None else []
    (s,) = run("TTSVAR_Start", pipe, cond, "1:1", budget, seed, 3.0, 0.5, 900, 0.97, n, custom_scales=scales)
    keep.append(s)
    for kind, value in (("step", 2), ("cluster", 6), ("step", 5), ("cluster", 4), ("step", 6), ("resample", 2),
                        ("step", 9), ("resample", 1), ("step", -1)):
        if kind == "step":
            (s,) = run("TTSVAR_Step", s, value)
        elif kind == "cluster":
            (s,) = run("TTSVAR_Cluster", s, feats, value, "pca")
        else:
            (s,) = run("TTSVAR_Resample", s, reward, value, "value", 10.0)
        keep.append(s)
    chosen, finalists, s = run("TTSVAR_PickBest", s, "best", 10.0, reward=reward)
    keep.append(s)
    return chosen, finalists


def part_a():
    write_tiny_models(models)
    write_tiny_scorers(models)
    (pipe,) = run("TTSVAR_ModelLoader", "tiny_infinity.safetensors", "tiny_vae.safetensors", "tiny-t5", "auto")
    check("A.model on device", param_device(pipe.model).type == device.type,
          f"{param_device(pipe.model)}, blocks {pipe.model.block_dtype}")
    check("A.T5 offloaded after load", param_device(pipe.text_encoder.model).type == "cpu")
    (reward,) = run("TTSVAR_RewardLoader", "clip", "tiny-clip", "auto")
    (feats,) = run("TTSVAR_FeatureLoader", "dinov2", "tiny_dinov2_reg4.pth", "auto")
    check("A.scorers wait on CPU", scorer_device(reward).type == "cpu" and scorer_device(feats).type == "cpu")
    (cond,) = run("TTSVAR_TextEncode", pipe, "a red cat", "a blurry photo")
    check("A.T5 offloaded after encoding", param_device(pipe.text_encoder.model).type == "cpu",
          f"features on {cond.features.device}")
    chosen, finalists = node_by_node(pipe, cond, reward, feats, 1, TINY_13)
    check("A.node-by-node images", tuple(chosen.shape) == (1, 64, 64, 3) and chosen.dtype == torch.float32
          and chosen.device.type == "cpu", f"{tuple(chosen.shape)} {chosen.dtype} {chosen.device}")
    check("A.scorers back on CPU after nodes",
          scorer_device(reward).type == "cpu" and scorer_device(feats).type == "cpu")
    grids = [d for e, d in server.PromptServer.instance.events if e == "ttsvar.candidates"]
    check("A.candidate grids sent", [g["stage"] for g in grids[:4]] == ["step", "cluster", "step", "cluster"],
          f"{len(grids)} grids")

    # two branches from one state equal the same searches run on their own
    (a,) = run("TTSVAR_Start", pipe, cond, "1:1", "1M", 7, 3.0, 0.5, 900, 0.97, 8, custom_scales=TINY_13)
    (s2,) = run("TTSVAR_Step", a, 2)
    (plain,) = run("TTSVAR_Step", s2, -1)
    (c,) = run("TTSVAR_Cluster", s2, feats, 3, "pca")
    (clustered,) = run("TTSVAR_Step", c, -1)
    (a2,) = run("TTSVAR_Start", pipe, cond, "1:1", "1M", 7, 3.0, 0.5, 900, 0.97, 8, custom_scales=TINY_13)
    (plain_alone,) = run("TTSVAR_Step", a2, -1)
    (s2b,) = run("TTSVAR_Step", a2, 2)
    (cb,) = run("TTSVAR_Cluster", s2b, feats, 3, "pca")
    (clustered_alone,) = run("TTSVAR_Step", cb, -1)
    for name, x, y in (("plain", plain, plain_alone), ("clustered", clustered, clustered_alone)):
        (ix,), (iy,) = run("TTSVAR_Decode", x), run("TTSVAR_Decode", y)
        same = torch.equal(ix, iy)
        check(f"A.branch {name} equals separate run", same,
              "" if same else f"max abs diff {float((ix - iy).abs().max()):.4g}")

    # sampler
    (sched,) = run("TTSVAR_BatchSchedule", "TTS-VAR paper (2B)", 2, "1M", "", "", "", "value", 10.0, "pca",
                   custom_scales=TINY_13)
    chosen, finalists, _ = run("TTSVAR_Sampler", pipe, cond, sched, "1:1", 3, 3.0, 0.5, 900, 0.97,
                               reward=reward, features=feats)
    check("A.sampler", tuple(chosen.shape) == (1, 64, 64, 3) and finalists.shape[0] == 2,
          f"chosen {tuple(chosen.shape)} finalists {tuple(finalists.shape)}")

    # interrupt between scales, then a clean run
    (a,) = run("TTSVAR_Start", pipe, cond, "1:1", "1M", 9, 3.0, 0.5, 900, 0.97, 4, custom_scales=TINY_13)
    mm.interrupt_current_processing(True)
    try:
        run("TTSVAR_Step", a, -1)
        check("A.interrupt raises", False)
    except mm.InterruptProcessingException:
        check("A.interrupt raises", True)
    (done,) = run("TTSVAR_Step", a, -1)
    check("A.run after interrupt", done.scales_done == 13)


def part_b():
    from safetensors.torch import save_file

    from ttsvar_pack.ttsvar_core.model.checkpoints import build_random
    from ttsvar_pack.ttsvar_core.model.config import PRESETS

    t = time.perf_counter()
    cfg = PRESETS[args.b_preset]
    model, vae = build_random(cfg, seed=0, device=device, dtype=torch.bfloat16 if cuda else torch.float32)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(models / "infinity" / "infinity_2b_reg.safetensors"))
    save_file({k: v.detach().clone().contiguous() for k, v in vae.state_dict().items()},
              str(models / "infinity_vae" / "infinity_vae_d32reg.safetensors"))
    del model, vae
    empty()
    write_t5(models / "text_encoders" / "t5-2048", cfg.text_channels)
    report["b_write_s"] = time.perf_counter() - t
    print(f"2B files written in {report['b_write_s']:.1f} s", flush=True)

    t = time.perf_counter()
    (pipe,) = run("TTSVAR_ModelLoader", "infinity_2b_reg.safetensors", "infinity_vae_d32reg.safetensors", "t5-2048",
                  "auto")
    report["b_load_s"] = time.perf_counter() - t
    check("B.2B loaded in bf16", pipe.model.block_dtype == (torch.bfloat16 if cuda else torch.float32),
          f"{report['b_load_s']:.1f} s")
    (reward,) = run("TTSVAR_RewardLoader", "clip", "tiny-clip", "auto")
    (feats,) = run("TTSVAR_FeatureLoader", "dinov2", "tiny_dinov2_reg4.pth", "auto")
    (cond,) = run("TTSVAR_TextEncode", pipe, "a photo of a red fox in the snow", "")
    base = allocated()
    report["b_model_gib"] = base / 2 ** 30

    scales = "" if cuda else TINY_13  # 1024 px on the GPU; a CPU only tries the code
    for label, fn in (("node_by_node", lambda keep: node_by_node(pipe, cond, reward, feats, 11, scales,
                                                                 keep_all=keep)),
                      ("sampler", lambda keep: keep.append(run(
                          "TTSVAR_Sampler", pipe, cond,
                          run("TTSVAR_BatchSchedule", "TTS-VAR paper (2B)", 1, "1M", "", "", "", "value", 10.0,
                              "pca", custom_scales=scales)[0], "1:1", 11, 3.0, 0.5, 900, 0.97,
                          reward=reward, features=feats)))):
        for attempt in ("warm-up", "timed"):
            sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            keep = []
            t = time.perf_counter()
            fn(keep)
            sync()
            seconds = time.perf_counter() - t
            peak = ((torch.cuda.max_memory_allocated() if cuda else 0) - base) / 2 ** 30
            retained = (allocated() - base) / 2 ** 30
            report[f"b_{label}_{attempt}"] = {"seconds": seconds, "peak_gib_above_model": peak,
                                               "retained_gib_with_all_outputs_alive": retained}
            print(f"{label} {attempt}: {seconds:.1f} s, peak {peak:.2f} GiB above the model, "
                  f"{retained:.2f} GiB retained by the kept outputs", flush=True)
            del keep
            empty()
    check("B.node-by-node peak below 30 GiB", report["b_node_by_node_timed"]["peak_gib_above_model"] < 30,
          f"{report['b_node_by_node_timed']['peak_gib_above_model']:.2f} GiB")


try:
    part_a()
    if not args.skip_2b:
        part_b()
except Exception:  # report whatever broke, with the checks done so far
    report["errors"].append(traceback.format_exc())
    print(traceback.format_exc(), flush=True)
(out / "report.json").write_text(json.dumps(report, indent=1))
failed = [k for k, v in report["checks"].items() if not v["ok"]]
print("FAILED:", failed if failed else "none", "errors:", len(report["errors"]))
sys.exit(1 if failed or report["errors"] else 0)
