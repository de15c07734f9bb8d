"""`python -m ttsvar_core generate`: run a strategy on real or tiny model files.

Everything that can be checked without the models is checked before they load (arguments, prompts, the
schedules, the output paths), so a typo costs a second, not a model load.
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import torch

from .engine.schedule import FEATURE_MODES, POTENTIALS, SELECTION_RESOLUTIONS
from .engine.strategies import STRATEGIES
from .engine.text_inputs import check_prompt, parse_floats, parse_ints, parse_scales
from .model.dtypes import DTYPE_NAMES
from .model.schedules import PIXEL_BUDGETS, get_schedule, snap_aspect_ratio
from .model.text import check_text

# the files one run writes into --out; another run's files there would pass for this run's
RUN_FILES = ("prompt*_chosen.png", "prompt*_final*.png")


def argument(parse, what: str):
    """An argparse type from one of our text parsers: its message becomes argparse's error line."""
    def convert(text: str):
        try:
            return parse(text, what)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = what
    return convert


def aspect_ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give height / width, e.g. 1.0 or 0.75") from None
    try:
        snap_aspect_ratio(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def device_argument(text: str) -> torch.device:
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use cpu or cuda (cuda:1 for the second "
                                         "GPU)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: this PyTorch sees no CUDA device; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text}: there are only {torch.cuda.device_count()} CUDA devices")
    return device


def add_generate_parser(sub):
    p = sub.add_parser("generate", help="generate images with plain sampling, Best-of-N, IS or TTS-VAR")
    p.add_argument("--model", required=True, help="Infinity transformer (.pth, .safetensors or shard folder)")
    p.add_argument("--vae", required=True, help="its VAE (.pth or .safetensors)")
    p.add_argument("--text-encoder", required=True, help="local flan-t5-xl folder")
    p.add_argument("--prompt", action="append", required=True, help="repeat for several prompts")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--strategy", choices=tuple(STRATEGIES), default="tts-var")
    p.add_argument("--n", type=int, default=1, help="N: the batch schedule is multiplied by it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder for images and the trace")
    p.add_argument("--aspect-ratio", type=aspect_ratio, default=1.0, help="h/w, snapped to the 15 templates")
    p.add_argument("--pixel-budget", default="1M", choices=tuple(PIXEL_BUDGETS))
    p.add_argument("--schedule", type=argument(lambda text, what: parse_scales(text), "custom scales"), default=None, help="custom scales, e.g. 1x1,2x2,4x4")
    p.add_argument("--cfg", type=argument(parse_floats, "cfg"), default=3.0, help="one value or one per scale")
    p.add_argument("--tau", type=argument(parse_floats, "tau"), default=0.5, help="one value or one per scale")
    p.add_argument("--top-k", type=int, default=900)
    p.add_argument("--top-p", type=float, default=0.97)
    p.add_argument("--batch-sizes", type=argument(parse_ints, "batch sizes"), default=None, help="base sizes per scale (times N)")
    p.add_argument("--cluster-scales", type=argument(parse_ints, "cluster scales"), default=None)
    p.add_argument("--resample-scales", type=argument(parse_ints, "resample scales"), default=None)
    p.add_argument("--potential", choices=POTENTIALS, default=None)
    p.add_argument("--lam", type=float, default=None, help="resampling temperature lambda")
    p.add_argument("--feature-mode", choices=FEATURE_MODES, default=None)
    p.add_argument("--selection-side", type=int, default=None,
                   help="decode candidates at most this many pixels wide for clustering/resampling "
                        "(default 448; 0: full size, as the reference)")
    p.add_argument("--selection-resolution", choices=SELECTION_RESOLUTIONS, default="fixed",
                   help="fixed: selections decode at --selection-side; scale: a selection after scale k decodes at "
                        "scale k's token grid (one latent cell per token, at most --selection-side): much cheaper "
                        "early selections, but a lower picked reward on ShapesWorld (docs/shapesworld_results.md)")
    p.add_argument("--reward", default="imagereward", help="reward kind (imagereward, hps, clip, aesthetic)")
    p.add_argument("--reward-file", default=None, help="reward weights file or folder")
    p.add_argument("--reward-extra", default=None, help="second file a reward needs (aesthetic: SigLIP folder)")
    p.add_argument("--features", default="dinov2", help="feature extractor kind (dinov2, inception)")
    p.add_argument("--features-file", default=None)
    p.add_argument("--device", type=device_argument, default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default=None,
                   help="transformer block dtype (default bf16 on GPU, fp32 on CPU)")
    p.add_argument("--shared-generator", action="store_true",
                   help="one random generator for all candidates, as the reference code (parity runs)")
    p.add_argument("--trace", default=None, help="write the per-scale trace to this JSON file")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run's images in --out and an existing --trace file (else refused)")
    p.set_defaults(func=run_generate)
    return p


def batch_schedule_from_args(args, num_scales: int):
    from .engine import schedule_for
    overrides = dict(cluster_scales=args.cluster_scales, resample_scales=args.resample_scales,
                     potential=args.potential, lam=args.lam, feature_mode=args.feature_mode)
    if args.batch_sizes:
        overrides["base_sizes"] = args.batch_sizes
    batch = schedule_for(args.strategy, args.n, num_scales, **overrides)
    from dataclasses import replace
    batch = replace(batch, selection_resolution=args.selection_resolution)
    if args.selection_side is not None:
        batch = replace(batch, selection_side=args.selection_side or None)
    return batch.validate(num_scales)


def load_scorers(args, batch, device):
    need_reward, need_features = batch.needs()
    reward = extractor = None
    if need_reward:
        if not args.reward_file:
            raise ValueError(f"the {args.strategy} strategy scores candidates: pass --reward-file "
                             "(e.g. ImageReward.pt from models/ttsvar_rewards)")
        from .scorers import load_reward
        extra = {"siglip_path": args.reward_extra} if args.reward_extra else {}
        reward = load_reward(args.reward, args.reward_file, device=device, **extra)
    if need_features:
        if not args.features_file:
            raise ValueError("clustering needs image features: pass --features-file (e.g. the DINOv2 ViT-L/14 "
                             "with registers weights from models/ttsvar_features)")
        from .scorers import load_feature_extractor
        extractor = load_feature_extractor(args.features, args.features_file, device=device)
    return reward, extractor


def writable_folder(folder: Path, flag: str) -> None:
    """Creates `folder` if needed and proves a file can be written there, before anything runs."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{flag} {folder} is a file, not a folder: give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ValueError(f"{flag}: cannot write into {folder} ({e.strerror or e}): choose another folder") from None


def earlier_run_files(args) -> list[Path]:
    """The files of an earlier run that this run's outputs would mix with; refuses them without --overwrite."""
    out = Path(args.out)
    writable_folder(out, "--out")
    earlier = sorted({p for pattern in RUN_FILES for p in out.glob(pattern)})
    if earlier and not args.overwrite:
        raise ValueError(f"--out {out} already holds {len(earlier)} images of an earlier run ({earlier[0].name}, ...): "
                         "choose an empty folder, or pass --overwrite to replace them")
    if args.trace:
        trace = Path(args.trace)
        if trace.is_dir():
            raise ValueError(f"--trace {trace} is a folder: give a file name, e.g. {trace / 'trace.json'}")
        if trace.exists() and not args.overwrite:
            raise ValueError(f"--trace {trace} exists (an earlier run's trace): choose another name, or pass "
                             "--overwrite to replace it")
        writable_folder(trace.parent, "--trace")
    return earlier


def run_generate(args) -> int:
    from PIL import Image
    from tqdm import tqdm

    from .engine import RunOptions, ScaleDone, Scorers, SearchRequest, run_search
    from .model.pipeline import InfinityPipeline
    from .model.sampling import SamplingParams

    for i, prompt in enumerate(args.prompt):
        check_prompt(prompt, f"--prompt {i + 1}" if len(args.prompt) > 1 else "--prompt")
    if args.negative_prompt:
        check_text(args.negative_prompt, "--negative-prompt")
    schedule = list(args.schedule) if args.schedule else get_schedule(args.aspect_ratio, args.pixel_budget)
    batch = batch_schedule_from_args(args, len(schedule))
    params = SamplingParams(cfg=args.cfg, tau=args.tau, top_k=args.top_k, top_p=args.top_p).validate(len(schedule))
    earlier = earlier_run_files(args)
    device = args.device
    reward, extractor = load_scorers(args, batch, device)
    dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    pipe = InfinityPipeline.load(args.model, args.vae, args.text_encoder, device=device, dtype=dtype)
    request = SearchRequest(pipe.encode(args.prompt, args.negative_prompt), tuple(schedule), params, batch,
                            seed=args.seed, scorers=Scorers(reward, extractor),
                            options=RunOptions(shared_generator=args.shared_generator))
    request.check_inputs(pipe.model, pipe.vae)
    out = Path(args.out)
    with tqdm(total=len(schedule), desc=f"{args.strategy} N={args.n}", unit="scale") as bar:
        def progress(event):
            if isinstance(event, ScaleDone):
                bar.set_postfix(live=event.state.num_candidates)
                bar.update(1)
        result = run_search(pipe.model, pipe.vae, request, progress)
    for path in earlier:  # only now: until this run succeeded, the folder keeps the earlier run whole
        path.unlink()
    for p, pick in enumerate(result.picks):
        Image.fromarray(result.images[pick].numpy()).save(out / f"prompt{p}_chosen.png")
        for rank, j in enumerate((result.prompt_of == p).nonzero().squeeze(1).tolist()):
            score = float(result.scores[j])
            tag = "" if math.isnan(score) else f"_{score:+.4f}"
            Image.fromarray(result.images[j].numpy()).save(out / f"prompt{p}_final{rank}{tag}.png")
    if args.trace:
        trace = dict(result.trace, prompts=args.prompt, strategy=args.strategy, n=args.n,
                     schedule=[list(s) for s in schedule])
        Path(args.trace).write_text(json.dumps(trace, indent=1, default=_json_default))
    print(f"wrote {len(result.picks)} chosen and {result.images.shape[0]} final images to {out}")
    return 0


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
