// Prelude: weight matrices read with native f16 (adapters with SHADER_F16).
// The buffer holds row-major f16 values, rows padded to whole vec4s; weights_packed.wgsl reads the
// same bytes without the f16 extension.
enable f16;

@group(0) @binding(1) var<storage, read> weights: array<vec4<f16>>;

fn load_weight4(index: u32) -> vec4<f32> {
    return vec4<f32>(weights[index]);
}
