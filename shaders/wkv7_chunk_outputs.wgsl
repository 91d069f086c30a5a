// Kernel 3 of the chunked RWKV-7 recurrence (see wkv7_chunks.wgsl): every row's readout,
// y_t = z_t·r_t + s₀·q_t, from its chunk's starting state s₀.
// Needs sequences.wgsl, sequences_binding.wgsl and wkv7_chunks.wgsl.
//
// binding 0  params  (ChunkParams)
// binding 1  sequences
// binding 2  chunks  scratch
// binding 3  y       [rows, C]   out

override HEAD_SIZE: u32;

@group(0) @binding(0) var<uniform> params: ChunkParams;
@group(0) @binding(2) var<storage, read> chunks: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

// x: the channel, y: the row.
@compute @workgroup_size(64)
fn outputs(@builtin(global_invocation_id) id: vec3<u32>) {
    let channels = params.heads * HEAD_SIZE;
    let s = sequence_of_row(id.y);
    if id.x >= channels || s == sequences.count {
        return;
    }
    let sequence = sequences.items[s];
    let slot = chunk_slot(s, sequence, (id.y - sequence.first_row) / CHUNK);
    let start = matrix_row(params.starts_at, slot, id.x);
    let at = id.y * row_stride(channels);
    let readouts = params.readouts_at + at + id.x - id.x % HEAD_SIZE;
    var out = chunks[params.outputs_at + at + id.x];
    for (var m = 0u; m < HEAD_SIZE; m++) {
        out += chunks[start + m] * chunks[readouts + m];
    }
    y[at + id.x] = out;
}
