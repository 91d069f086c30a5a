// rwkv-wgpu's main-thread API: an engine whose model loads and runs in a dedicated worker (so the
// page stays responsive through download, conversion and generation), with OpenAI's chat
// completions, the wasm Model's own calls, and the model cache's functions.
//
//   const engine = await createWorkerEngine("https://…/model.safetensors", { quant: "int8", onProgress });
//   const reply = await engine.chat.completions.create({ messages: [{ role: "user", content: "Hi!" }] });
export {
  cacheAvailable, clearModelCache, deleteCachedModel, listCachedFiles, listCachedModels, storageEstimate,
} from "./cache.js";
export { chatPrompt } from "./chat.js";

/** Why this browser cannot run the engine, or undefined when it can. */
export function webGpuProblem() {
  if (!globalThis.navigator?.gpu) {
    return "This browser has no WebGPU (navigator.gpu is missing): use a recent Chrome, Edge or Safari, or " +
      "Firefox with WebGPU enabled; on Linux, Chromium needs --enable-unsafe-webgpu.";
  }
  if (!globalThis.isSecureContext) return "WebGPU needs a secure context: serve the page over https or from localhost.";
  return undefined;
}

const absolute = (url) => new URL(url, document.baseURI).href;

// Starts the module worker and checks it has WebGPU; resolves to it, or to a reason it cannot serve.
function startWorker() {
  return new Promise((resolve) => {
    let worker;
    try {
      worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
    } catch (error) {
      resolve({ reason: `no module worker: ${error.message}` });
      return;
    }
    const done = (result) => {
      worker.onmessage = worker.onerror = null;
      resolve(result);
    };
    worker.onerror = (event) => {
      worker.terminate();
      done({ reason: `the worker did not start: ${event.message ?? "script error"}` });
    };
    worker.onmessage = ({ data }) => {
      if (data.result?.webgpu) return done({ worker });
      worker.terminate();
      return done({ reason: "this browser offers no WebGPU in workers" });
    };
    worker.postMessage({ id: 0, method: "probe" });
  });
}

// The same messages as the worker's, handled on this thread.
async function mainThreadPort(onMessage) {
  const { serve } = await import("./core.js");
  const handle = serve((message) => queueMicrotask(() => onMessage(message)));
  return { send: (message) => handle(message), close: () => {} };
}

/**
 * Loads a model and resolves to an Engine. `model`: a URL (downloaded once, then read from the
 * browser's cache), a File or Blob, or bytes. Options: `quant`, `f16`, `chunk`, `name` (as
 * Model.load); `tokenizerUrl` or `tokenizer` (a File, Blob or bytes) for a tokenizer.json;
 * `cache` (default true); `onProgress({ stage, file, done, total, percent })` with stage
 * "download", "cache", "file" or "convert"; `onWarning(message)` (a download that could not be
 * cached); `worker: false` runs on this thread.
 */
export async function createWorkerEngine(model, options = {}) {
  const problem = webGpuProblem();
  if (problem) throw new Error(problem);
  const { onProgress, onWarning, worker: wantWorker = true, tokenizerUrl, tokenizer, ...load } = options;
  const engine = new Engine();
  let fallbackReason;
  if (wantWorker) {
    const started = await startWorker();
    if (started.worker) {
      const { worker } = started;
      worker.onmessage = ({ data }) => engine._receive(data);
      worker.onerror = (event) => engine._fail(`the engine's worker failed: ${event.message ?? "script error"}`);
      engine._port = { send: (message, transfer) => worker.postMessage(message, transfer), close: () => worker.terminate() };
      engine.mode = "worker";
    } else {
      fallbackReason = started.reason;
    }
  }
  if (!engine._port) {
    engine._port = await mainThreadPort((message) => engine._receive(message));
    engine.mode = "main-thread";
    engine.fallbackReason = fallbackReason;
  }
  const source = typeof model === "string" ? absolute(model) : model instanceof URL ? model.href : model;
  const tokenizerSource = tokenizerUrl ? absolute(tokenizerUrl) : tokenizer;
  try {
    engine.loaded = await engine._call("load", [{ ...load, model: source, tokenizer: tokenizerSource }], {
      onEvent: (event) => {
        if (event.type === "progress") onProgress?.(event);
        if (event.type === "warning") onWarning?.(event.message);
      },
    });
  } catch (error) {
    engine.terminate();
    throw error;
  }
  engine.modelInfo = engine.loaded.info;
  return engine;
}

