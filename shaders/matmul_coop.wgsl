// Matrix-matrix product on cooperative matrices (tensor cores), for the rows (tokens) of a step:
// y[r] (+)= epilogue(W · x[r]) like matmul.wgsl, whose params and epilogue it shares
// (linear_epilogue.wgsl), for any weights prelude (binding 1, load_weight4).
//
// The products take f16 and sum in f32. The weights are f16 already (quantized formats are
// dequantized into f16 as each tile is loaded). The activations are f32, so each is split into
// an f16 high part (its top 11 bits) and the f16 remainder, x ≈ hi + lo to about 2^-22
// relative, and both are
// multiplied: close to f32 accuracy at twice the tensor work. Each row is first scaled by a power
// of two that puts its largest value near 2^13, exactly undone in the epilogue, so that rows
// beyond f16's range (65504) cannot overflow and small rows keep their remainders out of f16's
// subnormals.
//
// A workgroup computes 32 rows × 64 columns as 2 × 4 tiles of 16 × 16 with one subgroup's
// cooperative matrices (32 threads: one subgroup on most GPUs; where subgroups are narrower,
// each computes the same tiles and stores the same values). The inner dimension goes in rounds
// of 32 through workgroup memory.
//
// binding 0  params
// binding 1  weights  (from the prelude)
// binding 2  x        [rows, cols4] vec4<f32> per segment
// binding 3  y        (from linear_epilogue.wgsl)
// binding 4  operand  (from linear_epilogue.wgsl)

enable f16;
enable wgpu_cooperative_matrix;

@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;

const ROWS: u32 = 32u;
const COLUMNS: u32 = 64u;
const ROUND: u32 = 32u;        // inner-dimension values per round
const ROUND4: u32 = ROUND / 4u;
// Where a row's largest magnitude is put by its scale: far from f16's largest value 65504.
const TARGET_EXPONENT: i32 = 13;
// Multiply the remainders too (the exact default); off, inputs are rounded to f16 (opt-in
// f16 arithmetic).
override SPLIT_INPUTS: bool = true;

var<workgroup> x_high: array<f16, 1024>;    // [ROWS][ROUND]
var<workgroup> x_low: array<f16, 1024>;     // [ROWS][ROUND]
var<workgroup> w_tile: array<f16, 2048>;    // [COLUMNS][ROUND]: column-major B
var<workgroup> out_tile: array<f32, 1024>;  // [16][COLUMNS]: half the rows at a time
var<workgroup> row_scale: array<f32, 32>;

