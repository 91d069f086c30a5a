#!/usr/bin/env python3
"""Golden RWKV-7 ("x070") fixtures for rwkv-wgpu, produced by the official `rwkv` package.

For every case below this script

1. builds a seeded random-weight RWKV-7 model with the official tensor names and
   shapes (those of the rwkv7-g1 release checkpoints), every value rounded so that
   f32, f16 and bf16 storage are all lossless;
2. saves it as `model.pth` (bf16, `torch.save(dict)` like the official release) and
   as `model-{f16,bf16,f32}.safetensors` (which ones depends on the case);
3. runs BlinkDL's `rwkv` package (PyPI 0.8.32, `RWKV_x070`, strategy `cpu fp32`)
   on a fixed token sequence ONE TOKEN AT A TIME from the zero state
   (`model.forward([tok], state)` -> `forward_one`), once on the bf16 `.pth` and once
   on an f32 `.pth` copy of the same weights, and asserts both runs are bit-identical
   (so one set of golden outputs serves every stored format);
4. re-runs the same math with an independent float64 numpy implementation of
   `forward_one` (`reference_forward` below) to measure how far the official fp32
   result is from exact, and uses it for a sensitivity check (perturb each parameter
   group of each layer and confirm the logits move) so no code path is dead;
5. writes `tokens.npy` (int32 [T]), `logits.npy` (float32 [T, V], logits after each
   token), the final state `state_att_x.npy` (float32 [L, C]), `state_wkv.npy`
   (float32 [L, H, N, N], indexed [head, value i, key j]), `state_ffn_x.npy`
   (float32 [L, C]) and `meta.json` to `tests/fixtures/v7/<case>/`.

Run from the repository root (needs python3 with rwkv==0.8.32, torch, numpy,
safetensors; tests never need Python):

    python3 tools/make_fixtures.py                   # all cases -> tests/fixtures/v7/
    python3 tools/make_fixtures.py --cases tiny      # one case
    python3 tools/make_fixtures.py --out /tmp/fx --no-sensitivity

Everything is deterministic: re-running rewrites byte-identical outputs (the .pth
zip archives included, as torch.save writes no timestamps).

`tools/check_cli.py` imports the model-building and official-run functions from here.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

# The official package picks its RWKV-7 code path from the environment at import time.
# (Under RWKV_V7_ON the x070 classes are always TorchScript; RWKV_JIT_ON only affects the
# older model versions, so its value does not matter here.)
os.environ["RWKV_V7_ON"] = "1"
os.environ.setdefault("RWKV_JIT_ON", "1")
os.environ["RWKV_CUDA_ON"] = "0"

import torch  # noqa: E402  (must come after the environment set-up above)

RWKV_PACKAGE_VERSION = "0.8.32"
VERSION_TAG = "x070"
FIXTURE_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures", "v7")

# Decay constant used verbatim by the official code: w = exp(-0.606531 * sigmoid(.)).
DECAY_SCALE = 0.606531
LAYER_NORM_EPS = 1e-5
GROUP_NORM_EPS = 64e-5

# Representability limits that make a value exact in f32, f16 and bf16 at once.
F16_MIN_NORMAL = 2.0 ** -14
VALUE_LIMIT = 60000.0


# --------------------------------------------------------------------------------------
# Model shape and cases
# --------------------------------------------------------------------------------------

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
        # The official loader squeezes every tensor, so no dimension may be 1.
        dims = [self.embd, self.head_size, self.heads, self.vocab, self.ffn,
                self.lora_w, self.lora_a, self.lora_v, self.lora_g]
        if min(dims) < 2:
            raise ValueError(f"all dimensions must be >= 2 (the official loader squeezes): {self}")


@dataclasses.dataclass(frozen=True)
class FixtureCase:
    """One committed fixture: a model shape, a seed, a token count and stored formats."""

    name: str
    shape: ModelShape
    tokens: int
    seed: int
    formats: Tuple[str, ...]  # subset of FORMAT_FILES keys


FORMAT_FILES = {
    "pth": "model.pth",                    # bf16, torch.save(dict) like the official release
    "f16": "model-f16.safetensors",
    "bf16": "model-bf16.safetensors",
    "f32": "model-f32.safetensors",
}

CASES: Dict[str, FixtureCase] = {
    "tiny": FixtureCase(
        name="tiny",
        shape=ModelShape(layers=2, embd=64, head_size=16, vocab=256, ffn=256,
                         lora_w=16, lora_a=16, lora_v=8, lora_g=32),
        tokens=64, seed=20250701, formats=("pth", "f16", "bf16", "f32")),
    "small": FixtureCase(
        name="small",
        shape=ModelShape(layers=3, embd=128, head_size=64, vocab=512, ffn=512,
                         lora_w=32, lora_a=24, lora_v=16, lora_g=48),
        tokens=72, seed=20250702, formats=("pth", "f16")),
}


# --------------------------------------------------------------------------------------
# Exactly representable values
# --------------------------------------------------------------------------------------

def round_lossless(x: np.ndarray) -> np.ndarray:
    """Round to values that f32, f16 and bf16 all store exactly.

    Round-to-nearest-even to bf16 (8 significant bits), flush magnitudes below the
    smallest normal f16 (2^-14) to zero, and require |x| < 60000 (f16 max is 65504).
    """
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(torch.bfloat16).to(torch.float32)
    y = t.numpy().copy()
    y[np.abs(y) < F16_MIN_NORMAL] = 0.0
    if not np.all(np.abs(y) < VALUE_LIMIT):
        raise ValueError("weight magnitude too large for lossless f16 storage")
    return y


def assert_lossless(name: str, x: np.ndarray) -> None:
    """Assert that `x` round-trips exactly through f16 and bf16."""
    t = torch.from_numpy(x)
    for dtype in (torch.float16, torch.bfloat16):
        back = t.to(dtype).to(torch.float32)
        if not torch.equal(back, t):
            bad = int((back != t).sum())
            raise AssertionError(f"{name}: {bad} values not exact in {dtype}")


# --------------------------------------------------------------------------------------
# Random weights with official names and shapes
# --------------------------------------------------------------------------------------

def _uniform(rng: np.random.Generator, lo: float, hi: float, shape) -> np.ndarray:
    return rng.uniform(lo, hi, size=shape)


def _normal(rng: np.random.Generator, std: float, shape) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)  # float32: fast for big vocabularies


def _spread(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    """n values covering [lo, hi] evenly (stratified jitter), in random channel order."""
    edges = np.linspace(lo, hi, n + 1)
    vals = edges[:-1] + rng.uniform(0.0, 1.0, size=n) * (edges[1:] - edges[:-1])
    vals[0], vals[-1] = lo, hi  # make sure both ends are present
    return rng.permutation(vals)


def _vec(x: np.ndarray) -> np.ndarray:
    """A per-channel parameter in the official [1, 1, C] layout."""
    return x.reshape(1, 1, -1)


def layer_tensors(rng: np.random.Generator, s: ModelShape, layer: int) -> Dict[str, np.ndarray]:
    """Random tensors of one block, keyed by their name below `blocks.{layer}.`.

    Scales are chosen so that every path visibly moves the logits (see the
    sensitivity check): decays exp(-0.606531*sigmoid(w0 + lora)) from ~0.55 to
    ~0.999, in-context rates a and value-residual mixes spread over (0, 1),
    gates of order 1 with a token-dependent part, token-shift mixes in [0, 1].
    """
    C, H, N, F = s.embd, s.heads, s.head_size, s.ffn
    Dw, Da, Dv, Dg = s.lora_w, s.lora_a, s.lora_v, s.lora_g
    inv_c = 1.0 / math.sqrt(C)
    t: Dict[str, np.ndarray] = {}
    t["ln1.weight"] = _uniform(rng, 0.7, 1.3, C)
    t["ln1.bias"] = _uniform(rng, -0.2, 0.2, C)
    t["ln2.weight"] = _uniform(rng, 0.7, 1.3, C)
    t["ln2.bias"] = _uniform(rng, -0.2, 0.2, C)
    if layer == 0:
        t["ln0.weight"] = _uniform(rng, 0.7, 1.3, C)
        t["ln0.bias"] = _uniform(rng, -0.2, 0.2, C)
    for mix in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
        t["att." + mix] = _vec(_uniform(rng, 0.0, 1.0, C))
    t["att.w0"] = _vec(_spread(rng, -7.0, 3.0, C))
    t["att.w1"] = _normal(rng, inv_c, (C, Dw))
    t["att.w2"] = _normal(rng, 3.0 / math.sqrt(Dw), (Dw, C))
    t["att.a0"] = _vec(_spread(rng, -2.5, 2.5, C))
    t["att.a1"] = _normal(rng, inv_c, (C, Da))
    t["att.a2"] = _normal(rng, 1.5 / math.sqrt(Da), (Da, C))
    t["att.v0"] = _vec(_spread(rng, -2.0, 2.0, C))
    t["att.v1"] = _normal(rng, inv_c, (C, Dv))
    t["att.v2"] = _normal(rng, 1.5 / math.sqrt(Dv), (Dv, C))
    t["att.g1"] = _normal(rng, 1.5 * inv_c, (C, Dg))
    t["att.g2"] = _normal(rng, 1.5 / math.sqrt(Dg), (Dg, C))
    t["att.k_k"] = _vec(_uniform(rng, 0.3, 1.5, C))
    t["att.k_a"] = _vec(_uniform(rng, 0.2, 1.2, C))
    t["att.r_k"] = _normal(rng, 0.5 / math.sqrt(N), (H, N))
    t["att.receptance.weight"] = _normal(rng, inv_c, (C, C))
    t["att.key.weight"] = _normal(rng, inv_c, (C, C))
    t["att.value.weight"] = _normal(rng, inv_c, (C, C))
    t["att.output.weight"] = _normal(rng, inv_c, (C, C))
    t["att.ln_x.weight"] = _uniform(rng, 0.5, 1.5, C)
    t["att.ln_x.bias"] = _uniform(rng, -0.5, 0.5, C)
    t["ffn.x_k"] = _vec(_uniform(rng, 0.0, 1.0, C))
    t["ffn.key.weight"] = _normal(rng, 1.2 * inv_c, (F, C))
    t["ffn.value.weight"] = _normal(rng, 0.8 / math.sqrt(F), (C, F))
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
    C, H, N, F, V = s.embd, s.heads, s.head_size, s.ffn, s.vocab
    per_block = {
        "ln1.weight": (C,), "ln1.bias": (C,), "ln2.weight": (C,), "ln2.bias": (C,),
        "ln0.weight": (C,), "ln0.bias": (C,),
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
    shapes: Dict[str, Tuple[int, ...]] = {"emb.weight": (V, C)}
    for i in range(s.layers):
        for k in BLOCK_KEY_ORDER:
            if k.startswith("ln0.") and i != 0:
                continue
            shapes[f"blocks.{i}.{k}"] = per_block[k]
    shapes["ln_out.weight"] = (C,)
    shapes["ln_out.bias"] = (C,)
    shapes["head.weight"] = (V, C)
    return shapes


def build_weights(s: ModelShape, seed: int) -> Dict[str, np.ndarray]:
    """Seeded random RWKV-7 weights: official names/shapes/order, float32, lossless in f16/bf16."""
    s.validate()
    rng = np.random.default_rng(seed)
    C, V = s.embd, s.vocab
    raw: Dict[str, np.ndarray] = {"emb.weight": _normal(rng, 1.0, (V, C))}
    for i in range(s.layers):
        for k, v in layer_tensors(rng, s, i).items():
            raw[f"blocks.{i}.{k}"] = v
    raw["ln_out.weight"] = _uniform(rng, 0.7, 1.3, C)
    raw["ln_out.bias"] = _uniform(rng, -0.2, 0.2, C)
    raw["head.weight"] = _normal(rng, 3.0 / math.sqrt(C), (V, C))

    shapes = expected_shapes(s)
    if set(shapes) != set(raw):
        raise AssertionError(f"name mismatch: {sorted(set(shapes) ^ set(raw))}")
    weights: Dict[str, np.ndarray] = {}
    for name in shapes:  # official order
        w = round_lossless(raw[name])
        if w.shape != shapes[name]:
            raise AssertionError(f"{name}: shape {w.shape} != {shapes[name]}")
        assert_lossless(name, w)
        weights[name] = w
    return weights


def random_tokens(vocab: int, count: int, seed: int) -> np.ndarray:
    """Seeded random ids in [0, vocab) that include 0, vocab-1, an immediate repeat
    (token shift sees a zero difference) and a repeated span (in-context recall)."""
    rng = np.random.default_rng(seed + 1_000_003)
    toks = rng.integers(0, vocab, size=count)
    if count >= 8:
        toks[1] = 0
        toks[count // 2] = vocab - 1
        toks[5] = toks[4]                     # immediate repeat
    if count >= 32:
        span = max(4, count // 8)
        src, dst = 8, count - span - 2        # repeat an earlier span near the end
        toks[dst:dst + span] = toks[src:src + span]
    return toks.astype(np.int32)


# --------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------

TORCH_DTYPES = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}


def to_torch(weights: Dict[str, np.ndarray], dtype: torch.dtype) -> Dict[str, torch.Tensor]:
    """Convert (exactly, see round_lossless) to contiguous torch tensors of `dtype`."""
    out = {}
    for k, v in weights.items():
        t = torch.from_numpy(v).to(dtype).contiguous()
        if not torch.equal(t.to(torch.float32), torch.from_numpy(v)):
            raise AssertionError(f"{k}: conversion to {dtype} is not exact")
        out[k] = t
    return out


def save_pth(weights: Dict[str, np.ndarray], path: str, dtype: torch.dtype = torch.bfloat16) -> None:
    """`torch.save` of a plain dict, like the official .pth releases (bf16 by default)."""
    torch.save(to_torch(weights, dtype), path)


def save_safetensors(weights: Dict[str, np.ndarray], path: str, dtype: torch.dtype) -> None:
    """safetensors file with the same names and shapes as the .pth."""
    from safetensors.torch import save_file
    save_file(to_torch(weights, dtype), path, metadata={"format": "pt"})
    os.chmod(path, 0o644)  # safetensors creates the file 0600


def save_format(weights: Dict[str, np.ndarray], fmt: str, path: str) -> None:
    """Save in one of FORMAT_FILES' formats ('pth' means bf16 .pth)."""
    if fmt == "pth":
        save_pth(weights, path, torch.bfloat16)
    elif fmt in TORCH_DTYPES:
        save_safetensors(weights, path, TORCH_DTYPES[fmt])
    else:
        raise ValueError(f"unknown format {fmt!r}")


