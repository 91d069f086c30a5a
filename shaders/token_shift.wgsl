// Token shift: mixes each channel of the current input with the previous token's, once per mix,
// then (unless KEEP_PREV) remembers the current input as "previous" for the next token.
//   out[m, c] = x[c] + (prev[c] - x[c]) * mix[m, c];   prev[c] = x[c]
// The mixes are weights (RWKV-4…7) or computed per token (RWKV-6's data-dependent shift, which
// shifts twice and keeps `prev` the first time).
//
// binding 0  params
// binding 1  x      [len]
// binding 2  prev   [len]            state: the previous token's x
// binding 3  mix    [mixes, mix_stride]
// binding 4  out    [mixes, stride]

struct Params {
    len: u32,
    mixes: u32,
    stride: u32,
    mix_stride: u32,
}

override KEEP_PREV: bool = false;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> prev: array<f32>;
@group(0) @binding(3) var<storage, read> mix: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn token_shift(@builtin(global_invocation_id) id: vec3<u32>) {
    let c = id.x;
    if c >= params.len {
        return;
    }
    let current = x[c];
    let delta = prev[c] - current;
    for (var m = 0u; m < params.mixes; m++) {
        out[m * params.stride + c] = current + delta * mix[m * params.mix_stride + c];
    }
    if !KEEP_PREV {
        prev[c] = current;
    }
}
