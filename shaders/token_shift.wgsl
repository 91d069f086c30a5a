// Token shift: mixes each channel of each row with the previous token's, once per mix:
//   out[m, row, c] = x[row, c] + (prev[c] − x[row, c]) · mix[m, c]
// where prev is the row before in the same sequence, or the sequence's remembered input for its
// first row; afterwards (unless KEEP_PREV) the sequence remembers its last row.
// The mixes are weights, [mixes, C] (RWKV-4…7), or computed per row, [mixes] entries of
// [rows, C] (RWKV-6's data-dependent shift, which shifts twice and keeps `prev` the first time).
// Needs sequences.wgsl. One thread per channel and row, the grid being [channel blocks, rows]:
// the row before is in `x`, and only a sequence's first row reads `prev`, so the thread that
// reads prev[c] is the one that overwrites it and rows need no order.
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
    let row = id.y;
    let s = sequence_of_row(row);
    if c >= params.len || s == sequences.count {
        return;
    }
    let sequence = sequences.items[s];
    let stride = row_stride(params.len);
    let first = row == sequence.first_row;
    let at = row * stride + c;
    let current = x[at];
    var previous = 0.0;
    if first {
        previous = prev[sequence.slot * stride + c];
    } else {
        previous = x[at - stride];
    }
    let delta = previous - current;
    for (var m = 0u; m < params.mixes; m++) {
        var weight = mix[m * stride + c];
        if MIX_PER_ROW {
            weight = mix[m * params.mix_entry_stride + at];
        }
        out[m * params.out_entry_stride + at] = current + delta * weight;
    }
    if !KEEP_PREV && first {
        prev[sequence.slot * stride + c] = x[(sequence.first_row + sequence.rows - 1u) * stride + c];
    }
}