# --------------------------------------------------------------------------------------
# The official package
# --------------------------------------------------------------------------------------

def configure_torch(threads: int = 1) -> None:
    """Single-threaded by default (deterministic, and fastest for these tiny matmuls) and
    without the TorchScript profiling executor, which re-specialises the graph on the first calls."""
    torch.set_num_threads(threads)
    torch._C._jit_set_profiling_executor(False)
    torch._C._jit_set_profiling_mode(False)


def official_module():
    """Import rwkv.model with RWKV-7 enabled and check the package version."""
    import importlib.metadata
    version = importlib.metadata.version("rwkv")
    if version != RWKV_PACKAGE_VERSION:
        print(f"WARNING: rwkv package is {version}, fixtures are defined for {RWKV_PACKAGE_VERSION}")
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script deprecation notices
        import rwkv.model as rwkv_model
    if rwkv_model.RWKV is not rwkv_model.RWKV_x070:
        raise RuntimeError("rwkv.model was imported before RWKV_V7_ON=1 was set")
    return rwkv_model


@dataclasses.dataclass
class RunResult:
    """Logits after each token and the final recurrent state, all float32."""

    logits: np.ndarray      # [T, V]
    att_x: np.ndarray       # [L, C]        official state[i*3+0]
    wkv: np.ndarray         # [L, H, N, N]  official state[i*3+1], [head, value i, key j]
    ffn_x: np.ndarray       # [L, C]        official state[i*3+2]


