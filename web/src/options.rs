//! Options objects from JavaScript, read field by field so that a wrong type or a misspelt name
//! gets an error naming the field (`topP must be a number`), as the CLI's flags do.

use js_sys::{Array, Object, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use rwkv_wgpu::grammar::Grammar;
use rwkv_wgpu::runtime::{CancelToken, GenerateOptions, SamplerOptions};

/// A plain options object, or nothing (every field left to its default).
pub struct JsOptions {
    object: Option<Object>,
    what: &'static str,
}

impl JsOptions {
    /// `value` must be `undefined`, `null` or an object whose keys are all in `known`.
    pub fn new(value: JsValue, what: &'static str, known: &[&str]) -> Result<JsOptions, JsError> {
        if value.is_undefined() || value.is_null() {
            return Ok(JsOptions { object: None, what });
        }
        let object = value
            .dyn_into::<Object>()
            .map_err(|_| JsError::new(&format!("{what}: expected an object of options")))?;
        for key in Object::keys(&object).iter() {
            let key = key.as_string().unwrap_or_default();
            if !known.contains(&key.as_str()) {
                return Err(JsError::new(&format!(
                    "{what}: unknown option `{key}` (known: {})",
                    known.join(", ")
                )));
            }
        }
        Ok(JsOptions { object: Some(object), what })
    }

    /// The field's value, or `None` where it is absent or `undefined`.
    fn get(&self, key: &str) -> Option<JsValue> {
        let value = Reflect::get(self.object.as_ref()?, &JsValue::from_str(key)).ok()?;
        (!value.is_undefined()).then_some(value)
    }

    fn wrong(&self, key: &str, expected: &str) -> JsError {
        JsError::new(&format!("{}: `{key}` must be {expected}", self.what))
    }

    pub fn number(&self, key: &str) -> Result<Option<f64>, JsError> {
        self.get(key).map(|value| value.as_f64().ok_or_else(|| self.wrong(key, "a number"))).transpose()
    }

    /// A whole number in 0..=2^53 (what a JavaScript number holds exactly).
    pub fn count(&self, key: &str) -> Result<Option<u64>, JsError> {
        const EXACT: f64 = 9_007_199_254_740_992.0;
        self.get(key)
            .map(|value| match value.as_f64() {
                Some(n) if n.fract() == 0.0 && (0.0..=EXACT).contains(&n) => Ok(n as u64),
                _ => Err(self.wrong(key, "a whole number ≥ 0")),
            })
            .transpose()
    }

    pub fn boolean(&self, key: &str) -> Result<Option<bool>, JsError> {
        self.get(key).map(|value| value.as_bool().ok_or_else(|| self.wrong(key, "true or false"))).transpose()
    }

    pub fn string(&self, key: &str) -> Result<Option<String>, JsError> {
        self.get(key).map(|value| value.as_string().ok_or_else(|| self.wrong(key, "a string"))).transpose()
    }

    /// JSON given as an object or as its text.
    pub fn json(&self, key: &str) -> Result<Option<serde_json::Value>, JsError> {
        let Some(value) = self.get(key) else { return Ok(None) };
        let text = match value.as_string() {
            Some(text) => text,
            None if value.is_object() => js_sys::JSON::stringify(&value)
                .ok()
                .and_then(|text| text.as_string())
                .ok_or_else(|| self.wrong(key, "JSON (an object, or its text)"))?,
            None => return Err(self.wrong(key, "JSON (an object, or its text)")),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| JsError::new(&format!("{}: `{key}` is not JSON: {e}", self.what)))
    }

    /// A string or an array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<String>, JsError> {
        let Some(value) = self.get(key) else { return Ok(Vec::new()) };
        if let Some(one) = value.as_string() {
            return Ok(vec![one]);
        }
        let array =
            value.dyn_into::<Array>().map_err(|_| self.wrong(key, "a string or an array of strings"))?;
        array
            .iter()
            .map(|item| item.as_string().ok_or_else(|| self.wrong(key, "an array of strings")))
            .collect()
    }

    /// An array of whole numbers (token ids).
    pub fn ids(&self, key: &str) -> Result<Vec<u32>, JsError> {
        let Some(value) = self.get(key) else { return Ok(Vec::new()) };
        let array = value.dyn_into::<Array>().map_err(|_| self.wrong(key, "an array of token ids"))?;
        array
            .iter()
            .map(|item| token_id(&item).ok_or_else(|| self.wrong(key, "an array of token ids")))
            .collect()
    }

    /// An object from token ids to numbers: `{ "42": -1.5 }`.
    pub fn id_numbers(&self, key: &str) -> Result<Vec<(u32, f32)>, JsError> {
        let Some(value) = self.get(key) else { return Ok(Vec::new()) };
        let object =
            value.dyn_into::<Object>().map_err(|_| self.wrong(key, "an object of token id: number"))?;
        Object::entries(&object)
            .iter()
            .map(|entry| {
                let pair = Array::from(&entry);
                let id = pair.get(0).as_string().and_then(|text| text.parse().ok());
                match (id, pair.get(1).as_f64()) {
                    (Some(id), Some(bias)) => Ok((id, bias as f32)),
                    _ => Err(self.wrong(key, "an object of token id: number")),
                }
            })
            .collect()
    }

    pub fn bytes(&self, key: &str) -> Result<Option<Vec<u8>>, JsError> {
        self.get(key)
            .map(|value| {
                value
                    .dyn_into::<Uint8Array>()
                    .map(|bytes| bytes.to_vec())
                    .map_err(|_| self.wrong(key, "a Uint8Array"))
            })
            .transpose()
    }

    pub fn function(&self, key: &str) -> Result<Option<js_sys::Function>, JsError> {
        self.get(key).map(|value| value.dyn_into().map_err(|_| self.wrong(key, "a function"))).transpose()
    }

    /// An `AbortSignal` (anything with an `aborted` property is accepted).
    pub fn signal(&self, key: &str) -> Result<Option<AbortFlag>, JsError> {
        self.get(key)
            .map(|value| {
                if Reflect::has(&value, &JsValue::from_str("aborted")).unwrap_or(false) {
                    Ok(AbortFlag(value))
                } else {
                    Err(self.wrong(key, "an AbortSignal"))
                }
            })
            .transpose()
    }
}

