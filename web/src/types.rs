//! The TypeScript types of the options and results that cross the boundary as plain objects,
//! and the JavaScript types the exported functions take.

use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &str = r#"
export interface LoadOptions {
  /** Storage of the large weight matrices, converted while loading: "f32", "bf16", "f16", "int8"
   * or "nf4". Default: each keeps its file's precision (f32, bf16 or f16). */
  quant?: "f32" | "bf16" | "f16" | "int8" | "nf4";
  /** The contents of a Hugging Face tokenizer.json; without it, the built-in RWKV World tokenizer. */
  tokenizer?: Uint8Array;
  /** What error messages call the file (default "the model file"). */
  name?: string;
  /** Prompt tokens read per step (default 128). */
  chunk?: number;
  /** Read f16 weights with the adapter's shader-f16 (true), never (false: unpacked from u32), or
   * where that is faster (default: not on software adapters). */
  f16?: boolean;
  /** Called as the weights convert and upload (synchronously, inside `load`), with the bytes of
   * the file's tensors read so far and in all. */
  onProgress?: (done: number, total: number) => void;
}

export interface ModelInfo {
  version: string; layers: number; embd: number; heads: number; headSize: number; ffn: number;
  vocab: number; format: string; fileDtype: string;
  /** How the weight matrices are stored: "bf16", or shares of the bytes such as "int8 94%, f16 6%". */
  quant: string;
  tokenizer: string;
  /** The WebGPU adapter, as wgpu describes it. */
  adapter: string;
  /** Whether the kernels use the adapter's shader-f16; without it, f16 weights are unpacked from u32. */
  f16: boolean;
  subgroups: boolean;
  /** Where the embedding table is: "GPU" (then decode runs several steps per submit) or "host memory". */
  embedding: string;
}

/** As on the CLI: temperature 1, top-p 0.85, no top-k, no penalties, 200 tokens. */
export interface GenerateOptions {
  maxTokens?: number;
  temperature?: number;
  topP?: number;
  /** 0 keeps every token. */
  topK?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  /** The penalties' counts are multiplied by this after each token (the official 0.996); 1 keeps them. */
  penaltyDecay?: number;
  /** Keep only tokens at least this share as likely as the most likely one; 0 keeps all. */
  minP?: number;
  /** Typical sampling's share of the mass; 1 keeps all. */
  typicalP?: number;
  /** Token id to a number added to its logit: `{ "42": -2 }`. */
  logitBias?: Record<string, number>;
  /** Token ids never generated. */
  bannedTokens?: number[];
  /** Always take the most likely token. */
  greedy?: boolean;
  /** For reproducible sampling (a whole number). */
  seed?: number;
  /** Stop before the first occurrence of any of these (not included in the text). */
  stop?: string | string[];
  /** Stops the generation before its next token once aborted. */
  signal?: AbortSignal;
  /** Generate JSON valid against this JSON schema (an object, or its text); the generation ends with the JSON. */
  jsonSchema?: object | string;
  /** Generate text of this grammar (llguidance's Lark syntax: `start: ...`). */
  grammar?: string;
  /** Generate text that matches this regular expression. */
  regex?: string;
  /** Report each token's log-probability and those of this many most likely tokens (0 to 20). */
  logprobs?: number;
  /** Decode steps per GPU submit, their tokens read back together (default 8; 1 to 16). A
   * browser completes a readback only every so often, so one token per submit is slow. */
  stepsPerSubmit?: number;
}

/** A token's log-probability and the most likely tokens' (at temperature 1), most likely first. */
export interface TokenLogprobs {
  logprob: number;
  top: { token: number; logprob: number }[];
}

export interface GenerateResult {
  text: string;
  /** Tokens generated. */
  tokens: number;
  /** Tokens read before the first was generated. */
  promptTokens: number;
  finish: "maxTokens" | "stop" | "endOfText" | "cancelled";
  promptSeconds: number;
  /** Generation time after the prompt. */
  seconds: number;
  tokensPerSecond: number;
  /** Per generated token, where `logprobs` was asked for. */
  logprobs?: TokenLogprobs[];
}
"#;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(typescript_type = "LoadOptions")]
    pub type LoadOptionsArg;
    #[wasm_bindgen(typescript_type = "GenerateOptions")]
    pub type GenerateOptionsArg;
    #[wasm_bindgen(
        typescript_type = "(text: string, token: number, logprobs?: TokenLogprobs) => boolean | void"
    )]
    pub type OnToken;
}
