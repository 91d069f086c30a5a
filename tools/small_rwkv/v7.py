"""RWKV-7 ("x070") in torch, for training: the official `RWKV_x070_TMix_one` / `CMix_one` math
(specified by tools/rwkv_fixtures/v7.py) over a [B, T] batch with a loop over time for the
state; names, shapes and order from `rwkv_fixtures.v7.expected_shapes`. The same approach as
tools/train_demo.py, with the official decay constant 0.606531.

Block 0's v0/v1/v2 exist in release checkpoints but the official code ignores them (block 0
sets v_first = v); they are kept, untrained, for the names.
"""

from __future__ import annotations

import math
from typing import Dict

import torch
import torch.nn.functional as F

from rwkv_fixtures import v7 as fx_v7

from .common import (EMBD, FFN, GROUP_NORM_EPS, HEAD_SIZE, HEADS, LAYERS, V7_LORA, VOCAB, OfficialModel,
                     orthogonal, ramp, small_normal, vec3)

DECAY_SCALE = 0.606531   # the official constant: w = exp(-0.606531 * sigmoid(.))


def wkv7_scan(r, w, k, v, kk, a):
    """The RWKV-7 recurrence over time from a zero state, all operands [B, T, H, N]; returns the
    readouts [B, T, H, N]. State S [B, H, value, key]: S' = S diag(w) + S (-kk)(kk a)^T + v k^T,
    out = S' r."""
    B, T, H, N = r.shape
    S = r.new_zeros(B, H, N, N)
    outs = []
    # Per-step operands prepared outside the loop: unbind's backward is one stack, where
    # indexing [:, t] would add a full-size gradient per step (quadratic in T).
    steps = zip((-kk).unsqueeze(-1).unbind(1), (kk * a).unsqueeze(-2).unbind(1), w.unsqueeze(-2).unbind(1),
                v.unsqueeze(-1).unbind(1), k.unsqueeze(-2).unbind(1), r.unsqueeze(-1).unbind(1))
    for neg_kk, kk_a, w_t, v_t, k_t, r_t in steps:
        S = S * w_t + (S @ neg_kk) * kk_a + v_t * k_t
        outs.append((S @ r_t).squeeze(-1))
    return torch.stack(outs, dim=1)


class V7Model(OfficialModel):
    version = "v7"
    detected = "x070"
    family = "v7"

    def __init__(self, seed: int):
        self.shape = fx_v7.ModelShape(layers=LAYERS, embd=EMBD, head_size=HEAD_SIZE, vocab=VOCAB, ffn=FFN,
                                      lora_w=V7_LORA["w"], lora_a=V7_LORA["a"], lora_v=V7_LORA["v"],
                                      lora_g=V7_LORA["g"])
        self.shape.validate()
        super().__init__(fx_v7.expected_shapes(self.shape), self.initial_tensors(seed))
        self.heads = HEADS

    def block_init(self, i: int, gen: torch.Generator) -> Dict[str, torch.Tensor]:
        C, H, N = EMBD, HEADS, HEAD_SIZE
        depth = i / max(LAYERS - 1, 1)
        r = ramp(C)
        t: Dict[str, torch.Tensor] = {}
        for name, power in (("x_r", 0.2), ("x_w", 0.9), ("x_k", 0.7), ("x_v", 0.7), ("x_a", 0.9), ("x_g", 0.2)):
            t["att." + name] = vec3(1.0 - r ** (power * (1.0 - 0.9 * depth)))
        # decay exp(-0.606531 sigmoid(w0)): from ~0.9985 (w0 = -5.5) to ~0.6 (w0 = 0.5 + 5) over channels
        t["att.w0"] = vec3(-6.0 + 5.0 * r ** (0.85 + depth) + 0.5)
        for lora, rank in (("w", V7_LORA["w"]), ("a", V7_LORA["a"]), ("v", V7_LORA["v"]), ("g", V7_LORA["g"])):
            t[f"att.{lora}1"] = torch.zeros(C, rank)
            t[f"att.{lora}2"] = small_normal((rank, C), 0.1 / math.sqrt(rank), gen)
        t["att.a0"] = vec3(torch.zeros(C))
        t["att.v0"] = vec3(torch.ones(C))
        t["att.k_k"] = vec3(torch.full((C,), 0.85))
        t["att.k_a"] = vec3(torch.ones(C))
        t["att.r_k"] = torch.zeros(H, N)
        t["att.receptance.weight"] = orthogonal(C, C, 1.0, gen)
        t["att.key.weight"] = orthogonal(C, C, 0.2, gen)
        t["att.value.weight"] = orthogonal(C, C, 1.0, gen)
        t["att.output.weight"] = torch.zeros(C, C)
        t["att.ln_x.weight"] = torch.ones(C)
        t["att.ln_x.bias"] = torch.zeros(C)
        t["ffn.x_k"] = vec3(1.0 - r ** ((1.0 - 0.9 * depth) ** 4))
        t["ffn.key.weight"] = orthogonal(FFN, C, 1.0, gen)
        t["ffn.value.weight"] = torch.zeros(C, FFN)
        return t

    def channel_mix(self, i, xx, sx):
        f = f"blocks.{i}.ffn."
        k = torch.relu(self.linear(xx + (sx - xx) * self.p(f + "x_k"), f + "key.weight")) ** 2
        return self.linear(k, f + "value.weight")

    def time_mix(self, i, xx, sx, ctx):
        a = f"blocks.{i}.att."
        P = lambda n: self.p(a + n)  # noqa: E731
        B, T, C = xx.shape
        H, N = HEADS, HEAD_SIZE
        d = sx - xx
        xr, xw, xk, xv, xa, xg = (xx + d * P(m) for m in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"))
        r = self.linear(xr, a + "receptance.weight")
        k = self.linear(xk, a + "key.weight")
        v = self.linear(xv, a + "value.weight")
        w = torch.exp(-DECAY_SCALE * torch.sigmoid(P("w0") + torch.tanh(xw @ P("w1")) @ P("w2")))
        aa = torch.sigmoid(P("a0") + (xa @ P("a1")) @ P("a2"))
        g = torch.sigmoid(xg @ P("g1")) @ P("g2")
        kk = F.normalize((k * P("k_k")).view(B, T, H, N), dim=-1, eps=1e-12)
        k = k * (1.0 + (aa - 1.0) * P("k_a"))
        if i == 0:
            ctx["v_first"] = v
        else:
            v = v + (ctx["v_first"] - v) * torch.sigmoid(P("v0") + (xv @ P("v1")) @ P("v2"))
        r, k, v, aa, w = (z.view(B, T, H, N) for z in (r, k, v, aa, w))
        o = wkv7_scan(r, w, k, v, kk, aa).reshape(B * T, C)
        o = F.group_norm(o, H, P("ln_x.weight"), P("ln_x.bias"), GROUP_NORM_EPS).view(B, T, C)
        o = o + ((r * k * P("r_k")).sum(-1, keepdim=True) * v).view(B, T, C)
        return self.linear(o * g, a + "output.weight")

    def meta_shape(self) -> dict:
        return {"layers": LAYERS, "embd": EMBD, "heads": HEADS, "head_size": HEAD_SIZE, "ffn": FFN,
                "vocab": VOCAB, "lora": dict(V7_LORA)}
