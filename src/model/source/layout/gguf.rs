//! llama.cpp's GGUF names for RWKV-6 and RWKV-7, after `convert_hf_to_gguf.py` (`Rwkv6Model`,
//! `Rwkv7Model`): fused token-shift mixes, LoRA factors stored like linear layers, a flat `r_k`,
//! and RWKV-6 layers rescaled by powers of two.

use super::{fused_mixes, layer_of, one, Transform, V7_MIXES};

/// Official names with their transforms, for one stored tensor.
type Renames = Vec<(String, Transform)>;

/// The tensors outside the blocks, as llama.cpp names them.
fn gguf_outer(name: &str) -> Option<Vec<(String, Transform)>> {
    let renamed = match name {
        "token_embd.weight" => "emb.weight".to_string(),
        "output.weight" => "head.weight".to_string(),
        _ => {
            if let Some(leaf) = name.strip_prefix("token_embd_norm.") {
                format!("blocks.0.ln0.{leaf}")
            } else if let Some(leaf) = name.strip_prefix("output_norm.") {
                format!("ln_out.{leaf}")
            } else {
                return None;
            }
        }
    };
    Some(one(renamed))
}

/// A block tensor's (layer, leaf, kind) from `blk.N.leaf.kind`; otherwise the official names of
/// a tensor outside the blocks (none for names no layout knows).
fn in_block(name: &str) -> std::result::Result<(usize, &str, &str), Renames> {
    if let Some(outer) = gguf_outer(name) {
        return Err(outer);
    }
    let (layer, rest) = layer_of(name, "blk.").ok_or_else(Vec::new)?;
    let (leaf, kind) = rest.rsplit_once('.').unwrap_or((rest, ""));
    Ok((layer, leaf, kind))
}

/// llama.cpp's `rwkv7`; `heads` is `[heads, head_size]` (r_k is stored flat).
pub(super) fn gguf_rwkv7(name: &str, heads: &[usize]) -> Vec<(String, Transform)> {
    let (layer, leaf, kind) = match in_block(name) {
        Ok(parts) => parts,
        Err(outer) => return outer,
    };
    let block = |leaf: &str| format!("blocks.{layer}.{leaf}");
    let official = match leaf {
        "attn_norm" => format!("ln1.{kind}"),
        "attn_norm_2" => format!("ln2.{kind}"),
        "time_mix_ln" => format!("att.ln_x.{kind}"),
        "time_mix_lerp_fused" => return fused_mixes(layer, &V7_MIXES),
        "time_mix_r_k" => return vec![(block("att.r_k"), Transform::Reshape(heads.to_vec()))],
        "time_mix_key" | "time_mix_value" | "time_mix_receptance" | "time_mix_output" => {
            format!("att.{}.weight", &leaf["time_mix_".len()..])
        }
        "channel_mix_key" | "channel_mix_value" => format!("ffn.{}.weight", &leaf["channel_mix_".len()..]),
        "channel_mix_lerp_k" => "ffn.x_k".into(),
        // Layer 0's v0/v1/v2 are copies of a0/a1/a2 that llama.cpp needs and we do not.
        "time_mix_v0" | "time_mix_v1" | "time_mix_v2" if layer == 0 => return Vec::new(),
        _ => {
            let Some(short) = leaf.strip_prefix("time_mix_") else { return Vec::new() };
            // The LoRA factors are stored `[out, in]` like linear layers.
            let factor = short.len() == 2 && short.ends_with(['1', '2']);
            let transform = if factor { Transform::Transpose } else { Transform::Same };
            return vec![(block(&format!("att.{short}")), transform)];
        }
    };
    one(block(&official))
}

/// The five token-shift mixes of RWKV-6, in the order llama.cpp fuses them.
const V6_MIXES: [&str; 5] = ["time_maa_w", "time_maa_k", "time_maa_v", "time_maa_r", "time_maa_g"];

/// llama.cpp's `rwkv6`. With `rescale` = n > 0, the converter divided layer i's attention output
/// and channel-mix value by 2^(i / n); they are multiplied back.
pub(super) fn gguf_rwkv6(name: &str, rescale: usize) -> Vec<(String, Transform)> {
    let (layer, leaf, kind) = match in_block(name) {
        Ok(parts) => parts,
        Err(outer) => return outer,
    };
    let block = |leaf: &str| format!("blocks.{layer}.{leaf}");
    let undo_rescale = match rescale {
        0 => Transform::Same,
        n => Transform::Scale(2f32.powi((layer / n) as i32)),
    };
    let (official, transform) = match leaf {
        "attn_norm" => (format!("ln1.{kind}"), Transform::Same),
        "attn_norm_2" => (format!("ln2.{kind}"), Transform::Same),
        "time_mix_ln" => (format!("att.ln_x.{kind}"), Transform::Same),
        "time_mix_lerp_fused" => return fused_mixes(layer, &V6_MIXES),
        "time_mix_lerp_x" => ("att.time_maa_x".into(), Transform::Same),
        "time_mix_w1" => ("att.time_maa_w1".into(), Transform::Transpose),
        "time_mix_w2" => ("att.time_maa_w2".into(), Transform::Transpose),
        "time_mix_first" => ("att.time_faaaa".into(), Transform::Same),
        "time_mix_decay" => ("att.time_decay".into(), Transform::Same),
        "time_mix_decay_w1" => ("att.time_decay_w1".into(), Transform::Transpose),
        "time_mix_decay_w2" => ("att.time_decay_w2".into(), Transform::Transpose),
        "time_mix_key" | "time_mix_value" | "time_mix_receptance" | "time_mix_gate" => {
            (format!("att.{}.weight", &leaf["time_mix_".len()..]), Transform::Same)
        }
        "time_mix_output" => ("att.output.weight".into(), undo_rescale),
        "channel_mix_lerp_k" => ("ffn.time_maa_k".into(), Transform::Same),
        "channel_mix_lerp_r" => ("ffn.time_maa_r".into(), Transform::Same),
        "channel_mix_key" | "channel_mix_receptance" => {
            (format!("ffn.{}.weight", &leaf["channel_mix_".len()..]), Transform::Same)
        }
        "channel_mix_value" => ("ffn.value.weight".into(), undo_rescale),
        _ => return Vec::new(),
    };
    vec![(block(&official), transform)]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's RWKV-7 names, its fused mixes and its flattened r_k.
    #[test]
    fn gguf_rwkv7_names_map_to_official_names() {
        let heads = [4, 16];
        assert_eq!(
            gguf_rwkv7("blk.2.time_mix_w1.weight", &heads),
            vec![("blocks.2.att.w1".into(), Transform::Transpose)]
        );
        assert_eq!(gguf_rwkv7("blk.2.time_mix_w0.weight", &heads), one("blocks.2.att.w0".into()));
        assert_eq!(gguf_rwkv7("blk.1.time_mix_r_k.weight", &heads)[0].1, Transform::Reshape(vec![4, 16]));
        assert_eq!(gguf_rwkv7("blk.0.time_mix_lerp_fused.weight", &heads)[5].0, "blocks.0.att.x_g");
        assert!(gguf_rwkv7("blk.0.time_mix_v1.weight", &heads).is_empty());
        assert_eq!(gguf_rwkv7("token_embd_norm.bias", &heads), one("blocks.0.ln0.bias".into()));
    }
}
