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
