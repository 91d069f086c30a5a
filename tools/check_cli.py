#!/usr/bin/env python3
"""Compare the rwkv-wgpu CLI's logits with the official `rwkv` package on a random model.

Builds a seeded random model of the chosen version (`--version 4|5.0|5.1|5.2|6|7`, default 7)
and any shape (same generators as tools/make_fixtures.py, values exact in f32/f16/bf16),
writes it to a work directory in the requested format, runs the official package (PyPI rwkv
0.8.32, 'cpu fp32', one token at a time from the zero state, in a subprocess with the right
RWKV_V7_ON) on a .pth of the same weights (bf16 for RWKV-7; f32 for RWKV-4..6, whose loader
would otherwise normalise the embedding in bf16), runs

    BINARY logits --model FILE --tokens 1,2,3 --out OUT.npy

(OUT.npy: float32 [T, V], logits after each token) and prints, per position,
max|ours - official| / std(official). Exits 1 if any position exceeds --tol
(default 1e-3), 2 if the binary fails or its output has the wrong shape.

Shape options default to the version's committed fixture 'A' (RWKV-7: 'tiny'); --head-size is
ignored for RWKV-4 and --lora means w,a,v,g ranks for RWKV-7 and mix,decay ranks for RWKV-6.

Examples (from the repository root; models go to /tmp, nothing is committed):

    python3 tools/check_cli.py --binary target/release/rwkv-wgpu                 # RWKV-7
    python3 tools/check_cli.py --binary target/release/rwkv-wgpu --version 4
    python3 tools/check_cli.py --binary target/release/rwkv-wgpu --version 5.0 --format f16
    python3 tools/check_cli.py --binary target/release/rwkv-wgpu --version 5.1 --format bf16
    python3 tools/check_cli.py --binary target/release/rwkv-wgpu --version 5.2 --layers 3 --embd 64 --head-size 32
    python3 tools/check_cli.py --binary target/release/rwkv-wgpu --version 6 --layers 24 --growth 6
    python3 tools/check_cli.py --binary target/release/rwkv-wgpu --format f16 \\
        --layers 4 --embd 512 --head-size 64 --vocab 65536 --ffn 2048 --lora 64,64,32,128 --tokens 32
    python3 tools/check_cli.py --official-only --version 6 --vocab 65536   # the Python side only
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
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rwkv_fixtures import official  # noqa: E402
from rwkv_fixtures.cases import CASES, VERSIONS  # noqa: E402
from rwkv_fixtures.common import (FORMAT_FILES, TORCH_DTYPES, configure_torch, logit_std_range,  # noqa: E402
                                  random_tokens, relative_error_per_position, save_format, save_pth)
from rwkv_fixtures.legacy import LegacyShape  # noqa: E402
from rwkv_fixtures.v7 import ModelShape  # noqa: E402


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--binary", help="path to the rwkv-wgpu executable")
    ap.add_argument("--official-only", action="store_true",
                    help="build the model and run the official package only (no binary)")
    ap.add_argument("--version", choices=list(VERSIONS), default="7", help="RWKV version (default 7)")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--embd", type=int)
    ap.add_argument("--head-size", type=int, help="RWKV-5/6/7 head size")
    ap.add_argument("--vocab", type=int)
    ap.add_argument("--ffn", type=int)
    ap.add_argument("--lora", help="LoRA ranks: w,a,v,g (RWKV-7) or mix,decay (RWKV-6)")
    ap.add_argument("--growth", type=float, default=0.0,
                    help="RWKV-4..6: residual growth over depth as in the v6/deep fixture (e.g. 6)")
    ap.add_argument("--format", choices=sorted(FORMAT_FILES), default="pth",
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


def shape_from_args(args: argparse.Namespace):
    """The version's default case shape, with the given options replaced."""
    case_key, arch = VERSIONS[args.version]
    d = CASES[case_key].shape
    pick = lambda value, default: default if value is None else value  # noqa: E731
    if args.version == "7":
        ranks = [int(r) for r in args.lora.split(",")] if args.lora else [d.lora_w, d.lora_a, d.lora_v, d.lora_g]
        if len(ranks) != 4:
            raise SystemExit("--lora needs four ranks for RWKV-7: w,a,v,g")
        shape = ModelShape(layers=pick(args.layers, d.layers), embd=pick(args.embd, d.embd),
                           head_size=pick(args.head_size, d.head_size), vocab=pick(args.vocab, d.vocab),
                           ffn=pick(args.ffn, d.ffn), lora_w=ranks[0], lora_a=ranks[1],
                           lora_v=ranks[2], lora_g=ranks[3])
        shape.validate()
        return arch, shape
    ranks = [d.lora_mix, d.lora_decay]
    if args.lora:
        if args.version != "6":
            raise SystemExit("--lora applies to RWKV-6 (mix,decay) and RWKV-7 (w,a,v,g) only")
        ranks = [int(r) for r in args.lora.split(",")]
        if len(ranks) != 2:
            raise SystemExit("--lora needs two ranks for RWKV-6: mix,decay")
    head_size = 0 if args.version == "4" else pick(args.head_size, d.head_size)
    shape = LegacyShape(layers=pick(args.layers, d.layers), embd=pick(args.embd, d.embd),
                        ffn=pick(args.ffn, d.ffn), vocab=pick(args.vocab, d.vocab), head_size=head_size,
                        lora_mix=ranks[0], lora_decay=ranks[1])
    arch.validate(shape)
    return arch, shape


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


