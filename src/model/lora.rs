//! LoRA adapters, merged into the weights as they load: `W + scale · B·A` for every matrix an
//! adapter changes.
//!
//! Two formats are read:
//! - **PEFT** (`adapter_model.safetensors` beside `adapter_config.json`, or their folder):
//!   `base_model.model.<module>.lora_A.weight` `[r, in]` and `lora_B.weight` `[out, r]`, scaled by
//!   `lora_alpha / r` (`/ √r` with rsLoRA), for modules named as in the official checkpoints or
//!   in a Hugging Face layout ([`layout::official_name`]).
//! - **RWKV-LM / RWKV-PEFT** (`.pth` or `.safetensors`): `<official name>.lora_A` / `.lora_B`,
//!   merged with the scale given (their merge scripts use `lora_alpha / r`, which the file does
//!   not record). Any other tensor of the file (trained norms or mixes) replaces the model's.
//!
//! The adapter's scale on the command line (`--lora FILE:SCALE`) multiplies the file's own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::source::layout::{self, Transform};
use super::source::{self, DType, TensorData, TensorSource};
use crate::error::{Error, Result};
use crate::quant::PackedMatrix;

/// An adapter to merge, as `--lora FILE[:SCALE]` names it.
#[derive(Debug, Clone, PartialEq)]
pub struct Lora {
    pub path: PathBuf,
    pub scale: f32,
}

impl std::str::FromStr for Lora {
    type Err = String;

    /// `FILE` or `FILE:SCALE` (a path may itself contain ':', so only a number after the last one
    /// is a scale).
    fn from_str(text: &str) -> std::result::Result<Lora, String> {
        if let Some((path, scale)) = text.rsplit_once(':') {
            if let Ok(scale) = scale.parse::<f32>() {
                if !scale.is_finite() {
                    return Err(format!("the LoRA scale `{scale}` is not a finite number"));
                }
                return Ok(Lora { path: path.into(), scale });
            }
        }
        Ok(Lora { path: text.into(), scale: 1.0 })
    }
}

/// One low-rank update of one matrix: `scale · B·A`, transposed if the official matrix is stored
/// the other way round from the module the adapter trained.
struct Update {
    a: Vec<f32>,
    b: Vec<f32>,
    rank: usize,
    scale: f32,
    transposed: bool,
}

/// A model's tensors with adapters merged in.
struct Merged {
    base: Box<dyn TensorSource>,
    updates: BTreeMap<String, Vec<Update>>,
    /// Tensors an RWKV-LM adapter replaces, with the adapter file that holds each.
    replacements: BTreeMap<String, Arc<dyn TensorSource>>,
}

/// `base` (under the official names) with every adapter of `adapters` merged in.
pub fn merge(base: Box<dyn TensorSource>, adapters: &[Lora]) -> Result<Box<dyn TensorSource>> {
    if adapters.is_empty() {
        return Ok(base);
    }
    let mut merged = Merged { base, updates: BTreeMap::new(), replacements: BTreeMap::new() };
    for adapter in adapters {
        merged.add(adapter)?;
    }
    Ok(Box::new(merged))
}

impl Merged {
    fn add(&mut self, adapter: &Lora) -> Result<()> {
        let (file, config) = adapter_files(&adapter.path)?;
        let shown = file.display().to_string();
        let source: Arc<dyn TensorSource> = source::open_raw(&file)?.into();
        let names = source.names();
        let peft = names.iter().any(|name| name.ends_with(".lora_A.weight"));
        let (suffix_a, suffix_b) =
            if peft { (".lora_A.weight", ".lora_B.weight") } else { (".lora_A", ".lora_B") };
        let peft_config = if peft { Some(PeftConfig::read(config.as_deref(), &shown)?) } else { None };
        let mut found = 0;
        for name in &names {
            let Some(module) = name.strip_suffix(suffix_a) else {
                if !name.ends_with(suffix_b) && !peft {
                    self.replace(&source, name, &shown)?;
                }
                continue;
            };
            let stored = format!("{}.weight", module.strip_prefix("base_model.model.").unwrap_or(module));
            let (target, transform) = layout::official_name(&stored).ok_or_else(|| {
                Error::malformed(
                    &shown,
                    format!("`{name}` changes `{stored}`, which is not a weight of an RWKV model"),
                )
            })?;
            let a = source.tensor(name)?;
            let b_name = format!("{module}{suffix_b}");
            let b = source
                .tensor(&b_name)
                .map_err(|_| Error::malformed(&shown, format!("`{name}` has no `{b_name}` beside it")))?;
            let scale = adapter.scale
                * peft_config
                    .as_ref()
                    .map_or(1.0, |c| c.scale(module, a.shape.first().copied().unwrap_or(0)));
            let update = self.update(&target, transform, (&a, name), (&b, &b_name), scale, &shown)?;
            self.updates.entry(target).or_default().push(update);
            found += 1;
        }
        if found == 0 {
            return Err(Error::malformed(&shown, "no LoRA factors (`*.lora_A` and `*.lora_B`) in this file"));
        }
        Ok(())
    }

