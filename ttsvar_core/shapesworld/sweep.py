"""Compares transformer training recipes side by side on one machine (several processes at once), each
scored by plain sampling on training-split prompts, to choose the recipe behind the shipped weights.

    python -m ttsvar_core.shapesworld.sweep --out DIR --device cuda --minutes 5 [--variants b,d]

Each variant starts from the shipped VAE and reward (copied into DIR/<name>), trains with
`train transformer --hparams ...`, capped at the steps a 2-core CPU makes in about 100 minutes (the
transformer's share of the two-hour budget; measured per variant), or uncapped where the name ends in
"-long", and then runs `train sampling` on a small cfg/tau grid. A table and sweep.json go to DIR.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .demo import ASSETS

# name -> (hyperparameters, steps a 2-core CPU makes in ~100 min at this recipe's measured s/step)
VARIANTS = {
    "base": ({"lr": 8e-4}, 8000),                                           # 0.74 s/step
    "lr": ({"lr": 2e-3}, 8000),
    "full": ({"batch": 48, "full": 48, "lr": 2e-3}, 1750),                  # 3.4 s/step
    "wide": ({"width": 192, "depth": 6, "lr": 1.5e-3}, 3500),               # 1.7 s/step
    "lr-long": ({"lr": 2e-3}, 60000),
    "wide-long": ({"width": 192, "depth": 6, "lr": 1.5e-3}, 60000),
    "batch-long": ({"batch": 96, "full": 24, "lr": 3e-3}, 60000),
}
GRID = ((3.0, 0.5), (5.0, 0.5), (5.0, 1.0), (8.0, 0.5))


def prepare(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ASSETS / "shapesworld_vae.safetensors", folder)
    if not (folder / "clip").exists():
        shutil.copytree(ASSETS / "clip", folder / "clip")


def launch(name: str, folder: Path, device: str, minutes: float, threads: int) -> subprocess.Popen:
    hparams, steps = VARIANTS[name]
    cmd = [sys.executable, "-m", "ttsvar_core.shapesworld.train", "transformer", "--out", str(folder),
           "--steps", str(steps), "--device", device, "--fit-minutes", str(minutes), "--threads", str(threads),
           "--hparams", json.dumps(hparams)]
    log = open(folder / "train.log", "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def score(folder: Path, device: str, prompts: int) -> dict:
    from .train import choose_sampling
    return choose_sampling(folder, prompts=prompts, device=device, grid=GRID)


def pack(out: Path, summary: dict, dest: Path, top: int) -> None:
    """The best variants' transformer (fp16), T5, sampling.json and log, one tar each: small enough to
    carry back from a lent machine."""
    import tarfile

    import torch
    from safetensors.torch import load_file, safe_open, save_file

    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(out / "sweep.json", dest)
    for name in sorted(summary, key=lambda n: -summary[n]["best"])[:top]:
        folder = out / name
        with safe_open(str(folder / "shapesworld_infinity.safetensors"), "pt") as f:
            metadata = f.metadata()
        state = {k: v.to(torch.float16) for k, v in load_file(folder / "shapesworld_infinity.safetensors").items()}
        save_file(state, folder / "infinity_fp16.safetensors", metadata=metadata)
        with tarfile.open(dest / f"{name}.tar", "w") as tar:
            for item in ("infinity_fp16.safetensors", "t5", "sampling.json", "train.log"):
                tar.add(folder / item, arcname=item)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ttsvar_core.shapesworld.sweep")
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--minutes", type=float, default=5.0, help="training wall time per variant (all at once)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--prompts", type=int, default=240, help="training-split prompts for scoring")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads per training process")
    ap.add_argument("--score-only", action="store_true")
    ap.add_argument("--pack", default=None, help="folder for <variant>.tar of the best variants (fp16 weights)")
    ap.add_argument("--pack-top", type=int, default=3)
    args = ap.parse_args(argv)
    out = Path(args.out)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    start = time.time()
    if not args.score_only:
        procs = {}
        for name in names:
            prepare(out / name)
            procs[name] = launch(name, out / name, args.device, args.minutes, args.threads)
        for name, proc in procs.items():
            print(f"{name}: training exited {proc.wait()} at {time.time() - start:.0f} s", flush=True)
    summary = {}
    for name in names:
        ckpt_log = (out / name / "train.log").read_text().splitlines()
        last = [line for line in ckpt_log if line.startswith("[transformer] step")][-1:]
        settings = score(out / name, args.device, args.prompts)
        summary[name] = {"hparams": VARIANTS[name][0], "cpu_2h_steps": VARIANTS[name][1],
                         "last_log": last[0] if last else None, "sweep": settings["sweep"],
                         "best": max(settings["sweep"].values())}
        print(f"{name}: best {summary[name]['best']:.3f} {summary[name]['last_log']}", flush=True)
    (out / "sweep.json").write_text(json.dumps(summary, indent=1))
    if args.pack:
        pack(out, summary, Path(args.pack), args.pack_top)
    print(f"done in {time.time() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
