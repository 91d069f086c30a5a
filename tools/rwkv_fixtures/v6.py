"""RWKV-6.0 ("Finch"): data-dependent token shift (ddlerp) and data-dependent per-channel decay.

Tensors of block i besides the shared ones (RWKV-LM `RWKV_Tmix_x060` registration order):
  att.time_maa_x/w/k/v/r/g [1, 1, C], att.time_maa_w1 [C, 5*Dm], att.time_maa_w2 [5, Dm, C],
  att.time_decay [1, 1, C], att.time_decay_w1 [C, Dd], att.time_decay_w2 [Dd, C],
  att.time_faaaa [H, N], att.receptance/key/value/output/gate.weight [C, C], att.ln_x.weight/bias [C];
  ffn.time_maa_k/r [1, 1, C], ffn.key.weight [F, C], ffn.receptance.weight [C, C], ffn.value.weight [C, F].
The package detects 6.0 from `time_maa` and takes the head count from time_faaaa.

Official math (`att_one_v6_0`, `ffn_one_v6`), with dx = x_prev - xx:
  m = tanh((xx + dx*maa_x) @ maa_w1) viewed [5, Dm]; (mw, mk, mv, mr, mg) = m[j] @ maa_w2[j]
  wx = xx + dx*(maa_w + mw), and likewise k, v, r, g
  w = exp(-exp(time_decay + tanh(wx @ decay_w1) @ decay_w2)) per channel (= per key channel)
  u = time_faaaa as is; then as RWKV-5.2: out = r^T (u k v^T + S); S' = k v^T + w S;
  GroupNorm_H (eps 64e-5), times silu(Wg gx), Wo.
  Channel mix: kx = xx + dx*maa_k, rx = xx + dx*maa_r; sigmoid(Wr rx) * (Wv relu(Wk kx)^2).
"""

from __future__ import annotations

import math
from typing import Dict, List, Tuple

import numpy as np

from .common import GROUP_NORM_EPS, normal, silu, spread, uniform, vec3
from .legacy import (LegacyArch, LegacyShape, check_dims, group_norm, linear_att, ln_x, mixes, mv,
                     vm)

MAA = ("w", "k", "v", "r", "g")   # order of the five ddlerp LoRA outputs


class V6Arch(LegacyArch):
    """RWKV-6.0 (see the module docstring)."""

    version = "6.0"
    dirname = "v6"
    v6_style = True
    ffn_mix_names = ("ffn.time_maa_k", "ffn.time_maa_r")
    lora_zero = (("mix-LoRA", "att.time_maa_w1"), ("decay-LoRA", "att.time_decay_w1"))

    def validate(self, s: LegacyShape) -> None:
        if not (s.head_size and s.lora_mix and s.lora_decay):
            raise ValueError("RWKV-6 needs head_size, lora_mix and lora_decay")
        check_dims(s, [s.embd, s.ffn, s.vocab, s.head_size, s.lora_mix, s.lora_decay])

    def att_order(self) -> List[str]:
        return ([f"att.time_maa_{m}" for m in ("x",) + MAA]
                + ["att.time_maa_w1", "att.time_maa_w2", "att.time_decay", "att.time_decay_w1",
                   "att.time_decay_w2", "att.time_faaaa"]
                + [f"att.{n}.weight" for n in ("receptance", "key", "value", "output", "gate")]
                + ["att.ln_x.weight", "att.ln_x.bias"])

    def att_shapes(self, s: LegacyShape) -> Dict[str, Tuple[int, ...]]:
        C, H, N, Dm, Dd = s.embd, s.heads, s.head_size, s.lora_mix, s.lora_decay
        shapes = {f"att.time_maa_{m}": (1, 1, C) for m in ("x",) + MAA}
        shapes.update({"att.time_maa_w1": (C, 5 * Dm), "att.time_maa_w2": (5, Dm, C),
                       "att.time_decay": (1, 1, C), "att.time_decay_w1": (C, Dd), "att.time_decay_w2": (Dd, C),
                       "att.time_faaaa": (H, N), "att.ln_x.weight": (C,), "att.ln_x.bias": (C,)})
        shapes.update({f"att.{n}.weight": (C, C) for n in ("receptance", "key", "value", "output", "gate")})
        return shapes

    def att_tensors(self, rng, s, layer):
        """Mixes in [0, 1] with ddlerp offsets of a few tenths; static decay exp(-exp(td)) with
        td spread over [-6.9, -1.1] plus a data-dependent part of a few tenths (decays from
        ~0.3 to ~0.999); bonus time_faaaa in [-0.3, 1.2]."""
        C, H, N, Dm, Dd = s.embd, s.heads, s.head_size, s.lora_mix, s.lora_decay
        t = mixes(rng, C, [f"att.time_maa_{m}" for m in ("x",) + MAA])
        t["att.time_maa_w1"] = normal(rng, 1.5 / math.sqrt(C), (C, 5 * Dm))
        t["att.time_maa_w2"] = normal(rng, 0.3 / math.sqrt(Dm), (5, Dm, C))
        t["att.time_decay"] = vec3(spread(rng, -6.9, -1.1, C))
        t["att.time_decay_w1"] = normal(rng, 1.5 / math.sqrt(C), (C, Dd))
        t["att.time_decay_w2"] = normal(rng, 0.7 / math.sqrt(Dd), (Dd, C))
        t["att.time_faaaa"] = uniform(rng, -0.3, 1.2, (H, N))
        t.update(linear_att(rng, C, ("receptance", "key", "value", "output", "gate")))
        t.update(ln_x(rng, C))
        return t

    def time_mix(self, P, i, xx, sx, state, s, diag):
        a = f"blocks.{i}.att."
        B, H, N, Dm = xx.shape[0], s.heads, s.head_size, s.lora_mix
        dx = sx - xx
        m = np.tanh(vm(xx + dx * P(a + "time_maa_x"), P(a + "time_maa_w1"))).reshape(B, 5, 1, Dm)
        offsets = np.matmul(m, P(a + "time_maa_w2"))[:, :, 0, :]          # [B, 5, C]
        wx, kx, vx, rx, gx = (xx + dx * (P(a + f"time_maa_{n}") + offsets[:, j]) for j, n in enumerate(MAA))
        r = mv(P(a + "receptance.weight"), rx).reshape(B, H, N)
        k = mv(P(a + "key.weight"), kx).reshape(B, H, N)
        v = mv(P(a + "value.weight"), vx).reshape(B, H, N)
        g = silu(mv(P(a + "gate.weight"), gx))
        td = P(a + "time_decay") + vm(np.tanh(vm(wx, P(a + "time_decay_w1"))), P(a + "time_decay_w2"))
        w = np.exp(-np.exp(td)).reshape(B, H, N, 1)
        u = P(a + "time_faaaa").reshape(-1, H, N, 1)
        kv = k[:, :, :, None] * v[:, :, None, :]                           # [B, H, key, value]
        out = np.einsum("bhk,bhkv->bhv", r, u * kv + state).reshape(B, -1)
        new_state = kv + w * state
        out = group_norm(out, P(a + "ln_x.weight"), P(a + "ln_x.bias"), H, GROUP_NORM_EPS, diag) * g
        if diag is not None:
            diag.add("decay exp(-exp(td+lora))", w)
            diag.add("static decay exp(-exp(td))", np.exp(-np.exp(P(a + "time_decay"))))
            diag.add("bonus u", u)
            diag.add("ddlerp offsets", offsets)
            diag.add("gate silu", g)
        return mv(P(a + "output.weight"), out), new_state


ARCH = V6Arch()