def run_official(pth_path: str, tokens: Sequence[int]) -> RunResult:
    """Run the official RWKV_x070 (strategy 'cpu fp32') on `pth_path` one token at a time
    from the zero state, via `model.forward([tok], state)` (-> forward_one).
    Call configure_torch() first."""
    if not pth_path.endswith(".pth"):
        raise ValueError("the official loader reads MODEL_NAME + '.pth'")
    rwkv_model = official_module()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script_method deprecation notices
        model = rwkv_model.RWKV(model=pth_path[:-4], strategy="cpu fp32")
    state = None
    rows = []
    for tok in tokens:
        out, state = model.forward([int(tok)], state)
        rows.append(out.detach().to(torch.float32).numpy().copy())
    layer_state = lambda j: np.stack(  # noqa: E731
        [state[i * 3 + j].detach().to(torch.float32).numpy() for i in range(model.n_layer)])
    return RunResult(logits=np.stack(rows), att_x=layer_state(0), wkv=layer_state(1), ffn_x=layer_state(2))


def run_official_weights(weights: Dict[str, np.ndarray], tokens: Sequence[int],
                         dtype: torch.dtype, workdir: str) -> RunResult:
    """Save `weights` as a `.pth` of `dtype` in `workdir` and run the official package."""
    path = os.path.join(workdir, f"model-{str(dtype).split('.')[-1]}.pth")
    save_pth(weights, path, dtype)
    return run_official(path, tokens)


