#!/usr/bin/env python3
"""Fixtures for the file layouts users download: Hugging Face (fla-hub and Transformers), GGUF
and LoRA adapters, each written by the tools of the project that defines it.

* fla-hub: flash-linear-attention's own `RWKV7ForCausalLM` (PyPI flash-linear-attention 0.6.0),
  filled from the official weights of tests/fixtures/v7/tiny by the mapping of fla's
  utils/convert_from_rwkv7.py and written by its `save_pretrained` (config.json, sharded
  safetensors with model.safetensors.index.json).
* Transformers' RWKV-7 port: the official names under its `rwkv7.` base prefix (`emb` is
  `embeddings`), as its `Rwkv7ForCausalLM` names its parameters, written with a config.json.
* GGUF: llama.cpp's convert_hf_to_gguf.py (its `Rwkv7Model`/`Rwkv6Model` tensor code) on the
  fla folder and on a Hugging Face RWKV-6 folder, and `llama-quantize` for every quantized type.
  Our test models have 256-token vocabularies, which the converter's World-vocabulary step
  refuses (it pads to 65536), so for them only that step is replaced (no tokenizer is written);
  `world.gguf` is converted unmodified, with the World vocabulary, for the tokenizer test.
* LoRA: PEFT's `get_peft_model(...).save_pretrained` on the fla model, and an RWKV-LM/RWKV-PEFT
  style `.pth` (`<official name without .weight>.lora_A/lora_B`).

Golden logits come from BlinkDL's `rwkv` package (cpu fp32) on the same weights: for quantized
GGUF types, on the weights gguf-py dequantizes from the file (so the test checks our reading,
and meta.json records each type's distance from the unquantized model).

Needs: flash-linear-attention, transformers, peft, gguf (PyPI), and a llama.cpp checkout with
llama-quantize built:

    python3 tools/make_format_fixtures.py --llama-cpp /path/to/llama.cpp
    python3 tools/make_format_fixtures.py --llama-cpp /path/to/llama.cpp --demo-ggufs /tmp/demo-gguf
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rwkv_fixtures import v7  # noqa: E402
from rwkv_fixtures.common import FIXTURE_ROOT, random_tokens, save_pth, write_npy  # noqa: E402
from rwkv_fixtures.official import run_official  # noqa: E402

OUT = os.path.join(FIXTURE_ROOT, "formats")
QUANT_TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K_M", "Q5_K_M", "Q6_K"]


def readable(folder: str) -> None:
    """safetensors writes its files 0600; fixtures are committed 0644."""
    for name in os.listdir(folder):
        os.chmod(os.path.join(folder, name), 0o644)


def official_weights(pth: str) -> dict:
    return {k: v.float() for k, v in torch.load(pth, map_location="cpu", weights_only=True).items()}


# ---- fla-hub -----------------------------------------------------------------------------

def fla_name(name: str) -> tuple[str, bool]:
    """fla's utils/convert_from_rwkv7.py mapping: (fla name, transposed); '' for unused."""
    if name in ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"):
        return "", False
    outer = {"emb.weight": "model.embeddings.weight", "ln_out.weight": "model.norm.weight",
             "ln_out.bias": "model.norm.bias", "head.weight": "lm_head.weight"}
    if name in outer:
        return outer[name], False
    parts = name.split(".")
    parts[0] = "model.layers"
    parts[2] = {"att": "attn", "ffn": "ffn", "ln0": "pre_norm", "ln1": "attn_norm", "ln2": "ffn_norm"}[parts[2]]
    transposed = False
    if len(parts[3]) == 2 and parts[3][0] in "wvag" and parts[3][1] in "012":
        kind, num = parts[3]
        parts[3] = f"{kind}_lora.lora." + {"0": "2.bias", "1": "0.weight", "2": "2.weight"}[num]
        transposed = num in "12"
    elif parts[2] == "attn" and parts[3] in ("receptance", "key", "value", "ln_x", "output"):
        parts[3] = {"receptance": "r_proj", "key": "k_proj", "value": "v_proj", "ln_x": "g_norm",
                    "output": "o_proj"}[parts[3]]
    return ".".join(parts), transposed


