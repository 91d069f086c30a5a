"""RWKV-7 ("x070"): weights with the names/shapes of the rwkv7-g1 release checkpoints and an
independent float64 numpy implementation of the official `RWKV_x070.forward_one`.

The official run happens with `RWKV_V7_ON=1` (family 'v7'); its loader converts every tensor to
fp32 before the ln0 LayerNorm, so the bf16 .pth and an f32 .pth give bit-identical outputs
(asserted by the pipeline) and the golden outputs come from the committed bf16 .pth.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from .common import (GROUP_NORM_EPS, Arch, RunResult, Range, Weights, assemble_weights,
                     layer_norm, noise_perturbations, normal, official_shapes, sigmoid, spread,
                     uniform, vec3, zero_perturbation)

# Decay constant used verbatim by the official code: w = exp(-0.606531 * sigmoid(.)).
DECAY_SCALE = 0.606531


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """Hyper-parameters of an RWKV-7 model (C = heads * head_size)."""

    layers: int
    embd: int
    head_size: int
    vocab: int
    ffn: int
    lora_w: int
    lora_a: int
    lora_v: int
    lora_g: int

    @property
    def heads(self) -> int:
        return self.embd // self.head_size

    def validate(self) -> None:
        """Reject shapes the official loader cannot handle."""
        if self.embd % self.head_size != 0:
            raise ValueError(f"embd {self.embd} is not a multiple of head_size {self.head_size}")
        # The official loader squeezes every tensor, so no dimension may be 1; the head count
        # may, as the loader reads it from r_k's shape before squeezing.
        dims = [self.embd, self.head_size, self.vocab, self.ffn,
                self.lora_w, self.lora_a, self.lora_v, self.lora_g]
        if min(dims) < 2:
            raise ValueError(f"all dimensions must be >= 2 (the official loader squeezes): {self}")


def layer_tensors(rng: np.random.Generator, s: ModelShape) -> Dict[str, np.ndarray]:
    """Random att./ffn. tensors of one block (after its LayerNorms), keyed below `blocks.{i}.`.

    Scales are chosen so that every path visibly moves the logits (see the
    sensitivity check): decays exp(-0.606531*sigmoid(w0 + lora)) from ~0.55 to
    ~0.999, in-context rates a and value-residual mixes spread over (0, 1),
    gates of order 1 with a token-dependent part, token-shift mixes in [0, 1].
    """
    C, H, N, F = s.embd, s.heads, s.head_size, s.ffn
    Dw, Da, Dv, Dg = s.lora_w, s.lora_a, s.lora_v, s.lora_g
    inv_c = 1.0 / math.sqrt(C)
    t: Dict[str, np.ndarray] = {}
    for mix in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
        t["att." + mix] = vec3(uniform(rng, 0.0, 1.0, C))
    t["att.w0"] = vec3(spread(rng, -7.0, 3.0, C))
    t["att.w1"] = normal(rng, inv_c, (C, Dw))
    t["att.w2"] = normal(rng, 3.0 / math.sqrt(Dw), (Dw, C))
    t["att.a0"] = vec3(spread(rng, -2.5, 2.5, C))
    t["att.a1"] = normal(rng, inv_c, (C, Da))
    t["att.a2"] = normal(rng, 1.5 / math.sqrt(Da), (Da, C))
    t["att.v0"] = vec3(spread(rng, -2.0, 2.0, C))
    t["att.v1"] = normal(rng, inv_c, (C, Dv))
    t["att.v2"] = normal(rng, 1.5 / math.sqrt(Dv), (Dv, C))
    t["att.g1"] = normal(rng, 1.5 * inv_c, (C, Dg))
    t["att.g2"] = normal(rng, 1.5 / math.sqrt(Dg), (Dg, C))
    t["att.k_k"] = vec3(uniform(rng, 0.3, 1.5, C))
    t["att.k_a"] = vec3(uniform(rng, 0.2, 1.2, C))
    t["att.r_k"] = normal(rng, 0.5 / math.sqrt(N), (H, N))
    t["att.receptance.weight"] = normal(rng, inv_c, (C, C))
    t["att.key.weight"] = normal(rng, inv_c, (C, C))
    t["att.value.weight"] = normal(rng, inv_c, (C, C))
    t["att.output.weight"] = normal(rng, inv_c, (C, C))
    t["att.ln_x.weight"] = uniform(rng, 0.5, 1.5, C)
    t["att.ln_x.bias"] = uniform(rng, -0.5, 0.5, C)
    t["ffn.x_k"] = vec3(uniform(rng, 0.0, 1.0, C))
    t["ffn.key.weight"] = normal(rng, 1.2 * inv_c, (F, C))
    t["ffn.value.weight"] = normal(rng, 0.8 / math.sqrt(F), (C, F))
    return t


# Official key order inside a block (as in the rwkv7-g1 state dicts).
BLOCK_KEY_ORDER = [
    "ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "ln0.weight", "ln0.bias",
    "att.x_r", "att.x_w", "att.x_k", "att.x_v", "att.x_a", "att.x_g",
    "att.w0", "att.w1", "att.w2", "att.a0", "att.a1", "att.a2", "att.v0", "att.v1", "att.v2",
    "att.g1", "att.g2", "att.k_k", "att.k_a", "att.r_k",
    "att.receptance.weight", "att.key.weight", "att.value.weight", "att.output.weight",
    "att.ln_x.weight", "att.ln_x.bias",
    "ffn.x_k", "ffn.key.weight", "ffn.value.weight",
]


def expected_shapes(s: ModelShape) -> Dict[str, Tuple[int, ...]]:
    """Official name -> shape of every tensor of an RWKV-7 checkpoint."""
    C, H, N, F = s.embd, s.heads, s.head_size, s.ffn
    per_block = {
        "att.w0": (1, 1, C), "att.w1": (C, s.lora_w), "att.w2": (s.lora_w, C),
        "att.a0": (1, 1, C), "att.a1": (C, s.lora_a), "att.a2": (s.lora_a, C),
        "att.v0": (1, 1, C), "att.v1": (C, s.lora_v), "att.v2": (s.lora_v, C),
        "att.g1": (C, s.lora_g), "att.g2": (s.lora_g, C),
        "att.k_k": (1, 1, C), "att.k_a": (1, 1, C), "att.r_k": (H, N),
        "att.receptance.weight": (C, C), "att.key.weight": (C, C),
        "att.value.weight": (C, C), "att.output.weight": (C, C),
        "att.ln_x.weight": (C,), "att.ln_x.bias": (C,),
        "ffn.x_k": (1, 1, C), "ffn.key.weight": (F, C), "ffn.value.weight": (C, F),
    }
    for mix in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
        per_block["att." + mix] = (1, 1, C)
    return official_shapes(C, s.vocab, s.layers, BLOCK_KEY_ORDER, per_block)


def build_weights(s: ModelShape, seed: int) -> Weights:
    """Seeded random RWKV-7 weights: official names/shapes/order, float32, lossless in f16/bf16."""
    s.validate()
    return assemble_weights(np.random.default_rng(seed), s.embd, s.vocab, s.layers,
                            lambda rng, _i: layer_tensors(rng, s), expected_shapes(s))


def reference_forward(weights: Weights, s: ModelShape,
                      tokens: Sequence[int]) -> Tuple[RunResult, Dict[str, List[float]]]:
    """Independent float64 numpy implementation of the official x070 `forward_one`,
    applied token by token from the zero state. Written from the math, not by
    calling the official code: x = ln0(emb[tok]); per layer time mix (token shift,
    LoRAs, in-context-learning-rate state update S = S*diag(w) + S@(-kk)(kk*a)^T + v k^T,
    per-head group norm, bonus, gate) and channel mix (relu^2); logits = head(ln_out(x)).
    Returns float64 results plus internal ranges."""
    L, C, H, N = s.layers, s.embd, s.heads, s.head_size
    W = {k: v.astype(np.float64).reshape(v.shape[-1]) if v.ndim == 3 else v.astype(np.float64)
         for k, v in weights.items()}
    emb = layer_norm(W["emb.weight"], W["blocks.0.ln0.weight"], W["blocks.0.ln0.bias"])
    att_x = np.zeros((L, C))
    ffn_x = np.zeros((L, C))
    wkv = np.zeros((L, H, N, N))
    rng_w, rng_a, rng_v, rng_g, rng_w0 = Range(), Range(), Range(), Range(), Range()
    logits = []
    for tok in tokens:
        x = emb[int(tok)]
        v_first = None
        for i in range(L):
            p = f"blocks.{i}."
            g = lambda k: W[p + k]  # noqa: E731
            # ---- time mix
            xx = layer_norm(x, g("ln1.weight"), g("ln1.bias"))
            d = att_x[i] - xx
            att_x[i] = xx
            xr, xw, xk, xv, xa, xg = (xx + d * g("att." + m) for m in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"))
            r = g("att.receptance.weight") @ xr
            k = g("att.key.weight") @ xk
            v = g("att.value.weight") @ xv
            w_lora = np.tanh(xw @ g("att.w1")) @ g("att.w2")
            a = sigmoid(g("att.a0") + (xa @ g("att.a1")) @ g("att.a2"))
            gate = sigmoid(xg @ g("att.g1")) @ g("att.g2")
            kk = (k * g("att.k_k")).reshape(H, N)
            kk = kk / np.maximum(np.linalg.norm(kk, axis=-1, keepdims=True), 1e-12)
            k = k * (1.0 + (a - 1.0) * g("att.k_a"))
            if i == 0:  # layer 0 defines v_first; its v0/v1/v2 are ignored, as officially
                v_first = v
            else:
                mix = sigmoid(g("att.v0") + (xv @ g("att.v1")) @ g("att.v2"))
                v = v + (v_first - v) * mix
                rng_v.add(mix)
            w = np.exp(-DECAY_SCALE * sigmoid(g("att.w0") + w_lora))
            rng_w.add(w), rng_a.add(a), rng_g.add(gate)
            rng_w0.add(np.exp(-DECAY_SCALE * sigmoid(g("att.w0"))))
            rh, kh, vh, ah, wh = (z.reshape(H, N) for z in (r, k, v, a, w))
            S = wkv[i]
            sa = S @ (-kk)[:, :, None]                        # [H, N(value), 1]
            S = S * wh[:, None, :] + sa * (kk * ah)[:, None, :] + vh[:, :, None] * kh[:, None, :]
            wkv[i] = S
            o = (S @ rh[:, :, None])[:, :, 0]                 # [H, N]
            mu = o.mean(axis=-1, keepdims=True)
            var = ((o - mu) ** 2).mean(axis=-1, keepdims=True)
            o = ((o - mu) / np.sqrt(var + GROUP_NORM_EPS)).reshape(C) * g("att.ln_x.weight") + g("att.ln_x.bias")
            o = o + ((rh * kh * g("att.r_k")).sum(axis=-1, keepdims=True) * vh).reshape(C)
            x = x + g("att.output.weight") @ (o * gate)
            # ---- channel mix
            xx = layer_norm(x, g("ln2.weight"), g("ln2.bias"))
            d = ffn_x[i] - xx
            ffn_x[i] = xx
            kf = np.maximum(g("ffn.key.weight") @ (xx + d * g("ffn.x_k")), 0.0) ** 2
            x = x + g("ffn.value.weight") @ kf
        x = layer_norm(x, W["ln_out.weight"], W["ln_out.bias"])
        logits.append(W["head.weight"] @ x)
    result = RunResult(logits=np.stack(logits), att_x=att_x, wkv=wkv, ffn_x=ffn_x)
    diag = {"decay": rng_w.get(), "in_context_rate": rng_a.get(), "value_mix": rng_v.get(),
            "gate": rng_g.get(), "static_decay": rng_w0.get()}
    return result, diag


LORA_PAIRS = {"w": ("att.w1", "att.w2"), "a": ("att.a1", "att.a2"),
              "v": ("att.v1", "att.v2"), "g": ("att.g1", "att.g2")}
IGNORED = ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2")  # layer 0 has no value residual


class V7Arch(Arch):
    """RWKV-7 as run by `RWKV_x070` (see the module docstring)."""

    version = "x070"
    dirname = "v7"
    family = "v7"
    shape_type = ModelShape

    def build_weights(self, shape: ModelShape, seed: int, growth: float = 0.0) -> Weights:
        if growth:
            raise ValueError("RWKV-7 cases have no residual growth option")
        return build_weights(shape, seed)

    def reference(self, weights, shape, tokens):
        return reference_forward(weights, shape, tokens)

    def perturbations(self, weights, shape, seed):
        """1% noise on every tensor, and each LoRA zeroed per layer (the layer-0 value
        residual is ignored by the official code, and flagged as such)."""
        yield from noise_perturbations(weights, seed, ignored=lambda name: name in IGNORED)
        for i in range(shape.layers):
            for lora, (first, _second) in LORA_PAIRS.items():
                yield zero_perturbation(weights, f"blocks.{i} zero {lora}-LoRA", f"blocks.{i}.{first}",
                                        ignored=(i == 0 and lora == "v"))

    def meta_shape(self, s: ModelShape) -> dict:
        return {"layers": s.layers, "embd": s.embd, "heads": s.heads, "head_size": s.head_size,
                "ffn": s.ffn, "vocab": s.vocab,
                "lora": {"w": s.lora_w, "a": s.lora_a, "v": s.lora_v, "g": s.lora_g}}


ARCH = V7Arch()
