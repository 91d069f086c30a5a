"""The fixture pipeline and the command line of tools/make_fixtures.py.

For every selected case:

1. build the seeded random weights (official names, shapes and order; every value exact in
   f32, f16 and bf16, asserted) and the token sequence, save the model files, read them back;
2. run the official package one token at a time from the zero state (official.py: one
   subprocess per family for all cases) on the committed bf16 `model.pth`, on an f32 `.pth`
   copy and, where the case has an f16 file, on an f16 `.pth` copy. The package normalises the
   embedding by ln0 as it loads, for RWKV-4..6 in the file's dtype: their runs differ by file
   dtype (and the engine rounds the same way), so each dtype gets its own golden outputs. For
   RWKV-7 (normalised in fp32) all runs must be bit-identical;
3. check that the package detected the intended version and head count;
4. compare with the version's independent float64 reference (official_fp32_vs_f64_rel =
   max over positions of max|official - f64| / std), and run the sensitivity check: perturb
   every parameter group and make sure the logits move (no dead path);
5. write tokens.npy, logits.npy, state_att_x.npy, state_wkv.npy, state_ffn_x.npy (the run on
   the bf16 files), the same as logits.DTYPE.npy, state_*.DTYPE.npy for the f32 and f16 files
   where their runs differ, and meta.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
import zlib
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from . import official
from .cases import CASES, select
from .common import (FIXTURE_ROOT, FORMAT_FILES, RWKV_PACKAGE_VERSION, TORCH_DTYPES, FixtureCase,
                     RunResult, assert_identical, check_saved_files, configure_torch, logit_std_range,
                     random_tokens, relative_error_per_position, save_format, save_pth,
                     sensitivity_check, state_relative_errors, summarize_sensitivity, write_npy)

# The official fp32 run must agree with the float64 reference to this (max |diff| / std); over
# thousands of tokens f32 rounding in the state accumulates (1.1e-4 on v5.2/long).
FP32_VS_F64_LIMIT = 1e-4
FP32_VS_F64_LIMIT_LONG = 3e-4
# A parameter group must move the logits by at least this (max over positions of max|d|/std).
SENSITIVITY_THRESHOLD = 1e-3


@dataclasses.dataclass
class Prepared:
    """A case whose model files are written and whose official runs are pending."""

    case: FixtureCase
    out_dir: str
    weights: Dict[str, np.ndarray]
    tokens: np.ndarray
    files: List[str]
    committed_pth: str
    # dtype name -> .pth copy in that dtype ('f32' always, 'f16' for cases with an f16 file)
    copies: Dict[str, str]


def prepare_case(case: FixtureCase, out_root: str, tmp: str) -> Prepared:
    """Build the weights and tokens, write the committed model files (checked by reading them
    back) and an f32 .pth copy in `tmp`."""
    out_dir = os.path.join(out_root, case.key)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    weights = case.arch.build_weights(case.shape, case.seed, case.growth)
    tokens = random_tokens(case.shape.vocab, case.tokens, case.seed)
    if "pth" not in case.formats:
        raise ValueError(f"{case.key}: the bf16 .pth is required")
    files = []
    for fmt in case.formats:
        save_format(weights, fmt, os.path.join(out_dir, FORMAT_FILES[fmt]))
        files.append(FORMAT_FILES[fmt])
    check_saved_files(out_dir, files, weights)
    copies = {}
    for dtype in ["f32"] + (["f16"] if "f16" in case.formats else []):
        copies[dtype] = os.path.join(tmp, f"{case.key.replace('/', '-')}-{dtype}.pth")
        save_pth(weights, copies[dtype], TORCH_DTYPES[dtype])
    return Prepared(case, out_dir, weights, tokens, files, os.path.join(out_dir, FORMAT_FILES["pth"]), copies)


def run_all_official(prepared: Sequence[Prepared], threads: int) -> Dict[str, Dict[str, official.OfficialRun]]:
    """Official runs of every case (the committed bf16 .pth and each copy), one subprocess per
    family. Returns case key -> dtype name ('bf16', 'f32', 'f16') -> run."""
    runs: Dict[str, Dict[str, official.OfficialRun]] = {}
    for family in official.FAMILIES:
        mine = [p for p in prepared if p.case.arch.family == family]
        labelled = [(p, dtype, path) for p in mine for dtype, path in [("bf16", p.committed_pth), *p.copies.items()]]
        results = official.run_official_many(family, [(path, p.tokens) for p, _, path in labelled], threads)
        for (p, dtype, _), result in zip(labelled, results):
            runs.setdefault(p.case.key, {})[dtype] = result
    return runs


def check_detection(case: FixtureCase, run: official.OfficialRun) -> None:
    """The package must have detected the intended version and head count."""
    if run.version != case.arch.version:
        raise AssertionError(f"{case.key}: the package detected version {run.version}, expected {case.arch.version}")
    heads = case.shape.heads
    if run.n_head != heads:
        raise AssertionError(f"{case.key}: the package found {run.n_head} heads, expected {heads}")


def finish_case(p: Prepared, runs: Dict[str, official.OfficialRun], sensitivity: bool) -> dict:
    """Verify the official outputs against the float64 reference, write outputs and meta.json;
    returns the case summary."""
    t0 = time.time()
    case, arch, s = p.case, p.case.arch, p.case.shape
    for run in runs.values():
        check_detection(case, run)
    extra_meta = {}
    # The committed files' golden outputs: the bf16 run, and each other dtype's run where it
    # differs (RWKV-4..6 round the normalised embedding to the file's dtype).
    golden = runs["bf16"].result
    per_dtype = {}
    for dtype, run in runs.items():
        rel = float(relative_error_per_position(run.result.logits, runs["f32"].result.logits).max())
        extra_meta[f"official_{dtype}_pth_vs_f32_pth_rel"] = rel
        if dtype == "bf16":
            continue
        if arch.family == "v7":
            assert_identical(run.result, golden, f"{case.key}: {dtype} .pth vs bf16 .pth")
        elif any(getattr(run.result, f).tobytes() != getattr(golden, f).tobytes() for f in RunResult.FIELDS):
            per_dtype[dtype] = run.result
    bf16_rel = extra_meta["official_bf16_pth_vs_f32_pth_rel"]

    # The float64 reference has no rounding of the embedding: it checks the f32 run.
    ref, diag = arch.reference(p.weights, s, p.tokens)
    rel_f64 = relative_error_per_position(runs["f32"].result.logits, ref.logits)
    std_lo, std_hi = logit_std_range(golden.logits)
    residual = diag.get("residual_absmax_by_layer")
    if residual is not None:
        extra_meta["residual_absmax"] = max(residual)

    files = list(p.files)
    step = case.logit_step
    if step > 1:
        extra_meta["logit_positions"] = {"first": step - 1, "step": step}
    outputs = {"tokens.npy": p.tokens.astype(np.int32)}
    for suffix, run in [("", golden)] + [(f".{dtype}", run) for dtype, run in sorted(per_dtype.items())]:
        outputs.update({f"logits{suffix}.npy": run.logits[step - 1::step], f"state_att_x{suffix}.npy": run.att_x,
                        f"state_wkv{suffix}.npy": run.wkv, f"state_ffn_x{suffix}.npy": run.ffn_x})
    for name, arr in outputs.items():
        write_npy(os.path.join(p.out_dir, name), arr)
        files.append(name)

    meta = {"version": arch.version, **arch.meta_shape(s), "tokens": case.tokens, "seed": case.seed,
            "files": files + ["meta.json"], "rwkv_package": RWKV_PACKAGE_VERSION, "torch": torch.__version__,
            "strategy": "cpu fp32", "mode": "forward_one per token from zero state",
            "logit_std_min": std_lo, "logit_std_max": std_hi,
            "official_fp32_vs_f64_rel": float(rel_f64.max()), **extra_meta}
    with open(os.path.join(p.out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")

    summary = {
        "case": case.key, "logit_std": [std_lo, std_hi],
        "logit_absmax": float(np.abs(golden.logits).max()),
        "diagnostics": {k: v for k, v in diag.items() if not k.endswith("_by_layer")},
        "residual_absmax_by_layer": residual,
        "residual_rms_by_layer": diag.get("residual_rms_by_layer"),
        "official_fp32_vs_f64_rel": float(rel_f64.max()),
        "official_fp32_vs_f64_rel_median": float(np.median(rel_f64)),
        "state_fp32_vs_f64_rel": state_relative_errors(golden, ref),
        "bf16_pth_vs_f32_pth_rel": bf16_rel,
        "argmax_distinct": int(len(np.unique(golden.logits.argmax(-1)))),
    }
    if sensitivity and case.logit_step == 1:
        rows, weak = sensitivity_check(arch.perturbations(p.weights, s, case.seed),
                                       lambda changes: arch.forward_many(p.weights, s, p.tokens, changes),
                                       ref.logits, threshold=SENSITIVITY_THRESHOLD, batch=arch.sensitivity_batch)
        by_kind = summarize_sensitivity(rows)
        summary["sensitivity_by_kind"] = by_kind
        summary["sensitivity_min"] = min(lo for lo, _ in by_kind.values())
        summary["sensitivity_ignored"] = [(label, rel) for label, rel, ign in rows if ign]
        summary["sensitivity_groups"] = len(rows)
        summary["sensitivity_weak_groups"] = weak
        summary["sensitivity_per_kind"] = case.sensitivity_per_kind
        if case.sensitivity_per_kind:
            summary["dead_paths"] = [(k, hi) for k, (_, hi) in by_kind.items() if hi < SENSITIVITY_THRESHOLD]
        else:
            summary["dead_paths"] = weak
    names = os.listdir(p.out_dir)
    summary["bytes"] = sum(os.path.getsize(os.path.join(p.out_dir, n)) for n in names)
    summary["bytes_zlib"] = sum(len(zlib.compress(open(os.path.join(p.out_dir, n), "rb").read()))
                                for n in names)
    summary["seconds"] = time.time() - t0
    return summary


def _fmt_range(v) -> str:
    return f"{v[0]:.7g} .. {v[1]:.7g}"


def print_summary(summary: dict) -> None:
    print(f"== {summary['case']}: {summary['bytes'] / 1e6:.3f} MB ({summary['bytes_zlib'] / 1e6:.3f} MB zlib), "
          f"check {summary['seconds']:.1f} s")
    print(f"   logit std per position: {summary['logit_std'][0]:.3f} .. {summary['logit_std'][1]:.3f}"
          f"   (|logit| max {summary['logit_absmax']:.2f}, {summary['argmax_distinct']} distinct argmax tokens)")
    for k, v in summary["diagnostics"].items():
        print(f"   {k:28s} {_fmt_range(v)}")
    if summary["residual_absmax_by_layer"]:
        by_layer = summary["residual_absmax_by_layer"]
        shown = ", ".join(f"{v:.3g}" for v in by_layer)
        print(f"   residual max|x| by layer: {shown}  (max {max(by_layer):.4g})")
        rms = summary["residual_rms_by_layer"]
        print(f"   residual rms(x) by layer (max over tokens): {', '.join(f'{v:.3g}' for v in rms)}")
    if summary["bf16_pth_vs_f32_pth_rel"]:
        print(f"   official run on the bf16 .pth vs the f32 .pth: max |diff|/std = {summary['bf16_pth_vs_f32_pth_rel']:.3g}")
    print(f"   official fp32 vs float64 reference: max |diff|/std = {summary['official_fp32_vs_f64_rel']:.3g}"
          f" (median over positions {summary['official_fp32_vs_f64_rel_median']:.3g});"
          f" final state rel {', '.join(f'{k} {v:.2g}' for k, v in summary['state_fp32_vs_f64_rel'].items())}")
    if "sensitivity_by_kind" in summary:
        kinds = sorted(summary["sensitivity_by_kind"].items(), key=lambda kv: kv[1][0])
        print(f"   sensitivity ({summary['sensitivity_groups']} groups; per kind weakest/strongest layer, "
              f"max|dlogit|/std):")
        for i in range(0, len(kinds), 4):
            print("     " + "  ".join(f"{k}={lo:.2g}/{hi:.2g}" for k, (lo, hi) in kinds[i:i + 4]))
        for label, rel in summary["sensitivity_ignored"]:
            print(f"     ignored by the official code (as expected): {label}: {rel:.2g}")
        weak = summary["sensitivity_weak_groups"]
        rule = "per kind (strongest layer)" if summary["sensitivity_per_kind"] else "per group"
        if summary["dead_paths"]:
            print(f"   DEAD PATHS ({rule} < {SENSITIVITY_THRESHOLD:g}): {summary['dead_paths']}")
        else:
            print(f"   no dead path ({rule} >= {SENSITIVITY_THRESHOLD:g}; minimum over groups "
                  f"{summary['sensitivity_min']:.2g}, {len(weak)} of {summary['sensitivity_groups']} groups below)")
        if weak and summary["sensitivity_per_kind"]:
            print("     groups below: " + ", ".join(f"{label.split(' ')[0]} {rel:.2g}" for label, rel in weak))


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Golden RWKV-4/5/6/7 fixtures from the official rwkv package.")
    ap.add_argument("--out", default=FIXTURE_ROOT, help="output root (default tests/fixtures); cases go to OUT/<version>/<case>")
    ap.add_argument("--cases", default=",".join(CASES),
                    help="comma-separated case keys or version directories (e.g. v7,v5.1/A); default all: "
                    + ",".join(CASES))
    ap.add_argument("--no-sensitivity", action="store_true", help="skip the sensitivity check")
    ap.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1),
                    help="cases checked in parallel (float64 reference and sensitivity)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the official runs (1: deterministic)")
    args = ap.parse_args(argv)
    selected = select(args.cases)
    configure_torch(1)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="rwkv-fixtures-") as tmp:
        prepared = [prepare_case(c, args.out, tmp) for c in selected.values()]
        t1 = time.time()
        runs = run_all_official(prepared, args.threads)
        print(f"built {len(prepared)} cases in {t1 - t0:.1f} s; official runs {time.time() - t1:.1f} s")
        work = [(p, runs[p.case.key], not args.no_sensitivity) for p in prepared]
        if args.jobs > 1 and len(work) > 1:
            with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
                summaries = list(pool.map(_finish, work))
        else:
            summaries = [_finish(w) for w in work]
    failed = False
    for summary in summaries:
        print_summary(summary)
        if summary.get("dead_paths"):
            failed = True
        limit = FP32_VS_F64_LIMIT if selected[summary["case"]].logit_step == 1 else FP32_VS_F64_LIMIT_LONG
        if summary["official_fp32_vs_f64_rel"] > limit:
            print(f"   WARNING: official fp32 and float64 reference disagree by more than {limit:g}")
            failed = True
    total = sum(s["bytes"] for s in summaries)
    total_z = sum(s["bytes_zlib"] for s in summaries)
    print(f"total {total / 1e6:.2f} MB ({total_z / 1e6:.2f} MB zlib) in {args.out}, {time.time() - t0:.1f} s")
    return 1 if failed else 0


def _finish(work) -> dict:
    p, runs, sensitivity = work
    return finish_case(p, runs, sensitivity)


if __name__ == "__main__":
    sys.exit(main())
