"""Parity checker: compares our implementation with golden data produced by the official code.

    python -m ttsvar_core.testing.parity GOLDEN.safetensors [--json GOLDEN.json] [--run NAME ...]
    python -m ttsvar_core.testing.parity --manifest MANIFEST.json [--manifest ...]

Everything is driven by the golden JSON: its config, schedules, per-run parameters (`run_params`) and
pass criteria (`tolerances`). Prints a table (record, max abs diff, tolerance, pass); exit code 1 on any
failure.
"""
from __future__ import annotations

import argparse
import ast
import json
import operator
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ..model.checkpoints import TensorSource, _plain_vae_name, load_infinity, load_vae
from ..model.config import MANIFEST_PRESETS, PRESETS, VAE_PRESETS, config_from_golden
from ..model.infinity import Infinity
from ..model.sampling import SamplingParams, decode_images, forward_full, generate, to_uint8
from ..model.vae import BSQVAE


@dataclass
class Record:
    name: str
    diff: float | None
    tolerance: str
    passed: bool | None  # None: informational, no criterion in the JSON
    note: str = ""


# ---- tolerances from the JSON ----------------------------------------------------------------------------
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.USub: operator.neg, ast.Pow: operator.pow}


def eval_expression(text: str, names: dict[str, float]) -> float:
    """Evaluates a tolerance formula such as '5e-4 * (abs(cfg) + abs(1 - cfg)) / tau' safely."""
    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id in names:
            return float(names[node.id])
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.operand))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("abs", "max", "min"):
            return {"abs": abs, "max": max, "min": min}[node.func.id](*[ev(a) for a in node.args])
        raise ValueError(f"unsupported tolerance expression: {text!r}")
    return ev(ast.parse(text.split(",")[0].strip(), mode="eval"))


class Tolerances:
    def __init__(self, spec: dict):
        self.spec = spec

    def has(self, key: str) -> bool:
        return key in self.spec

    def atol(self, key: str, **names) -> float:
        value = self.spec[key]
        if isinstance(value, (int, float)):
            return float(value)
        if value.strip().lower().startswith("exact"):
            return 0.0
        return eval_expression(value, names)

    def margin(self, key: str) -> float:
        """The bit-margin threshold of a greedy criterion ('... wherever |margin| > 1e-3')."""
        m = re.search(r"margin\|?\s*>\s*([0-9.eE+-]+)", str(self.spec[key]))
        if not m:
            raise ValueError(f"cannot read a margin threshold from tolerances[{key!r}] = {self.spec[key]!r}")
        return float(m.group(1))


def latent_margins(cfg_logits: torch.Tensor, hw: tuple[int, int], bits_shape, patchify: bool) -> torch.Tensor:
    """The margin (logit of 1 minus logit of 0) of every bit, moved from the token layout of the logits
    [B, h*w*d', 2] to the latent layout of the stored bits [B, 1, H, W, d]. With spatial patchify a token holds
    a 2x2 block of latent pixels: token channel c*4 + 2i + j is bit c of latent pixel (2y+i, 2x+j)
    (pixel_shuffle), so a reshape would pair most bits with another bit's margin."""
    margin = cfg_logits[..., 1] - cfg_logits[..., 0]
    if patchify:
        h, w = hw
        margin = F.pixel_shuffle(margin.reshape(margin.shape[0], h, w, -1).permute(0, 3, 1, 2), 2)
        margin = margin.permute(0, 2, 3, 1)
    return margin.reshape(bits_shape)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"shape {tuple(a.shape)} vs golden {tuple(b.shape)}")
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


