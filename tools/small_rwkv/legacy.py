"""RWKV-4, 5.0, 5.1, 5.2 and 6.0 in torch, for training: the official single-token math
(`att_one`, `att_one_v5`, `att_one_v5_1`, `att_one_v6_0`, `ffn_one`, `ffn_one_v6`; specified by
tools/rwkv_fixtures/v4.py, v5.py, v6.py) over a [B, T] batch, with a loop over time for the
recurrent state. Names, shapes and order come from tools/rwkv_fixtures (`expected_shapes`).

Initial values follow the RWKV-LM recipes in spirit: decays spread over channels (per-token
decay from ~0.99 to ~0.3 or faster), token-shift mixes spread over [0, 1], a bonus per channel or
head, orthogonal r/k/v/gate, and zero projections into the residual (att.output, ffn.value,
ffn.receptance), so that training starts from the identity and every path is used.
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

from rwkv_fixtures import v4 as fx_v4, v5 as fx_v5, v6 as fx_v6
from rwkv_fixtures.legacy import LegacyShape

from .common import (EMBD, FFN, GROUP_NORM_EPS, HEAD_SIZE, HEADS, LAYERS, V6_LORA, VOCAB, OfficialModel,
                     orthogonal, ramp, small_normal, vec3,
                     zigzag)

MAA = ("w", "k", "v", "r", "g")   # order of RWKV-6's five ddlerp LoRA outputs


class LegacyModel(OfficialModel):
    family = "legacy"

    def __init__(self, version: str, seed: int):
        if version not in ("v4", "v5.0", "v5.1", "v5.2", "v6"):
            raise ValueError(version)
        self.version = version
        self.detected = {"v4": "4", "v6": "6.0"}.get(version, version[1:])
        heads = version != "v4"
        lora = version == "v6"
        self.shape = LegacyShape(layers=LAYERS, embd=EMBD, ffn=FFN, vocab=VOCAB,
                                 head_size=HEAD_SIZE if heads else 0,
                                 lora_mix=V6_LORA["mix"] if lora else 0, lora_decay=V6_LORA["decay"] if lora else 0)
        arch = {"v4": fx_v4.ARCH, "v6": fx_v6.ARCH}.get(version) or fx_v5.ARCHS[version[1:]]
        arch.validate(self.shape)
        super().__init__(arch.expected_shapes(self.shape), self.initial_tensors(seed))
        self.heads = self.shape.heads
        self.v6 = version == "v6"
        self.gated = version in ("v5.1", "v5.2", "v6")

    # ---- initial values
    def block_init(self, i: int, gen: torch.Generator) -> Dict[str, torch.Tensor]:
        C, H, N = EMBD, HEADS, HEAD_SIZE
        depth = i / max(LAYERS - 1, 1)       # 0 .. 1
        keep = 1.0 - i / LAYERS               # 1 .. ~0 (RWKV-LM's ratio_1_to_almost0)
        r = ramp(C)
        # v4/v5 time_mix m: x*m + prev*(1-m); RWKV-6 time_maa m: x + (prev-x)*m = x*(1-m) + prev*m.
        mix = {"k": r ** keep, "v": r ** keep + 0.3 * depth, "r": r ** (0.5 * keep), "g": r ** (0.5 * keep)}
        mix = {k: v.clamp(0.0, 1.0) for k, v in mix.items()}
        decay_speed = -6.0 + 5.0 * (torch.arange(C) / (C - 1)) ** (0.7 + 1.3 * depth)   # td per channel
        bonus = depth * (1.0 - torch.arange(C) / (C - 1)) + 0.1 * zigzag(C)              # u as is (5.2, 6)
        t: Dict[str, torch.Tensor] = {}
        if self.version == "v4":
            t.update({f"att.time_mix_{m}": vec3(mix[m]) for m in "kvr"})
            t["att.time_decay"] = -5.0 + 8.0 * (torch.arange(C) / (C - 1)) ** (0.7 + 1.3 * depth)
            t["att.time_first"] = torch.full((C,), -1.2) + 0.5 * zigzag(C)   # log(0.3) + zigzag
        elif self.version in ("v5.0", "v5.1", "v5.2"):
            t.update({f"att.time_mix_{m}": vec3(mix[m]) for m in ("kvrg" if self.version != "v5.0" else "kvr")})
            if self.version == "v5.2":
                t["att.time_decay"] = decay_speed.reshape(H, N)
                t["att.time_faaaa"] = bonus.reshape(H, N)
            else:   # one decay and one bonus exp(time_first) per head
                t["att.time_decay"] = torch.linspace(-5.0, -1.0, H)
                t["att.time_first"] = torch.linspace(-1.2, -0.2, H)
        else:
            t.update({f"att.time_maa_{m}": vec3(1.0 - mix.get(m, mix["k"])) for m in ("x",) + MAA})
            Dm, Dd = V6_LORA["mix"], V6_LORA["decay"]
            t["att.time_maa_w1"] = torch.zeros(C, 5 * Dm)
            t["att.time_maa_w2"] = small_normal((5, Dm, C), 0.1 / Dm ** 0.5, gen)
            t["att.time_decay"] = vec3(decay_speed)
            t["att.time_decay_w1"] = torch.zeros(C, Dd)
            t["att.time_decay_w2"] = small_normal((Dd, C), 0.1 / Dd ** 0.5, gen)
            t["att.time_faaaa"] = bonus.reshape(H, N)
        t["att.receptance.weight"] = orthogonal(C, C, 1.0, gen)
        t["att.key.weight"] = orthogonal(C, C, 1.0 if self.version != "v4" else 0.5, gen)
        t["att.value.weight"] = orthogonal(C, C, 1.0, gen)
        t["att.output.weight"] = torch.zeros(C, C)
        if self.version != "v4":
            t["att.ln_x.weight"] = torch.ones(C)
            t["att.ln_x.bias"] = torch.zeros(C)
        if self.version not in ("v4", "v5.0"):
            t["att.gate.weight"] = orthogonal(C, C, 0.5, gen)
        ffn_mix = ("ffn.time_maa_k", "ffn.time_maa_r") if self.version == "v6" else ("ffn.time_mix_k", "ffn.time_mix_r")
        ffn_m = {"k": r ** keep, "r": r ** keep}
        for name, m in zip(ffn_mix, "kr"):
            t[name] = vec3(1.0 - ffn_m[m] if self.version == "v6" else ffn_m[m])
        t["ffn.key.weight"] = orthogonal(FFN, C, 1.0, gen)
        t["ffn.receptance.weight"] = torch.zeros(C, C)
        t["ffn.value.weight"] = torch.zeros(C, FFN)
        return t

    # ---- math
    def shifted(self, xx: torch.Tensor, sx: torch.Tensor, name: str) -> torch.Tensor:
        """RWKV-4/5 time_mix: xx*m + sx*(1-m)."""
        m = self.p(name)
        return xx * m + sx * (1.0 - m)

    def channel_mix(self, i, xx, sx):
        f = f"blocks.{i}.ffn."
        if self.v6:
            kx, rx = xx + (sx - xx) * self.p(f + "time_maa_k"), xx + (sx - xx) * self.p(f + "time_maa_r")
        else:
            kx, rx = self.shifted(xx, sx, f + "time_mix_k"), self.shifted(xx, sx, f + "time_mix_r")
        r = torch.sigmoid(self.linear(rx, f + "receptance.weight"))
        return r * self.linear(torch.relu(self.linear(kx, f + "key.weight")) ** 2, f + "value.weight")

    def time_mix(self, i, xx, sx, ctx):
        if self.version == "v4":
            return self.time_mix_v4(i, xx, sx)
        return self.time_mix_v5_v6(i, xx, sx)

    def time_mix_v4(self, i, xx, sx):
        a = f"blocks.{i}.att."
        kx, vx, rx = (self.shifted(xx, sx, a + f"time_mix_{m}") for m in "kvr")
        r = torch.sigmoid(self.linear(rx, a + "receptance.weight"))
        k = self.linear(kx, a + "key.weight")
        v = self.linear(vx, a + "value.weight")
        w = -torch.exp(self.p(a + "time_decay"))     # log of the per-token decay
        u = self.p(a + "time_first")
        B, T, C = k.shape
        aa, bb = k.new_zeros(B, C), k.new_zeros(B, C)
        pp = k.new_full((B, C), -1e30)               # the official initial state
        outs = []
        for k_t, v_t in zip(k.unbind(1), v.unbind(1)):
            ww = u + k_t
            p = torch.maximum(pp, ww)
            e1, e2 = torch.exp(pp - p), torch.exp(ww - p)
            outs.append((e1 * aa + e2 * v_t) / (e1 * bb + e2))
            ww = w + pp
            p = torch.maximum(ww, k_t)
            e1, e2 = torch.exp(ww - p), torch.exp(k_t - p)
            aa, bb, pp = e1 * aa + e2 * v_t, e1 * bb + e2, p
        return self.linear(r * torch.stack(outs, 1), a + "output.weight")

    def time_mix_v5_v6(self, i, xx, sx):
        a = f"blocks.{i}.att."
        B, T, C = xx.shape
        H, N = HEADS, HEAD_SIZE
        if self.v6:   # ddlerp: data-dependent token shift through the mix LoRA
            dx = sx - xx
            m = torch.tanh((xx + dx * self.p(a + "time_maa_x")) @ self.p(a + "time_maa_w1"))
            offsets = torch.einsum("btjd,jdc->btjc", m.view(B, T, 5, -1), self.p(a + "time_maa_w2"))
            wx, kx, vx, rx, gx = (xx + dx * (self.p(a + f"time_maa_{n}") + offsets[:, :, j])
                                  for j, n in enumerate(MAA))
            td = self.p(a + "time_decay") + torch.tanh(wx @ self.p(a + "time_decay_w1")) @ self.p(a + "time_decay_w2")
            w = torch.exp(-torch.exp(td)).view(B, T, H, N, 1)       # per token and key channel
            u = self.p(a + "time_faaaa").view(H, N, 1)
        else:
            kx, vx, rx = (self.shifted(xx, sx, a + f"time_mix_{m}") for m in "kvr")
            gx = self.shifted(xx, sx, a + "time_mix_g") if self.gated else None
            w = torch.exp(-torch.exp(self.p(a + "time_decay")))
            if self.version == "v5.2":
                w, u = w.view(H, N, 1), self.p(a + "time_faaaa").view(H, N, 1)
            else:
                w, u = w.view(H, 1, 1), torch.exp(self.p(a + "time_first")).view(H, 1, 1)
            w = w.expand(B, T, H, N, 1)
        r = self.linear(rx, a + "receptance.weight").view(B, T, H, N)
        k = self.linear(kx, a + "key.weight").view(B, T, H, N)
        v = self.linear(vx, a + "value.weight").view(B, T, H, N)
        kv = k.unsqueeze(-1) * v.unsqueeze(-2)                      # [B, T, H, key, value]
        S = xx.new_zeros(B, H, N, N)
        states = []                                                 # the state before each token
        for kv_t, w_t in zip(kv.unbind(1), w.unbind(1)):
            states.append(S)
            S = kv_t + w_t * S
        pre = torch.stack(states, 1) + u * kv                       # u a + S
        out = (r.unsqueeze(-2) @ pre).reshape(B * T, C)             # r^T (u a + S)
        out = F.group_norm(out, H, self.p(a + "ln_x.weight"), self.p(a + "ln_x.bias"), GROUP_NORM_EPS).view(B, T, C)
        if self.gated:
            out = out * F.silu(self.linear(gx, a + "gate.weight"))
        return self.linear(out, a + "output.weight")

    def meta_shape(self) -> dict:
        s = self.shape
        meta = {"layers": s.layers, "embd": s.embd, "heads": s.heads, "head_size": s.head_size,
                "ffn": s.ffn, "vocab": s.vocab}
        if self.v6:
            meta["lora"] = {"mix": s.lora_mix, "decay": s.lora_decay}
        return meta
