#!/usr/bin/env python3
"""Golden outputs of the official package for the trained demo model (assets/demo/).

Writes tests/fixtures/demo/:
  tokens.npy, logits.npy   the first TOKENS bytes of assets/demo/heldout.txt and the official
                           logits after each (rwkv 0.8.32, RWKV_V7_ON=1, `cpu fp32`, one token at a time)
  greedy.json              a prompt and its greedy continuation: found with the float64 reference
                           (tools/rwkv_fixtures/v7.py), then checked token by token against the
                           official logits, with every step's top-1/top-2 margin recorded so a test can
                           show that f32 rounding cannot flip a choice
  heldout_loss.json        the official cross-entropy (nats/byte) over the whole held-out text and
                           over the first TOKENS bytes

Run from the repository root after tools/train_demo.py:  python3 tools/make_demo_fixtures.py
"""

import json
import os
import sys
import tempfile

import numpy as np
import torch
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rwkv_fixtures.common import write_npy  # noqa: E402
from rwkv_fixtures.official import run_official  # noqa: E402
from rwkv_fixtures.v7 import ModelShape, reference_forward  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "assets/demo")
OUT = os.path.join(ROOT, "tests/fixtures/demo")
TOKENS = 512
PROMPT = "KING HENRY. Now, my good lord,"
GREEDY = 128


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def shape_of(weights: dict) -> ModelShape:
    layers = 1 + max(int(k.split(".")[1]) for k in weights if k.startswith("blocks."))
    heads, head_size = weights["blocks.0.att.r_k"].shape
    return ModelShape(layers=layers, embd=heads * head_size, head_size=head_size,
                      vocab=weights["emb.weight"].shape[0], ffn=weights["blocks.0.ffn.key.weight"].shape[0],
                      lora_w=weights["blocks.0.att.w1"].shape[1], lora_a=weights["blocks.0.att.a1"].shape[1],
                      lora_v=weights["blocks.0.att.v1"].shape[1], lora_g=weights["blocks.0.att.g1"].shape[1])


def main() -> None:
    weights = {k: v.astype(np.float32) for k, v in load_file(os.path.join(DEMO, "model.safetensors")).items()}
    shape = shape_of(weights)
    heldout = open(os.path.join(DEMO, "heldout.txt"), "rb").read()
    tokens = np.frombuffer(heldout[:TOKENS], dtype=np.uint8).astype(np.int32)

    # Greedy continuation by the float64 reference.
    prompt = list(PROMPT.encode())
    sequence = list(prompt)
    for _ in range(GREEDY):
        run, _ = reference_forward(weights, shape, sequence)
        sequence.append(int(np.argmax(run.logits[-1])))

    with tempfile.TemporaryDirectory() as tmp:
        pth = os.path.join(tmp, "demo.pth")
        torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, pth)
        official = run_official("v7", pth, tokens.tolist()).result.logits
        greedy_run = run_official("v7", pth, sequence[:-1]).result.logits
        whole = np.frombuffer(heldout, dtype=np.uint8).astype(np.int32)
        whole_logits = run_official("v7", pth, whole.tolist()).result.logits

    margins = []
    for i in range(len(prompt) - 1, len(sequence) - 1):
        row = np.sort(greedy_run[i].astype(np.float64))
        margins.append(row[-1] - row[-2])
        assert int(np.argmax(greedy_run[i])) == sequence[i + 1], f"official greedy differs at {i}"
    def loss_of(logits: np.ndarray, ids: np.ndarray) -> float:
        return -float(np.mean(log_softmax(logits[:-1])[np.arange(len(ids) - 1), ids[1:]]))
    loss = loss_of(official, tokens)
    whole_loss = loss_of(whole_logits, whole)

    os.makedirs(OUT, exist_ok=True)
    write_npy(os.path.join(OUT, "tokens.npy"), tokens)
    write_npy(os.path.join(OUT, "logits.npy"), official.astype(np.float32))
    continuation = bytes(sequence[len(prompt):]).decode("utf-8", errors="replace")
    with open(os.path.join(OUT, "greedy.json"), "w") as f:
        json.dump({"prompt": PROMPT, "prompt_tokens": prompt, "continuation_tokens": sequence[len(prompt):],
                   "continuation": continuation, "min_margin": round(float(min(margins)), 5),
                   "margins": [round(float(m), 5) for m in margins]}, f, indent=1)
    with open(os.path.join(OUT, "heldout_loss.json"), "w") as f:
        json.dump({"whole": {"positions": len(whole) - 1, "official_nats_per_byte": round(whole_loss, 6)},
                   "prefix": {"positions": len(tokens) - 1, "official_nats_per_byte": round(loss, 6)}},
                  f, indent=1)
    print(f"wrote {OUT}: {len(tokens)} tokens, official loss {whole_loss:.4f} nats/byte, "
          f"greedy {continuation!r} (min margin {min(margins):.3f})")


if __name__ == "__main__":
    main()
