// Prelude: matmul.wgsl's tiles hold f32 and multiply in f32.
alias TileValue = vec4<f32>;

fn to_tile(v: vec4<f32>) -> TileValue {
    return v;
}
// A bank row of 128 bytes holds 8 of them; 8 lanes read at once (matmul.wgsl's tile_slot).
const TILE_SWIZZLE_SHIFT: u32 = 1u;
