// RWKV-7 time-mix output, per head (needs reduce.wgsl; one workgroup per head):
//   out = (GroupNorm(y) + (Σ_j r_j·k_j·r_k_j) · v) ⊙ g
// GroupNorm has one group per head: (y - mean) / sqrt(var + eps) * weight + bias, eps 64e-5.
//
// binding 0  params
// binding 1  y      [heads * head_size]
// binding 2  norm   [2, heads * head_size]   ln_x weight, then bias
// binding 3  r      [heads * head_size]
// binding 4  k      [heads * head_size]   the shaped key k'
// binding 5  v      [heads * head_size]
// binding 6  r_k    [heads * head_size]
// binding 7  g      [heads * head_size]
// binding 8  out    [heads * head_size]

struct Params {
    heads: u32,
    head_size: u32,
    eps: f32,
    _padding: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> norm: array<f32>;
@group(0) @binding(3) var<storage, read> r: array<f32>;
@group(0) @binding(4) var<storage, read> k: array<f32>;
@group(0) @binding(5) var<storage, read> v: array<f32>;
@group(0) @binding(6) var<storage, read> r_k: array<f32>;
@group(0) @binding(7) var<storage, read> g: array<f32>;
@group(0) @binding(8) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn group_norm_bonus_gate(@builtin(workgroup_id) group: vec3<u32>,
                         @builtin(local_invocation_index) thread: u32) {
    let head = group.x;
    if head >= params.heads {
        return;
    }
    let n = params.head_size;
    let base = head * n;
    let channels = params.heads * n;

    var sum = 0.0;
    var bonus = 0.0;
    for (var j = thread; j < n; j += WORKGROUP_SIZE) {
        sum += y[base + j];
        bonus += r[base + j] * k[base + j] * r_k[base + j];
    }
    let mean = workgroup_sum(sum, thread) / f32(n);
    bonus = workgroup_sum(bonus, thread);

    var squares = 0.0;
    for (var j = thread; j < n; j += WORKGROUP_SIZE) {
        let d = y[base + j] - mean;
        squares += d * d;
    }
    let inv_std = inverseSqrt(workgroup_sum(squares, thread) / f32(n) + params.eps);

    for (var j = thread; j < n; j += WORKGROUP_SIZE) {
        let c = base + j;
        let normed = (y[c] - mean) * inv_std * norm[c] + norm[channels + c];
        out[c] = (normed + bonus * v[c]) * g[c];
    }
}
