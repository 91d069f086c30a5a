// Prelude: int8 weight matrices (see src/quant/mod.rs). A word holds four weights, one byte each;
// each block of INT8_BLOCK weights (quant::INT8_BLOCK, set by the pipeline) has one word of
// parameters, f16 scale and f16 min, stored from word `params.scales_offset` on:
// w = q · scale + min.

@group(0) @binding(1) var<storage, read> weights: array<u32>;

override INT8_BLOCK: u32;

fn load_weight4(index: u32) -> vec4<f32> {
    let q = unpack4x8unorm(weights[index]) * 255.0;
    let block = unpack2x16float(weights[params.scales_offset + index / (INT8_BLOCK / 4u)]);
    return q * block.x + block.y;
}
