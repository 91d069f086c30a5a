// Reads a buffer once, with the wide loads the one-row products use on weights: each workgroup
// sums a contiguous span of vec4s and writes its sum (so the reads cannot be optimized away).
// What an adapter reaches here is the read bandwidth that `bench` divides the weights by for the
// decode floor.
//
// binding 0  params
// binding 1  data  [vec4s × 4]
// binding 2  sums  [workgroups]

struct Params {
    vec4s: u32,
    per_workgroup: u32,
    _padding0: u32,
    _padding1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> data: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> sums: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn read_sum(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let start = group.x * params.per_workgroup;
    let end = min(start + params.per_workgroup, params.vec4s);
    var total = vec4<f32>(0.0);
    // Lanes read consecutive vec4s, so each pass of the workgroup reads 4 KiB in one piece.
    for (var i = start + lane; i < end; i += 256u) {
        total += data[i];
    }
    partial[lane] = total.x + total.y + total.z + total.w;
    workgroupBarrier();
    for (var half = 128u; half > 0u; half >>= 1u) {
        if lane < half {
            partial[lane] += partial[lane + half];
        }
        workgroupBarrier();
    }
    if lane == 0u {
        sums[group.x] = partial[0];
    }
}
