// Prelude: weight matrices in bf16, two per u32, low half first (little-endian, as checkpoints
// store them). A bf16 is the top half of an f32, so decoding is a shift: the released bf16
// weights run bit for bit, at the bytes per weight of f16. Rows padded to whole vec4s.

@group(0) @binding(1) var<storage, read> weights: array<vec2<u32>>;

fn load_weight4(index: u32) -> vec4<f32> {
    let pair = weights[index];
    return bitcast<vec4<f32>>(vec4<u32>(pair.x << 16u, pair.x & 0xffff0000u, pair.y << 16u, pair.y & 0xffff0000u));
}
