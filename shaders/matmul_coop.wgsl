// Matrix-matrix product on cooperative matrices (tensor cores), for the rows (tokens) of a step:
// y[r] (+)= epilogue(W · x[r]) like matmul.wgsl, whose params and epilogue it shares
// (linear_epilogue.wgsl), for any weights prelude (binding 1, load_weight4).
//
// The products take f16 and sum in f32. The weights are f16 already (quantized formats are
// dequantized into f16 as each tile is loaded). The activations are f32, so each is split into
// an f16 high part (its top 11 bits) and the f16 remainder, x ≈ hi + lo to about 2^-22
// relative, and both are multiplied: close to f32 accuracy at twice the tensor work. Each row is first scaled by a power
// of two that puts its largest value near 2^13, exactly undone in the epilogue, so that rows
// beyond f16's range (65504) cannot overflow and small rows keep their remainders out of f16's
// subnormals.
//
// Cooperative matrices are MAT × MAT (a prelude: coop_16.wgsl or coop_8.wgsl). A workgroup
// computes 2·MAT rows × 4·MAT columns as 2 × 4 of them with one subgroup (32 threads: one
// subgroup on most GPUs; where subgroups are narrower, each computes the same tiles and stores
// the same values). The inner dimension goes in rounds of 2·MAT through workgroup memory.
//
// binding 0  params
// binding 1  weights  (from the prelude)
// binding 2  x        [rows, cols4] vec4<f32> per segment
// binding 3  y        (from linear_epilogue.wgsl)
// binding 4  operand  (from linear_epilogue.wgsl)
//
// The weights may be stored by output or (WEIGHTS_BY_INPUT) by input, as in matmul.wgsl.

enable f16;
enable wgpu_cooperative_matrix;

@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;

const THREADS: u32 = 32u;
const ROWS: u32 = 2u * MAT;
const COLUMNS: u32 = 4u * MAT;
const ROUND: u32 = 2u * MAT;   // inner-dimension values per round
const ROUND4: u32 = ROUND / 4u;
// Where a row's largest magnitude is put by its scale: far from f16's largest value 65504.
const TARGET_EXPONENT: i32 = 13;
// Multiply the remainders too (the exact default); off, inputs are rounded to f16 (opt-in
// f16 arithmetic).
override SPLIT_INPUTS: bool = true;
override WEIGHTS_BY_INPUT: bool = false;

var<workgroup> x_high: array<f16, ROWS * ROUND>;     // [ROWS][ROUND]
var<workgroup> x_low: array<f16, ROWS * ROUND>;      // [ROWS][ROUND]
var<workgroup> w_tile: array<f16, COLUMNS * ROUND>;  // [COLUMNS][ROUND]: column-major B
var<workgroup> out_tile: array<f32, MAT * COLUMNS>;  // [MAT][COLUMNS]: half the rows at a time
var<workgroup> row_scale: array<f32, ROWS>;

// Finishes MAT rows of results, stored in out_tile: rows row0 + first_row … + MAT − 1.
fn finish_rows(row0: u32, col0: u32, first_row: u32, thread: u32) {
    workgroupBarrier();
    for (var i = thread; i < MAT * COLUMNS; i += THREADS) {
        let local_row = first_row + i / COLUMNS;
        let r = row0 + local_row;
        let o = col0 + i % COLUMNS;
        if r < params.rows && o < params.part_cols {
            finish(r, params.col_offset + o, out_tile[i] / row_scale[local_row]);
        }
    }
    workgroupBarrier();
}

// The power of two that puts the largest magnitude of input row `row` near 2^TARGET_EXPONENT.
fn scale_of_row(input: u32, row: u32) -> f32 {
    var largest = 0.0;
    if row < params.rows {
        let x_row = input + row * params.cols4;
        for (var k = 0u; k < params.cols4; k++) {
            let v = abs(x[x_row + k]);
            largest = max(largest, max(max(v.x, v.y), max(v.z, v.w)));
        }
    }
    if largest == 0.0 {
        return 1.0;
    }
    return exp2(f32(clamp(TARGET_EXPONENT - i32(floor(log2(largest))), -100, 100)));
}

// The weights alike: output column c's ROUND values are row c of the tile. Stored by input
// (WEIGHTS_BY_INPUT), consecutive threads load consecutive vec4s of outputs of one input.
fn stage_weights(col0: u32, k0: u32, thread: u32) {
    let lines4 = COLUMNS / 4u;
    for (var i = thread; i < COLUMNS * ROUND4; i += THREADS) {
        var o: u32;
        var k: u32;
        var w = vec4<f32>(0.0);
        if WEIGHTS_BY_INPUT {
            o = col0 + (i % lines4) * 4u;
            k = k0 * 4u + i / lines4;
            if o < params.part_cols && k < params.cols4 * 4u {
                w = load_weight4(k * params.stride4 + (params.weight_row0 + o) / 4u);
            }
        } else {
            o = col0 + i / ROUND4;
            k = k0 + i % ROUND4;
            if o < params.part_cols && k < params.cols4 {
                w = load_weight4((params.weight_row0 + o) * params.stride4 + k);
            }
        }
        // int8 and nf4 weights are not f16 values: rounded by bits, every driver holds the same.
        let h = vec4<f16>(nearest_f16(w));
        if WEIGHTS_BY_INPUT {
            let at = (i % lines4) * 4u * ROUND + i / lines4;
            w_tile[at] = h.x;
            w_tile[at + ROUND] = h.y;
            w_tile[at + 2u * ROUND] = h.z;
            w_tile[at + 3u * ROUND] = h.w;
        } else {
            let at = i * 4u;
            w_tile[at] = h.x;
            w_tile[at + 1u] = h.y;
            w_tile[at + 2u] = h.z;
            w_tile[at + 3u] = h.w;
        }
    }
}

