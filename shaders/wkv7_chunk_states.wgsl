// Kernel 2 of the chunked RWKV-7 recurrence (see wkv7_chunks.wgsl): the state at the start of
// each chunk, s₀ ← s₀·P_L + z_L chunk after chunk, from the sequence's state slot and back into
// it. Four threads share a state row, each computing a quarter of its columns; the starting
// state of each chunk replaces z_L in the scratch, where kernel 3 reads it.
// Needs sequences.wgsl, sequences_binding.wgsl and wkv7_chunks.wgsl.
//
// binding 0  params  (ChunkParams)
// binding 1  sequences
// binding 2  state   [slots, heads · N · N]
// binding 3  chunks  scratch

override HEAD_SIZE: u32;
const QUARTERS: u32 = 4u;
const MAX_QUARTER: u32 = MAX_HEAD_SIZE / QUARTERS;

@group(0) @binding(0) var<uniform> params: ChunkParams;
@group(0) @binding(2) var<storage, read_write> state: array<f32>;
@group(0) @binding(3) var<storage, read_write> chunks: array<f32>;

// x: 16 state rows per workgroup (C / 16 workgroups), y: the sequence.
@compute @workgroup_size(64)
fn states(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let channels = params.heads * HEAD_SIZE;
    let quarter = HEAD_SIZE / QUARTERS;
    let thread = group.x * 64u + local;
    // Threads past the last row still take part in every barrier.
    let owns_row = thread / QUARTERS < channels;
    let channel = min(thread / QUARTERS, channels - 1u);
    let head_first = channel - channel % HEAD_SIZE;
    let first_column = (thread % QUARTERS) * quarter;
    let sequence = sequences.items[group.y];
    let state_row = sequence.slot * row_stride(channels * HEAD_SIZE) + channel * HEAD_SIZE + first_column;
    var s: array<f32, MAX_QUARTER>;
    for (var j = 0u; j < quarter; j++) {
        s[j] = state[state_row + j];
    }
    let chunk_count = (sequence.rows + CHUNK - 1u) / CHUNK;
    let end = min(chunk_count, params.window_first + params.window_count);
    for (var c = params.window_first; c < end; c++) {
        let slot = chunk_slot(group.y, sequence, c);
        // z_L out, s₀ in, for this quarter of the row.
        let start = matrix_row(params.starts_at, slot, channel);
        var next: array<f32, MAX_QUARTER>;
        for (var j = 0u; j < quarter; j++) {
            next[j] = chunks[start + first_column + j];
        }
        if owns_row {
            for (var j = 0u; j < quarter; j++) {
                chunks[start + first_column + j] = s[j];
            }
        }
        // The whole row of s₀, from the four threads that hold it.
        storageBarrier();
        let transitions = matrix_row(params.transitions_at, slot, head_first) + first_column;
        for (var m = 0u; m < HEAD_SIZE; m++) {
            let s_m = chunks[start + m];
            for (var j = 0u; j < quarter; j++) {
                next[j] += s_m * chunks[transitions + m * HEAD_SIZE + j];
            }
        }
        s = next;
    }
    if owns_row {
        for (var j = 0u; j < quarter; j++) {
            state[state_row + j] = s[j];
        }
    }
}
