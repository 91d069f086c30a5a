// RWKV-7 state update and readout, per head h (S is [heads, head_size (value i), head_size (key j)]):
//   S ← S·diag(w) + (S·(−kk))·(kk⊙a)ᵀ + v·kᵀ      both S terms use the old S
//   y = S·r                                        with the new S
// One thread owns one value row i of one head: it needs no other thread's data, so no barriers.
//
// binding 0  params
// binding 1  state  [heads, head_size, head_size]
// binding 2  r      [heads * head_size]
// binding 3  w      [heads * head_size]   decay in (0, 1)
// binding 4  k      [heads * head_size]   the shaped key k'
// binding 5  v      [heads * head_size]
// binding 6  kk     [heads * head_size]   unit-norm removal key
// binding 7  a      [heads * head_size]   in-context learning rate
// binding 8  y      [heads * head_size]   out

struct Params {
    heads: u32,
    head_size: u32,
    _padding0: u32,
    _padding1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> state: array<f32>;
@group(0) @binding(2) var<storage, read> r: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read> k: array<f32>;
@group(0) @binding(5) var<storage, read> v: array<f32>;
@group(0) @binding(6) var<storage, read> kk: array<f32>;
@group(0) @binding(7) var<storage, read> a: array<f32>;
@group(0) @binding(8) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn wkv7(@builtin(global_invocation_id) id: vec3<u32>) {
    let n = params.head_size;
    let channel = id.x;  // head * n + i
    if channel >= params.heads * n {
        return;
    }
    let base = channel - channel % n;  // first channel of this head
    let row = channel * n;             // S[head][i][0]

    // sa = S·(−kk), from the old state.
    var sa = 0.0;
    for (var j = 0u; j < n; j++) {
        sa -= state[row + j] * kk[base + j];
    }
    let v_i = v[channel];
    var out = 0.0;
    for (var j = 0u; j < n; j++) {
        let c = base + j;
        let s = state[row + j] * w[c] + sa * kk[c] * a[c] + v_i * k[c];
        state[row + j] = s;
        out += s * r[c];
    }
    y[channel] = out;
}
