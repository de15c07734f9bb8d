"""Speed and memory of plain sampling, Best-of-N and TTS-VAR in one process and one report.

    python benchmarks/bench.py                      # tiny configuration on CPU (default)
    python benchmarks/bench.py --config 2b --device cuda --budget 1M   # 2B-shaped, random weights

Per strategy: wall time, time per scale, time in selection (decode + features + reward + re-index),
transformer token-passes, peak memory (CPU RSS above the idle baseline, or CUDA peak allocation), and
ratios against Best-of-N at the same N and against the token-pass prediction. Results go to a JSON file.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ttsvar_core.checkpoints import build_random  # noqa: E402
from ttsvar_core.config import PRESETS, VAE_PRESETS, InfinityConfig  # noqa: E402
from ttsvar_core.engine import BatchSchedule, run_search, schedule_for  # noqa: E402
from ttsvar_core.offload import BlockStreamer  # noqa: E402
from ttsvar_core.sampling import SamplingParams  # noqa: E402
from ttsvar_core.schedules import get_schedule  # noqa: E402

# A CPU configuration with the cost proportions of the real model: one candidate's transformer passes
# cost about ten full-size decodes (2B at 1M: 92.7 TFLOP per candidate with guidance vs 9.8 TFLOP per
# 1024 px decode; here 114 vs 11.6 GFLOP at 256 px; `cost_proportions` prints both). With a smaller
# transformer the tiny VAE would dominate every selection, which says nothing about the real models.
BENCH_TINY = InfinityConfig(depth=12, embed_dim=512, num_heads=8, block_chunks=2, text_channels=256, text_maxlen=32,
                            codebook_dim=16, vae=VAE_PRESETS["tiny_vae"])


class RssPeak:
    """Peak resident memory of this process above a baseline, sampled by a thread every millisecond."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        gc.collect()
        try:  # give freed heap back to the OS so the baseline is the idle process
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        self.base = self.peak = self.rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def bytes(self) -> int:
        return self.peak - self.base


class CudaPeak:
    def __enter__(self):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        self.base = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc):
        torch.cuda.synchronize()
        self.peak = torch.cuda.max_memory_allocated()

    @property
    def bytes(self) -> int:
        return self.peak - self.base

    @property
    def total(self) -> int:
        """Everything on the device at the peak, weights included."""
        return self.peak


def token_passes(trace: dict, schedule, guided: bool) -> int:
    """Transformer token-passes: rows x tokens summed over scales (rows double with guidance)."""
    rows = [s["live"] * (2 if guided else 1) for s in trace["scales"]]
    return sum(r * h * w for r, (h, w) in zip(rows, schedule))


def predicted_passes(batch: BatchSchedule, schedule, prompts: int, guided: bool) -> int:
    """What the schedule alone predicts: scale si runs with the size left after scale si - 1."""
    live, total = batch.sizes[0], 0
    for si, (h, w) in enumerate(schedule):
        total += live * prompts * (2 if guided else 1) * h * w
        live = batch.sizes[si]
    return total


def cost_proportions(cfg: InfinityConfig, budget: str) -> dict:
    """FLOPs of one candidate's transformer passes (guided: two rows) and of one full-size decode, counted on
    the meta device; the ratio says how much selections can cost next to stepping."""
    from torch.utils.flop_counter import FlopCounterMode

    from ttsvar_core.infinity import Infinity
    from ttsvar_core.vae import BSQVAE
    with torch.device("meta"):
        model, vae = Infinity(cfg), BSQVAE(cfg.vae)
    # linear layers dominate: 2 FLOPs per weight per token, two rows per candidate with guidance
    weights = sum(p.numel() for name, p in model.named_parameters() if p.ndim == 2 and "cfg_uncond" not in name)
    schedule = get_schedule(1.0, budget)
    candidate = 2 * weights * sum(h * w for h, w in schedule) * 2
    side = max(schedule[-1]) * (2 if cfg.apply_spatial_patchify else 1)
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        vae.decoder(torch.empty(1, cfg.vae.codebook_dim, side, side))
    decode = counter.get_total_flops()
    return {"candidate_gflop": candidate / 1e9, "full_decode_gflop": decode / 1e9, "ratio": candidate / decode}


