// RWKV-5 and RWKV-6's time mix between its products, for one token per sequence, in one
// dispatch: wkv5.wgsl's state update and readout, then group_norm.wgsl's group norm (and, from
// RWKV-5.1 on, gate) of the head's outputs. One workgroup per head and sequence, one thread per
// value column j of the head (heads of at most WORKGROUP_SIZE channels):
//   y_j = Σ_i r_i · (u_i · k_i · v_j + S_ij);  S_ij ← k_i · v_j + w_i · S_ij
//   out_j = ((y_j − mean) / sqrt(var + eps) · weight_j + bias_j) [· g_j]
// Needs sequences.wgsl, sequences_binding.wgsl, wkv_bindings.wgsl (binding 8, y, receives out),
// reduce.wgsl and group_norm_params.wgsl.
//
// binding 0   params
// binding 1   sequences  (uniform, from the prelude)
// binding 2–8 state, r, k, v, w, u, out  (as in wkv5.wgsl)
// binding 9   norm  [2, C]     ln_x weight, then bias
// binding 10  gate  [rows, C]  read where GATED

@group(0) @binding(9) var<storage, read> norm: array<f32>;
@group(0) @binding(10) var<storage, read> gate: array<f32>;

override DECAY_PER_ROW: bool = false;
override GATED: bool = false;
// params.head_size as a constant, so that the loop over the head's keys has a fixed count.
override HEAD_SIZE: u32;

@compute @workgroup_size(WORKGROUP_SIZE)
fn wkv5_one(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) j: u32) {
    let n = HEAD_SIZE;
    let channels = params.heads * n;
    let sequence = sequences.items[group.y];
    let base = sequence.first_row * row_stride(channels);
    let head_first = group.x * n;
    let channel = head_first + j;
    let in_head = j < n;
    var out = 0.0;
    if in_head {
        let column = sequence.slot * row_stride(channels * n) + head_first * n + j;  // S[slot][h][0][j]
        let v_j = v[base + channel];
        for (var i = 0u; i < n; i++) {
            let c = head_first + i;
            let kv = k[base + c] * v_j;
            let old = state[column + i * n];
            out += r[base + c] * (u[c] * kv + old);
            var decay = w[c];
            if DECAY_PER_ROW {
                decay = w[base + c];
            }
            state[column + i * n] = kv + decay * old;
        }
    }
    // The head's statistics in two passes, as group_norm.wgsl takes them.
    let mean = workgroup_sum(out, j) / f32(n);
    let d = select(0.0, out - mean, in_head);
    let inverse_std = inverseSqrt(workgroup_sum(d * d, j) / f32(n) + params.eps);
    if in_head {
        var value = d * inverse_std * norm[channel] + norm[row_stride(channels) + channel];
        if GATED {
            value *= gate[base + channel];
        }
        y[base + channel] = value;
    }
}
