// Group norm with one group per head, as RWKV-5, 6 and 7 apply to the time-mix output
// (needs reduce.wgsl; one workgroup per head):
//   GroupNorm(y) = (y − mean) / sqrt(var + eps) · weight + bias,  eps 64e-5
//
// entry point              computes                                          RWKV
// group_norm               out = GroupNorm(y)                                5.0
// group_norm_gate          out = GroupNorm(y) ⊙ g                            5.1, 5.2, 6
// group_norm_bonus_gate    out = (GroupNorm(y) + (Σ_j r_j·k_j·r_k_j)·v) ⊙ g  7
//
// Bindings (C = heads · head_size), shared by all entry points:
//   0 params, 1 y [C], 2 norm [2, C] (ln_x weight, then bias)
// then per entry point:
//   group_norm             3 out
//   group_norm_gate        3 g, 4 out
//   group_norm_bonus_gate  3 r, 4 k (the shaped key k'), 5 v, 6 r_k, 7 g, 8 out

struct Params {
    heads: u32,
    head_size: u32,
    eps: f32,
    _padding: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> norm: array<f32>;

@group(0) @binding(3) var<storage, read_write> plain_out: array<f32>;

@group(0) @binding(3) var<storage, read> gate: array<f32>;
@group(0) @binding(4) var<storage, read_write> gated_out: array<f32>;

@group(0) @binding(3) var<storage, read> r: array<f32>;
@group(0) @binding(4) var<storage, read> k: array<f32>;
@group(0) @binding(5) var<storage, read> v: array<f32>;
@group(0) @binding(6) var<storage, read> r_k: array<f32>;
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

fn normalized(c: u32, stats: vec2<f32>) -> f32 {
    return (y[c] - stats.x) * stats.y * norm[c] + norm[params.heads * params.head_size + c];
}

@compute @workgroup_size(64)
fn group_norm(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) thread: u32) {
    let head = group.x;
    if head >= params.heads {
        return;
    }
    let base = head * params.head_size;
    let stats = head_statistics(base, params.head_size, thread);
    for (var j = thread; j < params.head_size; j += WORKGROUP_SIZE) {
        plain_out[base + j] = normalized(base + j, stats);
    }
}

@compute @workgroup_size(64)
fn group_norm_gate(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) thread: u32) {
    let head = group.x;
    if head >= params.heads {
        return;
    }
    let base = head * params.head_size;
    let stats = head_statistics(base, params.head_size, thread);
    for (var j = thread; j < params.head_size; j += WORKGROUP_SIZE) {
        gated_out[base + j] = normalized(base + j, stats) * gate[base + j];
    }
}

@compute @workgroup_size(64)
fn group_norm_bonus_gate(@builtin(workgroup_id) group: vec3<u32>,
                         @builtin(local_invocation_index) thread: u32) {
    let head = group.x;
    if head >= params.heads {
        return;
    }
    let n = params.head_size;
    let base = head * n;
    var bonus = 0.0;
    for (var j = thread; j < n; j += WORKGROUP_SIZE) {
        bonus += r[base + j] * k[base + j] * r_k[base + j];
    }
    bonus = workgroup_sum(bonus, thread);
    let stats = head_statistics(base, n, thread);
    for (var j = thread; j < n; j += WORKGROUP_SIZE) {
        let c = base + j;
        out[c] = (normalized(c, stats) + bonus * v[c]) * g[c];
    }
}
