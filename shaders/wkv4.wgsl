// RWKV-4 time mixing, per sequence and channel, in log space so the running sums never overflow.
// State per channel: aa, bb (numerator and denominator sums, scaled by e^-pp) and pp.
//   p = max(pp, u + k);  wkv = (e^(pp−p)·aa + e^(u+k−p)·v) / (e^(pp−p)·bb + e^(u+k−p))
//   p' = max(w + pp, k); aa ← e^(w+pp−p')·aa + e^(k−p')·v; bb ← e^(w+pp−p')·bb + e^(k−p'); pp ← p'
//   y = r ⊙ wkv
// One thread per channel and sequence walks the window's tokens with the state in registers.
// Needs sequences.wgsl and wkv_bindings.wgsl.
//
// binding 0  params
// binding 1  sequences  (uniform, from the prelude)
// binding 2  state  [slots, 3 · C]   aa, then bb, then pp
// binding 3  r      [rows, C]        receptance after sigmoid
// binding 4  k      [rows, C]
// binding 5  v      [rows, C]
// binding 6  w      [C]              −exp(time_decay)
// binding 7  u      [C]              time_first
// binding 8  y      [rows, C]        out

struct Params {
    len: u32,
    _padding: u32,
    window_first: u32,  // the rows this dispatch walks (window_rows)
    window_count: u32,
}

@group(0) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(64)
fn wkv4(@builtin(global_invocation_id) id: vec3<u32>) {
    let c = id.x;
    let n = params.len;
    if c >= n || id.y >= sequences.count {
        return;
    }
    let sequence = sequences.items[id.y];
    let rows = window_rows(params.window_first, params.window_count, sequence);
    if rows.x == rows.y {
        return;
    }
    let slot = sequence.slot * row_stride(3u * n);
    var aa = state[slot + c];
    var bb = state[slot + n + c];
    var pp = state[slot + 2u * n + c];
    for (var t = rows.x; t < rows.y; t++) {
        let at = (sequence.first_row + t) * row_stride(n) + c;
        let kc = k[at];
        let vc = v[at];

        let bonus = u[c] + kc;
        let p = max(pp, bonus);
        let e1 = exp(pp - p);
        let e2 = exp(bonus - p);
        y[at] = r[at] * (e1 * aa + e2 * vc) / (e1 * bb + e2);

        let decayed = w[c] + pp;
        let q = max(decayed, kc);
        let f1 = exp(decayed - q);
        let f2 = exp(kc - q);
        aa = f1 * aa + f2 * vc;
        bb = f1 * bb + f2;
        pp = q;
    }
    state[slot + c] = aa;
    state[slot + n + c] = bb;
    state[slot + 2u * n + c] = pp;
}