def fla_model(weights: dict, dtype=torch.float32):
    """fla's RWKV7ForCausalLM holding `weights` (official names)."""
    from fla.models.rwkv7 import RWKV7Config, RWKV7ForCausalLM
    C = weights["blocks.0.ffn.key.weight"].shape[1]
    layers = 0
    while f"blocks.{layers}.ffn.key.weight" in weights:
        layers += 1
    H, N = weights["blocks.0.att.r_k"].shape
    config = RWKV7Config(
        vocab_size=weights["emb.weight"].shape[0], hidden_size=C, num_hidden_layers=layers,
        intermediate_size=weights["blocks.0.ffn.key.weight"].shape[0], head_dim=N, num_heads=H,
        value_dim=[C] * layers, decay_low_rank_dim=weights["blocks.0.att.w1"].shape[1],
        gate_low_rank_dim=weights["blocks.0.att.g1"].shape[1],
        a_low_rank_dim=weights["blocks.0.att.a1"].shape[1],
        v_low_rank_dim=weights["blocks.1.att.v1"].shape[1] if layers > 1 else 8,
        fuse_norm=False, tie_word_embeddings=False)
    model = RWKV7ForCausalLM(config).to(dtype)
    target = model.state_dict()
    filled = set()
    for name, tensor in weights.items():
        fname, transposed = fla_name(name)
        if not fname:
            continue
        t = tensor.t() if transposed else tensor
        target[fname].copy_(t.reshape(target[fname].shape))
        filled.add(fname)
    missing = set(target) - filled
    assert not missing, missing
    return model


def make_fla(tmp: str) -> str:
    weights = official_weights(os.path.join(FIXTURE_ROOT, "v7/tiny/model.pth"))
    out = os.path.join(OUT, "fla")
    shutil.rmtree(out, ignore_errors=True)
    # Sharded, as the released checkpoints are: three files and an index.
    fla_model(weights, torch.bfloat16).save_pretrained(out, max_shard_size="150KB")
    readable(out)
    return out


# ---- Transformers' port --------------------------------------------------------------------

def make_transformers() -> None:
    from safetensors.torch import save_file
    weights = official_weights(os.path.join(FIXTURE_ROOT, "v7/tiny/model.pth"))
    out = os.path.join(OUT, "transformers")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    renamed = {}
    for name, tensor in weights.items():
        if name == "head.weight":
            renamed[name] = tensor
        elif name == "emb.weight":
            renamed["rwkv7.embeddings.weight"] = tensor
        else:
            renamed["rwkv7." + name] = tensor
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in renamed.items()},
              os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    C = weights["emb.weight"].shape[1]
    config = {"architectures": ["Rwkv7ForCausalLM"], "model_type": "rwkv7", "hidden_size": C,
              "head_size": weights["blocks.0.att.r_k"].shape[1],
              "num_hidden_layers": 2, "vocab_size": weights["emb.weight"].shape[0]}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


# ---- GGUF ----------------------------------------------------------------------------------

