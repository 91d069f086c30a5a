// Prelude: nf4 weight matrices (see src/quant/mod.rs). A word holds eight 4-bit codes, low nibble
// first, each an index into the NormalFloat table; each block of NF4_BLOCK weights
// (quant::NF4_BLOCK, set by the pipeline) has an f16 scale, two per word from word
// `params.scales_offset` on.

@group(0) @binding(1) var<storage, read> weights: array<u32>;

override NF4_BLOCK: u32;

var<private> NF4: array<f32, 16> = array<f32, 16>(
    -1.0, -0.6961928, -0.52507305, -0.3949175, -0.28444138, -0.18477343, -0.091050036, 0.0,
    0.0795803, 0.1609302, 0.2461123, 0.33791524, 0.44070983, 0.562617, 0.72295684, 1.0,
);

fn load_weight4(index: u32) -> vec4<f32> {
    let codes = weights[index / 2u] >> (16u * (index % 2u));
    let block = index / (NF4_BLOCK / 4u);
    let scale = unpack2x16float(weights[params.scales_offset + block / 2u])[block % 2u];
    let levels = vec4<f32>(NF4[codes & 15u], NF4[(codes >> 4u) & 15u], NF4[(codes >> 8u) & 15u], NF4[(codes >> 12u) & 15u]);
    return levels * scale;
}
