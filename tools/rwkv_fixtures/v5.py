"""RWKV-5.0, 5.1 and 5.2: multi-head matrix-valued state with a per-head GroupNorm (ln_x).

Tensors of block i besides the shared ones (RWKV-LM v5 module registration order):
  5.0: att.time_mix_k/v/r [1, 1, C], att.time_decay [H], att.time_first [H],
       att.receptance/key/value/output.weight [C, C], att.ln_x.weight/bias [C]
  5.1: att.time_mix_k/v/r/g, att.time_decay [H], att.time_first [H],
       att.gate.weight, att.receptance/key/value/output.weight, att.ln_x.*
  5.2: att.time_mix_k/v/r/g, att.time_decay [H, N], att.time_faaaa [H, N],
       att.receptance/key/value/output.weight, att.gate.weight, att.ln_x.*
  ffn: time_mix_k/r, key, receptance, value (as RWKV-4).
The package names the version from the tensors: ln_x -> 5, gate.weight -> 5.1, and a
time_decay whose second dimension is > 1 -> 5.2; it takes the head count from time_decay.

Official math (`att_one_v5`, `att_one_v5_1` for 5.1 and 5.2), per head h with state S [key, value]:
  decay w = exp(-exp(time_decay)), bonus u = exp(time_first) (5.0/5.1, one per head) or
  u = time_faaaa as is (5.2, one per key channel); w likewise per head or per key channel;
  r, k, v = Wr rx, Wk kx, Wv vx (no sigmoid); a = k v^T
  out = r^T (u a + S); S' = a + w S
  out = GroupNorm_H(out, eps 64e-5) * ln_x.weight + ln_x.bias; 5.1+: out *= silu(Wg gx)
  x += Wo out
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from .common import GROUP_NORM_EPS, silu, spread, uniform
from .legacy import (LegacyArch, LegacyShape, check_dims, group_norm, linear_att, ln_x, mixes, mv,
                     shifted_spread, token_shift)

# td range giving per-token decays exp(-exp(td)) from ~0.3 (td = 0.18) to ~0.999 (td = -6.9).
TD_FAST, TD_SLOW = 0.18, -6.9


class V5Arch(LegacyArch):
    """One RWKV-5 variant: '5.0', '5.1' or '5.2' (see the module docstring)."""

    def __init__(self, variant: str) -> None:
        if variant not in ("5.0", "5.1", "5.2"):
            raise ValueError(variant)
        self.version = variant
        self.dirname = "v" + variant
        self.gated = variant != "5.0"
        self.per_channel = variant == "5.2"
        self.first_name = "att.time_faaaa" if self.per_channel else "att.time_first"

    def validate(self, s: LegacyShape) -> None:
        if not s.head_size or s.lora_mix or s.lora_decay:
            raise ValueError("RWKV-5 needs head_size and has no LoRAs")
        check_dims(s, [s.embd, s.ffn, s.vocab, s.head_size])

    def att_order(self) -> List[str]:
        mix = [f"att.time_mix_{m}" for m in ("kvrg" if self.gated else "kvr")]
        linear = [f"att.{n}.weight" for n in ("receptance", "key", "value", "output")]
        if self.version == "5.1":
            linear = ["att.gate.weight"] + linear      # registered right after time_mix_g
        elif self.version == "5.2":
            linear = linear + ["att.gate.weight"]
        return mix + ["att.time_decay", self.first_name] + linear + ["att.ln_x.weight", "att.ln_x.bias"]

    def att_shapes(self, s: LegacyShape) -> Dict[str, Tuple[int, ...]]:
        C, H, N = s.embd, s.heads, s.head_size
        per_head = (H, N) if self.per_channel else (H,)
        shapes = {"att.time_decay": per_head, self.first_name: per_head,
                  "att.ln_x.weight": (C,), "att.ln_x.bias": (C,)}
        shapes.update({f"att.time_mix_{m}": (1, 1, C) for m in "kvrg"})
        shapes.update({f"att.{n}.weight": (C, C) for n in ("receptance", "key", "value", "output", "gate")})
        return {k: v for k, v in shapes.items() if k in self.att_order()}

    def att_tensors(self, rng, s, layer):
        """Decays exp(-exp(td)) from ~0.3 to ~0.999 (per head for 5.0/5.1: spread with jitter;
        per channel for 5.2), bonus exp(time_first) with time_first in [-2, 1] (5.0/5.1) or
        time_faaaa in [-0.3, 1.2] (5.2), mixes in [0, 1]."""
        C, H, N = s.embd, s.heads, s.head_size
        t = mixes(rng, C, [f"att.time_mix_{m}" for m in ("kvrg" if self.gated else "kvr")])
        if self.per_channel:
            t["att.time_decay"] = spread(rng, TD_SLOW, TD_FAST, C).reshape(H, N)
            t["att.time_faaaa"] = uniform(rng, -0.3, 1.2, (H, N))
        else:
            t["att.time_decay"] = shifted_spread(rng, TD_SLOW, TD_FAST, H, jitter=0.4)
            t["att.time_first"] = shifted_spread(rng, -2.0, 1.0, H, jitter=0.4)
        names = ("receptance", "key", "value", "output") + (("gate",) if self.gated else ())
        t.update(linear_att(rng, C, names))
        t.update(ln_x(rng, C))
        return t

    def time_mix(self, P, i, xx, sx, state, s, diag):
        a = f"blocks.{i}.att."
        B, H, N = xx.shape[0], s.heads, s.head_size
        kx, vx, rx = (token_shift(xx, sx, P(a + f"time_mix_{m}"), False) for m in "kvr")
        r = mv(P(a + "receptance.weight"), rx).reshape(B, H, N)
        k = mv(P(a + "key.weight"), kx).reshape(B, H, N)
        v = mv(P(a + "value.weight"), vx).reshape(B, H, N)
        w = np.exp(-np.exp(P(a + "time_decay")))
        first = P(f"blocks.{i}.{self.first_name}")
        u = first if self.per_channel else np.exp(first)
        u = u.reshape(u.shape[0], H, -1, 1)          # [b, H, 1 or N(key), 1]
        w = w.reshape(w.shape[0], H, -1, 1)
        kv = k[:, :, :, None] * v[:, :, None, :]     # [B, H, key, value]
        out = np.einsum("bhk,bhkv->bhv", r, u * kv + state).reshape(B, -1)
        new_state = kv + w * state
        out = group_norm(out, P(a + "ln_x.weight"), P(a + "ln_x.bias"), H, GROUP_NORM_EPS, diag)
        if diag is not None:
            diag.add("decay exp(-exp(td))", w)
            diag.add("bonus u", u)
        if self.gated:
            g = silu(mv(P(a + "gate.weight"), token_shift(xx, sx, P(a + "time_mix_g"), False)))
            out = out * g
            if diag is not None:
                diag.add("gate silu", g)
        return mv(P(a + "output.weight"), out), new_state


ARCHS = {v: V5Arch(v) for v in ("5.0", "5.1", "5.2")}
