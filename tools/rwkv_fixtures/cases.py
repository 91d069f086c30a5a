"""The committed fixture cases, keyed by their directory below tests/fixtures ('v7/tiny', 'v4/A', ...).

* v7/tiny, v7/small: RWKV-7 (unchanged since they were first committed; re-running reproduces
  them byte for byte).
* v{4,5.0,5.1,5.2,6}/A: L2, C32, F128, V128 (heads 2 x 16; RWKV-6 LoRA ranks mix 8, decay 16),
  64 tokens, in every format (bf16 .pth, f16/bf16/f32 safetensors).
* v{4,5.0,5.1,5.2,6}/B: L3, C64, F224 (deliberately not 4*C), V256 (heads 2 x 32; RWKV-6 ranks
  16 and 32), 64 tokens, bf16 .pth only.
* v6/deep: RWKV-6 with L24, C32, F128, V128 (2 x 16, ranks 8 and 16), 64 tokens, bf16 .pth only,
  with residual growth: the residual stream reaches magnitudes of 10-100+ by the last layer, as
  in trained models (the precision check).
* v{5.2,6,7}/H1 and v{5.0,5.1,5.2,6,7}/H3: one head of 64 channels and three heads of 16, L2,
  F160, V128, 64 tokens, bf16 .pth only (the package cannot load a one-head RWKV-5.0 or 5.1).
* v{4,5.0,5.1,5.2,6,7}/long: L2, C64 (heads 2 x 32), F192, V128, a 4500-token prompt; the logits
  of every 10th position are kept (and the final state), bf16 .pth only.
"""

from __future__ import annotations

from typing import Dict, Tuple

from . import v4, v5, v6, v7
from .common import FixtureCase
from .legacy import LegacyShape

ALL_FORMATS = ("pth", "f16", "bf16", "f32")

# Residual growth of the deep case (see legacy.channel_mix).
DEEP_GROWTH = 6.0


LEGACY_ARCHS = [v4.ARCH, v5.ARCHS["5.0"], v5.ARCHS["5.1"], v5.ARCHS["5.2"], v6.ARCH]


def _legacy_shape(arch, layers: int, embd: int, ffn: int, vocab: int, head_size: int,
                  lora: Tuple[int, int]) -> LegacyShape:
    """A shape for `arch`: RWKV-4 has no heads, and only RWKV-6 has the LoRA ranks (mix, decay)."""
    heads, v6_lora = arch is not v4.ARCH, arch is v6.ARCH
    return LegacyShape(layers=layers, embd=embd, ffn=ffn, vocab=vocab, head_size=head_size if heads else 0,
                       lora_mix=lora[0] if v6_lora else 0, lora_decay=lora[1] if v6_lora else 0)


def _legacy_cases() -> Dict[str, FixtureCase]:
    cases: Dict[str, FixtureCase] = {}
    for n, arch in enumerate(LEGACY_ARCHS):
        a = _legacy_shape(arch, layers=2, embd=32, ffn=128, vocab=128, head_size=16, lora=(8, 16))
        b = _legacy_shape(arch, layers=3, embd=64, ffn=224, vocab=256, head_size=32, lora=(16, 32))
        for case in (FixtureCase("A", arch, a, tokens=64, seed=20250801 + 10 * n, formats=ALL_FORMATS),
                     FixtureCase("B", arch, b, tokens=64, seed=20250802 + 10 * n, formats=("pth",))):
            cases[case.key] = case
    deep = FixtureCase("deep", v6.ARCH,
                       LegacyShape(layers=24, embd=32, ffn=128, vocab=128, head_size=16, lora_mix=8, lora_decay=16),
                       tokens=64, seed=20250899, formats=("pth",), growth=DEEP_GROWTH,
                       sensitivity_per_kind=True)
    cases[deep.key] = deep
    return cases