def convert(llama_cpp: str, folder: str, outfile: str, outtype: str, keep_vocab: bool) -> None:
    """convert_hf_to_gguf.py; without keep_vocab, its World-vocabulary step is replaced by none."""
    folder, outfile = os.path.abspath(folder), os.path.abspath(outfile)
    script = f"""
import sys
sys.path.insert(0, {llama_cpp!r})
sys.argv = ["convert_hf_to_gguf.py", {folder!r}, "--outfile", {outfile!r}, "--outtype", {outtype!r}]
import convert_hf_to_gguf as c
from conversion import rwkv
if not {keep_vocab!r}:
    for cls in (rwkv.Rwkv6Model, rwkv.Rwkv7Model):
        cls.set_vocab = lambda self: None
c.main()
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=llama_cpp)


def quantize(llama_cpp: str, src: str, dst: str, qtype: str) -> None:
    tool = os.path.join(llama_cpp, "build", "bin", "llama-quantize")
    subprocess.run([tool, src, dst, qtype], check=True, capture_output=True)


def gguf_official(path: str) -> tuple[dict, set]:
    """A GGUF file's tensors dequantized by gguf-py, under the official names (the converter's
    mapping undone), for the official package; and the official names of the quantized ones."""
    import gguf
    reader = gguf.GGUFReader(path)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    assert arch == "rwkv7", arch
    out = {}
    quantized = set()
    for t in reader.tensors:
        before = set(out)
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(d) for d in reversed(t.shape.tolist())]
        values = values.reshape(shape)
        name = t.name
        if t.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16,
                                 gguf.GGMLQuantizationType.BF16):
            quantized.add(name)
        if name == "token_embd.weight":
            out["emb.weight"] = values
            continue
        if name.startswith("token_embd_norm."):
            out["blocks.0.ln0." + name.split(".")[-1]] = values
            continue
        if name.startswith("output_norm."):
            out["ln_out." + name.split(".")[-1]] = values
            continue
        if name == "output.weight":
            out["head.weight"] = values
            continue
        _, layer, leaf, kind = name.split(".")
        p = f"blocks.{layer}."
        if leaf == "time_mix_lerp_fused":
            for i, x in enumerate("rwkvag"):
                out[p + f"att.x_{x}"] = values.reshape(6, -1)[i].reshape(1, 1, -1)
            continue
        simple = {"attn_norm": "ln1", "attn_norm_2": "ln2", "time_mix_ln": "att.ln_x"}
        if leaf in simple:
            out[p + simple[leaf] + "." + kind] = values
            continue
        if layer == "0" and leaf in ("time_mix_v0", "time_mix_v1", "time_mix_v2"):
            continue
        linear = {"time_mix_key": "att.key", "time_mix_value": "att.value",
                  "time_mix_receptance": "att.receptance", "time_mix_output": "att.output",
                  "channel_mix_key": "ffn.key", "channel_mix_value": "ffn.value"}
        if leaf in linear:
            out[p + linear[leaf] + ".weight"] = values
            continue
        if leaf == "channel_mix_lerp_k":
            out[p + "ffn.x_k"] = values.reshape(1, 1, -1)
            continue
        short = leaf[len("time_mix_"):]
        if short in ("w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2"):
            out[p + "att." + short] = values.T.copy()
        elif short == "r_k":
            out[p + "att.r_k"] = values
        else:
            out[p + "att." + short] = values.reshape(1, 1, -1)
    H = int(reader.fields["rwkv7.embedding_length"].parts[-1][0]) // int(reader.fields["rwkv7.wkv.head_size"].parts[-1][0])
    for key in list(out):
        if key.endswith("att.r_k"):
            out[key] = out[key].reshape(H, -1)
    gguf_linear = {"time_mix_key": "att.key", "time_mix_value": "att.value", "time_mix_receptance": "att.receptance",
                   "time_mix_output": "att.output", "channel_mix_key": "ffn.key", "channel_mix_value": "ffn.value"}
    quantized_official = set()
    for name in quantized:
        if name == "output.weight":
            quantized_official.add("head.weight")
        elif name == "token_embd.weight":
            quantized_official.add("emb.weight")
        else:
            _, layer, leaf, _ = name.split(".")
            assert leaf in gguf_linear, name
            quantized_official.add(f"blocks.{layer}.{gguf_linear[leaf]}.weight")
    return out, quantized_official


def make_gguf_v7(llama_cpp: str, fla_dir: str, tmp: str) -> None:
    out = os.path.join(OUT, "gguf")
    for outtype in ("f32", "f16", "bf16"):
        convert(llama_cpp, fla_dir, os.path.join(out, f"v7-tiny-{outtype}.gguf"), outtype, keep_vocab=False)


def make_gguf_quantized(llama_cpp: str, tmp: str) -> dict:
    """A two-layer RWKV-7 wide enough (C = 256) for every block type, in each quantized type."""
    shape = v7.ModelShape(layers=2, embd=256, head_size=64, vocab=256, ffn=256,
                          lora_w=16, lora_a=16, lora_v=8, lora_g=16)
    weights = v7.ARCH.build_weights(shape, 20261205)
    pth = os.path.join(tmp, "quant-base.pth")
    save_pth(weights, pth, torch.float32)
    folder = os.path.join(tmp, "quant-fla")
    model = fla_model({k: torch.from_numpy(v) for k, v in weights.items()}, torch.float32)
    model.save_pretrained(folder)
    f32 = os.path.join(tmp, "quant-f32.gguf")
    convert(llama_cpp, folder, f32, "f32", keep_vocab=False)
    out = os.path.join(OUT, "gguf", "quantized")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    tokens = random_tokens(shape.vocab, 16, 7)
    write_npy(os.path.join(out, "tokens.npy"), tokens.astype(np.int32))
    unquantized = run_official("v7", pth, tokens).result.logits
    write_npy(os.path.join(out, "logits-f32.npy"), unquantized.astype(np.float32))
    meta = {"shape": {"layers": 2, "embd": 256, "heads": 4, "head_size": 64, "ffn": 256, "vocab": 256},
            "tokens": len(tokens), "types": {}}
    for qtype in QUANT_TYPES:
        name = qtype.lower()
        path = os.path.join(out, f"model-{name}.gguf")
        quantize(llama_cpp, f32, path, qtype)
        decoded, quantized = gguf_official(path)
        layer0_v = {k: torch.from_numpy(weights[k]) for k in ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2")}
        dequantized = os.path.join(tmp, f"dequantized-{name}.pth")
        torch.save({k: torch.from_numpy(v) for k, v in decoded.items()} | layer0_v, dequantized)
        logits = run_official("v7", dequantized, tokens).result.logits
        write_npy(os.path.join(out, f"logits-{name}.npy"), logits.astype(np.float32))
        # rwkv-wgpu keeps decoded matrices in f16 unless told otherwise (the embedding stays in
        # host memory in f32): the official logits of exactly those weights.
        rounded = os.path.join(tmp, f"dequantized-{name}-f16.pth")
        torch.save({k: torch.from_numpy(v).half().float() if k in quantized and k != "emb.weight" else torch.from_numpy(v)
                    for k, v in decoded.items()} | layer0_v, rounded)
        write_npy(os.path.join(out, f"logits-{name}-f16.npy"),
                  run_official("v7", rounded, tokens).result.logits.astype(np.float32))
        std = unquantized.std(axis=1)
        err = np.abs(logits - unquantized).max(axis=1) / std
        import gguf
        kinds = sorted({gguf.GGMLQuantizationType(t.tensor_type).name for t in gguf.GGUFReader(path).tensors})
        meta["types"][name] = {"tensor_types": kinds, "bytes": os.path.getsize(path),
                               "max_abs_logit_error_over_std_vs_unquantized": float(err.max()),
                               "mean_abs_logit_error_over_std_vs_unquantized":
                                   float((np.abs(logits - unquantized).mean(axis=1) / std).mean())}
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def make_gguf_v6(llama_cpp: str, tmp: str) -> None:
    """tests/fixtures/v6/A as a Hugging Face RWKV-6 folder (Rwkv6ForCausalLM names), converted."""
    from safetensors.torch import save_file
    weights = official_weights(os.path.join(FIXTURE_ROOT, "v6/A/model.pth"))
    renamed = {}
    for name, tensor in weights.items():
        if name == "emb.weight":
            renamed["rwkv.embeddings.weight"] = tensor
        elif name.startswith("ln_out."):
            renamed["rwkv." + name] = tensor
        elif name == "head.weight":
            renamed[name] = tensor
        else:
            n = name.replace(".att.", ".attention.").replace(".ffn.", ".feed_forward.").replace(".ln0.", ".pre_ln.")
            renamed["rwkv." + n] = tensor
    folder = os.path.join(tmp, "v6-hf")
    os.makedirs(folder, exist_ok=True)
    save_file({k: v.contiguous() for k, v in renamed.items()}, os.path.join(folder, "model.safetensors"))
    C = weights["emb.weight"].shape[1]
    layers = sum(1 for k in weights if k.endswith(".ln1.weight"))
    config = {"architectures": ["Rwkv6ForCausalLM"], "hidden_size": C, "num_hidden_layers": layers,
              "head_size": weights["blocks.0.att.time_faaaa"].shape[-1], "layer_norm_epsilon": 1e-5,
              "rescale_every": 0, "intermediate_size": weights["blocks.0.ffn.key.weight"].shape[0],
              "vocab_size": weights["emb.weight"].shape[0]}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    convert(llama_cpp, folder, os.path.join(OUT, "gguf", "v6-A-f32.gguf"), "f32", keep_vocab=False)


def make_gguf_world(llama_cpp: str, tmp: str) -> None:
    """A World-vocabulary RWKV-7 converted unmodified (the tokenizer in its metadata). Its
    embedding and head are zero past the first 512 rows, so the file compresses in git."""
    shape = v7.ModelShape(layers=2, embd=32, head_size=32, vocab=65536, ffn=64,
                          lora_w=8, lora_a=8, lora_v=8, lora_g=8)
    weights = v7.ARCH.build_weights(shape, 20261206)
    for key in ("emb.weight", "head.weight"):
        weights[key][512:] = 0
    folder = os.path.join(tmp, "world-fla")
    fla_model({k: torch.from_numpy(v) for k, v in weights.items()}, torch.float32).save_pretrained(folder)
    shutil.copy(os.path.join(os.path.dirname(FIXTURE_ROOT), "..", "assets", "world", "rwkv_vocab_v20230424.txt"), folder)
    convert(llama_cpp, folder, os.path.join(OUT, "gguf", "world-q8_0.gguf"), "q8_0", keep_vocab=True)


# ---- LoRA ----------------------------------------------------------------------------------

def merged_logits(merged: dict, base: dict, tokens, tmp: str, out: str) -> None:
    """The official logits of the merged weights in f32 (`out`.npy) and with each merged matrix
    rounded to the base's bf16 (`out`-bf16.npy), the precision rwkv-wgpu keeps it in by default."""
    torch.save(merged, tmp + ".pth")
    write_npy(out + ".npy", run_official("v7", tmp + ".pth", tokens).result.logits)
    changed = {k for k in merged if not torch.equal(merged[k], base[k])}
    assert changed
    rounded = {k: v.to(torch.bfloat16).float() if k in changed else v for k, v in merged.items()}
    torch.save(rounded, tmp + "-bf16.pth")
    write_npy(out + "-bf16.npy", run_official("v7", tmp + "-bf16.pth", tokens).result.logits)


def make_lora(tmp: str) -> None:
    from peft import LoraConfig, get_peft_model
    base_pth = os.path.join(FIXTURE_ROOT, "v7/tiny/model.pth")
    weights = official_weights(base_pth)
    tokens = np.load(os.path.join(FIXTURE_ROOT, "v7/tiny/tokens.npy"))[:16]
    out = os.path.join(OUT, "lora")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    write_npy(os.path.join(out, "tokens.npy"), tokens.astype(np.int32))

    # PEFT, on the fla model (base: tests/fixtures/formats/fla), merged by PEFT itself.
    torch.manual_seed(5)
    model = fla_model(weights, torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                        target_modules=["r_proj", "k_proj", "v_proj", "o_proj", "key", "value"])
    peft_model = get_peft_model(model, config)
    peft_dir = os.path.join(out, "peft")
    peft_model.save_pretrained(peft_dir)
    readable(peft_dir)
    merged = peft_model.merge_and_unload().state_dict()
    official = dict(weights)
    for name in weights:
        fname, transposed = fla_name(name)
        if fname:
            t = merged[fname]
            official[name] = (t.t() if transposed else t).reshape(weights[name].shape).float()
    merged_logits(official, weights, tokens, os.path.join(tmp, "peft"), os.path.join(out, "logits-peft"))

    # RWKV-LM / RWKV-PEFT: `<module>.lora_A` [r, in], `.lora_B` [out, r], merged as
    # W + scale·B·A (their merge script's scale is lora_alpha / r).
    rng = np.random.default_rng(11)
    lora = {}
    for layer in range(2):
        for module in ("att.receptance", "att.value", "ffn.key"):
            w = weights[f"blocks.{layer}.{module}.weight"]
            lora[f"blocks.{layer}.{module}.lora_A"] = torch.from_numpy(rng.normal(0, 0.2, (8, w.shape[1])).astype(np.float32)).to(torch.bfloat16)
            lora[f"blocks.{layer}.{module}.lora_B"] = torch.from_numpy(rng.normal(0, 0.2, (w.shape[0], 8)).astype(np.float32)).to(torch.bfloat16)
    torch.save(lora, os.path.join(out, "rwkv-lm.pth"))
    scale = 0.5
    official = dict(weights)
    for key in lora:
        if key.endswith(".lora_A"):
            prefix = key[:-len(".lora_A")]
            a, b = lora[key].float(), lora[prefix + ".lora_B"].float()
            official[prefix + ".weight"] = weights[prefix + ".weight"] + scale * (b @ a)
    merged_logits(official, weights, tokens, os.path.join(tmp, "rwkv-lm"), os.path.join(out, "logits-rwkv-lm"))
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump({"peft": {"base": "formats/fla", "r": 4, "lora_alpha": 8},
                   "rwkv-lm": {"base": "v7/tiny/model.pth", "scale": scale, "r": 8}}, f, indent=1)


def demo_ggufs(llama_cpp: str, out: str) -> None:
    """The built-in demo model (trained, assets/demo) as GGUF files of every type, for measuring
    what each type costs on real weights (README's format table; not committed)."""
    from safetensors.torch import load_file
    weights = {k: v.float() for k, v in load_file(os.path.join(FIXTURE_ROOT, "..", "..", "assets", "demo", "model.safetensors")).items()}
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rwkv-demo-gguf-") as tmp:
        fla_model(weights, torch.float32).save_pretrained(tmp)
        f32 = os.path.join(out, "demo-f32.gguf")
        convert(llama_cpp, tmp, f32, "f32", keep_vocab=False)
    for qtype in QUANT_TYPES:
        quantize(llama_cpp, f32, os.path.join(out, f"demo-{qtype.lower()}.gguf"), qtype)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-cpp", required=True, help="llama.cpp checkout with build/bin/llama-quantize")
    parser.add_argument("--demo-ggufs", metavar="DIR", help="instead, write the demo model in every GGUF type to DIR")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.demo_ggufs:
        demo_ggufs(args.llama_cpp, args.demo_ggufs)
        return 0
    os.makedirs(os.path.join(OUT, "gguf"), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rwkv-formats-") as tmp:
        fla_dir = make_fla(tmp)
        make_transformers()
        make_gguf_v7(args.llama_cpp, fla_dir, tmp)
        make_gguf_v6(args.llama_cpp, tmp)
        make_gguf_world(args.llama_cpp, tmp)
        make_lora(tmp)
        meta = make_gguf_quantized(args.llama_cpp, tmp)
    print(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