class Engine {
  /** "worker", or "main-thread" where a worker could not use WebGPU (`fallbackReason` says why). */
  mode = "worker";
  fallbackReason = undefined;
  /** `{ info, source: "network" | "cache" | "file" | "bytes", bytes, warnings, readSeconds, convertSeconds }`. */
  loaded = undefined;
  modelInfo = undefined;
  _port = null;
  _calls = new Map();
  _nextId = 1;
  _dead = undefined;

  /** OpenAI's API: `engine.chat.completions.create(request)`. */
  chat = { completions: { create: (request) => this._createCompletion(request) } };

  _call(method, args = [], { onEvent, signal, transfer } = {}) {
    if (this._dead) return Promise.reject(new Error(this._dead));
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const abort = () => this._port.send({ method: "abort", args: [id] });
      if (signal?.aborted) queueMicrotask(abort);
      signal?.addEventListener("abort", abort, { once: true });
      const settle = () => signal?.removeEventListener("abort", abort);
      this._calls.set(id, { resolve, reject, onEvent, abort, settle });
      this._port.send({ id, method, args }, transfer ?? []);
    });
  }

  _receive({ id, result, error, event }) {
    const call = this._calls.get(id);
    if (!call) return;
    if (event) return call.onEvent?.(event, call.abort);
    this._calls.delete(id);
    call.settle();
    if (error) {
      const thrown = new Error(error.message);
      thrown.name = error.name;
      call.reject(thrown);
    } else {
      call.resolve(result);
    }
  }

  _fail(message) {
    this._dead = message;
    for (const call of this._calls.values()) call.reject(new Error(message));
    this._calls.clear();
  }

  async _createCompletion(request) {
    const { signal, ...body } = request ?? {};
    if (!body.stream) return this._call("chat", [body], { signal });
    const stream = new CompletionStream();
    const controller = new AbortController();
    signal?.addEventListener("abort", () => controller.abort(), { once: true });
    stream.abort = () => controller.abort();
    const finished = this._call("chat", [body], {
      signal: controller.signal,
      onEvent: (event) => event.type === "chunk" && stream._push(event.chunk),
    });
    finished.then(() => stream._end(), (error) => stream._end(error));
    // Resolve once the request has been accepted (its first chunk), or reject as the call does.
    await Promise.race([stream._firstChunk, finished]);
    return stream;
  }

  /** The wasm Model's generate; `onToken(text, token, logprobs)` returning false stops it. */
  generate(prompt, options = {}, onToken) {
    const { signal, ...rest } = options;
    return this._call("generate", [prompt, rest, Boolean(onToken)], {
      signal,
      onEvent: (event, abort) => {
        if (event.type === "token" && onToken?.(event.text, event.token, event.logprobs) === false) abort();
      },
    });
  }

  /** Logits after reading `ids` from the initial state (the conversation is not touched). */
  logits(ids) {
    return this._call("logits", [Array.from(ids)]);
  }

  tokenize(text) {
    return this._call("tokenize", [text]);
  }

  detokenize(ids) {
    return this._call("detokenize", [Array.from(ids)]);
  }

  /** Forgets the conversation. */
  reset() {
    return this._call("reset");
  }

  info() {
    return this._call("info");
  }

  /** The text of every token the conversation has read (undefined after loadState). */
  conversationText() {
    return this._call("conversationText");
  }

  saveState() {
    return this._call("saveState");
  }

  loadState(bytes) {
    return this._call("loadState", [bytes]);
  }

  /** Releases the model and its worker; the engine cannot be used afterwards. */
  terminate() {
    if (this._dead) return;
    if (this.mode === "main-thread") this._port.send({ id: 0, method: "free" });
    this._port.close();
    this._fail("the engine was terminated");
  }
}

/** The chunks of a streamed completion: `for await (const chunk of stream)`; `abort()` stops it. */
class CompletionStream {
  _chunks = [];
  _waiting = null;
  _done = false;
  _error = undefined;

  constructor() {
    this._firstChunk = new Promise((resolve) => {
      this._onFirst = resolve;
    });
  }

  _push(chunk) {
    this._onFirst();
    this._chunks.push(chunk);
    this._wake();
  }

  _end(error) {
    this._done = true;
    this._error = error;
    this._wake();
  }

  _wake() {
    const waiting = this._waiting;
    this._waiting = null;
    waiting?.();
  }

  async *[Symbol.asyncIterator]() {
    try {
      for (;;) {
        if (this._chunks.length) {
          yield this._chunks.shift();
        } else if (this._done) {
          if (this._error) throw this._error;
          return;
        } else {
          await new Promise((resolve) => {
            this._waiting = resolve;
          });
        }
      }
    } finally {
      // A consumer that stops reading early stops the generation.
      if (!this._done) this.abort();
    }
  }
}
