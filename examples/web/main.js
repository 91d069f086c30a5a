// The demo page: pick a model (saved in this browser, the built-in demo, a URL or a file), then
// chat with it or continue text, streaming. The model runs in the rwkv-wgpu package's worker
// engine, so the page keeps drawing while the model downloads, converts and generates.
// `document.body.dataset.state` says what the page is doing (empty, loading, ready, generating,
// done, error); the page test (test/page.mjs) waits on it.
import {
  cacheAvailable, clearModelCache, createWorkerEngine, deleteCachedModel, listCachedModels, storageEstimate,
  webGpuProblem,
} from "./rwkv-wgpu/index.js";

const $ = (id) => document.getElementById(id);
const DEMO = { url: new URL("demo/model.safetensors", document.baseURI).href, tokenizerUrl: new URL("demo/tokenizer.json", document.baseURI).href };
const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

let engine = null;
let generation = null; // the AbortController of the reply being written
let history = []; // the chat's messages, as the OpenAI API takes them
let fromSavedState = false; // the conversation continues a loaded state: turns are read as raw text

function setState(state, message, kind) {
  document.body.dataset.state = state;
  if (message !== undefined) {
    $("status").textContent = message;
    $("status").className = kind ?? (state === "error" ? "error" : "");
  }
  const idle = engine !== null && ["ready", "done", "error"].includes(state);
  for (const id of ["generate", "reset", "save-state", "state-file"]) $(id).disabled = !idle;
  const busy = state === "loading" || state === "generating" || state === "starting";
  for (const element of document.querySelectorAll("#model-panel button")) element.disabled = busy;
  $("stop-button").disabled = state !== "generating";
}

function showError(error) {
  setState("error", String(error?.message ?? error));
}

const STAGES = {
  download: "Downloading", cache: "Reading the saved copy of", file: "Reading", convert: "Converting and uploading",
};

function showProgress({ stage, file, done, total, percent }) {
  const what = file === "tokenizer" ? "the tokenizer" : stage === "convert" ? "the weights" : "the model";
  const amount = stage === "convert" ? "" : total ? ` (${mib(done)} of ${mib(total)})` : ` (${mib(done)})`;
  $("status").textContent = `${STAGES[stage]} ${what}: ${percent === undefined ? "…" : `${percent}%`}${amount}`;
  $("progress").hidden = false;
  if (percent === undefined) $("progress").removeAttribute("value");
  else $("progress").value = percent;
}

// Every model picker entry ends by calling this; an engine replaces the previous one.
async function load(source, { name, tokenizerUrl, tokenizer } = {}) {
  setState("loading", `Loading ${name}…`);
  $("progress").value = 0;
  document.body.dataset.source = "";
  engine?.terminate(); // frees its GPU memory now, not at garbage collection
  engine = null;
  clearConversation();
  const warnings = [];
  try {
    const start = performance.now();
    engine = await createWorkerEngine(source, {
      quant: $("quant").value, name, tokenizerUrl, tokenizer, onProgress: showProgress,
      onWarning: (message) => warnings.push(message),
    });
    const info = engine.modelInfo;
    const { loaded } = engine;
    $("current").textContent = `${name}: ${info.version}, ${info.layers} layers × ${info.embd}, weights ${info.quant}`;
    $("info").textContent =
      `${info.heads} heads of ${info.headSize}, vocabulary ${info.vocab} (${info.tokenizer} tokenizer); ` +
      `${info.format} file in ${info.fileDtype}\nadapter: ${info.adapter}; shader-f16 ${info.f16 ? "used" : "not used"}\n` +
      (engine.mode === "worker" ? "running in a background worker"
        : `running on the page's thread (${engine.fallbackReason}): the page may pause while it works`);
    document.body.dataset.source = loaded.source;
    document.body.dataset.mode = engine.mode;
    const from = { network: "downloaded", cache: "read from this browser's storage", file: "read from the file", bytes: "" }[loaded.source];
    $("progress").hidden = true;
    setState("ready",
      `Ready: ${mib(loaded.bytes)} ${from} in ${loaded.readSeconds.toFixed(1)} s, on the GPU in ` +
        `${loaded.convertSeconds.toFixed(1)} s (${(performance.now() - start) / 1000 | 0} s in all).` +
        (warnings.length ? ` Note: ${warnings.join("; ")}` : ""),
      warnings.length ? "warning" : "");
  } catch (error) {
    engine = null;
    $("progress").hidden = true;
    $("current").textContent = "No model loaded.";
    showError(error);
  }
  refreshCached();
}