# ---- the checker ------------------------------------------------------------------------------------------
class ParityChecker:
    def __init__(self, tensors_path: Path, meta: dict):
        self.path, self.meta = tensors_path, meta
        self.g = load_file(str(tensors_path))
        self.tol = Tolerances(meta.get("tolerances", {}))
        self.cfg = config_from_golden(meta["tiny_config"])
        self.vae = load_vae(TensorSource(tensors_path, prefix="vae."), expected=self.cfg.vae)
        self.model = load_infinity(TensorSource(tensors_path, prefix="transformer."), cfg=self.cfg,
                                   vae_cfg=self.cfg.vae)
        self.records: list[Record] = []

    # helpers
    def add(self, name, ours, golden_key, tol_key, **names):
        if golden_key not in self.g:
            return
        golden = self.g[golden_key]
        try:
            diff = max_diff(ours.to(golden.dtype) if golden.dtype == torch.uint8 else ours, golden)
        except ValueError as e:
            self.records.append(Record(name, None, "-", False, str(e)))
            return
        if tol_key is None or not self.tol.has(tol_key):
            self.records.append(Record(name, diff, "-", None, "no criterion in JSON"))
            return
        atol = self.tol.atol(tol_key, **names)
        self.records.append(Record(name, diff, f"{atol:.3g}", diff <= atol))

    def schedule(self, params) -> list[tuple[int, int]]:
        return [tuple(s[-2:]) for s in self.meta["schedules"][params["schedule"]]]

    def text_inputs(self, params):
        feats, lens = self.g["inputs.text_features"], self.g["inputs.text_lens"].tolist()
        negative = None
        if params.get("uncond_text") == "negative_prompt":
            nf = next(self.g[k] for k in self.g if k.startswith("inputs.negative") and k.endswith("features"))
            nl = next(self.g[k] for k in self.g if k.startswith("inputs.negative") and k.endswith("lens"))
            negative = (nf, nl.tolist())
        return feats, lens, negative

    def scales(self, run: str) -> int:
        return sum(1 for k in self.g if re.fullmatch(rf"{re.escape(run)}\.bits\.s\d+", k))

    def golden_bits(self, run: str) -> list[torch.Tensor]:
        return [self.g[f"{run}.bits.s{i}"] for i in range(self.scales(run))]

    # runs
    def check_generation(self, run: str, params: dict):
        schedule = self.schedule(params)
        if [int(x) for x in params.get("cfg_insertion_layer", [0])] != [0]:
            self.records.append(Record(run, None, "-", False, "only cfg_insertion_layer [0] (CFG on logits) "
                                                             "is implemented"))
            return
        feats, lens, negative = self.text_inputs(params)
        sampling = SamplingParams(cfg=tuple(params["cfg_list"]), tau=tuple(params["tau_list"]),
                                  top_k=int(params.get("top_k", 0)), top_p=float(params.get("top_p", 0.0)))
        gold_bits = self.golden_bits(run)
        free_running = bool(params.get("stochastic"))
        generator = None
        if params.get("g_seed") is not None:
            generator = torch.Generator().manual_seed(int(params["g_seed"]))
        # greedy and teacher-forced runs are compared scale by scale with the golden bits fed back;
        # a seeded stochastic run must replay the official random-number sequence on its own
        result = generate(self.model, feats, lens, schedule, sampling, generator=generator, negative=negative,
                          teacher_bits=None if free_running else gold_bits, record=True)
        for si in range(len(schedule)):
            cfg, tau = sampling.cfg_at(si), sampling.tau_at(si)
            self.add(f"{run}.raw_logits.s{si}", result.raw_logits[si], f"{run}.raw_logits.s{si}", "raw_logits_atol")
            self.add(f"{run}.cfg_logits.s{si}", result.cfg_logits[si], f"{run}.cfg_logits.s{si}", "cfg_logits_atol",
                     cfg=cfg, tau=tau)
            if si < len(result.next_inputs):
                self.add(f"{run}.next_input.s{si}", result.next_inputs[si], f"{run}.next_input.s{si}",
                         "next_input_atol")
            self.check_bits(run, params, si, result)
        self.add(f"{run}.summed_codes", result.summed_codes.squeeze(2), f"{run}.summed_codes", "summed_codes_atol")
        images = decode_images(self.vae, result.summed_codes)
        self.add(f"{run}.image_float", images, f"{run}.image_float", "image_float_atol")
        self.add(f"{run}.image_uint8_bgr", to_uint8(images).flip(-1), f"{run}.image_uint8_bgr",
                 "image_uint8_max_abs_diff")
        if params.get("teacher_forced"):
            self.check_intermediates(run, feats, lens, negative, sampling, schedule)

    def check_bits(self, run, params, si, result):
        key = f"{run}.bits.s{si}"
        if key not in self.g:
            return
        golden, ours = self.g[key].to(torch.uint8), result.sampled_bits[si]
        if params.get("teacher_forced"):
            return  # the golden bits are the teacher's labels, fed in; nothing of ours to compare
        if params.get("stochastic"):
            tol_key = "sampled_bits"
            wrong = int((ours != golden).sum())
            self.records.append(Record(key, float(wrong), "exact", wrong == 0 if self.tol.has(tol_key) else None,
                                       f"{wrong} of {golden.numel()} bits differ"))
            return
        threshold = self.tol.margin("greedy_bits")
        logits = self.g[f"{run}.cfg_logits.s{si}"]
        margin = latent_margins(logits, self.schedule(params)[si], golden.shape, self.cfg.apply_spatial_patchify)
        decided = margin.abs() > threshold
        wrong = int(((ours != golden) & decided).sum())
        self.records.append(Record(key, float(wrong), f"|margin|>{threshold:g}", wrong == 0,
                                   f"{wrong} decided bits differ, {int((~decided).sum())} near-ties skipped"))

    def check_intermediates(self, run, feats, lens, negative, sampling, schedule):
        from ..model.sampling import build_text
        guided = sampling.guided(len(schedule))
        text = build_text(self.model, feats, lens, guided, negative)
        self.add(f"{run}.sos", text.sos, f"{run}.sos", None)
        self.add(f"{run}.ca_kv", text.memory, f"{run}.ca_kv", None)
        self.add(f"{run}.cond_gss", text.gss, f"{run}.cond_gss", None)

    def check_full_forward(self, run: str, params: dict):
        source = next((r for r, p in self.meta["runs_params_resolved"].items()
                       if p.get("teacher_forced") and p.get("schedule") == params.get("schedule")), None)
        if source is None:
            self.records.append(Record(run, None, "-", False, "no teacher-forced run with this schedule"))
            return
        sp = self.meta["run_params"][source]
        feats, lens, negative = self.text_inputs(sp)
        schedule = self.schedule(sp)
        inputs = [self.g[f"{source}.next_input.s{i}"] for i in range(len(schedule) - 1)]
        guided = SamplingParams(cfg=tuple(sp["cfg_list"])).guided(len(schedule))
        logits = forward_full(self.model, feats, lens, schedule, inputs, guided, negative)
        self.add(f"{run}.raw_logits", logits, f"{run}.raw_logits", "raw_logits_atol")

    def check_vae(self, run: str, params: dict):
        # the latent sizes come from the golden bits themselves: for a patchify VAE they are the
        # transformer schedule doubled, whichever of the two the JSON names
        schedule = [tuple(self.g[f"{run}.bits.s{i}"].shape[2:4]) for i in range(self.scales(run))] \
            or self.schedule(params)
        image = self.g[f"{run}.input_image"]
        with torch.no_grad():
            h, bits, z = self.vae.encode_bits(image, schedule)
            # the encoder output before quantisation has its own tolerance (float32 convolutions differ
            # by ~1e-5 between CPUs); golden files older than `vae_h_atol` judged it by `vae_z_atol`
            self.add(f"{run}.h", h, f"{run}.h", "vae_h_atol" if self.tol.has("vae_h_atol") else "vae_z_atol")
            for i, b in enumerate(bits):
                key = f"{run}.bits.s{i}"
                if key in self.g:
                    wrong = int((b != self.g[key].to(torch.uint8)).sum())
                    allowed = self.tol.atol("vae_bits") if self.tol.has("vae_bits") else None
                    shown = "-" if allowed is None else "exact" if allowed == 0 else f"{allowed:g}"
                    self.records.append(Record(key, float(wrong), shown,
                                               None if allowed is None else wrong <= allowed,
                                               f"{wrong} bits differ"))
            self.add(f"{run}.z", z, f"{run}.z", "vae_z_atol")
            from ..model.sampling import bits_to_codes
            summed = None
            full = tuple(self.g[f"{run}.bits.s{len(schedule) - 1}"].shape[2:4])
            for b in (self.g[f"{run}.bits.s{i}"] for i in range(len(schedule))):
                codes = bits_to_codes(b, self.cfg.codebook_dim)
                if tuple(codes.shape[-2:]) != full:
                    codes = torch.nn.functional.interpolate(codes, size=(1, *full), mode="trilinear")
                summed = codes if summed is None else summed + codes
            self.add(f"{run}.summed_codes_from_bits", summed, f"{run}.summed_codes_from_bits", "summed_codes_atol")
            recon = decode_images(self.vae, summed)
            self.add(f"{run}.recon_from_bits", recon, f"{run}.recon_from_bits", "image_float_atol")

    def run(self, runs: list[str] | None = None) -> list[Record]:
        """Checks every run of the golden file, or only those named in `runs`."""
        run_params = self.meta.get("run_params", {})
        self.meta["runs_params_resolved"] = run_params
        for run in runs or []:
            if run not in run_params:
                self.records.append(Record(run, None, "-", False, f"no run {run!r} in {self.path.name}"))
        for run, params in run_params.items():
            if runs and run not in runs:
                continue
            if f"{run}.input_image" in self.g:
                self.check_vae(run, params)
            elif "cfg_list" in params:
                self.check_generation(run, params)
            elif f"{run}.raw_logits" in self.g:
                self.check_full_forward(run, params)
            else:
                self.records.append(Record(run, None, "-", False, "run kind not recognised"))
        return self.records


