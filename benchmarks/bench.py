"""Speed and memory of plain sampling, Best-of-N and TTS-VAR in one process and one report.

    python benchmarks/bench.py                      # tiny configuration on CPU (default)
    python benchmarks/bench.py --config 2b --device cuda --budget 1M   # 2B-shaped, random weights

Per strategy: wall time, time per scale, time in selection (decode + features + reward + re-index),
transformer token-passes, peak memory (CPU: malloc'd bytes and RSS above the idle baseline; CUDA: peak
allocation), and ratios against Best-of-N at the same N and against the token-pass prediction. Every
strategy runs `--repeat` times (the median is kept). The report ends with the FLOP floor of each selection:
what decoding alone costs next to the step it follows, for this configuration and for the 2B model.
Results go to a JSON file.
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
from functools import lru_cache, partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ttsvar_core.model.checkpoints import build_random, store_fp8  # noqa: E402
from ttsvar_core.model.config import PRESETS, VAE_PRESETS, InfinityConfig  # noqa: E402
from ttsvar_core.engine import (DECODE_CHOICES, BatchSchedule, HistoryScored, Prompts, RunOptions,  # noqa: E402
                                 ScaleDone, Scorers, SearchRequest, run_search, schedule_for)
from ttsvar_core.engine.schedule import FAST_SELECTION_SIDE, POTENTIALS, DecodePolicy  # noqa: E402
from ttsvar_core.model.config import pixels_per_token  # noqa: E402
from ttsvar_core.model.offload import BlockStreamer  # noqa: E402
from ttsvar_core.model.sampling import SamplingParams  # noqa: E402
from ttsvar_core.model.schedules import get_schedule  # noqa: E402

# A CPU configuration with the cost proportions of the real model: one candidate's transformer passes
# cost about ten full-size decodes (2B at 1M: 92.7 TFLOP per candidate with guidance vs 9.8 TFLOP per
# 1024 px decode; here 114 vs 11.6 GFLOP at 256 px; `cost_proportions` prints both). With a smaller
# transformer the tiny VAE would dominate every selection, which says nothing about the real models.
BENCH_TINY = InfinityConfig(depth=12, embed_dim=512, num_heads=8, block_chunks=2, text_channels=256, text_maxlen=32,
                            codebook_dim=16, vae=VAE_PRESETS["tiny_vae"])


class MallocInfo(ctypes.Structure):
    """glibc's struct mallinfo2 (glibc >= 2.33)."""
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


