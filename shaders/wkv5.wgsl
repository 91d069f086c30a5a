// RWKV-5 and RWKV-6 time mixing, per sequence and head h (S is [heads, N (key i), N (value j)]):
//   y_j = Σ_i r_i · (u_i · k_i · v_j + S_ij)      the bonus u applies to the current token only
//   S_ij ← k_i · v_j + w_i · S_ij
// One thread owns one value column j of one head of one sequence and walks the window's
// tokens in order, the column held in registers (head sizes up to MAX_HEAD_SIZE; larger heads
// work on it in memory). The decay is a weight [C] (RWKV-5) or computed per token, [rows, C]
// (RWKV-6, DECAY_PER_ROW). Needs sequences.wgsl and wkv_bindings.wgsl.
//
// binding 0  params
// binding 1  sequences  (uniform, from the prelude)
// binding 2  state  [slots, heads · N · N]
// binding 3  r      [rows, C]             C = heads · N
// binding 4  k      [rows, C]
// binding 5  v      [rows, C]
// binding 6  w      [C] or [rows, C]   decay in (0, 1)
// binding 7  u      [C]                bonus of the current token
// binding 8  y      [rows, C]          out

@group(0) @binding(0) var<uniform> params: HeadWalk;

override DECAY_PER_ROW: bool = false;
// params.head_size as a constant: the loops over a column then have a fixed count, so they
// unroll and the column stays in registers (indexed dynamically, it would be kept in memory).
override HEAD_SIZE: u32;

fn decay(base: u32, c: u32) -> f32 {
    if DECAY_PER_ROW {
        return w[base + c];
    }
    return w[c];
}

@compute @workgroup_size(64)
fn wkv5(@builtin(global_invocation_id) id: vec3<u32>) {
    let n = HEAD_SIZE;
    let channels = params.heads * n;
    let channel = id.x;  // head · N + j
    if channel >= channels || id.y >= sequences.count {
        return;
    }
    let sequence = sequences.items[id.y];
    let rows = window_rows(params.window_first, params.window_count, sequence);
    if rows.x == rows.y {
        return;
    }
    let stride = row_stride(channels);
    let j = channel % n;
    let head_first = channel - j;
    let column = sequence.slot * row_stride(channels * n) + head_first * n + j;  // S[slot][h][0][j]
    let in_registers = n <= MAX_HEAD_SIZE;
    var s: array<f32, MAX_HEAD_SIZE>;
    if in_registers {
        for (var i = 0u; i < n; i++) {
            s[i] = state[column + i * n];
        }
    }
    for (var t = rows.x; t < rows.y; t++) {
        let base = (sequence.first_row + t) * stride;
        let v_j = v[base + channel];
        var out = 0.0;
        for (var i = 0u; i < n; i++) {
            let c = head_first + i;
            let kv = k[base + c] * v_j;
            var old: f32;
            if in_registers {
                old = s[i];
            } else {
                old = state[column + i * n];
            }
            out += r[base + c] * (u[c] * kv + old);
            let updated = kv + decay(base, c) * old;
            if in_registers {
                s[i] = updated;
            } else {
                state[column + i * n] = updated;
            }
        }
        y[base + channel] = out;
    }
    if in_registers {
        for (var i = 0u; i < n; i++) {
            state[column + i * n] = s[i];
        }
    }
}
