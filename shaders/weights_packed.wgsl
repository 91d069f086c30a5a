// Prelude: weight matrices as f16 pairs packed in u32 (baseline WebGPU, no SHADER_F16).
// Same bytes as weights_f16.wgsl; unpack2x16float takes the low half first, matching little-endian.

@group(0) @binding(1) var<storage, read> weights: array<vec2<u32>>;

fn load_weight4(index: u32) -> vec4<f32> {
    let pair = weights[index];
    return vec4<f32>(unpack2x16float(pair.x), unpack2x16float(pair.y));
}
