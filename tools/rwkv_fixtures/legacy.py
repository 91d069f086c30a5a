"""What RWKV-4, 5.x and 6.0 share: the shape, the block layout around the time mix, the
channel mix, weight scales, and a batched float64 reference loop.

The official package runs these versions with `RWKV_V7_ON` unset (family 'legacy'). Its loader
computes the ln0-normalised embedding in the .pth's dtype (`F.layer_norm` on bf16 tensors when
the file is bf16), which moves the logits by up to ~0.03; our engine normalises in f32. So the
golden outputs come from an f32 .pth copy of the (bf16-exact) weights, and the committed
`model.pth` is the bf16 file (the pipeline reports how far the bf16 run is).

The reference (`LegacyArch.forward`) is written from the math of the official single-token
functions (`att_one`, `att_one_v5`, `att_one_v5_1`, `att_one_v6_0`, `ffn_one`, `ffn_one_v6`),
in float64, with a leading batch axis so the sensitivity check can run many perturbed
copies of a model at once: every prepared tensor is [1, ...] (shared) or [B, ...] (perturbed).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .common import (Arch, Range, RunResult, Weights, assemble_weights, assert_lossless, layer_norm,
                     noise_perturbations, normal, official_shapes, sigmoid, uniform, vec3,
                     zero_perturbation)


@dataclasses.dataclass(frozen=True)
class LegacyShape:
    """Hyper-parameters of an RWKV-4/5/6 model. head_size is 0 for RWKV-4 (no heads); the LoRA
    ranks lora_mix (Dm, `time_maa_w1/w2`) and lora_decay (Dd, `time_decay_w1/w2`) are RWKV-6 only."""

    layers: int
    embd: int
    ffn: int
    vocab: int
    head_size: int = 0
    lora_mix: int = 0
    lora_decay: int = 0

    @property
    def heads(self) -> int:
        return self.embd // self.head_size if self.head_size else 0


# --------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------

def outlier_channels(C: int) -> Tuple[int, ...]:
    """The channel that accumulates a large coherent residual when growth > 0, like the
    "massive activation" channels of trained models (whose ln_out weight is small)."""
    return (C // 3,)


OUTLIER_LN_OUT_WEIGHT = 0.125


def linear_att(rng: np.random.Generator, C: int, names: Sequence[str]) -> Dict[str, np.ndarray]:
    """att.{receptance,key,value,gate,output}.weight [C, C] in the order given; N(0, 1/C)
    except key (N(0, 4/C): larger k exercises RWKV-4's exp/max bookkeeping and sharpens
    RWKV-5/6 states) and gate (N(0, 2.25/C))."""
    std = {"receptance": 1.0, "key": 2.0, "value": 1.0, "gate": 1.5, "output": 1.0}
    return {f"att.{n}.weight": normal(rng, std[n] / math.sqrt(C), (C, C)) for n in names}


def ln_x(rng: np.random.Generator, C: int) -> Dict[str, np.ndarray]:
    """att.ln_x (the per-head GroupNorm of RWKV-5/6): weight in [0.5, 1.5], bias in [-0.5, 0.5]."""
    return {"att.ln_x.weight": uniform(rng, 0.5, 1.5, C), "att.ln_x.bias": uniform(rng, -0.5, 0.5, C)}


def mixes(rng: np.random.Generator, C: int, names: Sequence[str]) -> Dict[str, np.ndarray]:
    """Token-shift mix vectors [1, 1, C] in [0, 1] (`time_mix_*` or `time_maa_*`)."""
    return {n: vec3(uniform(rng, 0.0, 1.0, C)) for n in names}


def channel_mix(rng: np.random.Generator, s: LegacyShape, layer: int, growth: float,
                mix_names: Sequence[str]) -> Dict[str, np.ndarray]:
    """ffn.*: the two token-shift mixes, then key [F, C], receptance [C, C], value [C, F]
    (state-dict order). With growth, the value rows of the outlier channel get a positive
    offset of growth * (1 + layer/(L-1)) / F, so that relu(k)^2 >= 0 adds up coherently there
    from layer to layer: the residual grows over depth (to ~100 for growth 6 and 24 layers)
    while the random, token-dependent part keeps unit gain (higher random gains make a deep
    random network chaotic, and its fp32 result far from float64)."""
    C, F = s.embd, s.ffn
    t = mixes(rng, C, mix_names)
    t["ffn.key.weight"] = normal(rng, 1.2 / math.sqrt(C), (F, C))
    t["ffn.receptance.weight"] = normal(rng, 1.5 / math.sqrt(C), (C, C))
    value = normal(rng, 0.8 / math.sqrt(F), (C, F))
    if growth:
        for c in outlier_channels(C):
            value[c] += growth / F * (1.0 + layer / max(s.layers - 1, 1))
    t["ffn.value.weight"] = value
    return t


def shifted_spread(rng: np.random.Generator, lo: float, hi: float, n: int, jitter: float) -> np.ndarray:
    """n values evenly from lo to hi, each moved by U(-jitter, jitter) and clipped to [lo, hi],
    in random order (for per-head parameters, where n may be as small as 2)."""
    vals = np.linspace(lo, hi, n) + rng.uniform(-jitter, jitter, size=n)
    return rng.permutation(np.clip(vals, lo, hi))


# --------------------------------------------------------------------------------------
# Batched float64 reference
# --------------------------------------------------------------------------------------

class Params:
    """Weights prepared for a batched forward: float64, `.time_*` tensors squeezed as the
    official loader does, matrices kept [out, in], each with a leading axis of 1 (shared by
    the whole batch) or B (one perturbed copy per batch entry)."""

    def __init__(self, weights: Weights, changes: Optional[List[Dict[str, np.ndarray]]] = None):
        changes = changes or [{}]
        self.batch = len(changes)
        touched = set().union(*changes)

        def prep(v: np.ndarray, name: str) -> np.ndarray:
            v = v.astype(np.float64)
            return v.reshape([d for d in v.shape if d != 1]) if ".time_" in name else v

        self.p: Dict[str, np.ndarray] = {}
        for name, w in weights.items():
            if name in touched:
                self.p[name] = np.stack([prep(c.get(name, w), name) for c in changes])
            else:
                self.p[name] = prep(w, name)[None]

    def __call__(self, name: str) -> np.ndarray:
        return self.p[name]


def mv(W: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Batched W @ x: W [1 or B, out, in], x [B, in] -> [B, out]."""
    if W.shape[0] == 1:
        return x @ W[0].T
    return np.einsum("boi,bi->bo", W, x)