# ---- manifests -------------------------------------------------------------------------------------------
def check_manifest(path: Path) -> list[Record]:
    manifest = json.loads(path.read_text())
    name = manifest["checkpoint"]
    if name not in MANIFEST_PRESETS:
        return [Record(name, None, "-", False, f"no configuration is known for {name}")]
    kind, preset_name = MANIFEST_PRESETS[name]
    with torch.device("meta"):
        model = Infinity(PRESETS[preset_name]) if kind == "infinity" else BSQVAE(VAE_PRESETS[preset_name])
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v["shape"]) for k, v in manifest["state_dict"].items()}
    missing, extra = sorted(theirs.keys() - ours.keys()), sorted(ours.keys() - theirs.keys())
    shapes = sorted(k for k in ours.keys() & theirs.keys() if ours[k] != theirs[k])
    alt_bad = sorted(k for k, v in manifest["state_dict"].items()
                     if "alt_name_accepted_by_load_cnn" in v and _plain_vae_name(k) != v["alt_name_accepted_by_load_cnn"])
    params = sum(v.numel() for k, v in model.state_dict().items()
                 if not k.endswith(("zero_k_bias", "lfq.mask")))
    records = [
        Record(f"{name}: keys", float(len(missing) + len(extra)), "0", not missing and not extra,
               f"missing {missing[:5]} extra {extra[:5]}" if missing or extra else f"{len(ours)} keys"),
        Record(f"{name}: shapes", float(len(shapes)), "0", not shapes, ", ".join(shapes[:5])),
    ]
    if "num_parameters" in manifest:
        records.append(Record(f"{name}: parameters", float(abs(params - manifest["num_parameters"])), "0",
                              params == manifest["num_parameters"], f"{params:,}"))
    if any("alt_name_accepted_by_load_cnn" in v for v in manifest["state_dict"].values()):
        records.append(Record(f"{name}: flux-style names", float(len(alt_bad)), "0", not alt_bad,
                              ", ".join(alt_bad[:5])))
    return records