    /// A checked update of `target` from factors A `[r, in]` and B `[out, r]`.
    fn update(
        &self,
        target: &str,
        transform: Transform,
        (a, a_name): (&TensorData, &str),
        (b, b_name): (&TensorData, &str),
        scale: f32,
        shown: &str,
    ) -> Result<Update> {
        let (_, shape) = self.base.meta(target).ok_or_else(|| {
            Error::malformed(shown, format!("`{a_name}` changes `{target}`, which the model does not have: is the adapter for another model?"))
        })?;
        let transposed = transform == Transform::Transpose;
        let (rows, cols) = match (&shape[..], transposed) {
            ([rows, cols], false) => (*rows, *cols),
            ([rows, cols], true) => (*cols, *rows),
            _ => {
                return Err(Error::malformed(
                    shown,
                    format!("`{a_name}` changes `{target}`, which is not a matrix"),
                ))
            }
        };
        let rank = a.shape.first().copied().unwrap_or(0);
        if a.shape != [rank, cols] || b.shape != [rows, rank] || rank == 0 {
            return Err(Error::malformed(
                shown,
                format!(
                    "`{a_name}` is {:?} and `{b_name}` {:?}: for `{target}` ({rows} × {cols} as the adapter sees it) they must be [r, {cols}] and [{rows}, r]",
                    a.shape, b.shape
                ),
            ));
        }
        if self.base.packed(target)?.is_some() {
            return Err(Error::InvalidArgument(format!(
                "a LoRA adapter changes `{target}`, which the model file holds already quantized: merge into the float checkpoint, then quantize"
            )));
        }
        Ok(Update { a: a.to_f32(a_name)?, b: b.to_f32(b_name)?, rank, scale, transposed })
    }

    /// An RWKV-LM adapter's full tensor (a trained norm or mix) in place of the model's.
    fn replace(&mut self, source: &Arc<dyn TensorSource>, name: &str, shown: &str) -> Result<()> {
        let Some((_, shape)) = self.base.meta(name) else {
            return Err(Error::malformed(
                shown,
                format!("`{name}` is not a LoRA factor nor a tensor of the model"),
            ));
        };
        let (_, theirs) = source.meta(name).unwrap_or((DType::F32, Vec::new()));
        let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
        if squeeze(&theirs) != squeeze(&shape) {
            return Err(Error::Shape { name: format!("{shown}: {name}"), expected: shape, found: theirs });
        }
        self.replacements.insert(name.to_string(), source.clone());
        Ok(())
    }
}

/// The adapter's weights file and its `adapter_config.json`, if it has one.
fn adapter_files(path: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    let (file, dir) = if path.is_dir() {
        (path.join("adapter_model.safetensors"), path.to_path_buf())
    } else {
        (path.to_path_buf(), path.parent().map(Path::to_path_buf).unwrap_or_default())
    };
    if !file.exists() {
        return Err(Error::io(
            &file,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such LoRA adapter"),
        ));
    }
    let config = dir.join("adapter_config.json");
    Ok((file, config.exists().then_some(config)))
}

/// What of PEFT's `adapter_config.json` sets the scale.
struct PeftConfig {
    alpha: f32,
    rslora: bool,
    alpha_pattern: BTreeMap<String, f32>,
}

impl PeftConfig {
    fn read(path: Option<&Path>, shown: &str) -> Result<PeftConfig> {
        let path = path.ok_or_else(|| {
            Error::malformed(
                shown,
                "a PEFT adapter without its adapter_config.json beside it (it holds lora_alpha)",
            )
        })?;
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let config: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::malformed(path.display().to_string(), format!("not JSON: {e}")))?;
        let refuse = |what: &str| {
            Error::UnsupportedModel(format!("{}: {what} adapters are not supported", path.display()))
        };
        if config["use_dora"].as_bool() == Some(true) {
            return Err(refuse("DoRA"));
        }
        if config["fan_in_fan_out"].as_bool() == Some(true) {
            return Err(refuse("fan-in-fan-out (Conv1D)"));
        }
        if config["peft_type"].as_str().is_some_and(|kind| kind != "LORA") {
            return Err(refuse(config["peft_type"].as_str().unwrap_or("?")));
        }
        let alpha = config["lora_alpha"]
            .as_f64()
            .ok_or_else(|| Error::malformed(path.display().to_string(), "no numeric `lora_alpha`"))?
            as f32;
        let alpha_pattern = config["alpha_pattern"]
            .as_object()
            .map(|map| map.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()? as f32))).collect())
            .unwrap_or_default();
        Ok(PeftConfig { alpha, rslora: config["use_rslora"].as_bool() == Some(true), alpha_pattern })
    }

    /// `alpha / r` (or `/ √r`) for `module`, whose factors have rank `rank`.
    fn scale(&self, module: &str, rank: usize) -> f32 {
        let alpha = self
            .alpha_pattern
            .iter()
            .find(|(pattern, _)| module.ends_with(pattern.as_str()))
            .map_or(self.alpha, |(_, &alpha)| alpha);
        let rank = rank as f32;
        alpha / if self.rslora { rank.sqrt() } else { rank }
    }
}

