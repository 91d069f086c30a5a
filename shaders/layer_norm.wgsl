// Layer norm over each row: out = (x - mean) / sqrt(var + eps) * weight + bias.
// Needs reduce.wgsl and row_stats.wgsl. One workgroup per row.
//
// binding 0  params
// binding 1  x      [rows, len]
// binding 2  norm   [2, len]   weight, then bias
// binding 3  out    [rows, len]

struct Params {
    len: u32,
    rows: u32,
    eps: f32,
    _padding: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> norm: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn layer_norm(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) thread: u32) {
    let row = group.x;
    if row >= params.rows {
        return;
    }
    let stride = (params.len + 3u) & ~3u;
    let base = row * stride;
    let stats = row_stats(row, thread);
    for (var i = thread; i < params.len; i += WORKGROUP_SIZE) {
        out[base + i] = (x[base + i] - stats.x) * stats.y * norm[i] + norm[stride + i];
    }
}