# Heads: one (the package takes the head count from the first dimension of time_decay,
# time_faaaa or r_k, which is then 1) and three (not a power of two), for every version with heads.
def _head_count_cases() -> Dict[str, FixtureCase]:
    cases: Dict[str, FixtureCase] = {}
    for n, arch in enumerate(LEGACY_ARCHS[1:]):
        for name, embd, head_size in (("H1", 64, 64), ("H3", 48, 16)):
            # RWKV-5.0/5.1 keep one decay per head, [H]: the package squeezes a one-head [1] to
            # a scalar and then fails while printing its shape, so it cannot run one head.
            if name == "H1" and arch.version in ("5.0", "5.1"):
                continue
            shape = _legacy_shape(arch, layers=2, embd=embd, ffn=160, vocab=128, head_size=head_size, lora=(8, 16))
            seed = 20251201 + 10 * n + (name == "H3")
            case = FixtureCase(name, arch, shape, tokens=64, seed=seed, formats=("pth",))
            cases[case.key] = case
    for name, embd, head_size, seed in (("H1", 64, 64, 20251251), ("H3", 48, 16, 20251252)):
        shape = v7.ModelShape(layers=2, embd=embd, head_size=head_size, vocab=128, ffn=160,
                              lora_w=16, lora_a=16, lora_v=8, lora_g=24)
        case = FixtureCase(name, v7.ARCH, shape, tokens=64, seed=seed, formats=("pth",))
        cases[case.key] = case
    return cases


# Prompts longer than the largest chunk the tests read at once (4096 tokens), for every version:
# one dispatch of a recurrence walks a bounded number of tokens (llvmpipe ends a kernel's loops
# after 65535 iterations), so long chunks take several.
LONG_TOKENS = 4500
LONG_LOGIT_STEP = 10


def _long_cases() -> Dict[str, FixtureCase]:
    cases: Dict[str, FixtureCase] = {}
    for n, arch in enumerate(LEGACY_ARCHS):
        shape = _legacy_shape(arch, layers=2, embd=64, ffn=192, vocab=128, head_size=32, lora=(8, 16))
        case = FixtureCase("long", arch, shape, tokens=LONG_TOKENS, seed=20251301 + 10 * n,
                           formats=("pth",), logit_step=LONG_LOGIT_STEP)
        cases[case.key] = case
    shape = v7.ModelShape(layers=2, embd=64, head_size=32, vocab=128, ffn=192,
                          lora_w=16, lora_a=16, lora_v=8, lora_g=24)
    case = FixtureCase("long", v7.ARCH, shape, tokens=LONG_TOKENS, seed=20251361, formats=("pth",),
                       logit_step=LONG_LOGIT_STEP)
    cases[case.key] = case
    return cases


CASES: Dict[str, FixtureCase] = {
    "v7/tiny": FixtureCase(
        name="tiny", arch=v7.ARCH,
        shape=v7.ModelShape(layers=2, embd=64, head_size=16, vocab=256, ffn=256,
                            lora_w=16, lora_a=16, lora_v=8, lora_g=32),
        tokens=64, seed=20250701, formats=ALL_FORMATS),
    "v7/small": FixtureCase(
        name="small", arch=v7.ARCH,
        shape=v7.ModelShape(layers=3, embd=128, head_size=64, vocab=512, ffn=512,
                            lora_w=32, lora_a=24, lora_v=16, lora_g=48),
        tokens=72, seed=20250702, formats=("pth", "f16")),
    **_legacy_cases(),
    **_head_count_cases(),
    **_long_cases(),
}

# check_cli.py's --version values -> the architecture and the case whose shape is the default.
VERSIONS = {
    "4": ("v4/A", v4.ARCH), "5.0": ("v5.0/A", v5.ARCHS["5.0"]), "5.1": ("v5.1/A", v5.ARCHS["5.1"]),
    "5.2": ("v5.2/A", v5.ARCHS["5.2"]), "6": ("v6/A", v6.ARCH), "7": ("v7/tiny", v7.ARCH),
}


def select(spec: str) -> Dict[str, FixtureCase]:
    """Cases named by a comma-separated list of keys ('v4/A') or version directories ('v5.1')."""
    out: Dict[str, FixtureCase] = {}
    for item in filter(None, (x.strip().strip("/") for x in spec.split(","))):
        hits = {k: c for k, c in CASES.items() if k == item or k.split("/")[0] == item}
        if not hits:
            raise SystemExit(f"unknown case {item!r}; known: {', '.join(CASES)}")
        out.update(hits)
    return out
