//! Which format each weight matrix of a model gets.

use super::MatrixFormat;

/// One matrix of a model with the format a plan (or its file) gives it, and its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMatrix {
    pub name: String,
    pub format: MatrixFormat,
    pub rows: usize,
    pub cols: usize,
}

/// Which format each weight matrix gets. `None` keeps a matrix in the precision its file stores
/// it in (f32, bf16 or f16), so that a model runs its own weights unless asked otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuantPlan {
    /// The large matrices of every layer (projections, gate, output, channel mix).
    pub layers: Option<MatrixFormat>,
    /// `head.weight`, the largest single matrix.
    pub head: Option<MatrixFormat>,
    /// Per-layer exceptions: (layer, format).
    pub layer_overrides: Vec<(usize, MatrixFormat)>,
}

impl QuantPlan {
    /// Everything in one format.
    pub fn all(format: MatrixFormat) -> QuantPlan {
        QuantPlan { layers: Some(format), head: Some(format), layer_overrides: Vec::new() }
    }

    /// What `--quant FORMAT` stores: every large matrix in `format`, except that nf4 keeps the
    /// head in int8. The head is the matrix most sensitive to rounding (its errors land on the
    /// logits directly), and at 4 bits it alone is a third to a half of the next-token
    /// divergence of small trained models; int8 costs it 4 more bits per weight (2.9B: +80 MiB),
    /// as llama.cpp's 4-bit mixes keep their output matrix at 6 bits.
    pub fn with(format: MatrixFormat) -> QuantPlan {
        let head = if format == MatrixFormat::Nf4 { MatrixFormat::Int8 } else { format };
        QuantPlan { head: Some(head), ..QuantPlan::all(format) }
    }

    /// The format of a quantizable matrix called `name`, if the plan chooses one.
    pub fn format_of(&self, name: &str) -> Option<MatrixFormat> {
        if name == "head.weight" {
            return self.head;
        }
        let layer =
            name.strip_prefix("blocks.").and_then(|rest| rest.split('.').next()?.parse::<usize>().ok());
        layer
            .and_then(|layer| self.layer_overrides.iter().rev().find(|(l, _)| *l == layer).map(|(_, f)| *f))
            .or(self.layers)
    }

    /// The format of a small matrix that is never quantized (LoRA factors), stored as `stored` in
    /// its file: the plan's float format if it chose one for the layers; with int8 or nf4 layers,
    /// 16 bits (an f32 file's in f16, as compact as the rest of the plan wants); else as stored.
    pub fn small_format(&self, stored: MatrixFormat) -> MatrixFormat {
        match self.layers {
            Some(format) if !format.is_quantized() => format,
            Some(_) if stored == MatrixFormat::F32 => MatrixFormat::F16,
            _ => stored,
        }
    }

    /// How the plan reads: "f16", "int8, head f16", "as stored".
    pub fn describe(&self) -> String {
        let name = |format: Option<MatrixFormat>| format.map_or("as stored", MatrixFormat::name);
        let mut text = name(self.layers).to_string();
        if self.head != self.layers {
            text += &format!(", head {}", name(self.head));
        }
        for (layer, format) in &self.layer_overrides {
            text += &format!(", layer {layer} {}", format.name());
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_pick_per_name() {
        let plan = QuantPlan {
            layers: Some(MatrixFormat::Int8),
            head: Some(MatrixFormat::F16),
            layer_overrides: vec![(0, MatrixFormat::Nf4)],
        };
        assert_eq!(plan.format_of("head.weight"), Some(MatrixFormat::F16));
        assert_eq!(plan.format_of("blocks.0.att.key.weight"), Some(MatrixFormat::Nf4));
        assert_eq!(plan.format_of("blocks.10.ffn.value.weight"), Some(MatrixFormat::Int8));
        assert_eq!(plan.small_format(MatrixFormat::F32), MatrixFormat::F16);
        assert_eq!(plan.small_format(MatrixFormat::Bf16), MatrixFormat::Bf16);
        assert_eq!(QuantPlan::default().format_of("head.weight"), None);
        assert_eq!(QuantPlan::default().small_format(MatrixFormat::F32), MatrixFormat::F32);
        assert_eq!(QuantPlan::all(MatrixFormat::Bf16).small_format(MatrixFormat::F32), MatrixFormat::Bf16);
        assert_eq!(QuantPlan::with(MatrixFormat::Nf4).head, Some(MatrixFormat::Int8));
        assert_eq!(QuantPlan::with(MatrixFormat::Int8).head, Some(MatrixFormat::Int8));
    }
}