def make_scorers(device):
    """Reward and feature extractor for the benchmark: tiny models in the real on-disk formats, loaded
    through the same loaders as ImageReward/DINOv2 files (their cost is small next to the transformer's
    even at full size: ~0.3 TFLOP per image against ~90 TFLOP for one 2B candidate at 1M)."""
    from ttsvar_core.scorers import load_feature_extractor, load_reward
    from ttsvar_core.tiny_scorers import write_tiny_scorers
    folder = Path(tempfile.mkdtemp(prefix="ttsvar-bench-"))
    paths = write_tiny_scorers(folder)
    reward = load_reward("clip", paths["clip"], device=device)
    extractor = load_feature_extractor("dinov2", paths["dinov2"], device=device)
    return reward, extractor


def time_run(model, vae, feats, lens, prompts, schedule, params, batch, reward, extractor, device, offload):
    marks = []
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def callback(event, state, record):
        sync()
        marks.append((event, time.perf_counter()))

    meter = CudaPeak() if device.type == "cuda" else RssPeak()
    with meter:
        sync()
        t0 = time.perf_counter()
        result = run_search(model, vae, feats, lens, prompts, schedule, params, batch, seed=0, reward=reward,
                            extractor=extractor, callback=callback, offload_idle=offload)
        sync()
        wall = time.perf_counter() - t0
    step_times, selections, last = [], [], t0
    for event, t in marks:
        if event == "step":
            step_times.append(t - last)
        elif event in ("cluster", "resample"):
            selections.append({"event": event, "after_scale": len(step_times) - 1, "seconds": t - last,
                               "step_seconds": step_times[-1]})
        elif event == "final":
            selections.append({"event": "final", "after_scale": len(step_times) - 1, "seconds": t - last,
                               "step_seconds": step_times[-1]})
        last = t
    return result, wall, step_times, selections, meter


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", choices=("tiny", "2b"), default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--budget", default="0.06M", help="pixel budget: 0.06M (7 scales) ... 1M (13 scales)")
    ap.add_argument("--n", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default=None)
    ap.add_argument("--low-memory", action="store_true", help="also run TTS-VAR with block streaming + offload")
    ap.add_argument("--out", default=None, help="JSON results file")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    cfg = BENCH_TINY if args.config == "tiny" else PRESETS["infinity_2b"]
    model, vae = build_random(cfg, seed=0, device=device, dtype=dtype)
    schedule = get_schedule(1.0, args.budget)
    reward, extractor = make_scorers(device)
    prompts = ["a photo of a cat"]
    feats = torch.randn(12, cfg.text_channels, generator=torch.Generator().manual_seed(0)) * 0.5
    lens = [12]
    params = SamplingParams(cfg=3.0, tau=0.5)
    guided = True
    # warm-up: first calls allocate kernels and caches
    # (and TTS-VAR's selections import scikit-learn once: steady-state memory, not import costs, is compared)
    for strategy in ("bon", "tts-var"):
        run_search(model, vae, feats, lens, prompts, schedule, params, schedule_for(strategy, 1, len(schedule)),
                   reward=reward, extractor=extractor)
    runs = []
    plan = [("raw", 1, "fixed")] + [(s, n, r) for n in args.n for s, r in
                                    (("bon", "fixed"), ("tts-var", "fixed"), ("tts-var", "scale"))]
    for strategy, n, resolution in plan:
        runs.append(measure(strategy, n, model, vae, feats, lens, prompts, schedule, params, reward, extractor,
                            device, guided, offload=False, resolution=resolution))
    if args.low_memory:
        # the same runs with the blocks streamed from pinned CPU memory and idle models off the device
        streamer = BlockStreamer(model, device)
        for strategy in ("bon", "tts-var"):
            runs.append(measure(strategy, args.n[0], model, vae, feats, lens, prompts, schedule, params, reward,
                                extractor, device, guided, offload=True))
        streamer.remove()
    report = {"config": args.config, "device": str(device), "dtype": str(dtype), "budget": args.budget,
              "proportions": cost_proportions(cfg, args.budget),
              "schedule": [list(s) for s in schedule], "machine": machine(device), "runs": runs}
    add_ratios(report)
    print(table(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return report


def measure(strategy, n, model, vae, feats, lens, prompts, schedule, params, reward, extractor, device, guided,
            offload, resolution="fixed"):
    batch = schedule_for(strategy, n, len(schedule), selection_resolution=resolution)
    result, wall, steps, selections, meter = time_run(model, vae, feats, lens, prompts, schedule, params, batch,
                                                      reward, extractor, device, offload=offload)
    label = strategy + (" (scale res)" if resolution == "scale" else "") + (" (low memory)" if offload else "")
    print(f"  {label:22s} N={n}: {wall:7.3f} s", file=sys.stderr)
    return {"strategy": label, "n": n, "wall_s": wall, "step_s": steps, "selections": selections,
            "selection_s": sum(s["seconds"] for s in selections if s["event"] != "final"),
            "final_s": sum(s["seconds"] for s in selections if s["event"] == "final"),
            "token_passes": token_passes(result.trace, schedule, guided),
            "predicted_passes": predicted_passes(batch, schedule, len(prompts), guided),
            "peak_bytes": meter.bytes, "peak_total_bytes": getattr(meter, "total", None), "sizes": list(batch.sizes)}


def add_ratios(report):
    bon = {(r["n"], r["strategy"].endswith("(low memory)")): r for r in report["runs"]
           if r["strategy"].startswith("bon")}
    for r in report["runs"]:
        base = bon.get((r["n"], r["strategy"].endswith("(low memory)")))
        if base:
            r["time_vs_bon"] = r["wall_s"] / base["wall_s"]
            r["passes_vs_bon"] = r["token_passes"] / base["token_passes"]
            r["time_over_pass_prediction"] = r["time_vs_bon"] / r["passes_vs_bon"]
            # the same without selection work (decode, features, reward, re-index) and the final pick:
            # what the stepping engine itself costs against what its token-passes predict
            gen, base_gen = r["wall_s"] - r["selection_s"] - r["final_s"], base["wall_s"] - base["final_s"]
            r["generation_over_pass_prediction"] = gen / base_gen / r["passes_vs_bon"]
            r["memory_vs_bon"] = r["peak_bytes"] / max(base["peak_bytes"], 1)
        sels = [s for s in r["selections"] if s["event"] != "final"]
        r["max_selection_over_step"] = max((s["seconds"] / s["step_seconds"] for s in sels), default=0.0)
        r["selection_share"] = r["selection_s"] / r["wall_s"]


def machine(device):
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or
            platform.machine(), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def table(report) -> str:
    p = report["proportions"]
    lines = [f"config={report['config']} device={report['device']} dtype={report['dtype']} budget={report['budget']} "
             f"({len(report['schedule'])} scales)",
             f"one candidate {p['candidate_gflop']:.1f} GFLOP, one full decode {p['full_decode_gflop']:.1f} GFLOP "
             f"(ratio {p['ratio']:.1f}; the 2B model at 1M: 9.4)",
             f"{'strategy':22s} {'N':>2} {'wall s':>8} {'vs BoN':>7} {'passes':>10} {'vs BoN':>7} {'t/pred':>7} "
             f"{'gen/pred':>8} {'select s':>9} {'sel/step':>8} {'sel %':>6} {'peak MB':>9} {'vs BoN':>7} "
             f"{'total MB':>9}"]
    for r in report["runs"]:
        f = lambda k, fmt: format(r[k], fmt) if k in r else "-"  # noqa: E731
        lines.append(f"{r['strategy']:22s} {r['n']:>2} {r['wall_s']:8.3f} {f('time_vs_bon', '7.2f')} "
                     f"{r['token_passes']:10d} {f('passes_vs_bon', '7.2f')} {f('time_over_pass_prediction', '7.2f')} "
                     f"{f('generation_over_pass_prediction', '8.2f')} "
                     f"{r['selection_s']:9.3f} {r['max_selection_over_step']:8.2f} {100 * r['selection_share']:6.1f} "
                     f"{r['peak_bytes'] / 2**20:9.1f} {f('memory_vs_bon', '7.2f')} "
                     f"{(r['peak_total_bytes'] or 0) / 2**20:9.1f}")
        steps = ", ".join(f"{t * 1000:.0f}" for t in r["step_s"])
        lines.append(f"{'':25s}ms per scale: {steps}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
