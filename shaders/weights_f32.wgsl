// Prelude: weight matrices in f32 (`--quant f32`): fp32 checkpoints run with their own weights,
// at twice the bytes per weight of f16. Rows padded to whole vec4s.

@group(0) @binding(1) var<storage, read> weights: array<vec4<f32>>;

fn load_weight4(index: u32) -> vec4<f32> {
    return weights[index];
}
