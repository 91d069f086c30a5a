"""Parts shared by every RWKV version: exactly representable random weights, saving and reading
back model files, run results, statistics and the sensitivity check.

Nothing here imports the official `rwkv` package (see `official.py` for why).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Sequence, Tuple

import numpy as np
import torch

RWKV_PACKAGE_VERSION = "0.8.32"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE_ROOT = os.path.join(REPO_ROOT, "tests", "fixtures")

LAYER_NORM_EPS = 1e-5
GROUP_NORM_EPS = 64e-5   # the official package's ln_x eps (1e-5 * head_size_divisor**2 in training)

# Representability limits that make a value exact in f32, f16 and bf16 at once.
F16_MIN_NORMAL = 2.0 ** -14
VALUE_LIMIT = 60000.0

Weights = Dict[str, np.ndarray]


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


def finalize_weights(raw: Mapping[str, np.ndarray], shapes: Mapping[str, Tuple[int, ...]]) -> Weights:
    """Check names and shapes against the official layout, round every tensor so f16/bf16/f32
    storage is lossless (asserted), and return them in the official key order of `shapes`."""
    if set(shapes) != set(raw):
        raise AssertionError(f"name mismatch: {sorted(set(shapes) ^ set(raw))}")
    weights: Weights = {}
    for name in shapes:
        w = round_lossless(raw[name])
        if w.shape != tuple(shapes[name]):
            raise AssertionError(f"{name}: shape {w.shape} != {shapes[name]}")
        assert_lossless(name, w)
        weights[name] = w
    return weights


# --------------------------------------------------------------------------------------
# Random helpers
# --------------------------------------------------------------------------------------

def uniform(rng: np.random.Generator, lo: float, hi: float, shape) -> np.ndarray:
    return rng.uniform(lo, hi, size=shape)


def normal(rng: np.random.Generator, std: float, shape) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)  # float32: fast for big vocabularies


def spread(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    """n values covering [lo, hi] evenly (stratified jitter), in random channel order."""
    edges = np.linspace(lo, hi, n + 1)
    vals = edges[:-1] + rng.uniform(0.0, 1.0, size=n) * (edges[1:] - edges[:-1])
    vals[0], vals[-1] = lo, hi  # make sure both ends are present
    return rng.permutation(vals)


def vec3(x: np.ndarray) -> np.ndarray:
    """A per-channel parameter in the official [1, 1, C] layout."""
    return x.reshape(1, 1, -1)


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
# Saving and reading back
# --------------------------------------------------------------------------------------

FORMAT_FILES = {
    "pth": "model.pth",                    # bf16, torch.save(dict) like the official release
    "f16": "model-f16.safetensors",
    "bf16": "model-bf16.safetensors",
    "f32": "model-f32.safetensors",
}
TORCH_DTYPES = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}


def to_torch(weights: Weights, dtype: torch.dtype) -> Dict[str, torch.Tensor]:
    """Convert (exactly, see round_lossless) to contiguous torch tensors of `dtype`."""
    out = {}
    for k, v in weights.items():
        t = torch.from_numpy(v).to(dtype).contiguous()
        if not torch.equal(t.to(torch.float32), torch.from_numpy(v)):
            raise AssertionError(f"{k}: conversion to {dtype} is not exact")
        out[k] = t
    return out


def save_pth(weights: Weights, path: str, dtype: torch.dtype = torch.bfloat16) -> None:
    """`torch.save` of a plain dict, like the official .pth releases (bf16 by default)."""
    torch.save(to_torch(weights, dtype), path)


def save_safetensors(weights: Weights, path: str, dtype: torch.dtype) -> None:
    """safetensors file with the same names and shapes as the .pth."""
    from safetensors.torch import save_file
    save_file(to_torch(weights, dtype), path, metadata={"format": "pt"})
    os.chmod(path, 0o644)  # safetensors creates the file 0600


def save_format(weights: Weights, fmt: str, path: str) -> None:
    """Save in one of FORMAT_FILES' formats ('pth' means bf16 .pth)."""
    if fmt == "pth":
        save_pth(weights, path, torch.bfloat16)
    elif fmt in TORCH_DTYPES:
        save_safetensors(weights, path, TORCH_DTYPES[fmt])
    else:
        raise ValueError(f"unknown format {fmt!r}")