async function refreshCached() {
  const list = $("cached");
  if (!cacheAvailable()) {
    list.innerHTML = '<li class="empty">This page cannot save models (no Cache API: serve it over https or from localhost).</li>';
    return;
  }
  const models = await listCachedModels().catch(() => []);
  list.replaceChildren();
  for (const model of models) {
    const item = document.createElement("li");
    item.dataset.url = model.url;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = model.url === DEMO.url ? "demo model" : decodeURIComponent(new URL(model.url).pathname.split("/").pop());
    name.title = model.url;
    const size = document.createElement("span");
    size.className = "size";
    size.textContent = mib(model.bytes);
    const open = button("Load", "load", () =>
      load(model.url, { name: name.textContent, tokenizerUrl: model.tokenizerUrl }));
    const remove = button("Delete", "delete", async () => {
      await deleteCachedModel(model.url);
      refreshCached();
    });
    item.append(name, size, open, remove);
    list.append(item);
  }
  if (!models.length) {
    list.innerHTML = '<li class="empty">No models saved yet: a model loaded from a URL is kept here.</li>';
  } else {
    list.append(Object.assign(document.createElement("li"), { className: "empty" }));
    list.lastChild.append(button("Delete all", "clear", async () => {
      await clearModelCache();
      refreshCached();
    }));
  }
  const estimate = await storageEstimate().catch(() => undefined);
  $("storage").textContent = estimate?.quota ? `This site uses ${mib(estimate.usage)} of the ${mib(estimate.quota)} the browser allows it.` : "";
  const busy = ["loading", "generating"].includes(document.body.dataset.state);
  for (const each of list.querySelectorAll("button")) each.disabled = busy;
}

function button(label, className, onclick) {
  const element = Object.assign(document.createElement("button"), { type: "button", textContent: label, className });
  element.onclick = onclick;
  return element;
}

function clearConversation() {
  history = [];
  fromSavedState = false;
  $("messages").replaceChildren();
}

// A bubble with a body that text streams into and a line of facts below it.
function bubble(kind, text = "") {
  $("messages").querySelector(".placeholder")?.remove();
  const element = document.createElement("div");
  element.className = `message ${kind}`;
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = text;
  const meta = document.createElement("span");
  meta.className = "meta";
  element.append(body, meta);
  $("messages").append(element);
  element.scrollIntoView({ block: "end" });
  return { element, body, meta };
}

function settings() {
  const number = (id) => Number($(id).value);
  return {
    maxTokens: number("max-tokens"),
    temperature: number("temperature"),
    topP: number("top-p"),
    topK: number("top-k"),
    presencePenalty: number("presence-penalty"),
    frequencyPenalty: number("frequency-penalty"),
    greedy: $("greedy").checked || number("temperature") === 0,
    stop: $("stop").value.split("\n").filter((line) => line !== ""),
    seed: $("seed").value === "" ? undefined : number("seed"),
  };
}

// Counts streamed pieces into a live tokens/s figure; the final one is the engine's own.
function speedMeter(meta) {
  let tokens = 0;
  let first = 0;
  return () => {
    tokens += 1;
    if (tokens === 1) first = performance.now();
    else meta.textContent = `${tokens} tokens · ${((tokens - 1) / ((performance.now() - first) / 1000)).toFixed(1)} tokens/s`;
  };
}

function finishReply(reply, { tokens, tokensPerSecond, promptTokens, promptSeconds, finish }) {
  reply.element.classList.remove("streaming");
  reply.element.dataset.tokens = String(tokens);
  reply.element.dataset.tokensPerSecond = tokensPerSecond.toFixed(2);
  reply.element.dataset.promptTokens = String(promptTokens);
  const ended = { stop: "", endOfText: "", maxTokens: " · stopped at the token limit", cancelled: " · stopped" }[finish] ?? "";
  reply.meta.textContent = `${tokens} tokens · ${tokensPerSecond.toFixed(1)} tokens/s · read ${promptTokens} ` +
    `prompt tokens in ${promptSeconds.toFixed(2)} s${ended}`;
}

async function chatTurn(text, options, signal) {
  bubble("user", text);
  const reply = bubble("assistant streaming");
  const tick = speedMeter(reply.meta);
  if (fromSavedState) {
    // The state holds a conversation this page has no messages for: continue it as raw text.
    const result = await engine.generate(`User: ${text}\n\nAssistant:`, { ...options, stop: ["\n\n", ...options.stop], signal },
      (piece) => {
        reply.body.textContent += reply.body.textContent === "" ? piece.replace(/^ /, "") : piece;
        tick();
      });
    return finishReply(reply, result);
  }
  history.push({ role: "user", content: text });
  const system = $("system").value.trim();
  const stream = await engine.chat.completions.create({
    messages: system ? [{ role: "system", content: system }, ...history] : history,
    stream: true,
    max_tokens: options.maxTokens,
    temperature: options.greedy ? 0 : options.temperature,
    top_p: options.topP,
    top_k: options.topK,
    presence_penalty: options.presencePenalty,
    frequency_penalty: options.frequencyPenalty,
    stop: options.stop,
    seed: options.seed,
    signal,
  });
  let content = "";
  for await (const chunk of stream) {
    const [choice] = chunk.choices;
    if (choice.delta.content) {
      content += choice.delta.content;
      reply.body.textContent = content;
      tick();
      reply.element.scrollIntoView({ block: "end" });
    }
    if (chunk.usage) {
      finishReply(reply, {
        tokens: chunk.usage.completion_tokens, promptTokens: chunk.usage.prompt_tokens,
        tokensPerSecond: chunk.timings.tokens_per_second, promptSeconds: chunk.timings.prompt_seconds,
        finish: chunk.timings.finish,
      });
    }
  }
  history.push({ role: "assistant", content });
}

