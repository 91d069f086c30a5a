// Prelude: matmul.wgsl's tiles hold f16 and multiply in f16 (adapters with SHADER_F16; after
// weights_f16.wgsl, which enables f16). The weights are f16 already; the inputs are rounded to
// f16 (a relative error of at most 2^-11), each 4-term product is summed in f16 and the sums over
// the inner dimension in f32. Half the workgroup memory and twice the arithmetic rate of f32 on
// most GPUs, for prefill.
alias TileValue = vec4<f16>;

// An input's value in a tile: the nearest f16 (needs nearest_f16.wgsl).
fn to_tile(v: vec4<f32>) -> TileValue {
    return TileValue(nearest_f16(v));
}
// A bank row of 128 bytes holds 16 of them; 16 lanes read at once (matmul.wgsl's tile_slot).
const TILE_SWIZZLE_SHIFT: u32 = 2u;