def vm(x: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Batched x @ W (the LoRA layout): x [B, in], W [1 or B, in, out] -> [B, out]."""
    if W.shape[0] == 1:
        return x @ W[0]
    return np.einsum("bi,bio->bo", x, W)


def group_norm(o: np.ndarray, w: np.ndarray, b: np.ndarray, H: int, eps: float,
               diag: Optional["Diag"] = None) -> np.ndarray:
    """GroupNorm with H groups over [B, C] (per head, biased variance), then affine. Records
    the per-head standard deviation of the input (compare with sqrt(eps) = 0.025)."""
    B, C = o.shape
    oh = o.reshape(B, H, C // H)
    mu = oh.mean(axis=-1, keepdims=True)
    var = ((oh - mu) ** 2).mean(axis=-1, keepdims=True)
    if diag is not None:
        diag.add("ln_x input std per head", np.sqrt(var))
    return ((oh - mu) / np.sqrt(var + eps)).reshape(B, C) * w + b


def token_shift(xx: np.ndarray, sx: np.ndarray, m: np.ndarray, v6_style: bool) -> np.ndarray:
    """RWKV-4/5 `time_mix`: xx*m + sx*(1-m); RWKV-6 `time_maa`: xx + (sx-xx)*m."""
    return xx + (sx - xx) * m if v6_style else xx * m + sx * (1.0 - m)


class Diag:
    """Ranges of internal quantities seen by the reference (only for unbatched runs)."""

    def __init__(self, layers: int) -> None:
        self.ranges: Dict[str, Range] = {}
        self.residual_absmax = [0.0] * layers
        self.residual_rms = [0.0] * layers

    def add(self, name: str, x: np.ndarray) -> None:
        self.ranges.setdefault(name, Range()).add(x)

    def as_dict(self) -> Dict[str, List[float]]:
        d = {k: r.get() for k, r in self.ranges.items()}
        d["residual_absmax_by_layer"] = [float(v) for v in self.residual_absmax]
        d["residual_rms_by_layer"] = [float(v) for v in self.residual_rms]
        return d


class LegacyArch(Arch):
    """Base of RWKV-4/5/6: a subclass supplies the time-mix tensors (`att_tensors`), their
    official order/shapes (`att_order`, `att_shapes`), the time-mix math (`time_mix`), the
    wkv state shape (`wkv_shape`, a matrix per head unless overridden) and whether the channel mix uses `time_maa` (`v6_style`)."""

    family = "legacy"
    sensitivity_batch = 24
    v6_style = False
    ffn_mix_names = ("ffn.time_mix_k", "ffn.time_mix_r")
    lora_zero: Tuple[Tuple[str, str], ...] = ()   # (label, first matrix) of LoRAs to zero per layer

    # ---- to be provided by each version
    def validate(self, s: LegacyShape) -> None:
        """Reject shapes this version (or the official loader) cannot handle."""
        raise NotImplementedError

    def att_tensors(self, rng: np.random.Generator, s: LegacyShape, layer: int) -> Dict[str, np.ndarray]:
        """Random att.* tensors of block `layer`, keyed below `blocks.{layer}.`."""
        raise NotImplementedError

    def att_order(self) -> List[str]:
        """The att.* names of a block in state-dict order."""
        raise NotImplementedError

    def att_shapes(self, s: LegacyShape) -> Dict[str, Tuple[int, ...]]:
        """The att.* names of a block -> official shapes."""
        raise NotImplementedError

    def wkv_shape(self, s: LegacyShape) -> Tuple[int, ...]:
        """Shape of state_wkv.npy ([L, ...]): RWKV-5 and 6 keep a [N, N] matrix per head."""
        return (s.layers, s.heads, s.head_size, s.head_size)

    def zero_wkv(self, B: int, s: LegacyShape) -> np.ndarray:
        """The initial wkv state of B batch entries ([B, L, ...])."""
        return np.zeros((B,) + self.wkv_shape(s))

    def time_mix(self, P: Params, i: int, xx: np.ndarray, sx: np.ndarray, state: np.ndarray,
                 s: LegacyShape, diag: Optional[Diag]) -> Tuple[np.ndarray, np.ndarray]:
        """One token of the attention: returns (output added to the residual, new state)."""
        raise NotImplementedError

    # ---- shared
    def block_order(self) -> List[str]:
        ffn_order = list(self.ffn_mix_names) + ["ffn.key.weight", "ffn.receptance.weight", "ffn.value.weight"]
        return ["ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "ln0.weight", "ln0.bias"] \
            + self.att_order() + ffn_order

    def expected_shapes(self, s: LegacyShape) -> Dict[str, Tuple[int, ...]]:
        """Official name -> shape in state-dict order (as the RWKV-LM training modules register them)."""
        C, F = s.embd, s.ffn
        per_block = dict(self.att_shapes(s))
        per_block.update({n: (1, 1, C) for n in self.ffn_mix_names})
        per_block.update({"ffn.key.weight": (F, C), "ffn.receptance.weight": (C, C), "ffn.value.weight": (C, F)})
        return official_shapes(C, s.vocab, s.layers, self.block_order(), per_block)

    def build_weights(self, s: LegacyShape, seed: int, growth: float = 0.0) -> Weights:
        self.validate(s)

        def block(rng: np.random.Generator, i: int) -> Dict[str, np.ndarray]:
            t = self.att_tensors(rng, s, i)
            t.update(channel_mix(rng, s, i, growth, self.ffn_mix_names))
            return t

        weights = assemble_weights(np.random.default_rng(seed), s.embd, s.vocab, s.layers, block,
                                   self.expected_shapes(s))
        if growth:  # as in trained models, ln_out nearly ignores the massive channel
            for c in outlier_channels(s.embd):
                weights["ln_out.weight"][c] = OUTLIER_LN_OUT_WEIGHT
            assert_lossless("ln_out.weight", weights["ln_out.weight"])
        return weights

    def forward(self, weights: Weights, s: LegacyShape, tokens: Sequence[int],
                changes: Optional[List[Dict[str, np.ndarray]]] = None,
                diag: Optional[Diag] = None) -> RunResult:
        """Batched float64 forward, one token at a time from the zero state; every array of
        the result has a leading batch axis (one entry per change set)."""
        P = Params(weights, changes)
        B, L, C = P.batch, s.layers, s.embd
        att_x, ffn_x = np.zeros((B, L, C)), np.zeros((B, L, C))
        wkv = self.zero_wkv(B, s)
        emb, ln0w, ln0b = P("emb.weight"), P("blocks.0.ln0.weight"), P("blocks.0.ln0.bias")
        logits = []
        for tok in tokens:
            x = np.broadcast_to(layer_norm(emb[:, int(tok)], ln0w, ln0b), (B, C))
            for i in range(L):
                p = f"blocks.{i}."
                xx = layer_norm(x, P(p + "ln1.weight"), P(p + "ln1.bias"))
                out, wkv[:, i] = self.time_mix(P, i, xx, att_x[:, i], wkv[:, i], s, diag)
                att_x[:, i] = xx
                x = x + out
                xx = layer_norm(x, P(p + "ln2.weight"), P(p + "ln2.bias"))
                kx, rx = (token_shift(xx, ffn_x[:, i], P(p + n), self.v6_style) for n in self.ffn_mix_names)
                r = sigmoid(mv(P(p + "ffn.receptance.weight"), rx))
                x = x + r * mv(P(p + "ffn.value.weight"), np.maximum(mv(P(p + "ffn.key.weight"), kx), 0.0) ** 2)
                ffn_x[:, i] = xx
                if diag is not None:
                    diag.residual_absmax[i] = max(diag.residual_absmax[i], float(np.abs(x).max()))
                    diag.residual_rms[i] = max(diag.residual_rms[i], float(np.sqrt((x ** 2).mean())))
            logits.append(mv(P("head.weight"), layer_norm(x, P("ln_out.weight"), P("ln_out.bias"))))
        return RunResult(logits=np.stack(logits, axis=1), att_x=att_x, wkv=wkv, ffn_x=ffn_x)

    def reference(self, weights, s, tokens):
        diag = Diag(s.layers)
        out = self.forward(weights, s, tokens, diag=diag)
        single = RunResult(**{f: getattr(out, f)[0] for f in RunResult.FIELDS})
        return single, diag.as_dict()

    def forward_many(self, weights, s, tokens, changes):
        return list(self.forward(weights, s, tokens, changes).logits)

    def perturbations(self, weights, s, seed):
        """1% noise on every tensor, and (RWKV-6) each LoRA zeroed per layer."""
        yield from noise_perturbations(weights, seed)
        for i in range(s.layers):
            for label, first in self.lora_zero:
                yield zero_perturbation(weights, f"blocks.{i} zero {label}", f"blocks.{i}.{first}")

    def meta_shape(self, s: LegacyShape) -> dict:
        meta = {"layers": s.layers, "embd": s.embd}
        if s.head_size:
            meta.update({"heads": s.heads, "head_size": s.head_size})
        meta.update({"ffn": s.ffn, "vocab": s.vocab})
        if s.lora_mix:
            meta["lora"] = {"mix": s.lora_mix, "decay": s.lora_decay}
        return meta


def check_dims(s: LegacyShape, dims: Sequence[int]) -> None:
    """The official loader squeezes `.time_*` tensors, so none of their dimensions may be 1
    (but the head count, which it reads before squeezing); it also needs >= 2 layers to detect
    RWKV-5 (ln_x follows block 0's time_decay)."""
    if min(dims) < 2 or s.layers < 2:
        raise ValueError(f"all dimensions and the layer count must be >= 2: {s}")
    if s.head_size and s.embd % s.head_size:
        raise ValueError(f"embd {s.embd} is not a multiple of head_size {s.head_size}")