// Finishes 16 rows of results, stored in out_tile: rows row0 + first_row … + 15.
fn finish_rows(row0: u32, col0: u32, first_row: u32, thread: u32) {
    workgroupBarrier();
    for (var i = thread; i < 16u * COLUMNS; i += ROWS) {
        let local_row = first_row + i / COLUMNS;
        let r = row0 + local_row;
        let o = col0 + i % COLUMNS;
        if r < params.rows && o < params.part_cols {
            finish(r, params.col_offset + o, out_tile[i] / row_scale[local_row]);
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(32)
fn coop(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) thread: u32) {
    let row0 = group.y * ROWS;
    let col0 = group.x * COLUMNS;
    let input = x_base(params.col_offset);
    // Thread t stages row t of the inputs; rows past the end read as zeros.
    let row = row0 + thread;
    let has_row = row < params.rows;
    let x_row = input + min(row, params.rows - 1u) * params.cols4;
    var largest = 0.0;
    if has_row {
        for (var k = 0u; k < params.cols4; k++) {
            let v = abs(x[x_row + k]);
            largest = max(largest, max(max(v.x, v.y), max(v.z, v.w)));
        }
    }
    var scale = 1.0;
    if largest > 0.0 {
        scale = exp2(f32(clamp(TARGET_EXPONENT - i32(floor(log2(largest))), -100, 100)));
    }
    row_scale[thread] = scale;

    var acc00 = coop_mat16x16<f32, C>();
    var acc01 = coop_mat16x16<f32, C>();
    var acc02 = coop_mat16x16<f32, C>();
    var acc03 = coop_mat16x16<f32, C>();
    var acc10 = coop_mat16x16<f32, C>();
    var acc11 = coop_mat16x16<f32, C>();
    var acc12 = coop_mat16x16<f32, C>();
    var acc13 = coop_mat16x16<f32, C>();
    for (var k0 = 0u; k0 < params.cols4; k0 += ROUND4) {
        for (var j = 0u; j < ROUND4; j++) {
            let k = k0 + j;
            var v = vec4<f32>(0.0);
            if has_row && k < params.cols4 {
                v = x[x_row + k] * scale;
            }
            // The high part keeps the top 11 significant bits by masking, exactly an f16 in the
            // scaled range: a compiler may fold f32(f16(v)) back into v (lavapipe does), which
            // would leave the remainder zero.
            let high32 = bitcast<vec4<f32>>(bitcast<vec4<u32>>(v) & vec4<u32>(0xffffe000u));
            let high = vec4<f16>(high32);
            let low = vec4<f16>(v - high32);
            let at = thread * ROUND + j * 4u;
            x_high[at] = high.x;
            x_high[at + 1u] = high.y;
            x_high[at + 2u] = high.z;
            x_high[at + 3u] = high.w;
            x_low[at] = low.x;
            x_low[at + 1u] = low.y;
            x_low[at + 2u] = low.z;
            x_low[at + 3u] = low.w;
        }
        // Two weight rows (output columns) per thread.
        for (var c = thread; c < COLUMNS; c += ROWS) {
            let o = col0 + c;
            let w_row = (params.weight_row0 + min(o, params.part_cols - 1u)) * params.stride4;
            for (var j = 0u; j < ROUND4; j++) {
                let k = k0 + j;
                var w = vec4<f32>(0.0);
                if o < params.part_cols && k < params.cols4 {
                    w = load_weight4(w_row + k);
                }
                let h = vec4<f16>(w);
                let at = c * ROUND + j * 4u;
                w_tile[at] = h.x;
                w_tile[at + 1u] = h.y;
                w_tile[at + 2u] = h.z;
                w_tile[at + 3u] = h.w;
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < ROUND; kk += 16u) {
            let h0 = coopLoadT<coop_mat16x16<f16, A>>(&x_high[kk], ROUND);
            let h1 = coopLoadT<coop_mat16x16<f16, A>>(&x_high[16u * ROUND + kk], ROUND);
            let b0 = coopLoad<coop_mat16x16<f16, B>>(&w_tile[kk], ROUND);
            let b1 = coopLoad<coop_mat16x16<f16, B>>(&w_tile[16u * ROUND + kk], ROUND);
            let b2 = coopLoad<coop_mat16x16<f16, B>>(&w_tile[32u * ROUND + kk], ROUND);
            let b3 = coopLoad<coop_mat16x16<f16, B>>(&w_tile[48u * ROUND + kk], ROUND);
            acc00 = coopMultiplyAdd(h0, b0, acc00);
            acc01 = coopMultiplyAdd(h0, b1, acc01);
            acc02 = coopMultiplyAdd(h0, b2, acc02);
            acc03 = coopMultiplyAdd(h0, b3, acc03);
            acc10 = coopMultiplyAdd(h1, b0, acc10);
            acc11 = coopMultiplyAdd(h1, b1, acc11);
            acc12 = coopMultiplyAdd(h1, b2, acc12);
            acc13 = coopMultiplyAdd(h1, b3, acc13);
            if SPLIT_INPUTS {
                let l0 = coopLoadT<coop_mat16x16<f16, A>>(&x_low[kk], ROUND);
                let l1 = coopLoadT<coop_mat16x16<f16, A>>(&x_low[16u * ROUND + kk], ROUND);
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
    coopStoreT(acc01, &out_tile[16], COLUMNS);
    coopStoreT(acc02, &out_tile[32], COLUMNS);
    coopStoreT(acc03, &out_tile[48], COLUMNS);
    finish_rows(row0, col0, 0u, thread);
    coopStoreT(acc10, &out_tile[0], COLUMNS);
    coopStoreT(acc11, &out_tile[16], COLUMNS);
    coopStoreT(acc12, &out_tile[32], COLUMNS);
    coopStoreT(acc13, &out_tile[48], COLUMNS);
    finish_rows(row0, col0, 16u, thread);
}
