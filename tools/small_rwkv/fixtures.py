"""tests/fixtures/trained/<version>/: the trained weights in fp32 and bf16 (.pth, official names),
the held-out tokens, the official package's logits for both files, and meta.json.

Official runs (tools/rwkv_fixtures/official.py): rwkv 0.8.32, `cpu fp32`, one token at a time
from the zero state, in a subprocess per family, on four files:
  f32    model-f32.pth                                  -> logits-f32.npy (golden)
  bf16   model-bf16.pth                                 -> logits-bf16.npy
  f16    f32 file, every matrix rounded to f16          -> meta f16_error
  bf16w  f32 file, every tensor rounded to bf16         -> meta bf16_weights_in_f32_file_error
(RWKV-4..6: the package applies ln0 to the embedding in the file's dtype, so `bf16` differs from
`bf16w` by that LayerNorm's bf16 rounding; RWKV-7 converts to fp32 first.)
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Dict

import numpy as np
import torch

from rwkv_fixtures.common import RWKV_PACKAGE_VERSION
from rwkv_fixtures.official import run_official_many

from .common import OfficialModel, heldout_loss, is_matrix, rel_error

TOKENS = 256


def heldout_tokens(path: str) -> np.ndarray:
    data = open(path, "rb").read()[:TOKENS]
    if len(data) != TOKENS:
        raise SystemExit(f"{path} has fewer than {TOKENS} bytes")
    return np.frombuffer(data, dtype=np.uint8).astype(np.int32)


def _save(state: Dict[str, torch.Tensor], path: str) -> None:
    torch.save(state, path)
    os.chmod(path, 0o644)


def write_fixture(model: OfficialModel, out_dir: str, tokens: np.ndarray, training: dict) -> dict:
    """Write the directory of one trained model; returns its meta (also written as meta.json)."""
    os.makedirs(out_dir, exist_ok=True)
    f32 = model.official_state_dict()
    bf16 = {k: v.to(torch.bfloat16) for k, v in f32.items()}
    f16_matrices = {k: v.half().float() if is_matrix(k, v.shape) else v for k, v in f32.items()}
    bf16_in_f32 = {k: v.float() for k, v in bf16.items()}
    paths = {"f32": os.path.join(out_dir, "model-f32.pth"), "bf16": os.path.join(out_dir, "model-bf16.pth")}
    _save(f32, paths["f32"])
    _save(bf16, paths["bf16"])
    with tempfile.TemporaryDirectory(prefix="rwkv-trained-") as tmp:
        paths["f16"] = os.path.join(tmp, "f16-matrices.pth")
        paths["bf16w"] = os.path.join(tmp, "bf16-weights-f32-file.pth")
        _save(f16_matrices, paths["f16"])
        _save(bf16_in_f32, paths["bf16w"])
        order = ("f32", "bf16", "f16", "bf16w")
        runs = dict(zip(order, run_official_many(model.family, [(paths[k], tokens.tolist()) for k in order])))
    for key, run in runs.items():
        if run.version != model.detected or run.n_head != model.heads:
            raise AssertionError(f"{model.version} ({key}): the package detected version {run.version} with "
                                 f"{run.n_head} heads, expected {model.detected} with {model.heads}")
    logits = {k: r.result.logits.astype(np.float32) for k, r in runs.items()}
    golden = logits["f32"]
    with torch.no_grad():
        ours = model(torch.tensor(tokens.astype(np.int64))[None])[0].double().numpy()

    np.save(os.path.join(out_dir, "tokens.npy"), tokens.astype(np.int32))
    np.save(os.path.join(out_dir, "logits-f32.npy"), golden)
    np.save(os.path.join(out_dir, "logits-bf16.npy"), logits["bf16"])

    std = golden.astype(np.float64).std(axis=-1)
    f16_rel = rel_error(logits["f16"], golden)
    meta = {
        "version": model.version,
        "package_detected": {"version": runs["f32"].version, "heads": runs["f32"].n_head},
        "shape": model.meta_shape(),
        "training": training,
        "heldout": {"text": "assets/demo/heldout.txt (tail of The Tempest, not trained on)", "tokens": TOKENS,
                    "loss_nats_per_byte": round(heldout_loss(golden, tokens), 4),
                    "loss_ln256": round(float(np.log(256.0)), 4)},
        "official": {"rwkv_package": RWKV_PACKAGE_VERSION, "strategy": "cpu fp32",
                     "mode": "forward one token at a time from the zero state", "torch": torch.__version__},
        "logit_std_min": round(float(std.min()), 4), "logit_std_max": round(float(std.max()), 4),
        "error_measure": "max over positions of max|logits - logits_f32| / std(logits_f32 row)",
        "f16_error": float(f16_rel.max()),
        "f16_error_median": float(np.median(f16_rel)),
        "f16_rounded": "every matrix (2-D *.weight but emb.weight, and the LoRA factors) rounded to f16; "
                       "vectors and [H, N] per-channel parameters kept f32",
        "bf16_vs_f32_error": float(rel_error(logits["bf16"], golden).max()),
        "bf16_weights_in_f32_file_error": float(rel_error(logits["bf16w"], golden).max()),
        "bf16_file_vs_bf16_weights_in_f32_file_error": float(rel_error(logits["bf16"], logits["bf16w"]).max()),
        "torch_training_forward_vs_official_error": float(rel_error(ours, golden).max()),
        "files": {},
    }
    names = ["model-f32.pth", "model-bf16.pth", "tokens.npy", "logits-f32.npy", "logits-bf16.npy"]
    meta["files"] = {n: os.path.getsize(os.path.join(out_dir, n)) for n in names}
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    return meta
