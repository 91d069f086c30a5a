// Prelude: RWKV-7's recurrence over a long prompt in chunks of CHUNK tokens, three kernels
// instead of one walk through every token. Row i of a head's state is a row vector s, and each
// token applies s ← s·A_t + v_i·kᵀ with the same A_t = diag(w) + (−kk)(kk⊙a)ᵀ for every row. So
// over a chunk, from the state s₀ it starts with:
//   s_t = s₀·P_t + z_t        P_t = A_1⋯A_t, z_t = the walk of the chunk from a zero state
//   y_t = s_t·r_t = s₀·(P_t·r_t) + z_t·r_t
//   1. operators (all chunks at once): walk each chunk from s = e_m (the rows of P, with v = 0),
//      keeping q_t = P_t·r_t and P_L, and from s = 0, keeping z_t·r_t and z_L
//   2. states (in order, one matrix product per chunk): s₀ of chunk c+1 = s₀·P_L + z_L
//   3. outputs (all rows at once): y_t = z_t·r_t + s₀·q_t
// The walks are the one-token step of wkv7_step.wgsl, so each chunk's arithmetic is that of the
// serial kernel; only the sums regroup.
//
// The three kernels share one scratch buffer `chunks` (f32), laid out by ChunkParams: the rows'
// q_t and z_t·r_t ([rows, C] each), then P_L and z_L for every chunk slot ([slots, C, N] each:
// the rows of head h's matrices are channels h·N … h·N + N − 1).
// CHUNK comes from kernels::WKV7_CHUNK. Needs sequences.wgsl.

struct ChunkParams {
    heads: u32,
    window_first: u32,    // the chunks kernel 2 walks in this dispatch
    window_count: u32,
    _padding: u32,
    readouts_at: u32,     // q_t    [rows, C]
    outputs_at: u32,      // z_t·r_t [rows, C]
    transitions_at: u32,  // P_L    [slots, C, N]
    starts_at: u32,       // z_L, then (after kernel 2) the chunk's starting state s₀
}

// The slot of chunk c of sequence s: sequences own consecutive rows in table order, so slots
// counted this way never meet and stay below rows / CHUNK + sequences.
fn chunk_slot(s: u32, sequence: Sequence, c: u32) -> u32 {
    return sequence.first_row / CHUNK + s + c;
}

// Where row `channel` (h·N + i) of head h's N×N matrix of `slot` starts, from `at`.
fn matrix_row(at: u32, slot: u32, channel: u32) -> u32 {
    return at + (slot * params.heads * HEAD_SIZE + channel) * HEAD_SIZE;
}