fn token_id(value: &JsValue) -> Option<u32> {
    value.as_f64().filter(|n| n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(n)).map(|n| n as u32)
}

/// The `signal` of a call: checked before every token.
pub struct AbortFlag(JsValue);

impl AbortFlag {
    pub fn is_aborted(&self) -> bool {
        Reflect::get(&self.0, &JsValue::from_str("aborted")).ok().and_then(|v| v.as_bool()).unwrap_or(false)
    }
}

/// Builds a plain JavaScript object from (key, value) pairs.
pub fn object(fields: &[(&str, JsValue)]) -> JsValue {
    let object = Object::new();
    for (key, value) in fields {
        // Setting a property on a fresh plain object cannot fail.
        let _ = Reflect::set(&object, &JsValue::from_str(key), value);
    }
    object.into()
}

/// Generation options as the CLI's defaults have them, the abort signal, and the grammar asked
/// for (compiled by the caller, which holds the vocabulary).
pub fn generate_options(
    value: JsValue,
) -> Result<(GenerateOptions, Option<AbortFlag>, Option<Grammar>), JsError> {
    const KNOWN: [&str; 20] = [
        "maxTokens",
        "temperature",
        "topP",
        "topK",
        "presencePenalty",
        "frequencyPenalty",
        "penaltyDecay",
        "minP",
        "typicalP",
        "logitBias",
        "bannedTokens",
        "greedy",
        "seed",
        "stop",
        "signal",
        "jsonSchema",
        "grammar",
        "regex",
        "logprobs",
        "stepsPerSubmit",
    ];
    let given = JsOptions::new(value, "generate options", &KNOWN)?;
    let sampler = SamplerOptions {
        greedy: given.boolean("greedy")?.unwrap_or(false),
        temperature: given.number("temperature")?.unwrap_or(1.0) as f32,
        top_p: given.number("topP")?.unwrap_or(0.85) as f32,
        top_k: given.count("topK")?.unwrap_or(0) as usize,
        presence_penalty: given.number("presencePenalty")?.unwrap_or(0.0) as f32,
        frequency_penalty: given.number("frequencyPenalty")?.unwrap_or(0.0) as f32,
        penalty_decay: given.number("penaltyDecay")?.unwrap_or(1.0) as f32,
        min_p: given.number("minP")?.unwrap_or(0.0) as f32,
        typical_p: given.number("typicalP")?.unwrap_or(1.0) as f32,
        logit_bias: given.id_numbers("logitBias")?,
        banned: given.ids("bannedTokens")?,
        logprobs: given.count("logprobs")?.map(|n| n as usize),
        seed: given.count("seed")?,
    };
    sampler.validate()?;
    let options = GenerateOptions {
        max_tokens: given.count("maxTokens")?.map_or(200, |n| n as usize),
        stop: given.strings("stop")?,
        stop_at_end_of_text: true,
        sampler,
        grammar: None,
        cancel: CancelToken::default(),
        steps_per_submit: match given.count("stepsPerSubmit")? {
            Some(steps @ 1..=16) => steps as usize,
            Some(steps) => {
                return Err(JsError::new(&format!(
                    "generate options: stepsPerSubmit is 1 to 16, not {steps}"
                )))
            }
            None => GenerateOptions::DEFAULT_STEPS_PER_SUBMIT,
        },
    };
    let grammars = [
        given.json("jsonSchema")?.map(Grammar::JsonSchema),
        given.string("grammar")?.map(Grammar::Lark),
        given.string("regex")?.map(Grammar::Regex),
    ];
    let mut grammars = grammars.into_iter().flatten();
    let grammar = grammars.next();
    if grammars.next().is_some() {
        return Err(JsError::new("generate options: give one of jsonSchema, grammar and regex"));
    }
    Ok((options, given.signal("signal")?, grammar))
}