def print_table(records: list[Record]) -> bool:
    width = max([len(r.name) for r in records] + [6])
    print(f"{'record':<{width}}  {'max abs diff':>13}  {'tolerance':>14}  pass")
    ok = True
    for r in records:
        diff = "-" if r.diff is None else f"{r.diff:.3e}"
        verdict = {True: "ok", False: "FAIL", None: "info"}[r.passed]
        ok &= r.passed is not False
        print(f"{r.name:<{width}}  {diff:>13}  {r.tolerance:>14}  {verdict}  {r.note}")
    failed = sum(r.passed is False for r in records)
    print(f"\n{len(records) - failed} records passed or informational, {failed} failed")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ttsvar_core.testing.parity", description=__doc__.split("\n\n")[0])
    ap.add_argument("golden", nargs="*", type=Path, help="golden .safetensors file(s)")
    ap.add_argument("--json", type=Path, help="the golden JSON (default: next to the .safetensors)")
    ap.add_argument("--manifest", type=Path, action="append", default=[], help="checkpoint manifest JSON")
    ap.add_argument("--run", action="append", default=[], metavar="NAME",
                    help="check only this run of the golden file(s) (repeatable; default: all)")
    args = ap.parse_args(argv)
    if not args.golden and not args.manifest:
        ap.error("give a golden .safetensors file and/or --manifest FILE.json")
    # float32 results depend in the last bits on the kernels: say which ones ran
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} threads")
    records: list[Record] = []
    with torch.no_grad():  # a scope, not the global switch: main() is also called from tests
        for path in args.manifest:
            records += check_manifest(path)
        for path in args.golden:
            meta_path = args.json or path.with_suffix(".json")
            if not meta_path.exists():
                ap.error(f"{meta_path} not found: pass --json")
            records += ParityChecker(path, json.loads(meta_path.read_text())).run(args.run or None)
    return 0 if print_table(records) else 1


if __name__ == "__main__":
    sys.exit(main())
