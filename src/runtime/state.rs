//! A recurrent state as a value: read from a session, written to one, saved to and loaded
//! from a file, or taken from a state-tuned checkpoint.

use std::path::Path;

use safetensors::Dtype;

use crate::error::{Error, Result};
use crate::model::architecture::{TunedState, Version};
use crate::model::config::ModelConfig;
use crate::model::source::TensorSource;

/// One layer's state, in the official layout: `wkv` is [H, N (key), N (value)] for RWKV-5/6,
/// [H, N (value), N (key)] for RWKV-7, and [aa; bb; pp] (3 × C) for RWKV-4.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerValues {
    /// The last LN1 output, [C].
    pub att_x: Vec<f32>,
    /// The time mix's own state.
    pub wkv: Vec<f32>,
    /// The last LN2 output, [C].
    pub ffn_x: Vec<f32>,
}

/// The whole recurrent state of one sequence, with the shape of the model it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub version: Version,
    pub embd: usize,
    pub layers: Vec<LayerValues>,
}

const FORMAT: &str = "rwkv-wgpu state";

impl State {
    /// Fails unless this state fits a model of `config` whose layers hold `wkv_len` values.
    pub fn check_fits(&self, config: &ModelConfig, wkv_len: usize) -> Result<()> {
        let found =
            (self.version, self.embd, self.layers.len(), self.layers.first().map_or(0, |l| l.wkv.len()));
        let wanted = (config.version, config.embd, config.layers, wkv_len);
        if found != wanted {
            return Err(Error::InvalidArgument(format!(
                "this state belongs to another model: {} with {} layers of {} channels ({} state values per layer), \
                 but the model is {} with {} layers of {} channels ({} per layer)",
                found.0.name(),
                found.2,
                found.1,
                found.3,
                wanted.0.name(),
                wanted.2,
                wanted.1,
                wanted.3
            )));
        }
        let bad_layer = self
            .layers
            .iter()
            .position(|l| l.att_x.len() != self.embd || l.wkv.len() != wkv_len || l.ffn_x.len() != self.embd);
        match bad_layer {
            Some(layer) => {
                Err(Error::InvalidArgument(format!("state layer {layer} has the wrong number of values")))
            }
            None => Ok(()),
        }
    }

    /// The state as `.safetensors` bytes: `blocks.N.att_x`, `blocks.N.wkv`, `blocks.N.ffn_x` in
    /// f32, and the model's version and width in the metadata. Written here rather than by
    /// `safetensors::serialize`, whose metadata map comes out in hash order: the same state must
    /// give the same bytes (the state fuzz target found this).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut header = serde_json::Map::new();
        header.insert(
            "__metadata__".into(),
            serde_json::json!({ "embd": self.embd.to_string(), "format": FORMAT, "version": self.version.name() }),
        );
        let mut data: Vec<u8> = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for (part, values) in [("att_x", &layer.att_x), ("wkv", &layer.wkv), ("ffn_x", &layer.ffn_x)] {
                let start = data.len();
                data.extend_from_slice(bytemuck::cast_slice(values));
                let entry = serde_json::json!({ "dtype": "F32", "shape": [values.len()], "data_offsets": [start, data.len()] });
                header.insert(format!("blocks.{i}.{part}"), entry);
            }
        }
        let mut text = serde_json::to_vec(&serde_json::Value::Object(header))
            .map_err(|e| Error::InvalidArgument(format!("saving the state: {e}")))?;
        // The format pads the header with spaces to a multiple of 8 bytes.
        text.resize(text.len().next_multiple_of(8), b' ');
        let mut bytes = Vec::with_capacity(8 + text.len() + data.len());
        bytes.extend_from_slice(&(text.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&text);
        bytes.extend_from_slice(&data);
        Ok(bytes)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_bytes()?).map_err(|e| Error::io(path, e))
    }

    /// Reads a state written by [`State::to_bytes`]; `name` is used in errors.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<State> {
        let bad = |reason: String| Error::malformed(name, reason);
        let file = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a state file: {e}")))?;
        let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let metadata = metadata.metadata().clone().unwrap_or_default();
        if metadata.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(bad("not an rwkv-wgpu state file (no `format` metadata)".into()));
        }
        let version = metadata
            .get("version")
            .and_then(|v| Version::by_name(v))
            .ok_or_else(|| bad("unknown or missing `version` metadata".into()))?;
        let embd = metadata
            .get("embd")
            .and_then(|e| e.parse().ok())
            .ok_or_else(|| bad("missing `embd` metadata".into()))?;
        let read = |tensor: &str| -> Result<Vec<f32>> {
            let view = file.tensor(tensor).map_err(|_| bad(format!("missing tensor `{tensor}`")))?;
            if view.dtype() != Dtype::F32 {
                return Err(bad(format!("tensor `{tensor}` is not f32")));
            }
            Ok(bytemuck::pod_collect_to_vec(view.data()))
        };
        let layers = (0..file.len() / 3)
            .map(|i| {
                Ok(LayerValues {
                    att_x: read(&format!("blocks.{i}.att_x"))?,
                    wkv: read(&format!("blocks.{i}.wkv"))?,
                    ffn_x: read(&format!("blocks.{i}.ffn_x"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(State { version, embd, layers })
    }

    pub fn load(path: &Path) -> Result<State> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&path.display().to_string(), &bytes)
    }

    /// The initial state of a state-tuned model: `blocks.N.att.time_state` [H, N, N] from a
    /// `.pth` or `.safetensors` file. State-tuning tools store it in their kernels' layout,
    /// [head, value, key]: that is RWKV-7's own layout, and the transpose of RWKV-5/6's.
    pub fn from_time_state(config: &ModelConfig, source: &dyn TensorSource) -> Result<State> {
        let Some(layout) = config.version.architecture.state.tuned else {
            return Err(Error::UnsupportedModel(format!(
                "{} has no matrix state to tune",
                config.version.name()
            )));
        };
        let (heads, n) = (config.heads, config.head_size);
        let layers = (0..config.layers)
            .map(|layer| {
                let name = format!("blocks.{layer}.att.time_state");
                let tensor = source.tensor(&name)?;
                let squeezed: Vec<usize> = tensor.shape.iter().copied().filter(|&d| d != 1).collect();
                if squeezed != [heads, n, n] && !(heads == 1 && squeezed == [n, n]) {
                    return Err(Error::Shape {
                        name,
                        expected: vec![heads, n, n],
                        found: tensor.shape.clone(),
                    });
                }
                let stored = tensor.to_f32(&name)?;
                let wkv = match layout {
                    TunedState::AsStored => stored,
                    TunedState::Transposed => transpose_heads(&stored, heads, n),
                };
                Ok(LayerValues { att_x: vec![0.0; config.embd], wkv, ffn_x: vec![0.0; config.embd] })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(State { version: config.version, embd: config.embd, layers })
    }
}

/// Swaps the last two axes of [heads, n, n].
fn transpose_heads(values: &[f32], heads: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for h in 0..heads {
        for i in 0..n {
            for j in 0..n {
                out[(h * n + j) * n + i] = values[(h * n + i) * n + j];
            }
        }
    }
    out
}
