#!/usr/bin/env python3
"""Compare the rwkv-wgpu CLI's RWKV-7 logits with the official `rwkv` package on a random model.

Builds a seeded random RWKV-7 model of any shape (same generator as
tools/make_fixtures.py, values exact in f32/f16/bf16), writes it to a work directory
in the requested format, runs the official package (PyPI rwkv 0.8.32, RWKV_x070,
'cpu fp32', one token at a time from the zero state) on a bf16 .pth of the same
weights, runs

    BINARY logits --model FILE --tokens 1,2,3 --out OUT.npy

(OUT.npy: float32 [T, V], logits after each token) and prints, per position,
max|ours - official| / std(official). Exits 1 if any position exceeds --tol
(default 1e-3), 2 if the binary fails or its output has the wrong shape.

Examples (from the repository root; models go to /tmp, nothing is committed):

    python3 tools/check_cli.py --binary target/release/rwkv-wgpu
    python3 tools/check_cli.py --binary target/release/rwkv-wgpu --format f16 \\
        --layers 4 --embd 512 --head-size 64 --vocab 65536 --ffn 2048 \\
        --lora 64,64,32,128 --tokens 32
    python3 tools/check_cli.py --official-only --vocab 65536   # test the Python side only
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import List, Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402  (sets RWKV_V7_ON before torch/rwkv are imported)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    tiny = mf.CASES["tiny"].shape
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--binary", help="path to the rwkv-wgpu executable")
    ap.add_argument("--official-only", action="store_true",
                    help="build the model and run the official package only (no binary)")
    ap.add_argument("--layers", type=int, default=tiny.layers)
    ap.add_argument("--embd", type=int, default=tiny.embd)
    ap.add_argument("--head-size", type=int, default=tiny.head_size)
    ap.add_argument("--vocab", type=int, default=tiny.vocab)
    ap.add_argument("--ffn", type=int, default=tiny.ffn)
    ap.add_argument("--lora", default=f"{tiny.lora_w},{tiny.lora_a},{tiny.lora_v},{tiny.lora_g}",
                    help="LoRA ranks w,a,v,g")
    ap.add_argument("--format", choices=sorted(mf.FORMAT_FILES), default="pth",
                    help="file handed to the binary: pth (bf16 .pth) or f16/bf16/f32 safetensors")
    ap.add_argument("--tokens", type=int, default=16, help="sequence length T")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tol", type=float, default=1e-3, help="max allowed max|diff|/std per position")
    ap.add_argument("--threads", type=int, default=max(1, min(8, os.cpu_count() or 1)),
                    help="torch threads for the official run")
    ap.add_argument("--workdir", help="directory for the model and outputs (default: a new /tmp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--binary-args", default="", help="extra arguments appended to the binary's command")
    args = ap.parse_args(argv)
    if not args.official_only and not args.binary:
        ap.error("--binary is required (or pass --official-only)")
    return args


def shape_from_args(args: argparse.Namespace) -> mf.ModelShape:
    ranks = [int(r) for r in args.lora.split(",")]
    if len(ranks) != 4:
        raise SystemExit("--lora needs four ranks: w,a,v,g")
    shape = mf.ModelShape(layers=args.layers, embd=args.embd, head_size=args.head_size,
                          vocab=args.vocab, ffn=args.ffn, lora_w=ranks[0], lora_a=ranks[1],
                          lora_v=ranks[2], lora_g=ranks[3])
    shape.validate()
    return shape


def run_binary(binary: str, model_path: str, tokens: Sequence[int], out_path: str,
               extra: str) -> List[str]:
    """Run `BINARY logits --model FILE --tokens a,b,c --out OUT.npy`; returns the command."""
    cmd = [binary, "logits", "--model", model_path, "--tokens", ",".join(str(int(t)) for t in tokens),
           "--out", out_path] + extra.split()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise RuntimeError(f"binary exited with {proc.returncode}")
    return cmd


def compare(ours: np.ndarray, official: np.ndarray, tokens: Sequence[int], tol: float) -> bool:
    """Print the per-position error table; True when every position is within `tol`."""
    if ours.shape != official.shape:
        raise ValueError(f"output shape {ours.shape} != expected {official.shape}")
    if not np.all(np.isfinite(ours)):
        print(f"non-finite values in our logits at positions {np.unique(np.nonzero(~np.isfinite(ours))[0])}")
        return False
    rel = mf.relative_error_per_position(ours, official)
    absdiff = np.abs(ours.astype(np.float64) - official).max(axis=-1)
    std = official.astype(np.float64).std(axis=-1)
    print(f"{'pos':>4} {'token':>7} {'std':>9} {'max|diff|':>11} {'rel':>10}")
    for t in range(len(tokens)):
        flag = "  FAIL" if rel[t] > tol else ""
        print(f"{t:4d} {int(tokens[t]):7d} {std[t]:9.4f} {absdiff[t]:11.4g} {rel[t]:10.3g}{flag}")
    worst = int(np.argmax(rel))
    ok = bool(rel.max() <= tol)
    print(f"worst: position {worst} rel {rel[worst]:.3g} (tol {tol:g}); "
          f"argmax agreement {np.mean(ours.argmax(-1) == official.argmax(-1)) * 100:.1f}% -> "
          f"{'PASS' if ok else 'FAIL'}")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    shape = shape_from_args(args)
    mf.configure_torch(args.threads)
    workdir = args.workdir or tempfile.mkdtemp(prefix="rwkv-check-", dir="/tmp")
    os.makedirs(workdir, exist_ok=True)
    try:
        t0 = time.time()
        weights = mf.build_weights(shape, args.seed)
        tokens = mf.random_tokens(shape.vocab, args.tokens, args.seed)
        pth = os.path.join(workdir, mf.FORMAT_FILES["pth"])
        mf.save_format(weights, "pth", pth)               # the official package reads .pth only
        model_path = os.path.join(workdir, mf.FORMAT_FILES[args.format])
        if args.format != "pth":
            mf.save_format(weights, args.format, model_path)
        del weights
        print(f"model {shape} seed {args.seed} -> {model_path} ({time.time() - t0:.1f} s)")

        t0 = time.time()
        official = mf.run_official(pth, tokens).logits
        lo, hi = mf.logit_std_range(official)
        print(f"official: {len(tokens)} tokens in {time.time() - t0:.1f} s, logit std {lo:.3g} .. {hi:.3g}")
        np.save(os.path.join(workdir, "official_logits.npy"), official)
        if args.official_only:
            return 0

        out_path = os.path.join(workdir, "ours_logits.npy")
        t0 = time.time()
        try:
            cmd = run_binary(args.binary, model_path, tokens, out_path, args.binary_args)
            ours = np.load(out_path)
        except (RuntimeError, OSError, ValueError) as e:
            print(f"ERROR running the binary: {e}")
            return 2
        print(f"ours: {' '.join(cmd[:5])} ... ({time.time() - t0:.1f} s)")
        try:
            return 0 if compare(ours, official, tokens, args.tol) else 1
        except ValueError as e:
            print(f"ERROR: {e}")
            return 2
    finally:
        if args.keep or args.workdir:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
