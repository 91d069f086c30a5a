// Prelude: the sequences of a step, written each step into a uniform buffer (binding 1).
// A step holds the rows (tokens) of several sequences back to back; sequence s owns rows
// first_row .. first_row + rows and keeps its recurrent state in slot `slot` of the state
// tensors.

const MAX_SEQUENCES: u32 = 256u;

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

@group(0) @binding(1) var<uniform> sequences: Sequences;

// Elements from one row of a [rows, cols] tensor to the next: rows are padded to whole vec4s.
fn row_stride(cols: u32) -> u32 {
    return (cols + 3u) & ~3u;
}
