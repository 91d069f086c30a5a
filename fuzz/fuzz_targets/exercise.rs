//! What the model readers' targets do with a source that opened: everything a loader would.

use rwkv_wgpu::model::config::ModelConfig;
use rwkv_wgpu::model::source::TensorSource;

pub fn source(source: &dyn TensorSource) {
    for name in source.names() {
        let _ = source.meta(&name);
        if let Ok(tensor) = source.tensor(&name) {
            let _ = tensor.to_f32(&name);
        }
        let _ = source.packed(&name);
    }
    let _ = ModelConfig::from_source(source);
}
