// Prelude: the element-wise activations kernels apply to their results.
// The numbering is mirrored by `kernels::Activation` in Rust.

const ACTIVATION_NONE: u32 = 0u;
const ACTIVATION_TANH: u32 = 1u;
const ACTIVATION_SIGMOID: u32 = 2u;
const ACTIVATION_RELU_SQUARED: u32 = 3u;
// RWKV-7 decay: exp(-e^-0.5 * sigmoid(x)), in (0.545, 1). 0.606531 = exp(-0.5).
const ACTIVATION_DECAY7: u32 = 4u;
const ACTIVATION_SILU: u32 = 5u;
// RWKV-5/6 decay: exp(-exp(x)), in (0, 1).
const ACTIVATION_DECAY6: u32 = 6u;

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// Written out because some drivers compute tanh through exp and return NaN for large |x|.
fn stable_tanh(x: f32) -> f32 {
    let e = exp(-2.0 * abs(x));
    return sign(x) * (1.0 - e) / (1.0 + e);
}

fn activate(kind: u32, x: f32) -> f32 {
    switch kind {
        case ACTIVATION_TANH: { return stable_tanh(x); }
        case ACTIVATION_SIGMOID: { return sigmoid(x); }
        case ACTIVATION_RELU_SQUARED: { let r = max(x, 0.0); return r * r; }
        case ACTIVATION_DECAY7: { return exp(-0.606531 * sigmoid(x)); }
        case ACTIVATION_SILU: { return x * sigmoid(x); }
        case ACTIVATION_DECAY6: { return exp(-exp(x)); }
        default: { return x; }
    }
}
