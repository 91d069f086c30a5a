// RWKV-7 key shaping, per head and row (needs reduce.wgsl; one workgroup per head and row,
// the grid being [heads, rows]):
//   kk = normalize(k * k_k)           L2 over the head, x / max(|x|, 1e-12) as torch's F.normalize
//   k' = k * (1 + (a - 1) * k_a)      the in-context learning rate scales the key that is written
//
// binding 0  params
// binding 1  k       [rows, C]            C = heads * head_size
// binding 2  a       [rows, C]
// binding 3  k_k     [C]
// binding 4  k_a     [C]
// binding 5  kk      [rows, C]   out
// binding 6  k_out   [rows, C]   out

struct Params {
    heads: u32,
    head_size: u32,
    _padding0: u32,
    _padding1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> k_k: array<f32>;
@group(0) @binding(4) var<storage, read> k_a: array<f32>;
@group(0) @binding(5) var<storage, read_write> kk: array<f32>;
@group(0) @binding(6) var<storage, read_write> k_out: array<f32>;

// Set from kernels::L2_EPS.
override L2_EPS: f32;

@compute @workgroup_size(64)
fn wkv7_keys(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) thread: u32) {
    let first_channel = group.x * params.head_size;
    let base = group.y * ((params.heads * params.head_size + 3u) & ~3u) + first_channel;
    var squares = 0.0;
    for (var j = thread; j < params.head_size; j += WORKGROUP_SIZE) {
        let shaped = k[base + j] * k_k[first_channel + j];
        squares += shaped * shaped;
    }
    let inv_norm = 1.0 / max(sqrt(workgroup_sum(squares, thread)), L2_EPS);
    for (var j = thread; j < params.head_size; j += WORKGROUP_SIZE) {
        let at = base + j;
        let c = first_channel + j;
        kk[at] = k[at] * k_k[c] * inv_norm;
        k_out[at] = k[at] * (1.0 + (a[at] - 1.0) * k_a[c]);
    }
}
