// Layer norm and token shift in one pass, the start of every time mix and channel mix:
//   n[row] = LayerNorm(x[row]);   out[m, row] = n[row] + (n[row − 1] − n[row]) · mix[m]
// where n[row − 1] is, for a sequence's first row, the normalized input it remembers in
// prev[slot]; afterwards (unless KEEP_PREV) the sequence remembers n of its last row. n itself is
// stored in `normed` (RWKV-6 shifts it a second time).
// Needs sequences.wgsl, reduce.wgsl and row_stats.wgsl. Workgroups (row, column block): a row
// normalizes the row before it again rather than wait for another workgroup, and only a
// sequence's first row touches prev, and only in its own columns, so no workgroup reads what
// another writes. With few rows (decode) a row is spread over several column blocks, each
// computing the row's statistics itself: one workgroup walking a whole row is latency-bound on a
// GPU (53 µs for 1024 channels on an H100).
//
// binding 0  params
// binding 1  sequences  (uniform, from the prelude)
// binding 2  x       [rows, C]
// binding 3  norm    [2, C]      weight, then bias
// binding 4  prev    [slots, C]  state: each sequence's previous normalized input
// binding 5  mix     [mixes, C]
// binding 6  out     [mixes] entries of [rows, C], out_entry_stride apart
// binding 7  normed  [rows, C]

struct Params {
    len: u32,
    rows: u32,
    mixes: u32,
    out_entry_stride: u32,
    eps: f32,
    _padding0: u32,
    _padding1: u32,
    _padding2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> norm: array<f32>;
@group(0) @binding(4) var<storage, read_write> prev: array<f32>;
@group(0) @binding(5) var<storage, read> mix: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<storage, read_write> normed: array<f32>;

override KEEP_PREV: bool = false;

fn normalized(row: u32, c: u32, stats: vec2<f32>) -> f32 {
    let stride = row_stride(params.len);
    return (x[row * stride + c] - stats.x) * stats.y * norm[c] + norm[stride + c];
}

@compute @workgroup_size(64)
fn layer_norm_shift(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) thread: u32,
) {
    let row = group.x;
    let s = sequence_of_row(row);
    if row >= params.rows || s == sequences.count {
        return;
    }
    let sequence = sequences.items[s];
    let t = row - sequence.first_row;
    let stride = row_stride(params.len);
    let own = row_stats(row, thread);
    var before = vec2<f32>(0.0);
    if t > 0u {
        before = row_stats(row - 1u, thread);
    }
    let first_column = group.y * WORKGROUP_SIZE + thread;
    let column_step = groups.y * WORKGROUP_SIZE;
    for (var c = first_column; c < params.len; c += column_step) {
        let current = normalized(row, c, own);
        var previous = prev[sequence.slot * stride + c];
        if t > 0u {
            previous = normalized(row - 1u, c, before);
        }
        let delta = previous - current;
        for (var m = 0u; m < params.mixes; m++) {
            out[m * params.out_entry_stride + row * stride + c] = current + delta * mix[m * stride + c];
        }
        normed[row * stride + c] = current;
    }
    // Each thread reads prev only for its own channels above, so it may overwrite them now.
    if !KEEP_PREV && t == 0u {
        let last = sequence.first_row + sequence.rows - 1u;
        let stats = row_stats(last, thread);
        for (var c = first_column; c < params.len; c += column_step) {
            prev[sequence.slot * stride + c] = normalized(last, c, stats);
        }
    }
}
