//! The demo model built into the binary (assets/demo: a 3.6M-parameter byte-level RWKV-7 trained
//! on Shakespeare), so that the first command writes text on a machine with no model and no
//! network. Commands use it when no --model is given.

pub const NAME: &str = "the built-in demo model (assets/demo)";
pub const MODEL: &[u8] = include_bytes!("../../assets/demo/model.safetensors");
pub const TOKENIZER: &[u8] = include_bytes!("../../assets/demo/tokenizer.json");
