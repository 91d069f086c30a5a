// Gathers a step's input rows from the embedding table kept on the GPU: x[r] = table[ids[r]].
// Taking the ids from a buffer, rather than uploading the rows, lets a step read the token the
// previous step sampled on the GPU, so several decode steps run in one submit.
// The table comes in up to four parts of `part_rows` rows each, since a World-vocabulary table in
// f32 outgrows one storage binding (128 MiB in browsers) from 512 channels on; parts a table does
// not need are bound to its first.
// One thread per channel and row.
//
// binding 0     params
// bindings 1-4  table parts  [part_rows, cols] each (rows already normalized by ln0)
// binding 5     ids    [rows]  (u32 bits)
// binding 6     x      [rows, cols]

struct Params {
    cols: u32,
    stride: u32,
    rows: u32,
    vocab: u32,
    part_rows: u32,
    _padding0: u32,
    _padding1: u32,
    _padding2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> part0: array<f32>;
@group(0) @binding(2) var<storage, read> part1: array<f32>;
@group(0) @binding(3) var<storage, read> part2: array<f32>;
@group(0) @binding(4) var<storage, read> part3: array<f32>;
@group(0) @binding(5) var<storage, read> ids: array<f32>;
@group(0) @binding(6) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn embed(@builtin(global_invocation_id) id: vec3<u32>) {
    let c = id.x;
    let r = id.y;
    if c >= params.cols || r >= params.rows {
        return;
    }
    // The host checks the ids it uploads; a sampled id may be one of the sampler's sentinels
    // (nothing allowed, non-finite logits), which the host reports once the step is read back.
    // Clamping keeps that step's reads inside the table.
    let token = min(bitcast<u32>(ids[r]), params.vocab - 1u);
    let part = token / params.part_rows;
    let at = (token % params.part_rows) * params.stride + c;
    var value: f32;
    switch part {
        case 0u: { value = part0[at]; }
        case 1u: { value = part1[at]; }
        case 2u: { value = part2[at]; }
        default: { value = part3[at]; }
    }
    x[r * params.stride + c] = value;
}