def assert_identical(a: RunResult, b: RunResult, what: str) -> None:
    """Bit-identical comparison of two runs."""
    for field in ("logits", "att_x", "wkv", "ffn_x"):
        x, y = getattr(a, field), getattr(b, field)
        if x.shape != y.shape or x.tobytes() != y.tobytes():
            diff = np.max(np.abs(x.astype(np.float64) - y)) if x.shape == y.shape else "shape"
            raise AssertionError(f"{what}: {field} differs (max |diff| {diff})")


# --------------------------------------------------------------------------------------
# Independent float64 reference of RWKV_x070.forward_one
# --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Diagnostics:
    """Ranges of internal quantities over all layers, tokens and channels."""

    decay: List[float]          # w = exp(-0.606531*sigmoid(w0 + lora)) [min, max]
    in_context_rate: List[float]  # a
    value_mix: List[float]      # sigmoid(v0 + lora), layers >= 1
    gate: List[float]           # g
    static_decay: List[float]   # exp(-0.606531*sigmoid(w0)) only

    def as_dict(self) -> dict:
        return {k: [float(v[0]), float(v[1])] for k, v in dataclasses.asdict(self).items()}


class _Range:
    def __init__(self) -> None:
        self.lo, self.hi = math.inf, -math.inf

    def add(self, x: np.ndarray) -> None:
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))

    def get(self) -> List[float]:
        return [self.lo, self.hi]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis (biased variance, like torch)."""
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def reference_forward(weights: Dict[str, np.ndarray], s: ModelShape,
                      tokens: Sequence[int]) -> Tuple[RunResult, Diagnostics]:
    """Independent float64 numpy implementation of the official x070 `forward_one`,
    applied token by token from the zero state. Written from the math, not by
    calling the official code: x = ln0(emb[tok]); per layer time mix (token shift,
    LoRAs, in-context-learning-rate state update S = S*diag(w) + S@(-kk)(kk*a)^T + v k^T,
    per-head group norm, bonus, gate) and channel mix (relu^2); logits = head(ln_out(x)).
    Returns float64 results plus internal ranges."""
    L, C, H, N = s.layers, s.embd, s.heads, s.head_size
    W = {k: v.astype(np.float64).reshape(v.shape[-1]) if v.ndim == 3 else v.astype(np.float64)
         for k, v in weights.items()}
    emb = _layer_norm(W["emb.weight"], W["blocks.0.ln0.weight"], W["blocks.0.ln0.bias"], LAYER_NORM_EPS)
    att_x = np.zeros((L, C))
    ffn_x = np.zeros((L, C))
    wkv = np.zeros((L, H, N, N))
    rng_w, rng_a, rng_v, rng_g, rng_w0 = _Range(), _Range(), _Range(), _Range(), _Range()
    logits = []
    for tok in tokens:
        x = emb[int(tok)]
        v_first = None
        for i in range(L):
            p = f"blocks.{i}."
            g = lambda k: W[p + k]  # noqa: E731
            # ---- time mix
            xx = _layer_norm(x, g("ln1.weight"), g("ln1.bias"), LAYER_NORM_EPS)
            d = att_x[i] - xx
            att_x[i] = xx
            xr, xw, xk, xv, xa, xg = (xx + d * g("att." + m) for m in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"))
            r = g("att.receptance.weight") @ xr
            k = g("att.key.weight") @ xk
            v = g("att.value.weight") @ xv
            w_lora = np.tanh(xw @ g("att.w1")) @ g("att.w2")
            a = _sigmoid(g("att.a0") + (xa @ g("att.a1")) @ g("att.a2"))
            gate = _sigmoid(xg @ g("att.g1")) @ g("att.g2")
            kk = (k * g("att.k_k")).reshape(H, N)
            kk = kk / np.maximum(np.linalg.norm(kk, axis=-1, keepdims=True), 1e-12)
            k = k * (1.0 + (a - 1.0) * g("att.k_a"))
            if i == 0:  # layer 0 defines v_first; its v0/v1/v2 are ignored, as officially
                v_first = v
            else:
                mix = _sigmoid(g("att.v0") + (xv @ g("att.v1")) @ g("att.v2"))
                v = v + (v_first - v) * mix
                rng_v.add(mix)
            w = np.exp(-DECAY_SCALE * _sigmoid(g("att.w0") + w_lora))
            rng_w.add(w), rng_a.add(a), rng_g.add(gate)
            rng_w0.add(np.exp(-DECAY_SCALE * _sigmoid(g("att.w0"))))
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
            xx = _layer_norm(x, g("ln2.weight"), g("ln2.bias"), LAYER_NORM_EPS)
            d = ffn_x[i] - xx
            ffn_x[i] = xx
            kf = np.maximum(g("ffn.key.weight") @ (xx + d * g("ffn.x_k")), 0.0) ** 2
            x = x + g("ffn.value.weight") @ kf
        x = _layer_norm(x, W["ln_out.weight"], W["ln_out.bias"], LAYER_NORM_EPS)
        logits.append(W["head.weight"] @ x)
    result = RunResult(logits=np.stack(logits), att_x=att_x, wkv=wkv, ffn_x=ffn_x)
    diag = Diagnostics(decay=rng_w.get(), in_context_rate=rng_a.get(), value_mix=rng_v.get(),
                       gate=rng_g.get(), static_decay=rng_w0.get())
    return result, diag


# --------------------------------------------------------------------------------------
# Comparisons, statistics, sensitivity
# --------------------------------------------------------------------------------------

def relative_error_per_position(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """max_v |ours - ref| / std(ref) for each position (row) of [T, V] logits."""
    ref64 = ref.astype(np.float64)
    return np.abs(ours.astype(np.float64) - ref64).max(axis=-1) / ref64.std(axis=-1)


def logit_std_range(logits: np.ndarray) -> Tuple[float, float]:
    std = logits.astype(np.float64).std(axis=-1)
    return float(std.min()), float(std.max())


def _kind(name: str) -> str:
    """Parameter kind of a tensor name, e.g. 'blocks.1.att.w1' -> 'att.w1'."""
    return name.split(".", 2)[2] if name.startswith("blocks.") else name


LORA_PAIRS = {"w": ("att.w1", "att.w2"), "a": ("att.a1", "att.a2"),
              "v": ("att.v1", "att.v2"), "g": ("att.g1", "att.g2")}


def perturbations(weights: Dict[str, np.ndarray], s: ModelShape, seed: int):
    """Yield (label, perturbed weights, ignored_by_official) for every parameter group:
    each tensor multiplied elementwise by (1 + 0.01*N(0,1)) (random, so scale-invariant
    paths such as emb -> ln0 still register), and each LoRA zeroed per layer."""
    rng = np.random.default_rng(seed + 7)
    for name, w in weights.items():
        pw = dict(weights)
        pw[name] = w * (1.0 + 0.01 * rng.standard_normal(w.shape))
        ignored = name in ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2")
        yield f"{name} x(1+1%noise)", pw, ignored
    for i in range(s.layers):
        for lora, (first, _second) in LORA_PAIRS.items():
            pw = dict(weights)
            pw[f"blocks.{i}.{first}"] = np.zeros_like(weights[f"blocks.{i}.{first}"])
            yield f"blocks.{i} zero {lora}-LoRA", pw, (i == 0 and lora == "v")


def sensitivity_check(weights: Dict[str, np.ndarray], s: ModelShape, tokens: Sequence[int],
                      base: np.ndarray, seed: int, threshold: float = 1e-3):
    """Perturb each parameter group, re-run the float64 reference and measure
    max over positions of max|d logits| / std(logits). Returns (rows, dead) where dead
    lists groups below `threshold` that the official code does not ignore."""
    rows, dead = [], []
    for label, pw, ignored in perturbations(weights, s, seed):
        out, _ = reference_forward(pw, s, tokens)
        rel = float(relative_error_per_position(out.logits, base).max())
        rows.append((label, rel, ignored))
        if rel < threshold and not ignored:
            dead.append((label, rel))
    return rows, dead


def summarize_sensitivity(rows) -> Dict[str, float]:
    """Weakest effect per parameter kind (over layers), for the report."""
    by_kind: Dict[str, float] = {}
    for label, rel, ignored in rows:
        if ignored:
            continue
        name = label.split(" ")[0]
        kind = label.split(" ", 1)[1] if "LoRA" in label else _kind(name)
        by_kind[kind] = min(by_kind.get(kind, math.inf), rel)
    return by_kind


# --------------------------------------------------------------------------------------
# Fixture generation
# --------------------------------------------------------------------------------------

def write_npy(path: str, arr: np.ndarray) -> None:
    np.save(path, np.ascontiguousarray(arr))


def make_case(case: FixtureCase, out_root: str, sensitivity: bool = True) -> dict:
    """Build, save, run and verify one case; returns its summary."""
    t0 = time.time()
    s = case.shape
    out_dir = os.path.join(out_root, case.name)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)

    weights = build_weights(s, case.seed)
    tokens = random_tokens(s.vocab, case.tokens, case.seed)
    files = []
    for fmt in case.formats:
        save_format(weights, fmt, os.path.join(out_dir, FORMAT_FILES[fmt]))
        files.append(FORMAT_FILES[fmt])
    check_saved_files(out_dir, files, weights)

    # Official run on the committed bf16 .pth, and on an f32 .pth of the same values.
    official = run_official(os.path.join(out_dir, FORMAT_FILES["pth"]), tokens)
    with tempfile.TemporaryDirectory() as tmp:
        official_f32 = run_official_weights(weights, tokens, torch.float32, tmp)
    assert_identical(official, official_f32, f"{case.name}: bf16 .pth vs f32 .pth")
    t_official = time.time() - t0

    ref, diag = reference_forward(weights, s, tokens)
    rel_f64 = relative_error_per_position(official.logits, ref.logits)
    state_rel = {f: float(np.abs(getattr(official, f) - getattr(ref, f)).max() / np.abs(getattr(ref, f)).max())
                 for f in ("att_x", "wkv", "ffn_x")}
    std_lo, std_hi = logit_std_range(official.logits)

    outputs = {
        "tokens.npy": tokens.astype(np.int32),
        "logits.npy": official.logits,
        "state_att_x.npy": official.att_x,
        "state_wkv.npy": official.wkv,
        "state_ffn_x.npy": official.ffn_x,
    }
    for name, arr in outputs.items():
        write_npy(os.path.join(out_dir, name), arr)
        files.append(name)

    summary = {
        "case": case.name,
        "logit_std": [std_lo, std_hi],
        "logit_absmax": float(np.abs(official.logits).max()),
        "diagnostics": diag.as_dict(),
        "official_fp32_vs_f64_rel": float(rel_f64.max()),
        "official_fp32_vs_f64_rel_median": float(np.median(rel_f64)),
        "state_fp32_vs_f64_rel": state_rel,
    }
    if sensitivity:
        rows, dead = sensitivity_check(weights, s, tokens, ref.logits, case.seed)
        summary["sensitivity_weakest_by_kind"] = summarize_sensitivity(rows)
        summary["sensitivity_ignored"] = [(label, rel) for label, rel, ign in rows if ign]
        summary["dead_paths"] = dead
    meta = {
        "version": VERSION_TAG,
        "layers": s.layers, "embd": s.embd, "heads": s.heads, "head_size": s.head_size,
        "ffn": s.ffn, "vocab": s.vocab,
        "lora": {"w": s.lora_w, "a": s.lora_a, "v": s.lora_v, "g": s.lora_g},
        "tokens": case.tokens, "seed": case.seed,
        "files": files + ["meta.json"],
        "rwkv_package": RWKV_PACKAGE_VERSION, "torch": torch.__version__,
        "strategy": "cpu fp32", "mode": "forward_one per token from zero state",
        "logit_std_min": std_lo, "logit_std_max": std_hi,
        "official_fp32_vs_f64_rel": float(rel_f64.max()),
    }
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    summary["seconds"] = time.time() - t0
    summary["seconds_official"] = t_official
    summary["bytes"] = sum(os.path.getsize(os.path.join(out_dir, n)) for n in os.listdir(out_dir))
    return summary


def load_saved(path: str) -> Dict[str, torch.Tensor]:
    """Read back a saved model file (.pth or .safetensors) as torch tensors."""
    if path.endswith(".pth"):
        return torch.load(path, map_location="cpu", mmap=True)
    from safetensors.torch import load_file
    return load_file(path)


def check_saved_files(out_dir: str, files: Sequence[str], weights: Dict[str, np.ndarray]) -> None:
    """Every saved file holds exactly the generated names, shapes and values."""
    for name in files:
        loaded = load_saved(os.path.join(out_dir, name))
        if list(loaded) != list(weights) and not name.endswith(".safetensors"):
            raise AssertionError(f"{name}: key order differs")
        if set(loaded) != set(weights):
            raise AssertionError(f"{name}: names differ")
        for k, v in weights.items():
            t = loaded[k]
            if tuple(t.shape) != v.shape or not torch.equal(t.to(torch.float32), torch.from_numpy(v)):
                raise AssertionError(f"{name}: {k} differs after save/load")


def print_summary(summary: dict) -> None:
    d = summary["diagnostics"]
    print(f"== {summary['case']}: {summary['bytes'] / 1e6:.2f} MB, {summary['seconds']:.1f} s "
          f"(official runs {summary['seconds_official']:.1f} s)")
    print(f"   logit std per position: {summary['logit_std'][0]:.3f} .. {summary['logit_std'][1]:.3f}"
          f"   (|logit| max {summary['logit_absmax']:.2f})")
    for k, (lo, hi) in d.items():
        print(f"   {k:16s} {lo:.7g} .. {hi:.7g}")
    print(f"   official fp32 vs float64 reference: max |diff|/std = {summary['official_fp32_vs_f64_rel']:.3g}"
          f" (median over positions {summary['official_fp32_vs_f64_rel_median']:.3g});"
          f" final state rel {', '.join(f'{k} {v:.2g}' for k, v in summary['state_fp32_vs_f64_rel'].items())}")
    if "sensitivity_weakest_by_kind" in summary:
        weakest = sorted(summary["sensitivity_weakest_by_kind"].items(), key=lambda kv: kv[1])
        print("   sensitivity (weakest layer per kind, max|dlogit|/std):")
        for i in range(0, len(weakest), 4):
            print("     " + "  ".join(f"{k}={v:.2g}" for k, v in weakest[i:i + 4]))
        for label, rel in summary["sensitivity_ignored"]:
            print(f"     ignored by the official code (as expected): {label}: {rel:.2g}")
        if summary["dead_paths"]:
            print(f"   DEAD PATHS: {summary['dead_paths']}")
        else:
            print("   no dead path (all groups > 1e-3)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=FIXTURE_ROOT, help="output root (default tests/fixtures/v7)")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated cases: " + ",".join(CASES))
    ap.add_argument("--no-sensitivity", action="store_true", help="skip the sensitivity check")
    args = ap.parse_args(argv)
    configure_torch()
    t0 = time.time()
    failed = False
    total = 0
    for name in args.cases.split(","):
        summary = make_case(CASES[name], args.out, sensitivity=not args.no_sensitivity)
        print_summary(summary)
        total += summary["bytes"]
        if summary.get("dead_paths"):
            failed = True
        if summary["official_fp32_vs_f64_rel"] > 1e-4:
            print("   WARNING: official fp32 and float64 reference disagree by more than 1e-4")
            failed = True
    print(f"total {total / 1e6:.2f} MB in {args.out}, {time.time() - t0:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
