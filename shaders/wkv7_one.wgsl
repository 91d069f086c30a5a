// RWKV-7's time mix between its two products, for a step of one token per sequence, in one
// dispatch (one workgroup per head and sequence, one thread per channel of the head). For
// many tokens the same math is several kernels: the LoRA output products (linear), wkv7_keys,
// wkv7 and group_norm_bonus_gate. With c the thread's channel, j the head's channels:
//   w = exp(−e^−0.5 · σ(w0 + W2·h_w))         a = σ(a0 + A2·h_a)       g = G2·h_g
//   v = v + (v_first − v) ⊙ σ(v0 + V2·h_v)     (layer 0: v = v_first)
//   kk = normalize(k ⊙ k_k) per head           k' = k ⊙ (1 + (a − 1) ⊙ k_a)
//   S ← S·diag(w) + (S·(−kk))·(kk⊙a)ᵀ + v·k'ᵀ   y = S·r
//   out = (GroupNorm(y) + (Σ_j r_j·k'_j·r_k_j)·v) ⊙ g
// and the sequence remembers the normalized input the first product computed (att_x).
// Needs sequences.wgsl, reduce.wgsl, activation.wgsl and a float weights prelude for binding 1.
//
// binding 0  params
// binding 1  lora      the LoRA output matrices W2, A2, V2 (not in layer 0), G2, [C, rank]
//                      each, in one buffer                                 (weights prelude)
// binding 2  values    stack of [rows, C]: r, k, v, v_first
// binding 3  hidden    stack of [rows, rank]: h_w, h_a, h_v, h_g
// binding 4  channel   [8, C]: k_k, k_a, r_k, ln_x weight, ln_x bias, w0, a0, v0
// binding 5  state     [slots, heads · N · N]
// binding 6  out       [rows, C]
// binding 7  normed    [rows, C]   the time mix's normalized input …
// binding 8  prev      [slots, C]  … which the sequence remembers here
// binding 9  sequences (uniform)

