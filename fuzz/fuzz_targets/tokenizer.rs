//! The built-in World tokenizer on arbitrary bytes: valid UTF-8 encodes and decodes back to
//! itself; arbitrary ids (in range) decode without panicking.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rwkv_wgpu::tokenizer::Tokenizer;

fn world() -> &'static Tokenizer {
    static WORLD: OnceLock<Tokenizer> = OnceLock::new();
    WORLD.get_or_init(|| Tokenizer::world().expect("the built-in vocabulary loads"))
}

fuzz_target!(|data: &[u8]| {
    let tokenizer = world();
    if let Ok(text) = std::str::from_utf8(data) {
        let ids = tokenizer.encode(text).expect("any text encodes");
        assert_eq!(tokenizer.decode(&ids).expect("its own ids decode"), text, "round trip");
    }
    let ids: Vec<u32> = data.chunks_exact(2).map(|pair| u32::from(u16::from_le_bytes([pair[0], pair[1]]))).collect();
    let _ = tokenizer.decode(&ids);
});
