// Prelude of matvec.wgsl: the input is computed in a prologue from the residual stream, as
// layer_norm_shift.wgsl does for many rows, which saves its dispatch when decoding:
//   n = LayerNorm(x);   input of segment s = n + (prev[slot] − n) ⊙ mix[m_s]
// with x_at[s] = m_s · cols4 (mix row m_s, in vec4s). Every workgroup normalizes the one row
// itself (C values, cheap next to its weights). The first workgroup also stores n in `normed`,
// for a later kernel to remember as the sequence's previous input: `prev` is read by every
// workgroup, so none may change it here. Needs sequences.wgsl and reduce.wgsl.
//
// binding 2  x       [1, norm_len]       the residual stream
// binding 5  norm    [2, norm_len]       weight, then bias
// binding 6  prev    [slots, norm_len]   each sequence's previous normalized input
// binding 7  mix     [mixes, norm_len]
// binding 8  normed  [1, norm_len]       out
// binding 9  sequences                   (uniform; the step's one sequence gives the slot)

@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> norm: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> prev: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> mix: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> normed: array<vec4<f32>>;
@group(0) @binding(9) var<uniform> sequences: Sequences;

var<private> ln_mean: f32;
var<private> ln_inv_std: f32;
var<private> prev_row: u32;

// 1 in the lanes of vec4 i that hold channels, 0 in the padding.
fn channel_lanes(i: u32) -> vec4<f32> {
    let lane = vec4<u32>(0u, 1u, 2u, 3u) + 4u * i;
    return select(vec4<f32>(0.0), vec4<f32>(1.0), lane < vec4<u32>(params.norm_len));
}

fn normalized4(i: u32) -> vec4<f32> {
    return (x[i] - ln_mean) * ln_inv_std * norm[i] + norm[params.cols4 + i];
}

// Two passes, as row_stats.wgsl: E[x²] − E[x]² loses precision when |mean| >> std.
fn prepare_input(first_group: bool, thread: u32) {
    let len = f32(params.norm_len);
    var sum = 0.0;
    for (var i = thread; i < params.cols4; i += WORKGROUP_SIZE) {
        sum += dot(x[i], channel_lanes(i));
    }
    ln_mean = workgroup_sum(sum, thread) / len;
    var squares = 0.0;
    for (var i = thread; i < params.cols4; i += WORKGROUP_SIZE) {
        let d = (x[i] - ln_mean) * channel_lanes(i);
        squares += dot(d, d);
    }
    ln_inv_std = inverseSqrt(workgroup_sum(squares, thread) / len + params.eps);
    prev_row = sequences.items[0].slot * params.cols4;
    if first_group {
        for (var i = thread; i < params.cols4; i += WORKGROUP_SIZE) {
            normed[i] = normalized4(i);
        }
    }
}

fn input4(base: u32, i: u32) -> vec4<f32> {
    let n = normalized4(i);
    return n + (prev[prev_row + i] - n) * mix[base + i];
}
