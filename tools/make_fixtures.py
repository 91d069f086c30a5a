#!/usr/bin/env python3
"""Golden RWKV-4, 5.0, 5.1, 5.2, 6.0 and 7 fixtures for rwkv-wgpu, produced by the official `rwkv` package.

For every case (tools/rwkv_fixtures/cases.py) this script

1. builds a seeded random-weight model with the official tensor names, shapes and key order
   of that version's released checkpoints, every value rounded so that f32, f16 and bf16
   storage are all lossless (asserted);
2. saves it as `model.pth` (bf16, `torch.save(dict)` like the official releases) and, per
   case, as `model-{f16,bf16,f32}.safetensors`;
3. runs BlinkDL's `rwkv` package (PyPI 0.8.32, strategy `cpu fp32`) on a fixed token sequence
   ONE TOKEN AT A TIME from the zero state, in a subprocess per family (RWKV-7 needs
   `RWKV_V7_ON=1` before `rwkv.model` is imported, RWKV-4..6 need it unset), on the bf16 .pth
   and on an f32 .pth copy of the same weights. RWKV-7: the two runs must be bit-identical.
   RWKV-4..6: the loader computes the ln0-normalised embedding in the file's dtype, so the
   golden outputs come from the f32 copy (our engine normalises in f32);
4. checks the version and head count the package detected, compares with an independent
   float64 numpy implementation of the version's single-token math (meta.json's
   official_fp32_vs_f64_rel), and runs a sensitivity check (perturb every parameter group and
   confirm the logits move, so no code path is dead);
5. writes `tokens.npy` (int32 [T]), `logits.npy` (float32 [T, V], after each token), the final
   state `state_att_x.npy` [L, C], `state_wkv.npy` ([L, H, N, N] for RWKV-5/6, indexed
   [head, key, value]; [L, H, N, N] for RWKV-7, indexed [head, value, key]; [L, 3, C] =
   (aa, bb, pp) for RWKV-4), `state_ffn_x.npy` [L, C] and `meta.json` to
   `tests/fixtures/<version>/<case>/` (v4, v5.0, v5.1, v5.2, v6, v7).

Run from the repository root (needs python3 with rwkv==0.8.32, torch, numpy, safetensors;
the Rust tests never need Python):

    python3 tools/make_fixtures.py                       # every case -> tests/fixtures/
    python3 tools/make_fixtures.py --cases v7            # the RWKV-7 cases only
    python3 tools/make_fixtures.py --cases v5.1/A,v6/deep
    python3 tools/make_fixtures.py --out /tmp/fx --no-sensitivity

Everything is deterministic: re-running rewrites byte-identical outputs (the .pth zip archives
included, as torch.save writes no timestamps). The code lives in tools/rwkv_fixtures/;
tools/check_cli.py uses the same architectures.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rwkv_fixtures.build import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
