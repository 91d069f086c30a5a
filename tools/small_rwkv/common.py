"""What every version shares: the shape, the corpus, the model container and the training loop.

The model container (`OfficialModel`) keeps every parameter under its official name and in its
official shape, in the official state-dict order; the names and shapes come from the fixture
tooling (tools/rwkv_fixtures: `LegacyArch.expected_shapes`, `v7.expected_shapes`), so that what
we train is exactly what the official package and our engine load. Subclasses supply the initial
values and the time-mix / channel-mix math of their version, written from the official
single-token functions (the float64 references in tools/rwkv_fixtures are the spec) and
evaluated over a whole sequence with a loop over time where the math is recurrent.
"""

from __future__ import annotations

import glob
import math
import os
import re
import time
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LAYERS, EMBD, HEAD_SIZE, FFN, VOCAB = 2, 64, 32, 256, 256
HEADS = EMBD // HEAD_SIZE
V6_LORA = {"mix": 8, "decay": 16}                 # time_maa_w1/w2 and time_decay_w1/w2 ranks
V7_LORA = {"w": 16, "a": 16, "v": 8, "g": 16}     # w1/w2, a1/a2, v1/v2, g1/g2 ranks
VERSIONS = ("v4", "v5.0", "v5.1", "v5.2", "v6", "v7")
LAYER_NORM_EPS = 1e-5
GROUP_NORM_EPS = 64e-5
HELDOUT_PLAY = "tempest_gut.txt"

# LoRA factors (matrices that are not `*.weight`): RWKV-6 ddlerp/decay LoRAs, RWKV-7 w/a/v/g LoRAs.
_LORA = re.compile(r"\.att\.(time_maa_w[12]|time_decay_w[12]|[wavg][12])$")


def is_matrix(name: str, shape: Sequence[int]) -> bool:
    """A weight matrix: every 2-D `*.weight` but the embedding, and every LoRA factor (including
    RWKV-6's 3-D time_maa_w2, five stacked [Dm, C] factors). Per-channel parameters stored as
    [H, N] (time_decay/time_faaaa of 5.2, r_k of 7) are not matrices. Matrices get weight decay
    while training, and are what the f16 check rounds."""
    if _LORA.search(name):
        return True
    return name.endswith(".weight") and len(shape) == 2 and name != "emb.weight"


# --------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------

def load_corpus(folder: str) -> np.ndarray:
    """The training bytes: every Gutenberg `*_gut.txt` play but The Tempest (held out whole;
    the evaluation text assets/demo/heldout.txt is its last 4096 bytes), CRLF -> LF, as in
    tools/train_demo.py."""
    files = sorted(glob.glob(os.path.join(folder, "*_gut.txt")))
    if not files:
        raise SystemExit(f"no *_gut.txt files under {folder}")
    if HELDOUT_PLAY not in [os.path.basename(f) for f in files]:
        raise SystemExit(f"{HELDOUT_PLAY} (the held-out play) is missing from {folder}")
    train = bytearray()
    for path in files:
        if os.path.basename(path) != HELDOUT_PLAY:
            train += open(path, "rb").read().replace(b"\r\n", b"\n")
    return np.frombuffer(bytes(train), dtype=np.uint8)


# --------------------------------------------------------------------------------------
# Initialisation helpers (RWKV-LM-style: per-channel spreads, zero-initialised projections
# into the residual)
# --------------------------------------------------------------------------------------

def ramp(n: int) -> torch.Tensor:
    """0, 1/n, ..., (n-1)/n."""
    return torch.arange(n, dtype=torch.float32) / n


def zigzag(n: int) -> torch.Tensor:
    """-1, 0, 1, -1, 0, 1, ... (breaks the monotone spreads a little)."""
    return ((torch.arange(n) + 1) % 3 - 1).to(torch.float32)


def orthogonal(rows: int, cols: int, gain: float, gen: torch.Generator) -> torch.Tensor:
    w = torch.empty(rows, cols)
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(0, 2 ** 31, (1,), generator=gen)))
        nn.init.orthogonal_(w, gain=gain)
    return w


def small_normal(shape: Sequence[int], scale: float, gen: torch.Generator) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=gen)