async function continueText(prompt, options, signal) {
  await engine.reset();
  clearConversation();
  const reply = bubble("text streaming");
  const shown = document.createElement("span");
  shown.className = "prompt";
  shown.textContent = prompt;
  reply.body.before(shown);
  const tick = speedMeter(reply.meta);
  const result = await engine.generate(prompt, { ...options, signal }, (piece) => {
    reply.body.textContent += piece;
    tick();
  });
  finishReply(reply, result);
}

async function send(event) {
  event?.preventDefault();
  const text = $("prompt").value;
  if (!engine || text.trim() === "" || document.body.dataset.state === "generating") return;
  generation = new AbortController();
  setState("generating", "Writing…");
  const options = settings();
  try {
    if ($("mode").value === "chat") {
      $("prompt").value = "";
      await chatTurn(text.trim(), options, generation.signal);
    } else {
      await continueText(text, options, generation.signal);
    }
    setState("done", "Done.");
  } catch (error) {
    document.querySelector(".message.streaming")?.classList.remove("streaming");
    showError(error);
  } finally {
    generation = null;
  }
}

async function newConversation() {
  await engine?.reset();
  clearConversation();
  setState("ready", "New conversation.");
}

async function saveState() {
  try {
    const bytes = await engine.saveState();
    const link = Object.assign(document.createElement("a"), {
      href: URL.createObjectURL(new Blob([bytes])), download: "rwkv-state.safetensors",
    });
    link.click();
    URL.revokeObjectURL(link.href);
  } catch (error) {
    showError(error);
  }
}

async function loadState(file) {
  try {
    await engine.loadState(new Uint8Array(await file.arrayBuffer()));
    clearConversation();
    fromSavedState = true;
    $("mode").value = "chat";
    bubble("assistant", `(continuing the conversation saved in ${file.name})`);
    setState("ready", `Loaded the state from ${file.name}; the chat continues from it.`);
  } catch (error) {
    showError(error);
  }
}

function wire() {
  $("load-demo").onclick = () => load(DEMO.url, { name: "the demo model", tokenizerUrl: DEMO.tokenizerUrl });
  $("load-url").onclick = () => {
    const url = $("model-url").value.trim();
    if (!url) return setState(document.body.dataset.state, "Enter a model URL first.", "error");
    const tokenizerUrl = $("tokenizer-url").value.trim() || undefined;
    return load(url, { name: decodeURIComponent(new URL(url, document.baseURI).pathname.split("/").pop()), tokenizerUrl });
  };
  $("load-file").onclick = () => {
    const file = $("model-file").files[0];
    if (!file) return setState(document.body.dataset.state, "Choose a model file first.", "error");
    return load(file, { name: file.name, tokenizer: $("tokenizer-file").files[0] });
  };
  $("composer").onsubmit = send;
  $("prompt").onkeydown = (event) => {
    if (event.key === "Enter" && !event.shiftKey && $("mode").value === "chat") send(event);
  };
  $("stop-button").onclick = () => generation?.abort();
  $("reset").onclick = newConversation;
  // Chat starts from the initial state, not from text continued before (calls run in order, so
  // the reset lands before the next generation).
  $("mode").onchange = () => {
    if (!engine || document.body.dataset.state === "generating") return;
    clearConversation();
    engine.reset().catch(showError);
  };
  $("save-state").onclick = saveState;
  $("state-file").onchange = (event) => event.target.files[0] && loadState(event.target.files[0]);
}

async function start() {
  wire();
  const problem = webGpuProblem();
  if (problem) return setState("error", problem);
  const adapter = await navigator.gpu.requestAdapter().catch(() => null);
  if (!adapter) {
    return setState("error", "WebGPU is present but offers no adapter: the GPU may be blocklisted or WebGPU " +
      "disabled (chrome://gpu or about:support say why).");
  }
  await refreshCached();
  return setState("empty", cacheAvailable() ? "No model loaded: pick one on the left."
    : "No model loaded. This page cannot save models (no Cache API), so each visit downloads them again.");
}

start();