def compare(ours: np.ndarray, reference: np.ndarray, tokens: Sequence[int], tol: float) -> bool:
    """Print the per-position error table; True when every position is within `tol`."""
    if ours.shape != reference.shape:
        raise ValueError(f"output shape {ours.shape} != expected {reference.shape}")
    if not np.all(np.isfinite(ours)):
        print(f"non-finite values in our logits at positions {np.unique(np.nonzero(~np.isfinite(ours))[0])}")
        return False
    rel = relative_error_per_position(ours, reference)
    absdiff = np.abs(ours.astype(np.float64) - reference).max(axis=-1)
    std = reference.astype(np.float64).std(axis=-1)
    print(f"{'pos':>4} {'token':>7} {'std':>9} {'max|diff|':>11} {'rel':>10}")
    for t in range(len(tokens)):
        flag = "  FAIL" if rel[t] > tol else ""
        print(f"{t:4d} {int(tokens[t]):7d} {std[t]:9.4f} {absdiff[t]:11.4g} {rel[t]:10.3g}{flag}")
    worst = int(np.argmax(rel))
    ok = bool(rel.max() <= tol)
    print(f"worst: position {worst} rel {rel[worst]:.3g} (tol {tol:g}); "
          f"argmax agreement {np.mean(ours.argmax(-1) == reference.argmax(-1)) * 100:.1f}% -> "
          f"{'PASS' if ok else 'FAIL'}")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    arch, shape = shape_from_args(args)
    if args.growth and args.version == "7":
        raise SystemExit("--growth applies to RWKV-4..6")
    configure_torch(1)
    workdir = args.workdir or tempfile.mkdtemp(prefix="rwkv-check-", dir="/tmp")
    os.makedirs(workdir, exist_ok=True)
    try:
        t0 = time.time()
        weights = arch.build_weights(shape, args.seed, args.growth)
        tokens = random_tokens(shape.vocab, args.tokens, args.seed)
        model_path = os.path.join(workdir, FORMAT_FILES[args.format])
        save_format(weights, args.format, model_path)
        # The official package reads .pth only; golden outputs come from a .pth of the file's
        # dtype (RWKV-4..6 normalise the embedding in it).
        golden_pth = os.path.join(workdir, "official.pth")
        save_pth(weights, golden_pth, TORCH_DTYPES.get(args.format, torch.bfloat16))
        del weights
        print(f"RWKV {arch.version} {shape} seed {args.seed} -> {model_path} ({time.time() - t0:.1f} s)")

        t0 = time.time()
        run = official.run_official(arch.family, golden_pth, tokens, args.threads)
        if run.version != arch.version:
            raise SystemExit(f"the official package detected version {run.version}, expected {arch.version}")
        reference = run.result.logits
        lo, hi = logit_std_range(reference)
        print(f"official: {len(tokens)} tokens in {time.time() - t0:.1f} s, logit std {lo:.3g} .. {hi:.3g}")
        np.save(os.path.join(workdir, "official_logits.npy"), reference)
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
            return 0 if compare(ours, reference, tokens, args.tol) else 1
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
