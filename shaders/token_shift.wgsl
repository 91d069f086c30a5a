// Token shift: mixes each channel of each row with the previous token's, once per mix:
//   out[m, row, c] = x[row, c] + (prev[c] − x[row, c]) · mix[m, c]
// where prev is the row before in the same sequence, or the sequence's remembered input for its
// first row; afterwards (unless KEEP_PREV) the sequence remembers its last row.
// The mixes are weights, [mixes, C] (RWKV-4…7), or computed per row, [mixes] entries of
// [rows, C] (RWKV-6's data-dependent shift, which shifts twice and keeps `prev` the first time).
// Needs sequences.wgsl. One thread per channel and sequence: it walks the sequence's rows in order.
//
// binding 0  params
// binding 1  sequences  (uniform, from the prelude)
// binding 2  x      [rows, C]
// binding 3  prev   [slots, C]        state: each sequence's previous input
// binding 4  mix    see above
// binding 5  out    [mixes] entries of [rows, C], out_entry_stride apart

struct Params {
    len: u32,
    mixes: u32,
    out_entry_stride: u32,
    mix_entry_stride: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> prev: array<f32>;
@group(0) @binding(4) var<storage, read> mix: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

override KEEP_PREV: bool = false;
override MIX_PER_ROW: bool = false;

@compute @workgroup_size(64)
fn token_shift(@builtin(global_invocation_id) id: vec3<u32>) {
    let c = id.x;
    if c >= params.len || id.y >= sequences.count {
        return;
    }
    let sequence = sequences.items[id.y];
    let stride = row_stride(params.len);
    var previous = prev[sequence.slot * stride + c];
    for (var t = 0u; t < sequence.rows; t++) {
        let at = (sequence.first_row + t) * stride + c;
        let current = x[at];
        let delta = previous - current;
        for (var m = 0u; m < params.mixes; m++) {
            var weight = mix[m * stride + c];
            if MIX_PER_ROW {
                weight = mix[m * params.mix_entry_stride + at];
            }
            out[m * params.out_entry_stride + at] = current + delta * weight;
        }
        previous = current;
    }
    if !KEEP_PREV {
        prev[sequence.slot * stride + c] = previous;
    }
}
