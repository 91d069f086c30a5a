// Prelude: the sequences of a step, written each step into a uniform buffer that the kernel
// declares as `sequences` (sequences_binding.wgsl puts it at binding 1; kernels whose binding 1
// holds something else put it after their storage bindings).
// A step holds the rows (tokens) of several sequences back to back; sequence s owns rows
// first_row .. first_row + rows and keeps its recurrent state in slot `slot` of the state
// tensors.

// MAX_SEQUENCES, the most sequences of a step, and MAX_HEAD_SIZE, the largest head whose
// recurrence keeps a row of its state in registers (wkv5.wgsl, wkv7.wgsl), are declared before
// this prelude from kernels::sequences.

struct Sequence {
    slot: u32,
    first_row: u32,
    rows: u32,
    _padding: u32,
}

struct Sequences {
    count: u32,
    _padding0: u32,
    _padding1: u32,
    _padding2: u32,
    items: array<Sequence, MAX_SEQUENCES>,
}

// The params of a recurrence over heads (wkv5.wgsl, wkv7.wgsl), walked in windows of rows;
// kernels::sequences::HeadWalk on the Rust side.
struct HeadWalk {
    heads: u32,
    head_size: u32,
    window_first: u32,  // the rows this dispatch walks (window_rows)
    window_count: u32,
}

// Elements from one row of a [rows, cols] tensor to the next: rows are padded to whole vec4s.
fn row_stride(cols: u32) -> u32 {
    return (cols + 3u) & ~3u;
}

// The sequence that owns `row`, or sequences.count if none does.
fn sequence_of_row(row: u32) -> u32 {
    var s = 0u;
    for (; s < sequences.count; s++) {
        let q = sequences.items[s];
        if row >= q.first_row && row < q.first_row + q.rows {
            break;
        }
    }
    return s;
}

// Kernels that walk a sequence's rows in order do it in windows, one dispatch per window (see
// `LOOP_BUDGET` in src/kernels/sequences.rs): this dispatch walks `count` rows of each sequence
// from `first`, clipped to its length. Returns [first row, end); empty once past the end.
fn window_rows(first: u32, count: u32, sequence: Sequence) -> vec2<u32> {
    let end = min(sequence.rows, first + count);
    return vec2<u32>(min(first, end), end);
}
