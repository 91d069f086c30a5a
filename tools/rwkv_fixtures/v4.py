"""RWKV-4: per-channel WKV with the official (aa, bb, pp) running-max bookkeeping.

Tensors of block i (RWKV-LM v4 `RWKV_TimeMix` / `RWKV_ChannelMix` order):
  att.time_decay [C], att.time_first [C], att.time_mix_k/v/r [1, 1, C],
  att.key/value/receptance/output.weight [C, C],
  ffn.time_mix_k/r [1, 1, C], ffn.key.weight [F, C], ffn.receptance.weight [C, C], ffn.value.weight [C, F].

Official math (`att_one`): the loader turns time_decay into w = -exp(time_decay) and uses
time_first (u) as is; the state starts at aa = bb = 0, pp = -1e30:
  r = sigmoid(Wr rx), k = Wk kx, v = Wv vx
  p = max(pp, u + k); e1 = exp(pp - p); e2 = exp(u + k - p); wkv = (e1 aa + e2 v) / (e1 bb + e2)
  p' = max(pp + w, k); e1 = exp(pp + w - p'); e2 = exp(k - p'); aa' = e1 aa + e2 v; bb' = e1 bb + e2; pp' = p'
  out = Wo (r * wkv)
The per-token decay factor is exp(w) = exp(-exp(time_decay)).
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from .common import sigmoid, spread
from .legacy import LegacyArch, LegacyShape, check_dims, linear_att, mixes, mv, token_shift

PP_INIT = -1e30   # the official initial pp


class V4Arch(LegacyArch):
    """RWKV-4 (see the module docstring)."""

    version = "4"
    dirname = "v4"

    def validate(self, s: LegacyShape) -> None:
        if s.head_size or s.lora_mix or s.lora_decay:
            raise ValueError("RWKV-4 has no heads and no LoRAs")
        check_dims(s, [s.embd, s.ffn, s.vocab])

    def att_order(self) -> List[str]:
        return ["att.time_decay", "att.time_first", "att.time_mix_k", "att.time_mix_v", "att.time_mix_r",
                "att.key.weight", "att.value.weight", "att.receptance.weight", "att.output.weight"]

    def att_shapes(self, s: LegacyShape) -> Dict[str, Tuple[int, ...]]:
        C = s.embd
        shapes = {"att.time_decay": (C,), "att.time_first": (C,)}
        shapes.update({f"att.time_mix_{m}": (1, 1, C) for m in "kvr"})
        shapes.update({f"att.{n}.weight": (C, C) for n in ("key", "value", "receptance", "output")})
        return shapes

    def att_tensors(self, rng, s, layer):
        """time_decay spread over [-6, 1] (per-token decay exp(-exp(td)) from 0.9975 to 0.066),
        time_first over [-1.5, 1.5], mixes in [0, 1]."""
        C = s.embd
        t = {"att.time_decay": spread(rng, -6.0, 1.0, C), "att.time_first": spread(rng, -1.5, 1.5, C)}
        t.update(mixes(rng, C, [f"att.time_mix_{m}" for m in "kvr"]))
        t.update(linear_att(rng, C, ("key", "value", "receptance", "output")))
        return t

    def wkv_shape(self, s):
        return (s.layers, 3, s.embd)

    def zero_wkv(self, B, s):
        state = np.zeros((B,) + self.wkv_shape(s))
        state[:, :, 2] = PP_INIT
        return state

    def time_mix(self, P, i, xx, sx, state, s, diag):
        a = f"blocks.{i}.att."
        kx, vx, rx = (token_shift(xx, sx, P(a + f"time_mix_{m}"), False) for m in "kvr")
        r = sigmoid(mv(P(a + "receptance.weight"), rx))
        k = mv(P(a + "key.weight"), kx)
        v = mv(P(a + "value.weight"), vx)
        u = P(a + "time_first")
        w = -np.exp(P(a + "time_decay"))
        aa, bb, pp = state[:, 0], state[:, 1], state[:, 2]
        ww = u + k
        p = np.maximum(pp, ww)
        e1, e2 = np.exp(pp - p), np.exp(ww - p)
        wkv = (e1 * aa + e2 * v) / (e1 * bb + e2)
        ww = w + pp
        p = np.maximum(ww, k)
        e1, e2 = np.exp(ww - p), np.exp(k - p)
        new_state = np.stack([e1 * aa + e2 * v, e1 * bb + e2, p], axis=1)
        if diag is not None:
            diag.add("decay exp(-exp(td))", np.exp(w))
            diag.add("time_first", u)
            diag.add("k", k)
        return mv(P(a + "output.weight"), r * wkv), new_state


ARCH = V4Arch()
