// Prelude: matmul_coop.wgsl on 16 × 16 cooperative matrices (NVIDIA's tensor cores, and the
// Vulkan drivers that list 16×16×16 f16 products summed in f32).
enable wgpu_cooperative_matrix;
const MAT: u32 = 16u;
alias CoopA = coop_mat16x16<f16, A>;
alias CoopB = coop_mat16x16<f16, B>;
alias CoopC = coop_mat16x16<f32, C>;
