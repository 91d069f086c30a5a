// RWKV-7 state update and readout, per sequence and head h (S is [heads, N (value i), N (key j)]):
//   S ← S·diag(w) + (S·(−kk))·(kk⊙a)ᵀ + v·kᵀ      both S terms use the old S
//   y = S·r                                        with the new S
// One thread owns one value row i of one head of one sequence and walks the window's tokens
// in order: it needs no other thread's data, so no barriers. The row stays in registers for the
// whole walk (head sizes up to MAX_HEAD_SIZE; larger heads work on it in memory). Long prompts
// on GPUs take the chunked form instead (wkv7_chunk_*.wgsl), which runs chunks side by side.
// Needs sequences.wgsl and wkv7_step.wgsl (the inputs, bindings 3-8, and the step).
//
// binding 0  params
// binding 1  sequences  (uniform, from the prelude)
// binding 2  state  [slots, heads · N · N]
// binding 9  y      [rows, C]   out

@group(0) @binding(0) var<uniform> params: HeadWalk;
@group(0) @binding(2) var<storage, read_write> state: array<f32>;
@group(0) @binding(9) var<storage, read_write> y: array<f32>;

// Where one thread works: its sequence, its value channel, and offsets derived from them.
struct Walk {
    sequence: Sequence,
    rows: vec2<u32>,   // the window's rows of the sequence: [x, y)
    channel: u32,      // head · N + i
    head_first: u32,   // head · N
    state_row: u32,    // S[slot][head][i][0]
    stride: u32,       // row stride of the [rows, C] inputs
}

// The same update on the state in memory, for heads larger than MAX_HEAD_SIZE.
fn step_in_memory(row: u32, at: u32, v_i: f32) -> f32 {
    var sa = 0.0;
    for (var j = 0u; j < HEAD_SIZE; j++) {
        sa -= state[row + j] * kk[at + j];
    }
    var out = 0.0;
    for (var j = 0u; j < HEAD_SIZE; j++) {
        let c = at + j;
        let updated = state[row + j] * w[c] + sa * kk[c] * a[c] + v_i * k[c];
        state[row + j] = updated;
        out += updated * r[c];
    }
    return out;
}

fn walk(p: Walk) {
    var s: array<f32, MAX_HEAD_SIZE>;
    let in_registers = HEAD_SIZE <= MAX_HEAD_SIZE;
    if in_registers {
        for (var j = 0u; j < HEAD_SIZE; j++) {
            s[j] = state[p.state_row + j];
        }
    }
    for (var t = p.rows.x; t < p.rows.y; t++) {
        let base = (p.sequence.first_row + t) * p.stride;
        let v_i = v[base + p.channel];
        if in_registers {
            y[base + p.channel] = step_in_registers(&s, base + p.head_first, v_i);
        } else {
            y[base + p.channel] = step_in_memory(p.state_row, base + p.head_first, v_i);
        }
    }
    if in_registers {
        for (var j = 0u; j < HEAD_SIZE; j++) {
            state[p.state_row + j] = s[j];
        }
    }
}

@compute @workgroup_size(64)
fn wkv7(@builtin(global_invocation_id) id: vec3<u32>) {
    let n = HEAD_SIZE;
    let channels = params.heads * n;
    if id.x >= channels || id.y >= sequences.count {
        return;
    }
    let sequence = sequences.items[id.y];
    let rows = window_rows(params.window_first, params.window_count, sequence);
    if rows.x == rows.y {
        return;
    }
    let state_row = sequence.slot * row_stride(channels * n) + id.x * n;
    walk(Walk(sequence, rows, id.x, id.x - id.x % n, state_row, row_stride(channels)));
}