class CpuPeak:
    """Peak memory of this process above a baseline, sampled by a thread every millisecond, two ways:
    `bytes`: what malloc has handed out and not taken back (every arena's in-use heap plus mmapped blocks),
    the CPU analogue of CUDA's allocated bytes; `rss_bytes`: resident memory as the OS sees it, which also
    holds freed heap that glibc keeps for reuse (how much depends on the order of allocations, not on what
    the engine holds)."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        try:
            self.libc = ctypes.CDLL("libc.so.6")
            self.libc.mallinfo2.restype = MallocInfo
        except (OSError, AttributeError):  # not glibc, or older than 2.33: RSS only
            self.libc = None

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def in_use(self) -> int:
        if self.libc is None:
            return self.rss()
        info = self.libc.mallinfo2()
        return info.uordblks + info.hblkhd

    def __enter__(self):
        gc.collect()
        if self.libc is not None:  # give freed heap back to the OS so the RSS baseline is the idle process
            self.libc.malloc_trim(0)
        self.base, self.rss_base = self.in_use(), self.rss()
        self.peak, self.rss_peak = self.base, self.rss_base
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak, self.rss_peak = max(self.peak, self.in_use()), max(self.rss_peak, self.rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak, self.rss_peak = max(self.peak, self.in_use()), max(self.rss_peak, self.rss())

    @property
    def bytes(self) -> int:
        return self.peak - self.base

    @property
    def rss_bytes(self) -> int:
        return self.rss_peak - self.rss_base


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
    model, vae = _meta_parts(cfg)
    # linear layers dominate: 2 FLOPs per weight per token, two rows per candidate with guidance
    weights = _linear_weights(model)
    schedule = get_schedule(1.0, budget)
    candidate = 2 * weights * sum(h * w for h, w in schedule) * 2
    side = max(schedule[-1]) * (2 if cfg.apply_spatial_patchify else 1)
    decode = _decode_gflop(vae, cfg.vae.codebook_dim, side)
    return {"candidate_gflop": candidate / 1e9, "full_decode_gflop": decode, "ratio": candidate / 1e9 / decode}


def _meta_parts(cfg: InfinityConfig):
    from ttsvar_core.model.infinity import Infinity
    from ttsvar_core.model.vae import BSQVAE
    with torch.device("meta"):
        return Infinity(cfg), BSQVAE(cfg.vae)


def _linear_weights(model) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if p.ndim == 2 and "cfg_uncond" not in name)


def _decode_gflop(vae, codebook_dim: int, latent_side: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        vae.decoder(torch.empty(1, codebook_dim, latent_side, latent_side))
    return counter.get_total_flops() / 1e9


@lru_cache(maxsize=None)
def vit_l_gflop() -> float:
    """One DINOv2 ViT-L/14 pass at 224 px (TTS-VAR's feature model), counted on our own module; ImageReward's
    BLIP ViT-L/16 image tower at 224 px is the same size class."""
    from torch.utils.flop_counter import FlopCounterMode

    from ttsvar_core.scorers.dinov2 import DinoV2, VitShape
    with torch.device("meta"):
        vit = DinoV2(VitShape(dim=1024, depth=24, heads=16, patch=14, registers=4, pos_tokens=1370, mlp_hidden=4096))
        with FlopCounterMode(display=False) as counter:
            vit(torch.empty(1, 3, 224, 224))
    return counter.get_total_flops() / 1e9


def selection_floors(cfg: InfinityConfig, budget: str, batch: BatchSchedule) -> list[dict]:
    """Per selection of `batch`, the work it cannot skip next to the step it follows, in FLOPs: decoding every
    live candidate at the selection's side, and (real models) one ViT-L scorer pass per candidate. The step
    counts linear layers only (2 FLOPs per weight per token, two rows per candidate with guidance); attention
    over the short early contexts adds little, so the ratios are upper bounds of what stepping hides."""
    model, vae = _meta_parts(cfg)
    weights = _linear_weights(model)
    schedule = get_schedule(1.0, budget)
    per_token = pixels_per_token(cfg, cfg.vae)
    full_side = max(schedule[-1]) * per_token
    scorer = vit_l_gflop()
    floors = []
    for si in sorted(batch.cluster_scales + batch.resample_scales):
        live = batch.sizes[si - 1] if si > 0 else batch.sizes[0]
        h, w = schedule[si]
        side = min(batch.decode_policy.side_at(si, schedule, per_token) or full_side, full_side)
        step = 2 * weights * 2 * live * h * w / 1e9
        decode = live * _decode_gflop(vae, cfg.vae.codebook_dim, max(1, side // cfg.vae.patch_size))
        floors.append({"event": batch.event(si), "after_scale": si, "tokens": h * w, "candidates": live,
                       "side": side, "step_gflop": step, "decode_gflop": decode, "decode_over_step": decode / step,
                       "vit_l_over_step": live * scorer / step})
    return floors


def make_scorers(device):
    """Reward and feature extractor for the benchmark: tiny models in the real on-disk formats, loaded
    through the same loaders as ImageReward/DINOv2 files (their cost is small next to the transformer's
    even at full size: ~0.3 TFLOP per image against ~90 TFLOP for one 2B candidate at 1M)."""
    from ttsvar_core.scorers import load_feature_extractor, load_reward
    from ttsvar_core.testing.tiny_scorers import write_tiny_scorers
    folder = Path(tempfile.mkdtemp(prefix="ttsvar-bench-"))
    paths = write_tiny_scorers(folder)
    reward = load_reward("clip", paths["clip"], device=device)
    extractor = load_feature_extractor("dinov2", paths["dinov2"], device=device)
    return reward, extractor


def exact_cpu_peak(run) -> int:
    """Peak of the bytes torch's CPU allocator holds during `run()` above what it held before, replayed from
    every allocation and free the profiler records: exact, where the sampled meter can miss a peak shorter
    than a millisecond, but the profiler slows the run, so it is a pass of its own, never a timed one."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    with tempfile.TemporaryDirectory() as folder:
        trace = Path(folder) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = [e["args"] for e in json.loads(trace.read_text())["traceEvents"] if e.get("name") == "[memory]"]
    if not events:
        return 0
    before = events[0]["Total Allocated"] - events[0]["Bytes"]
    return max(e["Total Allocated"] for e in events) - before


def event_kind(event) -> str:
    if isinstance(event, ScaleDone):
        return "step"
    if isinstance(event, HistoryScored):
        return "history"
    return event.record.event  # "cluster", "resample" or "final"


def time_run(model, vae, request: SearchRequest, device):
    marks = []
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def on_event(event):
        sync()
        marks.append((event_kind(event), time.perf_counter()))

    meter = CudaPeak() if device.type == "cuda" else CpuPeak()
    with meter:
        sync()
        t0 = time.perf_counter()
        result = run_search(model, vae, request, on_event)
        sync()
        wall = time.perf_counter() - t0
    step_times, selections, history, last = [], [], [], t0
    for event, t in marks:
        if event == "step":
            step_times.append(t - last)
        elif event == "history":  # scoring for a history potential, counted apart from steps and selections
            history.append({"after_scale": len(step_times) - 1, "seconds": t - last})
        elif event in ("cluster", "resample"):
            selections.append({"event": event, "after_scale": len(step_times) - 1, "seconds": t - last,
                               "step_seconds": step_times[-1]})
        elif event == "final":
            selections.append({"event": "final", "after_scale": len(step_times) - 1, "seconds": t - last,
                               "step_seconds": step_times[-1]})
        last = t
    return result, wall, step_times, selections, history, meter


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", choices=("tiny", "2b", "8b"), default="tiny")
    ap.add_argument("--weight-storage", choices=("compute", "fp8"), default="compute",
                    help="fp8: the blocks' matmul weights stored in float8, upcast per layer")
    ap.add_argument("--decodes", nargs="+", choices=(*DECODE_CHOICES, ANALOG), default=None,
                    help="TTS-VAR's selection decodes to run (default: every named choice; 448px-analog where the "
                         "image is smaller than 448 px)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--budget", default="0.06M", help="pixel budget: 0.06M (7 scales) ... 1M (13 scales)")
    ap.add_argument("--n", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default=None)
    ap.add_argument("--low-memory", action="store_true", help="also run TTS-VAR with block streaming + offload")
    ap.add_argument("--out", default=None, help="JSON results file")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3, help="runs per strategy; the report keeps the median")
    ap.add_argument("--exact-memory", action="store_true",
                    help="CPU: one more pass per strategy under the profiler for the exact allocator peak")
    ap.add_argument("--potential", choices=POTENTIALS, default="value",
                    help="TTS-VAR's resampling potential; diff, max and sum add scoring at every scale")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    cfg = {"tiny": BENCH_TINY, "2b": PRESETS["infinity_2b"], "8b": PRESETS["infinity_8b"]}[args.config]
    model, vae = build_random(cfg, seed=0, device=device, dtype=dtype)
    if args.weight_storage == "fp8":
        store_fp8(model)
    schedule = get_schedule(1.0, args.budget)
    reward, extractor = make_scorers(device)
    feats = torch.randn(12, cfg.text_channels, generator=torch.Generator().manual_seed(0)) * 0.5
    prompts = Prompts(("a photo of a cat",), feats, (12,))
    params = SamplingParams(cfg=3.0, tau=0.5)
    guided = True
    # warm-up: first calls allocate kernels and caches
    # (and TTS-VAR's selections import scikit-learn once: steady-state memory, not import costs, is compared)
    for strategy in ("bon", "tts-var"):
        run_search(model, vae, SearchRequest(prompts, tuple(schedule), params, schedule_for(strategy, 1, len(schedule)),
                                             scorers=Scorers(reward, extractor)))
    # TTS-VAR with each named selection decode; 448 px only where it is smaller than the image, else its analog
    per_token = pixels_per_token(cfg, cfg.vae)
    full_side = max(schedule[-1]) * per_token
    policies = decode_policies(full_side, per_token)
    fits = DECODE_CHOICES["448px"].side < full_side
    decodes = args.decodes or [d for d in policies if d != ("448px" if not fits else ANALOG)]
    run = partial(measure, model=model, vae=vae, prompts=prompts, schedule=schedule, params=params, reward=reward,
                  extractor=extractor, device=device, guided=guided, potential=args.potential, policies=policies)
    def search(batch, offload_idle):
        return run_search(model, vae, SearchRequest(prompts, tuple(schedule), params, batch,
                                                    scorers=Scorers(reward, extractor),
                                                    options=RunOptions(offload_idle=offload_idle)))

    exact = args.exact_memory and device.type == "cpu"
    plan = [("raw", 1, "paper")] + [(s, n, d) for n in args.n for s, d in
                                    [("bon", "paper")] + [("tts-var", d) for d in decodes]]
    runs = repeated(run, plan, args.repeat, offload=False)
    if exact:
        add_exact_peaks(runs, plan, search, len(schedule), offload=False, policies=policies)
    if args.low_memory:
        # the same runs with the blocks streamed from pinned CPU memory and idle models off the device
        low = [("bon", args.n[0], "paper"), ("tts-var", args.n[0], "paper")]
        streamer = BlockStreamer(model, device)
        low_runs = repeated(run, low, args.repeat, offload=True)
        if exact:
            add_exact_peaks(low_runs, low, search, len(schedule), offload=True, policies=policies)
        streamer.remove()
        runs += low_runs
    report = {"config": args.config, "device": str(device), "dtype": str(dtype), "budget": args.budget,
              "weight_storage": args.weight_storage,
              "repeats": args.repeat, "proportions": cost_proportions(cfg, args.budget),
              "floors": {args.config: floors_by_decode(cfg, args.budget),
                         "2b at 1M": floors_by_decode(PRESETS["infinity_2b"], "1M")},
              "schedule": [list(s) for s in schedule], "machine": machine(device), "runs": runs}
    add_ratios(report)
    print(table(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return report


def measure(strategy, n, *, model, vae, prompts: Prompts, schedule, params, reward, extractor, device, guided,
            offload, decode="paper", potential="value", policies=DECODE_CHOICES):
    batch = schedule_for(strategy, n, len(schedule), potential=potential).decoding(policies[decode])
    request = SearchRequest(prompts, tuple(schedule), params, batch, scorers=Scorers(reward, extractor),
                            options=RunOptions(offload_idle=offload))
    result, wall, steps, selections, history, meter = time_run(model, vae, request, device)
    scored = result.trace.get("history_scoring", {})
    label = strategy + ("" if decode == "paper" else f" ({decode})") + (" (low memory)" if offload else "")
    print(f"  {label:22s} N={n}: {wall:7.3f} s", file=sys.stderr)
    return {"strategy": label, "n": n, "wall_s": wall, "step_s": steps, "selections": selections,
            "selection_s": sum(s["seconds"] for s in selections if s["event"] != "final"),
            "final_s": sum(s["seconds"] for s in selections if s["event"] == "final"),
            # the extra scoring of a history potential (diff, max, sum): scales, images scored, seconds
            "history_scored_scales": scored.get("scales", []), "history_scored_images": scored.get("images", 0),
            "history_scoring_s": sum(h["seconds"] for h in history),
            "token_passes": token_passes(result.trace, schedule, guided),
            "predicted_passes": predicted_passes(batch, schedule, len(prompts.texts), guided),
            "peak_bytes": meter.bytes, "peak_total_bytes": getattr(meter, "total", None),
            "peak_rss_bytes": getattr(meter, "rss_bytes", None), "sizes": list(batch.sizes)}


def repeated(run, plan, repeat: int, offload: bool) -> list[dict]:
    """Every (strategy, N, selection decode) of `plan`, `repeat` times, reduced to the median run. The
    repeats run the whole plan in turn, so a slow spell of the machine hits every strategy alike."""
    samples = {key: [] for key in plan}
    for _ in range(repeat):
        for strategy, n, decode in plan:
            samples[(strategy, n, decode)].append(run(strategy, n, offload=offload, decode=decode))
    return [median_run(v) for v in samples.values()]


def add_exact_peaks(runs, plan, search, num_scales: int, offload: bool, policies: dict):
    for r, (strategy, n, decode) in zip(runs, plan):
        batch = schedule_for(strategy, n, num_scales).decoding(policies[decode])
        r["exact_peak_bytes"] = exact_cpu_peak(lambda: search(batch, offload_idle=offload))


# The 448px choice scaled to a smaller image: the fraction of the side (448 of 1024 px) that the real 2B's
# selections decode at with "448px". Below 448 px "448px" itself is a full-size decode and measures nothing.
ANALOG = "448px-analog"


def decode_policies(full_side: int, per_token: int) -> dict[str, DecodePolicy]:
    """The named selection decodes, plus the 448px analog at this image size (a whole number of tokens)."""
    tokens = max(1, round(full_side * FAST_SELECTION_SIDE / 1024 / per_token))
    return {**DECODE_CHOICES, ANALOG: DecodePolicy(tokens * per_token)}


def floors_by_decode(cfg: InfinityConfig, budget: str) -> dict:
    num_scales = len(get_schedule(1.0, budget))
    return {name: selection_floors(cfg, budget, schedule_for("tts-var", 1, num_scales).decoding(policy))
            for name, policy in DECODE_CHOICES.items()}


def median_run(samples: list[dict]) -> dict:
    """The repeat with the median wall time (its per-scale and per-selection times with it); memory is the
    highest peak of all repeats."""
    ordered = sorted(samples, key=lambda r: r["wall_s"])
    run = dict(ordered[len(ordered) // 2])
    run["wall_s_repeats"] = [r["wall_s"] for r in samples]
    for key in ("peak_bytes", "peak_rss_bytes", "peak_total_bytes"):
        values = [r[key] for r in samples if r[key] is not None]
        run[key] = max(values) if values else None
    return run


def add_ratios(report):
    bon = {(r["n"], r["strategy"].endswith("(low memory)")): r for r in report["runs"]
           if r["strategy"].startswith("bon")}
    for r in report["runs"]:
        base = bon.get((r["n"], r["strategy"].endswith("(low memory)")))
        if base:
            r["time_vs_bon"] = r["wall_s"] / base["wall_s"]
            r["passes_vs_bon"] = r["token_passes"] / base["token_passes"]
            r["time_over_pass_prediction"] = r["time_vs_bon"] / r["passes_vs_bon"]
            # the same without selection work (decode, features, reward, re-index), history scoring and the
            # final pick: what the stepping engine itself costs against what its token-passes predict
            gen = r["wall_s"] - r["selection_s"] - r["final_s"] - r["history_scoring_s"]
            base_gen = base["wall_s"] - base["final_s"]
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
             f"{'RSS MB' if report['device'] == 'cpu' else 'total MB':>9} {'exact MB':>9}"]
    for r in report["runs"]:
        f = lambda k, fmt: format(r[k], fmt) if k in r else "-"  # noqa: E731
        lines.append(f"{r['strategy']:22s} {r['n']:>2} {r['wall_s']:8.3f} {f('time_vs_bon', '7.2f')} "
                     f"{r['token_passes']:10d} {f('passes_vs_bon', '7.2f')} {f('time_over_pass_prediction', '7.2f')} "
                     f"{f('generation_over_pass_prediction', '8.2f')} "
                     f"{r['selection_s']:9.3f} {r['max_selection_over_step']:8.2f} {100 * r['selection_share']:6.1f} "
                     f"{r['peak_bytes'] / 2**20:9.1f} {f('memory_vs_bon', '7.2f')} "
                     f"{(r['peak_total_bytes'] or r['peak_rss_bytes'] or 0) / 2**20:9.1f} "
                     f"{r['exact_peak_bytes'] / 2**20 if 'exact_peak_bytes' in r else float('nan'):9.1f}")
        steps = ", ".join(f"{t * 1000:.0f}" for t in r["step_s"])
        lines.append(f"{'':25s}ms per scale: {steps}")
        if r["history_scored_images"]:
            lines.append(f"{'':25s}history scoring: {r['history_scored_images']} images at scales "
                         f"{r['history_scored_scales']}, {r['history_scoring_s']:.3f} s")
        sels = [s for s in r["selections"] if s["event"] != "final"]
        if sels:
            ratios = ", ".join(f"{s['event']} after {s['after_scale']}: {s['seconds'] / s['step_seconds']:.2f}" for s in sels)
            lines.append(f"{'':25s}selection / step: {ratios}")
    lines.append("FLOP floors of each selection / the step it follows: decoding every live candidate at the "
                 "selection's side, and for the real model one ViT-L pass per candidate (DINOv2-L, ImageReward):")
    for name, by_decode in report["floors"].items():
        real = name.startswith("2b")  # the tiny scorers have nothing of ViT-L's cost
        for decode, floors in by_decode.items():
            cells = ", ".join(f"{f['event']} after {f['after_scale']} ({f['side']} px): decode {f['decode_over_step']:.2f}"
                              + (f" ViT-L {f['vit_l_over_step']:.2f}" if real else "") for f in floors)
            lines.append(f"  {name} {decode:10s} {cells}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
