// Copies the last row of each sequence into consecutive rows: out[s] = x[last row of s].
// The head then computes logits only for the tokens whose next token is wanted.
// Needs sequences.wgsl. One thread per channel and sequence.
//
// binding 0  params
// binding 1  sequences  (uniform, from the prelude)
// binding 2  x    [rows, len]
// binding 3  out  [sequences, len]

struct Params {
    len: u32,
    _padding0: u32,
    _padding1: u32,
    _padding2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn gather_last_rows(@builtin(global_invocation_id) id: vec3<u32>) {
    let c = id.x;
    if c >= params.len || id.y >= sequences.count {
        return;
    }
    let sequence = sequences.items[id.y];
    let stride = row_stride(params.len);
    out[id.y * stride + c] = x[(sequence.first_row + sequence.rows - 1u) * stride + c];
}
