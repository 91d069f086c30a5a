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
"""

from __future__ import annotations

from typing import Dict

from . import v4, v5, v6, v7
from .common import FixtureCase
from .legacy import LegacyShape

ALL_FORMATS = ("pth", "f16", "bf16", "f32")

# Residual growth of the deep case (see legacy.channel_mix).
DEEP_GROWTH = 6.0


def _legacy_cases() -> Dict[str, FixtureCase]:
    cases: Dict[str, FixtureCase] = {}
    archs = [v4.ARCH, v5.ARCHS["5.0"], v5.ARCHS["5.1"], v5.ARCHS["5.2"], v6.ARCH]
    for n, arch in enumerate(archs):
        heads = arch is not v4.ARCH
        lora = arch is v6.ARCH
        a = LegacyShape(layers=2, embd=32, ffn=128, vocab=128, head_size=16 if heads else 0,
                        lora_mix=8 if lora else 0, lora_decay=16 if lora else 0)
        b = LegacyShape(layers=3, embd=64, ffn=224, vocab=256, head_size=32 if heads else 0,
                        lora_mix=16 if lora else 0, lora_decay=32 if lora else 0)
        for case in (FixtureCase("A", arch, a, tokens=64, seed=20250801 + 10 * n, formats=ALL_FORMATS),
                     FixtureCase("B", arch, b, tokens=64, seed=20250802 + 10 * n, formats=("pth",))):
            cases[case.key] = case
    deep = FixtureCase("deep", v6.ARCH,
                       LegacyShape(layers=24, embd=32, ffn=128, vocab=128, head_size=16, lora_mix=8, lora_decay=16),
                       tokens=64, seed=20250899, formats=("pth",), growth=DEEP_GROWTH,
                       sensitivity_per_kind=True)
    cases[deep.key] = deep
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
