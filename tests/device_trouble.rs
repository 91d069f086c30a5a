//! A lost device surfaces as an error from the call that hit it, never a panic or a hang, and the
//! process stays healthy: the engine can be dropped and a new one made.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rwkv_wgpu::gpu::GpuOptions;
use rwkv_wgpu::model::{LoadOptions, Model};
use rwkv_wgpu::runtime::{Engine, EngineOptions, Session};
use rwkv_wgpu::Error;

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v7/tiny/model-f16.safetensors")
}

/// Both backends the tests run on: their devices are lost differently.
fn backends() -> [fn() -> rwkv_wgpu::gpu::Gpu; 2] {
    [common::default_gpu, common::gl_gpu]
}

fn new_engine(gpu: rwkv_wgpu::gpu::Gpu) -> Engine {
    let gpu = Arc::new(gpu);
    let model = Model::load(gpu, &tiny(), &LoadOptions::default()).unwrap();
    Engine::new(Arc::new(model), EngineOptions { slots: 2, chunk: 8 }).unwrap()
}

fn expect_lost(error: Error) {
    let message = error.to_string();
    assert!(matches!(error, Error::Gpu(_)), "{error:?}");
    assert!(message.contains("the GPU device was lost"), "{message}");
    assert!(!message.contains('\n'), "multi-line error: {message}");
}

#[test]
fn a_step_on_a_lost_device_is_an_error_and_a_new_engine_works() {
    for open in backends() {
        let engine = new_engine(open());
        let mut session = Session::new(&engine).unwrap();
        let first = session.feed(&[1, 2, 3]).unwrap();
        // The same shape again, so that the lost step is one already recorded.
        session.feed(&[4, 5, 6]).unwrap();
        engine.model().gpu.device.destroy();
        expect_lost(session.feed(&[7, 8, 9]).unwrap_err());
        // Everything after the loss fails the same way, whatever it needs of the device.
        expect_lost(session.feed(&[1]).unwrap_err());
        expect_lost(session.state().unwrap_err());
        expect_lost(Session::new(&engine).and_then(|mut s| s.feed(&[1])).unwrap_err());
        drop(session);
        drop(engine);

        let engine = new_engine(open());
        let mut session = Session::new(&engine).unwrap();
        assert_eq!(session.feed(&[1, 2, 3]).unwrap(), first);
    }
}

#[test]
fn loading_onto_a_lost_device_is_an_error() {
    for open in backends() {
        let gpu = Arc::new(open());
        gpu.device.destroy();
        let error =
            Model::load(gpu, &tiny(), &LoadOptions::default()).err().expect("loaded onto a lost device");
        expect_lost(error);
    }
}

#[test]
fn more_than_the_device_holds_is_too_big() {
    let gpu = Arc::new(common::default_gpu());
    let model = Arc::new(Model::load(gpu, &tiny(), &LoadOptions::default()).unwrap());
    for slots in [50_000_000, usize::MAX] {
        let error = Engine::new(model.clone(), EngineOptions { slots, chunk: 8 }).err().expect("allocated");
        assert!(matches!(error, Error::TooBig(_)), "{error:?}");
        assert!(error.to_string().contains(&format!("{slots} slots need 1024 values each")), "{error}");
    }

    // A device whose storage bindings cannot hold one row of a matrix (as a browser's might not
    // for a big model) is refused before anything is uploaded, naming the matrix.
    let options = GpuOptions { binding_limit: Some(64), ..common::default_options() };
    let error = Model::load(Arc::new(common::open(&options)), &tiny(), &LoadOptions::default())
        .err()
        .expect("loaded a model whose rows do not fit");
    assert!(matches!(error, Error::TooBig(_)), "{error:?}");
    assert!(error.to_string().contains("more than the adapter's 64-byte storage bindings"), "{error}");
}

/// Set in the child process of the out-of-memory test.
const OUT_OF_MEMORY_CHILD: &str = "RWKV_WGPU_TEST_OUT_OF_MEMORY_CHILD";

/// Running out of memory while creating an engine is `TooBig`, and the process stays healthy.
/// The memory really runs out: a child process of this test lowers its own address-space limit
/// (`prlimit`, util-linux) once the model is loaded, so the CPU driver's allocation of the states
/// fails as a GPU's would, while every single buffer stays within the adapter's limits.
#[cfg(target_os = "linux")]
#[test]
fn running_out_of_memory_creating_an_engine_is_too_big() {
    if std::env::var_os(OUT_OF_MEMORY_CHILD).is_some() {
        return out_of_memory_child();
    }
    let name = "running_out_of_memory_creating_an_engine_is_too_big";
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(OUT_OF_MEMORY_CHILD, "1")
        .output()
        .unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && text.contains("1 passed"), "the child failed:\n{text}");
}

#[cfg(target_os = "linux")]
fn out_of_memory_child() {
    let gpu = Arc::new(common::default_gpu());
    let model = Arc::new(Model::load(gpu, &tiny(), &LoadOptions::default()).unwrap());
    let address_space = |soft: &str| {
        let pid = std::process::id().to_string();
        let status = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--as={soft}:")])
            .status()
            .expect("running prlimit (util-linux) to lower this process's address-space limit");
        assert!(status.success(), "prlimit failed");
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let in_use_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmSize:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize in /proc/self/status");
    // 64 MiB to spare, and an engine whose states take about 270 MB (30,000 slots of 2 layers of
    // 1,152 values), each layer's buffer within lavapipe's 128 MiB bindings.
    address_space(&(in_use_kib * 1024 + (64 << 20)).to_string());
    let error = Engine::new(model.clone(), EngineOptions { slots: 30_000, chunk: 8 })
        .err()
        .expect("an engine larger than the memory left was created");
    address_space("unlimited");
    assert!(matches!(error, Error::TooBig(_)), "{error:?}");
    assert!(error.to_string().contains("ran out of memory"), "{error}");

    let engine = Engine::new(model, EngineOptions { slots: 2, chunk: 8 }).unwrap();
    let logits = Session::new(&engine).unwrap().feed(&[1, 2, 3]).unwrap();
    assert!(logits.iter().all(|x| x.is_finite()));
}
