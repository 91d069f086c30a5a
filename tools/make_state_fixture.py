"""Golden outputs for a state-tuned model: RWKV-6 fixture v6/A plus a `time_state` per layer.

State-tuning tools publish `blocks.N.att.time_state` tensors [H, N, N]; the official package
(rwkv 0.8.32, `cpu fp32`) starts every sequence from them when they are in the checkpoint. This
script adds random (f16/bf16-exact) time_state tensors to v6/A's weights, runs the official
package one token at a time, and writes, under tests/fixtures/state/v6-time-state/:

  time_state.safetensors   the time_state tensors only (f32), as a user would load them
  tokens.npy, logits.npy   the tokens and the official logits after each

Run from the repository root:  python3 tools/make_state_fixture.py
"""

import json
import os
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rwkv_fixtures.common import round_lossless, write_npy  # noqa: E402
from rwkv_fixtures.official import run_official  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "tests/fixtures/v6/A/model.pth")
OUT = os.path.join(ROOT, "tests/fixtures/state/v6-time-state")
SEED = 20261126
TOKENS = 24


def main() -> None:
    weights = {k: v.float() for k, v in torch.load(MODEL, map_location="cpu").items()}
    meta = json.load(open(os.path.join(os.path.dirname(MODEL), "meta.json")))
    layers, heads, n, vocab = meta["layers"], meta["heads"], meta["head_size"], meta["vocab"]
    rng = np.random.default_rng(SEED)
    states = {
        f"blocks.{i}.att.time_state": torch.from_numpy(round_lossless(rng.uniform(-1.0, 1.0, (heads, n, n))))
        for i in range(layers)
    }
    tokens = rng.integers(0, vocab, TOKENS).astype(np.int32)
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tuned = os.path.join(tmp, "tuned.pth")
        torch.save({**weights, **states}, tuned)
        plain = os.path.join(tmp, "plain.pth")
        torch.save(weights, plain)
        run = run_official("legacy", tuned, tokens.tolist())
        untuned = run_official("legacy", plain, tokens.tolist())
    shift = np.abs(run.result.logits - untuned.result.logits).max() / run.result.logits.std()
    assert shift > 1e-2, f"the time_state barely moves the logits ({shift:.1e} × std)"
    save_file({k: v.contiguous() for k, v in states.items()}, os.path.join(OUT, "time_state.safetensors"))
    write_npy(os.path.join(OUT, "tokens.npy"), tokens)
    write_npy(os.path.join(OUT, "logits.npy"), run.result.logits.astype(np.float32))
    print(f"wrote {OUT}: {layers} layers of [{heads}, {n}, {n}]; time_state moves the logits by {shift:.2f} × std")


if __name__ == "__main__":
    main()
