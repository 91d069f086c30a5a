//! The official `openai` Python client (PyPI) against the server on the demo model: the checks
//! are in tests/openai_client.py. The interpreter is `RWKV_WGPU_PYTHON` (`bash .ci/run` sets up
//! .ci/venv with the client), else `python3`; without the client the test fails saying so.

mod common;
mod serve;

use std::path::Path;
use std::process::Command;

use rwkv_wgpu::server::ServerOptions;

#[test]
fn the_official_openai_client_works_against_the_server() {
    let python = std::env::var("RWKV_WGPU_PYTHON").unwrap_or_else(|_| {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/python");
        if venv.exists() {
            venv.display().to_string()
        } else {
            "python3".into()
        }
    });
    let probe = Command::new(&python).args(["-c", "import openai"]).output();
    assert!(
        probe.as_ref().is_ok_and(|out| out.status.success()),
        "{python} cannot import the `openai` package: run `bash .ci/run` (which makes .ci/venv with it), \
         or `pip install openai` and set RWKV_WGPU_PYTHON to that interpreter ({probe:?})"
    );
    let served = serve::start(ServerOptions { api_key: Some("test-key".into()), ..ServerOptions::default() });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let output = Command::new(&python)
        .arg(&script)
        .args([&format!("{}/v1", served.base), "test-key", "demo"])
        .output()
        .unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && text.contains("all checks passed"), "{text}");
}
