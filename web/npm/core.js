// The engine itself: the wasm Model, loaded from a URL (through the cache), a file or bytes, and
// driven by messages `{ id, method, args }`. It runs in the worker (worker.js) or, where a worker
// has no WebGPU, on the page's thread (index.js); both talk to it through `serve`, so the two
// behave the same.
import init, { Model } from "./pkg/rwkv_wgpu_web.js";
import { fetchCached, readStream } from "./cache.js";
import { chatRequest, chunkObject, completionObject, newCompletionId, replyContent } from "./chat.js";

let wasmReady;
// A result sent with its buffers moved to the receiver rather than copied.
class Transfer {
  constructor(value) {
    this.value = value;
  }
}

const initWasm = () => (wasmReady ??= init());

/** Sends progress as `{ stage, file, done, total, percent }`, at most once per percent. */
function progressReporter(emit) {
  let last = "";
  return (stage, file, done, total) => {
    const percent = total > 0 ? Math.min(100, Math.floor((done / total) * 100)) : undefined;
    const key = `${stage} ${file} ${percent ?? Math.floor(done / 2 ** 22)}`;
    if (key === last) return;
    last = key;
    emit({ type: "progress", stage, file, done, total, percent });
  };
}

const baseName = (url) => decodeURIComponent(new URL(url).pathname.split("/").pop() || url);

/** A source's bytes: `{ url }` through the cache, a File or Blob, or bytes. */
async function readSource(source, file, progress, cacheOptions) {
  if (typeof source === "string") {
    return fetchCached(source, {
      ...cacheOptions,
      onProgress: (stage, done, total) => progress(stage, file, done, total),
    });
  }
  if (typeof Blob !== "undefined" && source instanceof Blob) {
    const bytes = await readStream(source.stream(), source.size, (done, total) => progress("file", file, done, total));
    return { bytes, source: "file" };
  }
  if (source instanceof ArrayBuffer) return { bytes: new Uint8Array(source), source: "bytes" };
  if (ArrayBuffer.isView(source)) return { bytes: new Uint8Array(source.buffer, source.byteOffset, source.byteLength), source: "bytes" };
  throw new Error(`the ${file}: give a URL, a File or Blob, or bytes`);
}

class EngineCore {
  model = null;
  name = "";

  need() {
    if (!this.model) throw new Error("no model is loaded");
    return this.model;
  }

  async load([request], emit) {
    const start = performance.now();
    await initWasm();
    const { model: source, tokenizer, cache = true, quant, f16, chunk } = request;
    this.name = request.name ?? (typeof source === "string" ? baseName(source) : source?.name ?? "the model");
    const progress = progressReporter(emit);
    const warnings = [];
    const warn = (message) => {
      if (!message) return;
      warnings.push(message);
      emit({ type: "warning", message });
    };
    const tokenizerUrl = typeof tokenizer === "string" ? tokenizer : undefined;
    const file = await readSource(source, "model", progress, { cache, kind: "model", tokenizerUrl: tokenizerUrl && new URL(tokenizerUrl).href });
    warn(file.warning);
    const tokenizerFile = tokenizer ? await readSource(tokenizer, "tokenizer", progress, { cache, kind: "tokenizer" }) : undefined;
    warn(tokenizerFile?.warning);
    const read = performance.now();

    const options = { name: this.name };
    for (const [key, value] of Object.entries({ quant, f16, chunk, tokenizer: tokenizerFile?.bytes })) {
      if (value !== undefined && value !== null) options[key] = value;
    }
    progress("convert", "model", 0, 1);
    this.model?.free();
    this.model = null;
    this.model = await Model.load(file.bytes, {
      ...options,
      onProgress: (done, total) => progress("convert", "model", done, total),
    });
    progress("convert", "model", 1, 1);
    const info = this.info();
    return {
      info,
      source: file.source,
      bytes: file.bytes.length,
      warnings,
      readSeconds: (read - start) / 1000,
      convertSeconds: (performance.now() - read) / 1000,
    };
  }

  info() {
    return { ...this.need().info(), name: this.name };
  }

  generate([prompt, options = {}, wantTokens], emit, signal) {
    const onToken = wantTokens ? (text, token, logprobs) => emit({ type: "token", text, token, logprobs }) : undefined;
    return this.need().generate(prompt, { ...options, signal }, onToken);
  }

  async logits([ids]) {
    const logits = await this.need().logits(Uint32Array.from(ids));
    return new Transfer(logits);
  }

  tokenize([text]) {
    return this.need().tokenize(text);
  }

  detokenize([ids]) {
    return this.need().detokenize(Uint32Array.from(ids));
  }

  reset() {
    this.need().reset();
  }

  async saveState() {
    const bytes = await this.need().saveState();
    return new Transfer(bytes);
  }

  loadState([bytes]) {
    this.need().loadState(bytes);
  }

  conversationText() {
    const model = this.need();
    return typeof model.conversationText === "function" ? model.conversationText() : undefined;
  }

  /**
   * One chat completion. The conversation's state is kept between calls: when the new prompt
   * starts with the text the model has read so far, only the rest is read.
   */
  async chat([request], emit, signal) {
    const model = this.need();
    const { prompt, options, stream, model: asked } = chatRequest(request);
    const known = this.conversationText();
    let text = prompt;
    if (known !== undefined && known !== "" && prompt.startsWith(known)) {
      text = prompt.slice(known.length);
    } else {
      model.reset();
    }
    const meta = { id: newCompletionId(), created: Math.floor(Date.now() / 1000), model: asked ?? this.name };
    let onToken;
    if (stream) {
      emit({ type: "chunk", chunk: chunkObject(meta, { role: "assistant", content: "" }) });
      let started = false;
      onToken = (piece) => {
        if (piece === "") return;
        const content = started ? piece : replyContent(piece);
        started = true;
        if (content !== "") emit({ type: "chunk", chunk: chunkObject(meta, { content }) });
      };
    }
    const result = await model.generate(text, { ...options, signal }, onToken);
    if (stream) {
      emit({ type: "chunk", chunk: chunkObject(meta, {}, result) });
      return undefined;
    }
    return completionObject(meta, result);
  }

  free() {
    this.model?.free();
    this.model = null;
  }
}

const METHODS = ["load", "info", "generate", "logits", "tokenize", "detokenize", "reset", "saveState",
  "loadState", "conversationText", "chat", "free"];

/**
 * A message handler for one engine: `post(message, transfer)` answers `{ id, result }`,
 * `{ id, error }` or, while a call runs, `{ id, event }`. Calls run one after another (the Model
 * refuses a call made while another is running); `{ method: "abort", args: [id] }` stops one,
 * running or queued.
 */
export function serve(post) {
  const core = new EngineCore();
  const running = new Map();
  let queue = Promise.resolve();
  return (message) => {
    const { id, method, args = [] } = message;
    if (method === "abort") return running.get(args[0])?.abort();
    if (method === "probe") return post({ id, result: { webgpu: Boolean(globalThis.navigator?.gpu) } });
    const controller = new AbortController();
    running.set(id, controller);
    const emit = (event) => post({ id, event });
    queue = queue.then(async () => {
      try {
        if (!METHODS.includes(method)) throw new Error(`unknown method ${method}`);
        const result = await core[method](args, emit, controller.signal);
        if (result instanceof Transfer) post({ id, result: result.value }, [result.value.buffer]);
        else post({ id, result });
      } catch (error) {
        post({ id, error: { message: String(error?.message ?? error), name: error?.name ?? "Error" } });
      } finally {
        running.delete(id);
      }
    });
    return undefined;
  };
}
