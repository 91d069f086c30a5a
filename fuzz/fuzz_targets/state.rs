//! Arbitrary bytes as a saved state file: reading must return an error or a state whose
//! re-encoding reads back equal, never panic or allocate what the file claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rwkv_wgpu::runtime::State;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = State::from_bytes("fuzz", data) {
        let bytes = state.to_bytes().expect("a state that was read can be written");
        let again = State::from_bytes("fuzz", &bytes).expect("a written state reads back");
        assert_eq!(again.to_bytes().expect("and writes again"), bytes);
    }
});
