import type { GenerateOptions, GenerateResult, LoadOptions, ModelInfo, TokenLogprobs } from "./pkg/rwkv_wgpu_web.js";
export type { GenerateOptions, GenerateResult, LoadOptions, ModelInfo, TokenLogprobs };

export interface Progress {
  /** "download" (from the network), "cache" (the cached copy), "file" (a File or Blob) or
   * "convert" (the weights converted and uploaded to the GPU). */
  stage: "download" | "cache" | "file" | "convert";
  file: "model" | "tokenizer";
  done: number;
  /** 0 when unknown (a download without Content-Length). */
  total: number;
  /** 0 to 100; undefined when the total is unknown. */
  percent?: number;
}

export type ModelSource = string | URL | Blob | Uint8Array | ArrayBuffer;

export interface EngineOptions extends Omit<LoadOptions, "tokenizer" | "onProgress"> {
  /** A tokenizer.json URL (cached like the model); default: the built-in RWKV World tokenizer. */
  tokenizerUrl?: string;
  /** A tokenizer.json as a File, Blob or bytes. */
  tokenizer?: Blob | Uint8Array | ArrayBuffer;
  /** Read URLs from and store them in the browser's cache (default true). */
  cache?: boolean;
  /** Run in a dedicated worker (default true); false runs on the page's thread. */
  worker?: boolean;
  onProgress?: (progress: Progress) => void;
  /** Called when a download could not be cached (the model still loads). */
  onWarning?: (message: string) => void;
}

export interface ChatMessage {
  role: "system" | "developer" | "user" | "assistant";
  content: string | { type: "text"; text: string }[];
}

export interface ChatCompletionRequest {
  messages: ChatMessage[];
  model?: string;
  stream?: boolean;
  max_tokens?: number;
  max_completion_tokens?: number;
  /** 0 to 2 (default 1); 0 takes the most likely token. */
  temperature?: number;
  /** Default 1. */
  top_p?: number;
  stop?: string | string[];
  seed?: number;
  /** Not OpenAI's (as on the native server): keep only the k most likely tokens; 0 keeps all. */
  top_k?: number;
  presence_penalty?: number;
  frequency_penalty?: number;
  logit_bias?: Record<string, number>;
  n?: 1;
  response_format?:
    | { type: "text" }
    | { type: "json_object" }
    | { type: "json_schema"; json_schema: { name?: string; schema: object; strict?: boolean } };
  /** Not OpenAI's: stops the generation. */
  signal?: AbortSignal;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** Not OpenAI's: how long the reply took. */
export interface Timings {
  prompt_seconds: number;
  seconds: number;
  tokens_per_second: number;
  finish: GenerateResult["finish"];
}

export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  choices: { index: 0; message: { role: "assistant"; content: string }; finish_reason: "stop" | "length" }[];
  usage: Usage;
  timings: Timings;
}

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  choices: { index: 0; delta: { role?: "assistant"; content?: string }; finish_reason: "stop" | "length" | null }[];
  /** On the last chunk. */
  usage?: Usage;
  timings?: Timings;
}

export interface CompletionStream extends AsyncIterable<ChatCompletionChunk> {
  abort(): void;
}

export interface LoadReport {
  info: ModelInfo & { name: string };
  source: "network" | "cache" | "file" | "bytes";
  bytes: number;
  warnings: string[];
  readSeconds: number;
  convertSeconds: number;
}

export interface Engine {
  mode: "worker" | "main-thread";
  /** Why the engine runs on the page's thread, where it does. */
  fallbackReason?: string;
  loaded: LoadReport;
  modelInfo: ModelInfo & { name: string };
  chat: {
    completions: {
      create(request: ChatCompletionRequest & { stream: true }): Promise<CompletionStream>;
      create(request: ChatCompletionRequest & { stream?: false }): Promise<ChatCompletion>;
      create(request: ChatCompletionRequest): Promise<ChatCompletion | CompletionStream>;
    };
  };
  /** As Model.generate; `onToken` returning false stops the generation (within a token). */
  generate(
    prompt: string,
    options?: GenerateOptions,
    onToken?: (text: string, token: number, logprobs?: TokenLogprobs) => boolean | void,
  ): Promise<GenerateResult>;
  logits(ids: ArrayLike<number>): Promise<Float32Array>;
  tokenize(text: string): Promise<Uint32Array>;
  detokenize(ids: ArrayLike<number>): Promise<string>;
  reset(): Promise<void>;
  info(): Promise<ModelInfo & { name: string }>;
  conversationText(): Promise<string | undefined>;
  saveState(): Promise<Uint8Array>;
  loadState(bytes: Uint8Array): Promise<void>;
  terminate(): void;
}

export function createWorkerEngine(model: ModelSource, options?: EngineOptions): Promise<Engine>;
/** Why this browser cannot run the engine, or undefined. */
export function webGpuProblem(): string | undefined;
export function chatPrompt(messages: ChatMessage[]): string;

export interface CachedFile {
  url: string;
  bytes: number;
  kind: "model" | "tokenizer";
  tokenizerUrl?: string;
  storedAt?: string;
}
export function cacheAvailable(): boolean;
export function listCachedModels(): Promise<CachedFile[]>;
export function listCachedFiles(): Promise<CachedFile[]>;
export function deleteCachedModel(url: string): Promise<boolean>;
export function clearModelCache(): Promise<boolean>;
export function storageEstimate(): Promise<StorageEstimate | undefined>;