def load_saved(path: str) -> Dict[str, torch.Tensor]:
    """Read back a saved model file (.pth or .safetensors) as torch tensors."""
    if path.endswith(".pth"):
        return torch.load(path, map_location="cpu", mmap=True)
    from safetensors.torch import load_file
    return load_file(path)


def check_saved_files(out_dir: str, files: Sequence[str], weights: Weights) -> None:
    """Every saved file holds exactly the generated names, shapes and values (and a .pth
    keeps the official key order)."""
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


def write_npy(path: str, arr: np.ndarray) -> None:
    np.save(path, np.ascontiguousarray(arr))


def configure_torch(threads: int = 1) -> None:
    """Single-threaded by default (deterministic, and fastest for these tiny matmuls) and
    without the TorchScript profiling executor, which re-specialises the graph on the first calls."""
    torch.set_num_threads(threads)
    torch._C._jit_set_profiling_executor(False)
    torch._C._jit_set_profiling_mode(False)


# --------------------------------------------------------------------------------------
# Runs and cases
# --------------------------------------------------------------------------------------

@dataclasses.dataclass
class RunResult:
    """Logits after each token and the final recurrent state (float32 from the official
    package, float64 from a reference). The wkv layout depends on the version:
    [L, H, N, N] for RWKV-5/6 ([head, key, value]) and RWKV-7 ([head, value, key]);
    [L, 3, C] = (aa, bb, pp) for RWKV-4."""

    logits: np.ndarray      # [T, V]
    att_x: np.ndarray       # [L, C]
    wkv: np.ndarray
    ffn_x: np.ndarray       # [L, C]

    FIELDS = ("logits", "att_x", "wkv", "ffn_x")


def assert_identical(a: RunResult, b: RunResult, what: str) -> None:
    """Bit-identical comparison of two runs."""
    for field in RunResult.FIELDS:
        x, y = getattr(a, field), getattr(b, field)
        if x.shape != y.shape or x.tobytes() != y.tobytes():
            diff = np.max(np.abs(x.astype(np.float64) - y)) if x.shape == y.shape else "shape"
            raise AssertionError(f"{what}: {field} differs (max |diff| {diff})")


@dataclasses.dataclass(frozen=True)
class FixtureCase:
    """One committed fixture: an architecture (version), a shape, a seed, a token count, the
    stored formats, `growth` (> 0 makes the residual stream grow over depth, see legacy.py)
    and the sensitivity criterion."""

    name: str
    arch: object            # an architecture object (v7.ARCH, v4.ARCH, v5.ARCHS[...], v6.ARCH)
    shape: object           # that architecture's shape dataclass
    tokens: int
    seed: int
    formats: Tuple[str, ...]  # subset of FORMAT_FILES keys; "pth" is required
    growth: float = 0.0
    # Sensitivity criterion: every parameter group (each tensor of each layer) must move the
    # logits by >= 1e-3 x std, or (per_kind) for each kind of tensor its strongest layer must:
    # in a deep model single layers' small parameters are diluted, but a dead code path would
    # still show up in every layer.
    sensitivity_per_kind: bool = False
    # Keep the logits of every `logit_step`-th position only (positions step-1, 2·step-1, …):
    # long prompts would otherwise commit megabytes. Such cases skip the sensitivity check,
    # which the short cases of the same architecture make.
    logit_step: int = 1

    @property
    def key(self) -> str:
        """Directory below the fixture root, e.g. 'v5.1/A'."""
        return f"{self.arch.dirname}/{self.name}"


# --------------------------------------------------------------------------------------
# Numerics shared by the float64 references
# --------------------------------------------------------------------------------------

