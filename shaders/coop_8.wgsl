// Prelude: matmul_coop.wgsl on 8 × 8 cooperative matrices (Apple's simdgroup matrices through
// Metal, and lavapipe, which list 8×8×8 f16 products summed in f32).
enable wgpu_cooperative_matrix;
const MAT: u32 = 8u;
alias CoopA = coop_mat8x8<f16, A>;
alias CoopB = coop_mat8x8<f16, B>;
alias CoopC = coop_mat8x8<f32, C>;
