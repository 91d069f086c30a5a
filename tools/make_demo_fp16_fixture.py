#!/usr/bin/env python3
"""How far the official package's own fp16 path lands from its fp32 logits on the demo model.

`--f16-arithmetic` trades accuracy for speed; the yardstick for that trade is what the official
package does in half precision. Its `cuda fp16` path is torch operations on fp16 activations
(plus, with RWKV_CUDA_ON=1, a CUDA kernel for the recurrence whose state stays fp32 either way).
Without a GPU this runs the same operations as strategy `cpu fp16` (RWKV_CUDA_ON=0), which rounds
the activations to fp16 between operations as the CUDA path does. It stands in for that path
rather than copying it: torch picks the order and the precision of the sums inside products and
reductions per device, and RWKV_CUDA_ON=1 replaces the recurrence's operations by its kernel.

Writes tests/fixtures/demo/official_fp16.json: for the first 512 held-out bytes
(tests/fixtures/demo/tokens.npy), the worst |fp16 − fp32| logit over all positions divided by the
std of the fp32 logits (the measure tests/common::relative_error uses), and the relative change of
the loss, for the prompt read one token at a time (decode) and as one sequence (prefill).
tests/demo.rs holds our f16 arithmetic to no more than the official fp16 prefill error.

Run from the repository root:  python3 tools/make_demo_fp16_fixture.py
"""

import json
import os
import sys
import tempfile

import numpy as np
import torch
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_demo_fixtures import DEMO, OUT, log_softmax  # noqa: E402
from rwkv_fixtures.official import run_official  # noqa: E402


def loss_of(logits: np.ndarray, ids: np.ndarray) -> float:
    return -float(np.mean(log_softmax(logits[:-1])[np.arange(len(ids) - 1), ids[1:]]))


def main() -> None:
    tokens = np.load(os.path.join(OUT, "tokens.npy")).astype(np.int64)
    fp32 = np.load(os.path.join(OUT, "logits.npy")).astype(np.float64)
    weights = load_file(os.path.join(DEMO, "model.safetensors"))
    result = {"positions": len(tokens), "strategy": "cpu fp16 (RWKV_CUDA_ON=0)", "package": "rwkv 0.8.32"}
    with tempfile.TemporaryDirectory() as tmp:
        pth = os.path.join(tmp, "demo.pth")
        torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, pth)
        for mode, sequence in [("decode", False), ("prefill", True)]:
            fp16 = run_official("v7", pth, tokens.tolist(), strategy="cpu fp16", sequence=sequence)
            logits = fp16.result.logits.astype(np.float64)
            assert logits.shape == fp32.shape, (logits.shape, fp32.shape)
            error = float(np.abs(logits - fp32).max() / fp32.std())
            loss_change = abs(loss_of(logits, tokens) - loss_of(fp32, tokens)) / loss_of(fp32, tokens)
            result[mode] = {"logits_error_x_std": float(f"{error:.3e}"),
                            "loss_change": float(f"{loss_change:.3e}")}
            print(f"official fp16 {mode}: logits {error:.2e} × std from fp32, loss {loss_change:.1e} relative")
    with open(os.path.join(OUT, "official_fp16.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