class Range:
    """Running [min, max] of the values passed to add()."""

    def __init__(self) -> None:
        self.lo, self.hi = math.inf, -math.inf

    def add(self, x: np.ndarray) -> None:
        self.lo, self.hi = min(self.lo, float(np.min(x))), max(self.hi, float(np.max(x)))

    def get(self) -> List[float]:
        return [self.lo, self.hi]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def silu(x: np.ndarray) -> np.ndarray:
    return x * sigmoid(x)


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = LAYER_NORM_EPS) -> np.ndarray:
    """LayerNorm over the last axis (biased variance, like torch)."""
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def relative_error_per_position(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """max_v |ours - ref| / std(ref) for each position (row) of [T, V] logits."""
    ref64 = ref.astype(np.float64)
    return np.abs(ours.astype(np.float64) - ref64).max(axis=-1) / ref64.std(axis=-1)


def logit_std_range(logits: np.ndarray) -> Tuple[float, float]:
    std = logits.astype(np.float64).std(axis=-1)
    return float(std.min()), float(std.max())


def state_relative_errors(ours: RunResult, ref: RunResult) -> Dict[str, float]:
    """max |ours - ref| / max |ref| for each final-state array."""
    out = {}
    for f in ("att_x", "wkv", "ffn_x"):
        r = getattr(ref, f).astype(np.float64)
        out[f] = float(np.abs(getattr(ours, f) - r).max() / np.abs(r).max())
    return out


# --------------------------------------------------------------------------------------
# Sensitivity check
# --------------------------------------------------------------------------------------

# A perturbation: (label, {tensor name: replacement}, ignored_by_official_code).
Perturbation = Tuple[str, Dict[str, np.ndarray], bool]


def noise_perturbations(weights: Weights, seed: int,
                        ignored: Callable[[str], bool] = lambda name: False) -> Iterator[Perturbation]:
    """Each tensor multiplied elementwise by 1 +- 1% (random signs: a random direction, so that
    scale-invariant paths such as emb -> ln0 still register, with the full 1% on every element,
    so that tensors of only a few elements, e.g. per-head decays, are not perturbed by chance
    far less)."""
    rng = np.random.default_rng(seed + 7)
    for name, w in weights.items():
        signs = rng.choice(np.array([-1.0, 1.0]), size=w.shape)
        yield f"{name} x(1+-1%)", {name: w * (1.0 + 0.01 * signs)}, ignored(name)


def zero_perturbation(weights: Weights, label: str, name: str, ignored: bool = False) -> Perturbation:
    """Replace one tensor (e.g. the first matrix of a LoRA) by zeros."""
    return label, {name: np.zeros_like(weights[name])}, ignored


def sensitivity_check(perturbations: Iterable[Perturbation],
                      forward_many: Callable[[List[Dict[str, np.ndarray]]], List[np.ndarray]],
                      base: np.ndarray, threshold: float = 1e-3, batch: int = 1):
    """Apply each perturbation, re-run the float64 reference (`forward_many` maps a list of
    change sets to a list of [T, V] logits, so references can batch them) and measure
    max over positions of max|d logits| / std(logits). Returns (rows, dead) where dead lists
    groups below `threshold` that the official code does not ignore."""
    rows, dead = [], []
    pending: List[Perturbation] = []

    def flush() -> None:
        outs = forward_many([changes for _, changes, _ in pending])
        for (label, _, ignored), logits in zip(pending, outs):
            rel = float(relative_error_per_position(logits, base).max())
            rows.append((label, rel, ignored))
            if rel < threshold and not ignored:
                dead.append((label, rel))
        pending.clear()

    for p in perturbations:
        pending.append(p)
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    return rows, dead


def _kind(name: str) -> str:
    """Parameter kind of a tensor name, e.g. 'blocks.1.att.w1' -> 'att.w1'."""
    return name.split(".", 2)[2] if name.startswith("blocks.") else name


def summarize_sensitivity(rows) -> Dict[str, Tuple[float, float]]:
    """Weakest and strongest effect per parameter kind (over layers), for the report. Labels
    are either 'NAME x(1+-1%)' or 'blocks.I <what>' (whole-group changes such as a zeroed LoRA)."""
    by_kind: Dict[str, Tuple[float, float]] = {}
    for label, rel, ignored in rows:
        if ignored:
            continue
        name, rest = label.split(" ", 1)
        kind = _kind(name) if rest.startswith("x(") else rest
        lo, hi = by_kind.get(kind, (math.inf, -math.inf))
        by_kind[kind] = (min(lo, rel), max(hi, rel))
    return by_kind


# --------------------------------------------------------------------------------------
# The model skeleton every version shares: emb, blocks.i.{ln1, ln2, ln0 (block 0)}, ln_out, head
# --------------------------------------------------------------------------------------

LN_KEYS = ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "ln0.weight", "ln0.bias")


