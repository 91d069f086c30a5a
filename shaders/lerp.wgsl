// Element-wise linear interpolation: out = a + (b - a) * t, over all elements of same-shaped
// tensors (their row padding included, which stays zero).
// RWKV-7 uses it for the value residual, v = v + (v_first - v) * sigmoid(...).
//
// binding 0  params
// binding 1  a    [len]   len = rows · padded row length
// binding 2  b    [len]
// binding 3  t    [len]
// binding 4  out  [len]

struct Params {
    len: u32,
    _padding0: u32,
    _padding1: u32,
    _padding2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> t: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn lerp(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = id.x + id.y * groups.x * 64u;
    if i < params.len {
        out[i] = a[i] + (b[i] - a[i]) * t[i];
    }
}