struct Params {
    heads: u32,
    head_size: u32,
    values_stride: u32,   // elements from one entry of binding 2 to the next
    hidden_stride: u32,   // … of binding 3
    rank: vec4<u32>,      // of the decay, in-context rate, value residual and gate LoRAs
    lora_at: vec4<u32>,   // where each LoRA output matrix starts in binding 1, in vec4s
    lora_stride: vec4<u32>,  // vec4s from one row of it to the next
    gn_eps: f32,
    _padding0: u32,
    _padding1: u32,
    _padding2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> values: array<f32>;
@group(0) @binding(3) var<storage, read> hidden: array<f32>;
@group(0) @binding(4) var<storage, read> channel: array<f32>;
@group(0) @binding(5) var<storage, read_write> state: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<storage, read> normed: array<f32>;
@group(0) @binding(8) var<storage, read_write> prev: array<f32>;
@group(0) @binding(9) var<uniform> sequences: Sequences;

// Layers after the first pull their value towards layer 0's.
override VALUE_RESIDUAL: bool;
// Set from kernels::L2_EPS.
override L2_EPS: f32;
// params.head_size as a constant: the loops over a thread's state row then have a fixed count,
// so they unroll and the row stays in registers (with a count read from params, the row is
// indexed dynamically, which puts it in memory).
override HEAD_SIZE: u32;

const LORA_DECAY: u32 = 0u;
const LORA_RATE: u32 = 1u;
const LORA_VALUE: u32 = 2u;
const LORA_GATE: u32 = 3u;
const VALUE_R: u32 = 0u;
const VALUE_K: u32 = 1u;
const VALUE_V: u32 = 2u;
const VALUE_FIRST: u32 = 3u;
const K_K: u32 = 0u;
const K_A: u32 = 1u;
const R_K: u32 = 2u;
const LN_WEIGHT: u32 = 3u;
const LN_BIAS: u32 = 4u;
const W0: u32 = 5u;
const A0: u32 = 6u;
const V0: u32 = 7u;

var<workgroup> shared_w: array<f32, MAX_HEAD_SIZE>;
var<workgroup> shared_k: array<f32, MAX_HEAD_SIZE>;
var<workgroup> shared_kk: array<f32, MAX_HEAD_SIZE>;
var<workgroup> shared_a: array<f32, MAX_HEAD_SIZE>;
var<workgroup> shared_r: array<f32, MAX_HEAD_SIZE>;

// Row c of LoRA output matrix m times its hidden vector (of the step's row `row`).
fn lora(m: u32, c: u32, row: u32) -> f32 {
    let rank = params.rank[m];
    let weights = params.lora_at[m] + c * params.lora_stride[m];
    let input = m * params.hidden_stride + row * ((rank + 3u) & ~3u);
    var acc = vec4<f32>(0.0);
    for (var i = 0u; i < (rank + 3u) / 4u; i++) {
        let j = 4u * i;
        // Past the rank the weights are zero padding, but the hidden values may be anything.
        let h = vec4<f32>(hidden[input + j], hidden[input + min(j + 1u, rank - 1u)],
                          hidden[input + min(j + 2u, rank - 1u)], hidden[input + min(j + 3u, rank - 1u)]);
        let live = vec4<u32>(j, j + 1u, j + 2u, j + 3u) < vec4<u32>(rank);
        acc += load_weight4(weights + i) * select(vec4<f32>(0.0), h, live);
    }
    return acc.x + acc.y + acc.z + acc.w;
}

fn channel_param(which: u32, c: u32) -> f32 {
    return channel[which * ((params.heads * params.head_size + 3u) & ~3u) + c];
}

@compute @workgroup_size(64)
fn wkv7_one(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) thread: u32) {
    let n = HEAD_SIZE;
    let channels = params.heads * n;
    let sequence = sequences.items[group.y];
    let row = sequence.first_row;
    let stride = (channels + 3u) & ~3u;
    let live = thread < n;
    let i = min(thread, n - 1u);
    let c = group.x * n + i;
    let at = row * stride + c;

    // The LoRA outputs and the keys, one channel per thread.
    let r = values[VALUE_R * params.values_stride + at];
    let k = values[VALUE_K * params.values_stride + at];
    let w = activate(ACTIVATION_DECAY7, channel_param(W0, c) + lora(LORA_DECAY, c, row));
    let a = sigmoid(channel_param(A0, c) + lora(LORA_RATE, c, row));
    var v = values[VALUE_FIRST * params.values_stride + at];
    if VALUE_RESIDUAL {
        let own = values[VALUE_V * params.values_stride + at];
        v = own + (v - own) * sigmoid(channel_param(V0, c) + lora(LORA_VALUE, c, row));
    }
    let g = lora(LORA_GATE, c, row);
    let shaped = k * channel_param(K_K, c);
    let norm = sqrt(workgroup_sum(select(0.0, shaped * shaped, live), thread));
    let kk = shaped / max(norm, L2_EPS);
    let k_written = k * (1.0 + (a - 1.0) * channel_param(K_A, c));
    if live {
        shared_w[i] = w;
        shared_k[i] = k_written;
        shared_kk[i] = kk;
        shared_a[i] = a;
        shared_r[i] = r;
    }
    workgroupBarrier();

    // Row i of the head's state: the same order of operations as wkv7.wgsl.
    var y = 0.0;
    if live {
        let state_row = sequence.slot * row_stride(channels * n) + c * n;
        var s: array<f32, MAX_HEAD_SIZE>;
        var sa = 0.0;
        for (var j = 0u; j < n; j++) {
            s[j] = state[state_row + j];
            sa -= s[j] * shared_kk[j];
        }
        for (var j = 0u; j < n; j++) {
            let updated = s[j] * shared_w[j] + sa * shared_kk[j] * shared_a[j] + v * shared_k[j];
            state[state_row + j] = updated;
            y += updated * shared_r[j];
        }
    }

    // Group norm over the head, the bonus and the gate.
    let bonus = workgroup_sum(select(0.0, r * k_written * channel_param(R_K, c), live), thread);
    let mean = workgroup_sum(select(0.0, y, live), thread) / f32(n);
    let d = y - mean;
    let variance = workgroup_sum(select(0.0, d * d, live), thread) / f32(n);
    let normalized = d * inverseSqrt(variance + params.gn_eps) * channel_param(LN_WEIGHT, c)
        + channel_param(LN_BIAS, c);
    if live {
        out[at] = (normalized + bonus * v) * g;
        prev[sequence.slot * stride + c] = normed[at];
    }
}