def block_norms(rng: np.random.Generator, C: int, layer: int) -> Dict[str, np.ndarray]:
    """ln1/ln2 (and ln0 in block 0) of one block: weights in [0.7, 1.3], biases in [-0.2, 0.2]."""
    t: Dict[str, np.ndarray] = {}
    for ln in ("ln1", "ln2") + (("ln0",) if layer == 0 else ()):
        t[ln + ".weight"] = uniform(rng, 0.7, 1.3, C)
        t[ln + ".bias"] = uniform(rng, -0.2, 0.2, C)
    return t


def assemble_weights(rng: np.random.Generator, embd: int, vocab: int, layers: int,
                     block_fn: Callable[[np.random.Generator, int], Dict[str, np.ndarray]],
                     shapes: Mapping[str, Tuple[int, ...]]) -> Weights:
    """Draw emb (N(0,1)), each block (block_norms, then `block_fn(rng, layer)`: the version's
    att./ffn. tensors keyed below `blocks.{layer}.`), ln_out and head (N(0, 9/C)), in that
    order; then finalize_weights (official order, lossless rounding)."""
    raw: Dict[str, np.ndarray] = {"emb.weight": normal(rng, 1.0, (vocab, embd))}
    for i in range(layers):
        block = block_norms(rng, embd, i)
        block.update(block_fn(rng, i))
        for k, v in block.items():
            raw[f"blocks.{i}.{k}"] = v
    raw["ln_out.weight"] = uniform(rng, 0.7, 1.3, embd)
    raw["ln_out.bias"] = uniform(rng, -0.2, 0.2, embd)
    raw["head.weight"] = normal(rng, 3.0 / math.sqrt(embd), (vocab, embd))
    return finalize_weights(raw, shapes)


def official_shapes(embd: int, vocab: int, layers: int, block_order: Sequence[str],
                    block_shapes: Mapping[str, Tuple[int, ...]]) -> Dict[str, Tuple[int, ...]]:
    """Official name -> shape in state-dict order: emb, then per block `block_order`
    (ln0.* only in block 0; LayerNorm shapes added here), then ln_out and head."""
    per_block = {k: (embd,) for k in LN_KEYS}
    per_block.update(block_shapes)
    shapes: Dict[str, Tuple[int, ...]] = {"emb.weight": (vocab, embd)}
    for i in range(layers):
        for k in block_order:
            if k.startswith("ln0.") and i != 0:
                continue
            shapes[f"blocks.{i}.{k}"] = tuple(per_block[k])
    shapes["ln_out.weight"] = (embd,)
    shapes["ln_out.bias"] = (embd,)
    shapes["head.weight"] = (vocab, embd)
    return shapes


class Arch:
    """Interface of one RWKV version (subclasses live in v7.py, v4.py, v5.py, v6.py).

    Attributes: `version` (meta.json's version string and what the official package must
    detect), `dirname` (directory below tests/fixtures), `family` ('v7' or 'legacy', see
    official.py), `sensitivity_batch` (perturbations per reference call)."""

    version: str
    dirname: str
    family: str
    sensitivity_batch: int = 1

    def build_weights(self, shape, seed: int, growth: float = 0.0) -> Weights:
        """Seeded random weights: official names, shapes and order, lossless in f16/bf16/f32."""
        raise NotImplementedError

    def reference(self, weights: Weights, shape, tokens: Sequence[int]) -> Tuple[RunResult, Dict[str, List[float]]]:
        """Float64 forward, token by token from the zero state: (results, {quantity: [min, max]})."""
        raise NotImplementedError

    def perturbations(self, weights: Weights, shape, seed: int) -> Iterator[Perturbation]:
        """Every parameter group's perturbation for the sensitivity check."""
        raise NotImplementedError

    def forward_many(self, weights: Weights, shape, tokens: Sequence[int],
                     changes: List[Dict[str, np.ndarray]]) -> List[np.ndarray]:
        """Reference logits for each change set applied to `weights`."""
        return [self.reference({**weights, **c}, shape, tokens)[0].logits for c in changes]

    def meta_shape(self, shape) -> dict:
        """meta.json's shape fields (layers, embd, heads, head_size, ffn, vocab, lora...)."""
        raise NotImplementedError
