// Kernel 1 of the chunked RWKV-7 recurrence (see wkv7_chunks.wgsl): every chunk of every
// sequence at once. Threads 0 … C−1 walk the rows of P (row m of head h starts as e_m and reads
// no value), threads C … 2C−1 the state rows from zero; each walk is CHUNK steps at most.
// Needs sequences.wgsl, sequences_binding.wgsl, wkv7_step.wgsl and wkv7_chunks.wgsl.
//
// binding 0  params  (ChunkParams)
// binding 1  sequences
// binding 2  chunks  scratch, written
// bindings 3-8  r, w, k, v, kk, a  (wkv7_step.wgsl)

@group(0) @binding(0) var<uniform> params: ChunkParams;
@group(0) @binding(2) var<storage, read_write> chunks: array<f32>;

// x: 2C threads, y: the sequence, z: the chunk within it.
@compute @workgroup_size(64)
fn operators(@builtin(global_invocation_id) id: vec3<u32>) {
    let channels = params.heads * HEAD_SIZE;
    if id.x >= 2u * channels || id.y >= sequences.count {
        return;
    }
    let sequence = sequences.items[id.y];
    let rows = window_rows(id.z * CHUNK, CHUNK, sequence);
    if rows.x == rows.y {
        return;
    }
    let transition = id.x < channels;
    let channel = id.x % channels;
    let head_first = channel - channel % HEAD_SIZE;
    var s: array<f32, MAX_HEAD_SIZE>;
    if transition {
        s[channel % HEAD_SIZE] = 1.0;
    }
    let out_at = select(params.outputs_at, params.readouts_at, transition);
    let stride = row_stride(channels);
    for (var t = rows.x; t < rows.y; t++) {
        let base = (sequence.first_row + t) * stride;
        let v_i = select(v[base + channel], 0.0, transition);
        chunks[out_at + base + channel] = step_in_registers(&s, base + head_first, v_i);
    }
    let slot = chunk_slot(id.y, sequence, id.z);
    let row = matrix_row(select(params.starts_at, params.transitions_at, transition), slot, channel);
    for (var j = 0u; j < HEAD_SIZE; j++) {
        chunks[row + j] = s[j];
    }
}
