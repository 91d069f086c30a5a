// Gathers a step's input rows from the embedding table kept on the GPU: x[r] = table[ids[r]].
// Taking the ids from a buffer, rather than uploading the rows, lets a step read the token the
// previous step sampled on the GPU, so several decode steps run in one submit.
// One thread per channel and row.
//
// binding 0  params
// binding 1  table  [vocab, cols]  (rows already normalized by ln0, see model::embedding)
// binding 2  ids    [rows]  (u32 bits)
// binding 3  x      [rows, cols]

struct Params {
    cols: u32,
    stride: u32,
    rows: u32,
    vocab: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read> ids: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

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
    x[r * params.stride + c] = table[token * params.stride + c];
}
