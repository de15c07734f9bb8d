"""`python -m ttsvar_core generate`: run a strategy on real or tiny model files; `convert-t5`: flan-t5-xl as one
encoder-only file.

Everything that can be checked without the models is checked before they load (arguments, prompts, the
schedules, the output paths), so a typo costs a second, not a model load.
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from .engine.schedule import DECODE_CHOICES, DECODE_EFFECTS, FEATURE_MODES, POTENTIALS, DecodePolicy
from .engine.strategies import STRATEGIES
from .engine.text_inputs import check_prompt, parse_floats, parse_ints, parse_scales
from .model.checkpoints import WEIGHT_STORAGE
from .model.config import RELEASES, release_of
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
    p.add_argument("--text-encoder", required=True,
                   help="local flan-t5-xl folder, or the single file written by convert-t5")
    p.add_argument("--text-tokenizer", default=None,
                   help="tokenizer folder (tokenizer.json or spiece.model): needed with a single-file text encoder, "
                        "e.g. ComfyUI/comfy/text_encoders/t5_tokenizer")
    p.add_argument("--prompt", action="append", required=True, help="repeat for several prompts")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--strategy", choices=STRATEGIES, default="tts-var",
                   help="tts-var: the TTS-VAR paper's schedule for the model's release (2B: 13 scales at 1M; 8B: "
                        "Appendix B's 10 scales at 0.25M); the trace's batch_schedule says when it is not the "
                        "paper's (another pixel budget: rescaled) or what was edited")
    p.add_argument("--n", type=int, default=1, help="N: the batch schedule is multiplied by it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder for images and the trace")
    p.add_argument("--aspect-ratio", type=aspect_ratio, default=1.0, help="h/w, snapped to the 15 templates")
    p.add_argument("--pixel-budget", default="1M", choices=tuple(PIXEL_BUDGETS))
    p.add_argument("--schedule", type=argument(lambda text, what: parse_scales(text), "custom scales"), default=None, help="custom scales, e.g. 1x1,2x2,4x4")
    p.add_argument("--cfg", type=argument(parse_floats, "cfg"), default=None,
                   help="one value or one per scale (default: the model release's public setting, "
                        + ", ".join(f"{family} {r['cfg']:g}" for family, r in RELEASES.items()) + ")")
    p.add_argument("--tau", type=argument(parse_floats, "tau"), default=None,
                   help="one value or one per scale (default: the model release's public setting, "
                        + ", ".join(f"{family} {r['tau']:g}" for family, r in RELEASES.items()) + ")")
    p.add_argument("--top-k", type=int, default=900)
    p.add_argument("--top-p", type=float, default=0.97)
    p.add_argument("--batch-sizes", type=argument(parse_ints, "batch sizes"), default=None, help="base sizes per scale (times N)")
    p.add_argument("--cluster-scales", type=argument(parse_ints, "cluster scales"), default=None)
    p.add_argument("--resample-scales", type=argument(parse_ints, "resample scales"), default=None)
    p.add_argument("--potential", choices=POTENTIALS, default=None,
                   help="what resampling weighs candidates by: value (the preset's) the current reward; diff, max "
                        "and sum the reward history, for which every live candidate is also scored at every scale "
                        "from the first clustering to the last resampling (the 2B paper schedule: scales 2-5, 7 "
                        "and 8, 30N more images scored, 16N of them decoded for it alone); the trace's "
                        "history_scoring records the scales and seconds")
    p.add_argument("--lam", type=float, default=None, help="resampling temperature lambda")
    p.add_argument("--feature-mode", choices=FEATURE_MODES, default=None)
    decode = p.add_mutually_exclusive_group()
    effects = " ".join(f"{name}: {DECODE_EFFECTS[name]}" for name in DECODE_CHOICES)
    decode.add_argument("--selection-decode", choices=tuple(DECODE_CHOICES), default="paper",
                        # argparse %-formats help text: the percentages in the effects are escaped
                        help="how clustering and resampling decode candidates for the feature and reward models. "
                             + effects.replace("%", "%%"))
    decode.add_argument("--selection-side", type=int, default=None,
                        help="instead of a named choice: every selection decodes at this many pixels")
    p.add_argument("--reward", default="imagereward",
                   help="reward kind (imagereward, hps, clip, aesthetic), or several joined by '+', e.g. "
                        "imagereward+hps: each reward is softmax-normalised over a prompt's candidates, then they "
                        "are averaged (how the paper's appendix combines ImageReward and HPS)")
    p.add_argument("--reward-file", action="append", default=None,
                   help="reward weights file or folder; repeat it for several rewards, in --reward's order")
    p.add_argument("--reward-weights", type=argument(parse_floats, "reward weights"), default=None,
                   help="with several rewards: one weight each, e.g. 2,1 (default: equal)")
    p.add_argument("--reward-extra", default=None, help="second file a reward needs (aesthetic: SigLIP folder)")
    p.add_argument("--features", default="dinov2", help="feature extractor kind (dinov2, inception)")
    p.add_argument("--features-file", default=None)
    p.add_argument("--device", type=device_argument, default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default=None,
                   help="transformer block dtype (default bf16 on GPU, fp32 on CPU)")
    p.add_argument("--weight-storage", choices=list(WEIGHT_STORAGE), default=None,
                   help="store the transformer blocks' matmul weights narrower than --dtype, upcast layer by layer: "
                        "fp8 (float8 e4m3fn, half the memory of bf16), or bf16/fp16 under --dtype fp32")
    p.add_argument("--text-encoder-storage", choices=list(WEIGHT_STORAGE), default=None,
                   help="store the T5 encoder's block weights narrower than it computes (fp16 on a GPU, fp32 on a "
                        "CPU), upcast layer by layer: fp8, or bf16/fp16 (on a GPU T5 then computes in that format)")
    p.add_argument("--shared-generator", action="store_true",
                   help="one random generator for all candidates, as the reference code (parity runs)")
    p.add_argument("--trace", default=None, help="write the per-scale trace to this JSON file")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run's images in --out and an existing --trace file (else refused)")
    p.set_defaults(func=run_generate)
    return p


def batch_schedule_from_args(args, num_scales: int, release: str):
    from .engine import schedule_for
    overrides = dict(cluster_scales=args.cluster_scales, resample_scales=args.resample_scales,
                     potential=args.potential, lam=args.lam, feature_mode=args.feature_mode)
    if args.batch_sizes:
        overrides["base_sizes"] = args.batch_sizes
    batch = schedule_for(args.strategy, args.n, num_scales, release, **overrides)
    policy = DECODE_CHOICES[args.selection_decode] if args.selection_side is None else DecodePolicy(args.selection_side)
    return batch.decoding(policy).validate(num_scales)


def reward_parts(args) -> tuple[list[tuple[str, str]], tuple[float, ...] | None]:
    """(kind, file) of every reward --reward names, and their weights; checked before any model loads."""
    kinds = [kind.strip() for kind in args.reward.split("+")]
    files = args.reward_file or []
    if files and len(files) != len(kinds):
        raise ValueError(f"--reward {args.reward} names {len(kinds)} reward(s) but {len(files)} --reward-file "
                         "were given: give one --reward-file per reward, in the same order")
    weights = args.reward_weights
    weights = (weights,) if isinstance(weights, float) else weights  # parse_floats gives one value as a float
    if weights is not None and len(weights) != len(kinds):
        raise ValueError(f"--reward-weights: give one weight per reward of --reward {args.reward}")
    return list(zip(kinds, files)), weights


def load_scorers(args, batch, device):
    need_reward, need_features = batch.needs()
    reward = extractor = None
    if need_reward:
        parts, weights = reward_parts(args)
        if not parts:
            raise ValueError(f"the {args.strategy} strategy scores candidates: pass --reward-file "
                             "(e.g. ImageReward.pt from models/ttsvar_rewards)")
        from .scorers import CombinedReward, load_reward
        from .scorers.registry import REWARDS
        extra = {"siglip_path": args.reward_extra} if args.reward_extra else {}
        rewards = [load_reward(kind, path, device=device, **(extra if REWARDS.canonical(kind) == "aesthetic" else {}))
                   for kind, path in parts]
        reward = rewards[0] if len(rewards) == 1 else CombinedReward(rewards, weights)
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
    reward_parts(args)  # a mismatched --reward-file count fails before any model loads
    schedule = list(args.schedule) if args.schedule else get_schedule(args.aspect_ratio, args.pixel_budget)
    # checked before any model loads with the 2B release's preset and public setting; both are taken again
    # below for the release the loaded model turns out to be
    batch_schedule_from_args(args, len(schedule), "Infinity-2B")
    SamplingParams(cfg=3.0 if args.cfg is None else args.cfg, tau=1.0 if args.tau is None else args.tau,
                   top_k=args.top_k, top_p=args.top_p).validate(len(schedule))
    earlier = earlier_run_files(args)
    device = args.device
    dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    pipe = InfinityPipeline.load(args.model, args.vae, args.text_encoder, text_tokenizer=args.text_tokenizer,
                                 device=device, dtype=dtype, weight_storage=args.weight_storage,
                                 text_storage=args.text_encoder_storage)
    batch = batch_schedule_from_args(args, len(schedule), release_of(pipe.model.cfg))
    print(f"batch schedule: {batch.describe()}")
    reward, extractor = load_scorers(args, batch, device)
    params = SamplingParams.for_model(pipe.model.cfg, args.cfg, args.tau, top_k=args.top_k, top_p=args.top_p)
    print(f"sampling: cfg {params.cfg}, tau {params.tau} ({release_of(pipe.model.cfg)}'s setting where not given)")
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
                     schedule=[list(s) for s in schedule], sampling=asdict(params),
                     reward=None if reward is None else repr(reward))
        Path(args.trace).write_text(json.dumps(trace, indent=1, default=_json_default))
    print(f"wrote {len(result.picks)} chosen and {result.images.shape[0]} final images to {out}")
    return 0


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def add_convert_t5_parser(sub):
    p = sub.add_parser("convert-t5", help="write a flan-t5-xl folder's encoder as one .safetensors file "
                                          "(about a fifth of the folder; loads with a tokenizer folder)")
    p.add_argument("folder", help="the downloaded flan-t5-xl folder (config.json and the weights)")
    p.add_argument("out", help="output .safetensors file, e.g. "
                               "ComfyUI/models/text_encoders/flan-t5-xl-encoder-bf16.safetensors")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="bf16",
                   help="bf16 (default; fp32's range, so no overflow), fp16, or fp32 (lossless, twice the size)")
    p.set_defaults(func=run_convert_t5)
    return p


def run_convert_t5(args) -> int:
    from .model.text import convert_t5_folder
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise SystemExit(f"{out}: the output must be a .safetensors file")
    try:
        convert_t5_folder(args.folder, out, args.dtype)
    except (OSError, ValueError) as e:  # the message names the file and the fix; a traceback adds nothing
        raise SystemExit(f"convert-t5: {e}") from None
    print(f"wrote {out} ({out.stat().st_size / 2**30:.2f} GiB, {args.dtype}); load it with a tokenizer folder, "
          "e.g. --text-tokenizer ComfyUI/comfy/text_encoders/t5_tokenizer")
    return 0
