//! The C ABI (bindings/c): its header is what cbindgen makes of the sources, and the C examples
//! (examples/c), built with the system C compiler against the shared and the static library, run
//! on the demo model: greedy text equal to the CLI's, and every mistake an error, never a crash.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile folder>`, where the tests' own binary and the C library are built.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_rwkv-wgpu")).parent().unwrap().to_path_buf()
}

/// Set RWKV_UPDATE_HEADER=1 to rewrite the header instead of checking it.
#[test]
fn header_matches_the_sources() {
    let crate_dir = root().join("bindings/c");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen reads bindings/c")
        .write(&mut generated);
    let header = crate_dir.join("include/rwkv_wgpu.h");
    if std::env::var_os("RWKV_UPDATE_HEADER").is_some() {
        std::fs::write(&header, &generated).unwrap();
    }
    let committed = std::fs::read(&header).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is not what cbindgen makes of bindings/c/src/lib.rs: rerun with RWKV_UPDATE_HEADER=1 and commit it",
        header.display()
    );
}

/// Builds the C library and compiles `example` against it, shared or static.
fn build_example(example: &str, shared: bool) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Built as part of the build of this test, in its profile, so that cargo resolves the same
    // features and reuses the dependencies already compiled for the tests. Built alone, the
    // library resolves without the dev-dependencies (e.g. `bitflags` without `std`), and wgpu and
    // ~60 other crates compile a second time: 4.5 minutes of a CI run.
    // Each profile builds into its own folder of `target`, named after it, but for the dev and
    // test profiles, which share `debug`.
    let folder = target_dir().file_name().unwrap().to_string_lossy().into_owned();
    let profile = if folder == "debug" { "test".to_string() } else { folder };
    let status = Command::new(cargo)
        .args(["build", "-p", "rwkv-wgpu-c", "--lib", "-p", "rwkv-wgpu", "--test", "c_api"])
        .args(["--profile", &profile, "--manifest-path"])
        .arg(root().join("Cargo.toml"))
        .status()
        .unwrap();
    assert!(status.success(), "building the C library failed");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("c-{example}-{}", if shared { "shared" } else { "static" }));
    let lib = target_dir();
    let mut cc = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cc.arg("-Wall").arg("-Werror").arg("-I").arg(root().join("bindings/c/include"));
    cc.arg(root().join("examples/c").join(format!("{example}.c"))).arg("-o").arg(&out);
    if shared {
        cc.arg("-L").arg(&lib).arg("-lrwkv_wgpu_c").arg(format!("-Wl,-rpath,{}", lib.display()));
    } else {
        // What a Rust static library needs from the system on Linux.
        cc.arg(lib.join("librwkv_wgpu_c.a")).args(["-lpthread", "-ldl", "-lm", "-lrt", "-lgcc_s", "-lc"]);
    }
    let output = cc.output().unwrap_or_else(|e| {
        panic!("the C API tests need a C compiler (`cc`; on Debian/Ubuntu `apt-get install gcc`): {e}")
    });
    assert!(
        output.status.success(),
        "compiling {example}.c failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

fn demo(file: &str) -> String {
    root().join("assets/demo").join(file).display().to_string()
}

fn run(program: &Path, args: &[&str]) -> String {
    let output =
        Command::new(program).args(args).env("XDG_RUNTIME_DIR", std::env::temp_dir()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{} {args:?} failed:\n{stdout}\n{}",
        program.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn c_example_writes_the_clis_greedy_text() {
    let prompt = "KING HENRY. Now, my good lord,";
    let ours = run(
        &build_example("generate", true),
        &[&demo("model.safetensors"), &demo("tokenizer.json"), prompt, "48"],
    );
    let cli = run(
        Path::new(env!("CARGO_BIN_EXE_rwkv-wgpu")),
        &["--backend", "vulkan", "generate", "--prompt", prompt, "-n", "48", "--greedy"],
    );
    assert_eq!(ours.trim_end(), cli.trim_end());
    assert!(ours.trim().len() > 20, "the example wrote almost nothing: {ours:?}");
}

#[test]
fn c_errors_are_statuses_and_messages_never_crashes() {
    let out = run(&build_example("errors", false), &[&demo("model.safetensors"), &demo("tokenizer.json")]);
    assert!(out.contains("all ok"), "{out}");
    assert!(out.lines().filter(|l| l.starts_with("ok: ")).count() >= 25, "{out}");
}