/// Adds `scale · B·A` (`[out, in]`, or its transpose) to `weights`, spreading rows over threads.
fn apply(weights: &mut [f32], update: &Update, rows: usize, cols: usize) {
    let (a, b, rank) = (&update.a, &update.b, update.rank);
    // The update's own shape: [out, in] as the adapter saw the matrix.
    let (out, inputs) = if update.transposed { (cols, rows) } else { (rows, cols) };
    let mut delta = vec![0f32; out * inputs];
    let fill = |first: usize, chunk: &mut [f32]| {
        for (i, row) in chunk.chunks_mut(inputs).enumerate() {
            let b_row = &b[(first + i) * rank..(first + i + 1) * rank];
            for (k, &bk) in b_row.iter().enumerate() {
                let factor = update.scale * bk;
                for (value, &ak) in row.iter_mut().zip(&a[k * inputs..(k + 1) * inputs]) {
                    *value += factor * ak;
                }
            }
        }
    };
    let threads = if cfg!(target_arch = "wasm32") {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get()).min(out.max(1))
    };
    if threads <= 1 {
        // Browsers cannot spawn threads.
        fill(0, &mut delta);
    } else {
        let per_thread = out.div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            for (index, chunk) in delta.chunks_mut(per_thread * inputs).enumerate() {
                scope.spawn(move || fill(index * per_thread, chunk));
            }
        });
    }
    for r in 0..rows {
        for c in 0..cols {
            weights[r * cols + c] +=
                if update.transposed { delta[c * rows + r] } else { delta[r * cols + c] };
        }
    }
}

impl TensorSource for Merged {
    fn format(&self) -> &'static str {
        self.base.format()
    }

    fn layout(&self) -> &'static str {
        self.base.layout()
    }

    fn names(&self) -> Vec<String> {
        self.base.names()
    }

    fn meta(&self, name: &str) -> Option<(DType, Vec<usize>)> {
        let (dtype, shape) = self.base.meta(name)?;
        match self.replacements.get(name) {
            Some(replacement) => replacement.meta(name).map(|(theirs, _)| (theirs, shape)),
            None => Some((dtype, shape)),
        }
    }

    fn tensor(&self, name: &str) -> Result<TensorData<'_>> {
        if let Some(replacement) = self.replacements.get(name) {
            let tensor = replacement.tensor(name)?;
            let shape = self.base.meta(name).map(|(_, shape)| shape).unwrap_or(tensor.shape.clone());
            return Ok(TensorData { dtype: tensor.dtype, shape, bytes: tensor.bytes.into_owned().into() });
        }
        let Some(updates) = self.updates.get(name) else { return self.base.tensor(name) };
        let tensor = self.base.tensor(name)?;
        let (rows, cols) = (tensor.shape[0], tensor.shape[1]);
        let mut values = tensor.to_f32(name)?;
        for update in updates {
            apply(&mut values, update, rows, cols);
        }
        let bytes = bytemuck::cast_slice::<f32, u8>(&values).to_vec();
        Ok(TensorData { dtype: DType::F32, shape: tensor.shape, bytes: bytes.into() })
    }

    fn packed(&self, name: &str) -> Result<Option<PackedMatrix>> {
        self.base.packed(name)
    }

    fn stored_type(&self, name: &str) -> Option<String> {
        self.base.stored_type(name)
    }

    fn is_quantized(&self, name: &str) -> bool {
        self.base.is_quantized(name)
    }

    fn tokenizer(&self) -> Option<Result<crate::tokenizer::Tokenizer>> {
        self.base.tokenizer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scale_follows_the_last_colon() {
        assert_eq!("a.pth".parse(), Ok(Lora { path: "a.pth".into(), scale: 1.0 }));
        assert_eq!("dir/a.pth:0.5".parse(), Ok(Lora { path: "dir/a.pth".into(), scale: 0.5 }));
        assert_eq!("C:/x/a.pth".parse(), Ok(Lora { path: "C:/x/a.pth".into(), scale: 1.0 }));
        assert!("a.pth:inf".parse::<Lora>().is_err());
    }

    /// B·A added with its scale, also into a matrix stored transposed.
    #[test]
    fn updates_add_scaled_products() {
        let update =
            Update { a: vec![1.0, 2.0, 3.0], b: vec![1.0, -1.0], rank: 1, scale: 0.5, transposed: false };
        let mut weights = vec![0.0; 6];
        apply(&mut weights, &update, 2, 3);
        assert_eq!(weights, vec![0.5, 1.0, 1.5, -0.5, -1.0, -1.5]);
        let transposed = Update { transposed: true, ..update };
        let mut weights = vec![0.0; 6];
        apply(&mut weights, &transposed, 3, 2);
        assert_eq!(weights, vec![0.5, -0.5, 1.0, -1.0, 1.5, -1.5]);
    }
}