@compute @workgroup_size(32)
fn coop(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) thread: u32) {
    let row0 = group.y * ROWS;
    let col0 = group.x * COLUMNS;
    let input = x_base(params.col_offset);
    if thread < ROWS {
        row_scale[thread] = scale_of_row(input, row0 + thread);
    }
    workgroupBarrier();

    var acc00 = CoopC();
    var acc01 = CoopC();
    var acc02 = CoopC();
    var acc03 = CoopC();
    var acc10 = CoopC();
    var acc11 = CoopC();
    var acc12 = CoopC();
    var acc13 = CoopC();
    for (var k0 = 0u; k0 < params.cols4; k0 += ROUND4) {
        // Consecutive threads stage consecutive vec4s of a row: loads of whole lines of memory.
        for (var i = thread; i < ROWS * ROUND4; i += THREADS) {
            let local_row = i / ROUND4;
            let row = row0 + local_row;
            let k = k0 + i % ROUND4;
            var v = vec4<f32>(0.0);
            if row < params.rows && k < params.cols4 {
                v = x[input + row * params.cols4 + k] * row_scale[local_row];
            }
            // The high part keeps the top 11 significant bits by masking, exactly an f16 in the
            // scaled range: a compiler may fold f32(f16(v)) back into v (lavapipe does), which
            // would leave the remainder zero. Without the remainder, inputs are rounded to the
            // nearest f16 instead (nearest_f16.wgsl): truncation errs twice as far, always
            // towards zero.
            let high32 = bitcast<vec4<f32>>(bitcast<vec4<u32>>(v) & vec4<u32>(0xffffe000u));
            let high = vec4<f16>(select(nearest_f16(v), high32, SPLIT_INPUTS));
            let low = vec4<f16>(v - high32);
            let at = i * 4u;
            x_high[at] = high.x;
            x_high[at + 1u] = high.y;
            x_high[at + 2u] = high.z;
            x_high[at + 3u] = high.w;
            x_low[at] = low.x;
            x_low[at + 1u] = low.y;
            x_low[at + 2u] = low.z;
            x_low[at + 3u] = low.w;
        }
        stage_weights(col0, k0, thread);
        workgroupBarrier();
        for (var kk = 0u; kk < ROUND; kk += MAT) {
            let h0 = coopLoadT<CoopA>(&x_high[kk], ROUND);
            let h1 = coopLoadT<CoopA>(&x_high[MAT * ROUND + kk], ROUND);
            let b0 = coopLoad<CoopB>(&w_tile[kk], ROUND);
            let b1 = coopLoad<CoopB>(&w_tile[MAT * ROUND + kk], ROUND);
            let b2 = coopLoad<CoopB>(&w_tile[2u * MAT * ROUND + kk], ROUND);
            let b3 = coopLoad<CoopB>(&w_tile[3u * MAT * ROUND + kk], ROUND);
            acc00 = coopMultiplyAdd(h0, b0, acc00);
            acc01 = coopMultiplyAdd(h0, b1, acc01);
            acc02 = coopMultiplyAdd(h0, b2, acc02);
            acc03 = coopMultiplyAdd(h0, b3, acc03);
            acc10 = coopMultiplyAdd(h1, b0, acc10);
            acc11 = coopMultiplyAdd(h1, b1, acc11);
            acc12 = coopMultiplyAdd(h1, b2, acc12);
            acc13 = coopMultiplyAdd(h1, b3, acc13);
            if SPLIT_INPUTS {
                let l0 = coopLoadT<CoopA>(&x_low[kk], ROUND);
                let l1 = coopLoadT<CoopA>(&x_low[MAT * ROUND + kk], ROUND);
                acc00 = coopMultiplyAdd(l0, b0, acc00);
                acc01 = coopMultiplyAdd(l0, b1, acc01);
                acc02 = coopMultiplyAdd(l0, b2, acc02);
                acc03 = coopMultiplyAdd(l0, b3, acc03);
                acc10 = coopMultiplyAdd(l1, b0, acc10);
                acc11 = coopMultiplyAdd(l1, b1, acc11);
                acc12 = coopMultiplyAdd(l1, b2, acc12);
                acc13 = coopMultiplyAdd(l1, b3, acc13);
            }
        }
        workgroupBarrier();
    }
    coopStoreT(acc00, &out_tile[0], COLUMNS);
    coopStoreT(acc01, &out_tile[MAT], COLUMNS);
    coopStoreT(acc02, &out_tile[2u * MAT], COLUMNS);
    coopStoreT(acc03, &out_tile[3u * MAT], COLUMNS);
    finish_rows(row0, col0, 0u, thread);
    coopStoreT(acc10, &out_tile[0], COLUMNS);
    coopStoreT(acc11, &out_tile[MAT], COLUMNS);
    coopStoreT(acc12, &out_tile[2u * MAT], COLUMNS);
    coopStoreT(acc13, &out_tile[3u * MAT], COLUMNS);
    finish_rows(row0, col0, MAT, thread);
}