def vec3(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(1, 1, -1)


def layer_norms(layer: int) -> Dict[str, torch.Tensor]:
    t = {f"blocks.{layer}.{n}.weight": torch.ones(EMBD) for n in ("ln1", "ln2")}
    t.update({f"blocks.{layer}.{n}.bias": torch.zeros(EMBD) for n in ("ln1", "ln2")})
    if layer == 0:
        t.update({"blocks.0.ln0.weight": torch.ones(EMBD), "blocks.0.ln0.bias": torch.zeros(EMBD)})
    return t


def outer_tensors(gen: torch.Generator) -> Dict[str, torch.Tensor]:
    """emb (tiny: ln0 normalises it), ln_out, head (orthogonal, gain 0.5)."""
    return {"emb.weight": torch.empty(VOCAB, EMBD).uniform_(-1e-4, 1e-4, generator=gen),
            "ln_out.weight": torch.ones(EMBD), "ln_out.bias": torch.zeros(EMBD),
            "head.weight": orthogonal(VOCAB, EMBD, 0.5, gen)}


# --------------------------------------------------------------------------------------
# The model container
# --------------------------------------------------------------------------------------

def token_shift(x: torch.Tensor) -> torch.Tensor:
    """The previous position's value ([B, T, C]), zero before the first (the zero state)."""
    return F.pad(x, (0, 0, 1, -1))


class OfficialModel(nn.Module):
    """Parameters under official names/shapes/order; `time_mix` and `channel_mix` per version.

    Attributes set by subclasses: `version` (directory name: 'v4', ..., 'v7'), `detected`
    (what the package must report: '4', '5.0', '5.1', '5.2', '6.0' or 'x070'), `family`
    ('legacy' or 'v7', see tools/rwkv_fixtures/official.py), `heads` (0 for RWKV-4)."""

    version: str
    detected: str
    family: str
    heads: int

    def __init__(self, shapes: Dict[str, Tuple[int, ...]], tensors: Dict[str, torch.Tensor]):
        super().__init__()
        if set(shapes) != set(tensors):
            raise AssertionError(f"tensor names differ from the official ones: "
                                 f"missing {sorted(set(shapes) - set(tensors))}, "
                                 f"extra {sorted(set(tensors) - set(shapes))}")
        for name, shape in shapes.items():
            if tuple(tensors[name].shape) != tuple(shape):
                raise AssertionError(f"{name}: shape {tuple(tensors[name].shape)}, official {shape}")
        self.names = list(shapes)
        self.params = nn.ParameterDict({n.replace(".", "__"): nn.Parameter(tensors[n].float().clone())
                                        for n in self.names})

    def initial_tensors(self, seed: int) -> Dict[str, torch.Tensor]:
        """The outer tensors, then each layer's norms and `block_init`, from one generator."""
        gen = fresh_generator(seed)
        tensors = outer_tensors(gen)
        for i in range(LAYERS):
            tensors.update(layer_norms(i))
            tensors.update({f"blocks.{i}.{k}": v for k, v in self.block_init(i, gen).items()})
        return tensors

    def p(self, name: str) -> torch.Tensor:
        return self.params[name.replace(".", "__")]

    def load_official(self, state: Dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n in self.names:
                self.p(n).copy_(state[n].float())

    def official_state_dict(self) -> Dict[str, torch.Tensor]:
        """The weights under their official names, in official order, fp32."""
        return {n: self.p(n).detach().float().contiguous().clone() for n in self.names}

    def ln(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (EMBD,), self.p(name + ".weight"), self.p(name + ".bias"), LAYER_NORM_EPS)

    def linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """x @ W^T for an official [out, in] `*.weight`."""
        return x @ self.p(name).t()

    def time_mix(self, i: int, xx: torch.Tensor, sx: torch.Tensor, ctx: dict) -> torch.Tensor:
        raise NotImplementedError

    def channel_mix(self, i: int, xx: torch.Tensor, sx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def meta_shape(self) -> dict:
        raise NotImplementedError

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, V] after each token of [B, T] tokens, from the zero state."""
        x = self.ln(self.p("emb.weight")[tokens], "blocks.0.ln0")
        ctx: dict = {}
        for i in range(LAYERS):
            xx = self.ln(x, f"blocks.{i}.ln1")
            x = x + self.time_mix(i, xx, token_shift(xx), ctx)
            xx = self.ln(x, f"blocks.{i}.ln2")
            x = x + self.channel_mix(i, xx, token_shift(xx))
        return self.linear(self.ln(x, "ln_out"), "head.weight")


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------

def mean_loss(model: nn.Module, tokens: torch.Tensor) -> float:
    """Cross-entropy (nats/byte) of predicting tokens[1:] from the prefixes ([1, T])."""
    with torch.no_grad():
        logits = model(tokens[:, :-1])
        return F.cross_entropy(logits[0], tokens[0, 1:]).item()


def scheduled_lr(lr: float, step: int, frac: float) -> float:
    """Linear warm-up over 50 steps, then a cosine from lr down to lr/10 as `frac` of the time
    budget goes by."""
    return lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def random_windows(rng: np.random.Generator, data: np.ndarray, batch: int, ctx: int) -> torch.Tensor:
    """`batch` windows of ctx + 1 tokens from random places in `data`, [batch, ctx + 1]."""
    starts = rng.integers(0, len(data) - ctx - 1, size=batch)
    return torch.tensor(np.stack([data[s:s + ctx + 1] for s in starts]).astype(np.int64))


def optimizer_step(model: nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """Backpropagates `loss` and takes one step, the gradients clipped at norm 1."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def train(model: OfficialModel, data: np.ndarray, heldout: np.ndarray, minutes: float, batch: int,
          ctx: int, lr: float, seed: int, log: Callable[[str], None] = print) -> dict:
    """Adam(W) on random windows of `data` for `minutes` of wall time: linear warm-up over 50
    steps, then a cosine from lr down to lr/10 over the time budget; weight decay 0.1 on the
    matrices only; gradient clipping at 1. Returns the training summary."""
    rng = np.random.default_rng(seed)
    decay, no_decay = [], []
    for n in model.names:
        (decay if is_matrix(n, model.p(n).shape) else no_decay).append(model.p(n))
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.99), eps=1e-8)
    held = torch.tensor(heldout.astype(np.int64))[None]
    start, step, budget, ema = time.time(), 0, minutes * 60.0, None
    curve: List[Tuple[int, float, float, float]] = []
    while time.time() - start < budget:
        frac = min(1.0, (time.time() - start) / budget)
        for group in opt.param_groups:
            group["lr"] = scheduled_lr(lr, step, frac)
        chunk = random_windows(rng, data, batch, ctx)
        logits = model(chunk[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), chunk[:, 1:].reshape(-1))
        if not torch.isfinite(loss):
            raise RuntimeError(f"{model.version}: loss is {loss.item()} at step {step}")
        optimizer_step(model, opt, loss)
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        step += 1
        if step % 100 == 0:
            hl = mean_loss(model, held)
            elapsed = time.time() - start
            curve.append((step, round(elapsed, 1), round(ema, 4), round(hl, 4)))
            log(f"{model.version} step {step} {elapsed:.0f}s train {ema:.3f} heldout {hl:.3f} nats/byte")
    return {"steps": step, "minutes": round((time.time() - start) / 60, 2), "batch": batch, "ctx": ctx,
            "tokens": step * batch * ctx, "lr": lr, "schedule": "warm-up 50 steps, cosine to lr/10 over the budget",
            "optimizer": "AdamW betas (0.9, 0.99), weight decay 0.1 on matrices, clip 1.0", "seed": seed,
            "final_train_loss_ema": round(ema or 0.0, 4),
            "torch_heldout_loss": round(mean_loss(model, held), 4),
            "curve_step_seconds_train_heldout": curve}


def heldout_loss(logits: np.ndarray, tokens: np.ndarray) -> float:
    """Mean cross-entropy (nats/byte) of the logits after tokens[t] predicting tokens[t+1]."""
    x = logits[:-1].astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    lsm = x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))
    return -float(lsm[np.arange(len(tokens) - 1), tokens[1:]].mean())


def rel_error(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """max_v |ours - ref| / std(ref row) per position."""
    ref64 = ref.astype(np.float64)
    return np.abs(ours.astype(np.float64) - ref64).max(axis=-1) / ref64.std(axis=-1)


def fresh_generator(seed: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen

