//! Hugging Face layouts: flash-linear-attention's RWKV-7 ("fla-hub", after fla's
//! `utils/convert_from_rwkv7.py`) and Transformers' RWKV ports.

use super::{fused_mixes, layer_of, one, Transform, V7_MIXES};

/// flash-linear-attention's RWKV-7 (`model.layers.N.attn.r_proj.weight`, ...).
pub(super) fn fla(name: &str) -> Vec<(String, Transform)> {
    match name {
        "model.embeddings.weight" => return one("emb.weight".into()),
        "lm_head.weight" => return one("head.weight".into()),
        _ => {}
    }
    if let Some(leaf) = name.strip_prefix("model.norm.") {
        return one(format!("ln_out.{leaf}"));
    }
    let Some((layer, rest)) = layer_of(name, "model.layers.") else { return Vec::new() };
    let block = |leaf: &str| format!("blocks.{layer}.{leaf}");
    let (module, leaf) = rest.split_once('.').unwrap_or((rest, ""));
    match module {
        "pre_norm" => return one(block(&format!("ln0.{leaf}"))),
        "attn_norm" => return one(block(&format!("ln1.{leaf}"))),
        "ffn_norm" => return one(block(&format!("ln2.{leaf}"))),
        "ffn" => return one(block(&format!("ffn.{leaf}"))),
        "attn" => {}
        _ => return Vec::new(),
    }
    let att = |leaf: &str| block(&format!("att.{leaf}"));
    if leaf == "x_x" {
        return fused_mixes(layer, &V7_MIXES);
    }
    // `w_lora.lora.0.weight` is w1ᵀ, `lora.2.weight` w2ᵀ and `lora.2.bias` w0 (the same for a, v, g).
    if let Some((kind, part)) = leaf.split_once("_lora.lora.") {
        return match part {
            "0.weight" => vec![(att(&format!("{kind}1")), Transform::Transpose)],
            "2.weight" => vec![(att(&format!("{kind}2")), Transform::Transpose)],
            "2.bias" => one(att(&format!("{kind}0"))),
            _ => Vec::new(),
        };
    }
    let renamed = match leaf.split_once('.') {
        Some(("r_proj", tail)) => format!("receptance.{tail}"),
        Some(("k_proj", tail)) => format!("key.{tail}"),
        Some(("v_proj", tail)) => format!("value.{tail}"),
        Some(("o_proj", tail)) => format!("output.{tail}"),
        Some(("g_norm", tail)) => format!("ln_x.{tail}"),
        _ => leaf.to_string(),
    };
    one(att(&renamed))
}

/// Transformers' RWKV-7 port: the official names under `rwkv7.`, with `embeddings` for `emb`.
pub(super) fn transformers(name: &str) -> Vec<(String, Transform)> {
    match name {
        "rwkv7.embeddings.weight" => one("emb.weight".into()),
        "head.weight" => one(name.into()),
        _ => name.strip_prefix("rwkv7.").map(|rest| one(rest.into())).unwrap_or_default(),
    }
}

/// Transformers' RWKV-4 (and the Hugging Face RWKV-5/6 ports): `rwkv.blocks.N.attention.*`,
/// `feed_forward`, `pre_ln`, `time_mix_key` for `time_mix_k`.
pub(super) fn transformers_legacy(name: &str) -> Vec<(String, Transform)> {
    match name {
        "rwkv.embeddings.weight" => return one("emb.weight".into()),
        "head.weight" => return one(name.into()),
        _ => {}
    }
    if let Some(leaf) = name.strip_prefix("rwkv.ln_out.") {
        return one(format!("ln_out.{leaf}"));
    }
    let Some((layer, rest)) = layer_of(name, "rwkv.blocks.") else { return Vec::new() };
    let (module, leaf) = rest.split_once('.').unwrap_or((rest, ""));
    let module = match module {
        "pre_ln" => "ln0",
        "attention" => "att",
        "feed_forward" => "ffn",
        other => other,
    };
    let leaf = match leaf {
        "time_mix_key" => "time_mix_k",
        "time_mix_value" => "time_mix_v",
        "time_mix_receptance" => "time_mix_r",
        other => other,
    };
    one(format!("blocks.{layer}.{module}.{leaf}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fla's LoRA factors are the official ones transposed, with w0 as the second layer's bias.
    #[test]
    fn fla_names_map_to_official_names() {
        assert_eq!(
            fla("model.layers.3.attn.w_lora.lora.0.weight"),
            vec![("blocks.3.att.w1".into(), Transform::Transpose)]
        );
        assert_eq!(fla("model.layers.3.attn.a_lora.lora.2.bias"), one("blocks.3.att.a0".into()));
        assert_eq!(fla("model.layers.0.attn.g_norm.weight"), one("blocks.0.att.ln_x.weight".into()));
        assert_eq!(fla("model.layers.1.ffn_norm.bias"), one("blocks.1.ln2.bias".into()));
        assert_eq!(fla("model.layers.1.attn.x_x").len(), 6);
        assert!(fla("model.rotary.inv_freq").is_empty());
    }
}
