// RWKV-4 time mixing, per channel, in log space so the running sums never overflow.
// State per channel: aa, bb (numerator and denominator sums, scaled by e^-pp) and pp.
//   p = max(pp, u + k);  wkv = (e^(pp−p)·aa + e^(u+k−p)·v) / (e^(pp−p)·bb + e^(u+k−p))
//   p' = max(w + pp, k); aa ← e^(w+pp−p')·aa + e^(k−p')·v; bb ← e^(w+pp−p')·bb + e^(k−p'); pp ← p'
//   y = r ⊙ wkv
//
// binding 0  params
// binding 1  state  [3, len]   aa, then bb, then pp
// binding 2  r      [len]      receptance after sigmoid
// binding 3  k      [len]
// binding 4  v      [len]
// binding 5  w      [len]      −exp(time_decay)
// binding 6  u      [len]      time_first
// binding 7  y      [len]      out

struct Params {
    len: u32,
    _padding0: u32,
    _padding1: u32,
    _padding2: u32,
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
fn wkv4(@builtin(global_invocation_id) id: vec3<u32>) {
    let c = id.x;
    let n = params.len;
    if c >= n {
        return;
    }
    let aa = state[c];
    let bb = state[n + c];
    let pp = state[2u * n + c];
    let kc = k[c];
    let vc = v[c];

    let bonus = u[c] + kc;
    let p = max(pp, bonus);
    let e1 = exp(pp - p);
    let e2 = exp(bonus - p);
    y[c] = r[c] * (e1 * aa + e2 * vc) / (e1 * bb + e2);

    let decayed = w[c] + pp;
    let q = max(decayed, kc);
    let f1 = exp(decayed - q);
    let f2 = exp(kc - q);
    state[c] = f1 * aa + f2 * vc;
    state[n + c] = f1 * bb + f2;
    state[2u * n + c] = q;
}
