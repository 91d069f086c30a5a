// Group norm with one group per head, as RWKV-5, 6 and 7 apply to the time-mix output
// (needs reduce.wgsl and group_norm_params.wgsl; one workgroup per head and row, the grid being [heads, rows]):
//   GroupNorm(y) = (y − mean) / sqrt(var + eps) · weight + bias,  eps 64e-5
//
// entry point              computes                                          RWKV
// group_norm               out = GroupNorm(y)                                5.0
// group_norm_gate          out = GroupNorm(y) ⊙ g                            5.1, 5.2, 6
// group_norm_bonus_gate    out = (GroupNorm(y) + (Σ_j r_j·k_j·r_k_j)·v) ⊙ g  7
//
// Bindings (C = heads · head_size; every tensor but norm is [rows, C]), shared by all entry points:
//   0 params, 1 y, 2 norm [2, C] (ln_x weight, then bias)
// then per entry point:
//   group_norm             3 out
//   group_norm_gate        3 g, 4 out
//   group_norm_bonus_gate  3 r, 4 k (the shaped key k'), 5 v, 6 r_k, 7 g, 8 out

@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> norm: array<f32>;

@group(0) @binding(3) var<storage, read_write> plain_out: array<f32>;

@group(0) @binding(3) var<storage, read> gate: array<f32>;
@group(0) @binding(4) var<storage, read_write> gated_out: array<f32>;

@group(0) @binding(3) var<storage, read> r: array<f32>;
@group(0) @binding(4) var<storage, read> k: array<f32>;
@group(0) @binding(5) var<storage, read> v: array<f32>;
@group(0) @binding(6) var<storage, read> r_k: array<f32>;  // [C], per channel
@group(0) @binding(7) var<storage, read> g: array<f32>;
@group(0) @binding(8) var<storage, read_write> out: array<f32>;

// Mean and 1/std of one head's channels; every thread of the workgroup gets them.
fn head_statistics(base: u32, n: u32, thread: u32) -> vec2<f32> {
    var sum = 0.0;
    for (var j = thread; j < n; j += WORKGROUP_SIZE) {
        sum += y[base + j];
    }
    let mean = workgroup_sum(sum, thread) / f32(n);
    var squares = 0.0;
    for (var j = thread; j < n; j += WORKGROUP_SIZE) {
        let d = y[base + j] - mean;
        squares += d * d;
    }
    return vec2<f32>(mean, inverseSqrt(workgroup_sum(squares, thread) / f32(n) + params.eps));
}

// The normalised value at `at` (row offset + channel), whose channel is `c`.
fn normalized(at: u32, c: u32, stats: vec2<f32>) -> f32 {
    let stride = (params.heads * params.head_size + 3u) & ~3u;
    return (y[at] - stats.x) * stats.y * norm[c] + norm[stride + c];
}

// The first element of (head, row) and its first channel.
fn head_start(group: vec3<u32>) -> vec2<u32> {
    let stride = (params.heads * params.head_size + 3u) & ~3u;
    let channel = group.x * params.head_size;
    return vec2<u32>(group.y * stride + channel, channel);
}

@compute @workgroup_size(64)
fn group_norm(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) thread: u32) {
    let start = head_start(group);
    let stats = head_statistics(start.x, params.head_size, thread);
    for (var j = thread; j < params.head_size; j += WORKGROUP_SIZE) {
        plain_out[start.x + j] = normalized(start.x + j, start.y + j, stats);
    }
}

@compute @workgroup_size(64)
fn group_norm_gate(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) thread: u32) {
    let start = head_start(group);
    let stats = head_statistics(start.x, params.head_size, thread);
    for (var j = thread; j < params.head_size; j += WORKGROUP_SIZE) {
        gated_out[start.x + j] = normalized(start.x + j, start.y + j, stats) * gate[start.x + j];
    }
}

@compute @workgroup_size(64)
fn group_norm_bonus_gate(@builtin(workgroup_id) group: vec3<u32>,
                         @builtin(local_invocation_index) thread: u32) {
    let n = params.head_size;
    let start = head_start(group);
    let base = start.x;
    var bonus = 0.0;
    for (var j = thread; j < n; j += WORKGROUP_SIZE) {
        bonus += r[base + j] * k[base + j] * r_k[start.y + j];
    }
    bonus = workgroup_sum(bonus, thread);
    let stats = head_statistics(base, n, thread);
    for (var j = thread; j < n; j += WORKGROUP_SIZE) {
        let at = base + j;
        out[at] = (normalized(at, start.y + j, stats) + bonus * v[at]) * g[at];
    }
}
