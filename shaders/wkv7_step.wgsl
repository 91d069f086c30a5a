// Prelude: one token's RWKV-7 update of one value row i of a head's state, shared by the serial
// walk (wkv7.wgsl) and the chunk operators (wkv7_chunk_operators.wgsl):
//   sa = S_i·(−kk)              from the old row
//   S_i ← S_i⊙w + sa·(kk⊙a) + v_i·k
//   y_i = S_i·r                 from the new row
// HEAD_SIZE is an override constant, so that every loop over a head has a fixed trip count and
// a row of up to MAX_HEAD_SIZE (sequences.wgsl) can stay in registers.
//
// binding 3  r   [rows, C]
// binding 4  w   [rows, C]   decay in (0, 1)
// binding 5  k   [rows, C]   the shaped key k'
// binding 6  v   [rows, C]
// binding 7  kk  [rows, C]   unit-norm removal key
// binding 8  a   [rows, C]   in-context learning rate

override HEAD_SIZE: u32;

@group(0) @binding(3) var<storage, read> r: array<f32>;
@group(0) @binding(4) var<storage, read> w: array<f32>;
@group(0) @binding(5) var<storage, read> k: array<f32>;
@group(0) @binding(6) var<storage, read> v: array<f32>;
@group(0) @binding(7) var<storage, read> kk: array<f32>;
@group(0) @binding(8) var<storage, read> a: array<f32>;

// One token's update of the row held in `s`, whose head's inputs start at `at`; returns y_i.
fn step_in_registers(s: ptr<function, array<f32, MAX_HEAD_SIZE>>, at: u32, v_i: f32) -> f32 {
    var sa = 0.0;
    for (var j = 0u; j < HEAD_SIZE; j++) {
        sa -= (*s)[j] * kk[at + j];
    }
    var out = 0.0;
    for (var j = 0u; j < HEAD_SIZE; j++) {
        let c = at + j;
        let updated = (*s)[j] * w[c] + sa * kk[c] * a[c] + v_i * k[c];
        (*s)[j] = updated;
        out += updated * r[c];
    }
    return out;
}
