// RWKV-5 and RWKV-6 time mixing, per head h (S is [heads, head_size (key i), head_size (value j)]):
//   y_j = Σ_i r_i · (u_i · k_i · v_j + S_ij)      the bonus u applies to the current token only
//   S_ij ← k_i · v_j + w_i · S_ij
// One thread owns one value column j of one head; it needs no other thread's data.
// Decay w and bonus u are per channel: RWKV-5.0/5.1's per-head values are expanded at load,
// RWKV-6's decay is computed for each token.
//
// binding 0  params
// binding 1  state  [heads, head_size, head_size]
// binding 2  r      [heads * head_size]
// binding 3  k      [heads * head_size]
// binding 4  v      [heads * head_size]
// binding 5  w      [heads * head_size]   decay in (0, 1)
// binding 6  u      [heads * head_size]   bonus of the current token
// binding 7  y      [heads * head_size]   out

struct Params {
    heads: u32,
    head_size: u32,
    _padding0: u32,
    _padding1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> state: array<f32>;
@group(0) @binding(2) var<storage, read> r: array<f32>;
@group(0) @binding(3) var<storage, read> k: array<f32>;
@group(0) @binding(4) var<storage, read> v: array<f32>;
@group(0) @binding(5) var<storage, read> w: array<f32>;
@group(0) @binding(6) var<storage, read> u: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn wkv5(@builtin(global_invocation_id) id: vec3<u32>) {
    let n = params.head_size;
    let channel = id.x;  // head * n + j
    if channel >= params.heads * n {
        return;
    }
    let j = channel % n;
    let base = channel - j;          // first channel of this head
    let head_state = base * n;       // S[head][0][0]
    let v_j = v[channel];
    var out = 0.0;
    for (var i = 0u; i < n; i++) {
        let c = base + i;
        let at = head_state + i * n + j;
        let kv = k[c] * v_j;
        let s = state[at];
        out += r[c] * (u[c] * kv + s);
        state[at] = kv + w[c] * s;
    }
    y[channel] = out;
}
