// The demo page: load a model (a file, a URL or the built-in demo model), then continue text or
// chat with it, streaming tokens. Everything runs in this page on the browser's WebGPU.
// `document.body.dataset.state` says what the page is doing (loading, ready, generating, error);
// the page test (test/page.mjs) waits on it.
import init, { Model } from "./pkg/rwkv_wgpu_web.js";

const $ = (id) => document.getElementById(id);
let model = null;
let generation = null; // the AbortController of the generation in progress

function setState(state, message, isError = false) {
  document.body.dataset.state = state;
  if (message !== undefined) {
    $("status").textContent = message;
    $("status").classList.toggle("error", isError);
  }
  const idle = state === "ready" || state === "done" || (state === "error" && model !== null);
  for (const id of ["generate", "reset", "save-state", "state-file"]) $(id).disabled = !idle;
  for (const id of ["load-file", "load-url", "load-demo"]) $(id).disabled = state === "loading" || state === "generating";
  $("stop-button").disabled = state !== "generating";
}

function showProgress(received, total, what) {
  const mib = (n) => (n / 2 ** 20).toFixed(1);
  $("progress").value = total ? received / total : 0;
  $("status").textContent = total
    ? `Reading ${what}: ${mib(received)} of ${mib(total)} MiB`
    : `Reading ${what}: ${mib(received)} MiB`;
}

// Reads a stream into one array, reporting progress (total = 0 when the size is unknown).
async function readAll(stream, total, what) {
  const reader = stream.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.length;
    showProgress(received, total, what);
  }
  const bytes = new Uint8Array(received);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  return bytes;
}

async function fetchBytes(url, what) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status} ${response.statusText}`);
  return readAll(response.body, Number(response.headers.get("content-length")) || 0, what);
}

const fileBytes = (file, what) => readAll(file.stream(), file.size, what);

async function load(name, readModel, readTokenizer) {
  setState("loading", `Loading ${name}…`);
  try {
    if (model) {
      model.free(); // releases its GPU memory now rather than at garbage collection
      model = null;
    }
    const bytes = await readModel();
    const tokenizer = readTokenizer ? await readTokenizer() : undefined;
    $("status").textContent = `Preparing ${name}: checking tensors, compiling kernels, uploading weights…`;
    // Let the message paint: converting and uploading the weights keeps the page busy.
    await new Promise((resolve) => setTimeout(resolve, 30));
    const start = performance.now();
    model = await Model.load(bytes, { quant: $("quant").value, tokenizer, name });
    const info = model.info();
    $("info").textContent =
      `${info.version}: ${info.layers} layers, embedding ${info.embd}, ${info.heads} heads of ${info.headSize}, ` +
      `vocabulary ${info.vocab} (${info.tokenizer} tokenizer)\n` +
      `${info.format} file in ${info.fileDtype}, weights as ${info.quant}; ` +
      `adapter: ${info.adapter}; shader-f16 ${info.f16 ? "used" : "not used"}; subgroups ${info.subgroups ? "used" : "not used"}`;
    $("progress").value = 1;
    setState("ready", `Loaded ${name} in ${((performance.now() - start) / 1000).toFixed(1)} s after reading it.`);
  } catch (error) {
    model = null;
    setState("error", String(error.message ?? error), true);
  }
}

function generateOptions(signal) {
  const number = (id) => Number($(id).value);
  const options = {
    maxTokens: number("max-tokens"),
    temperature: number("temperature"),
    topP: number("top-p"),
    topK: number("top-k"),
    presencePenalty: number("presence-penalty"),
    frequencyPenalty: number("frequency-penalty"),
    greedy: $("greedy").checked,
    stop: $("stop").value.split("\n").filter((line) => line !== ""),
    signal,
  };
  if ($("seed").value !== "") options.seed = number("seed");
  return options;
}

async function generate() {
  const chat = document.querySelector('input[name="mode"]:checked').value === "chat";
  generation = new AbortController();
  const options = generateOptions(generation.signal);
  const output = $("output");
  let prompt = $("prompt").value;
  if (chat) {
    // The conversation's state is kept between turns, so each turn reads only its new text.
    prompt = `User: ${prompt}\n\nAssistant:`;
    options.stop.push("\n\n");
  } else {
    model.reset();
    output.textContent = "";
  }
  const shown = document.createElement("span");
  shown.className = "prompt";
  shown.textContent = prompt;
  output.append(shown);
  const text = document.createTextNode("");
  output.append(text);

  setState("generating", "Generating…");
  let tokens = 0;
  let first = 0;
  try {
    const result = await model.generate(prompt, options, (piece) => {
      text.appendData(piece);
      tokens += 1;
      if (tokens === 1) first = performance.now();
      else $("speed").textContent = `${tokens} tokens, ${((tokens - 1) / ((performance.now() - first) / 1000)).toFixed(1)} tokens/s`;
    });
    if (chat) text.appendData("\n\n");
    $("speed").textContent =
      `${result.tokens} tokens at ${result.tokensPerSecond.toFixed(1)} tokens/s; ` +
      `prompt: ${result.promptTokens} tokens in ${result.promptSeconds.toFixed(2)} s; ended: ${result.finish}`;
    output.dataset.tokens = String(result.tokens);
    output.dataset.tokensPerSecond = result.tokensPerSecond.toFixed(2);
    setState("done", "Done.");
  } catch (error) {
    setState("error", String(error.message ?? error), true);
  } finally {
    generation = null;
  }
}

async function saveState() {
  try {
    const bytes = await model.saveState();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([bytes]));
    link.download = "rwkv-state.safetensors";
    link.click();
    URL.revokeObjectURL(link.href);
  } catch (error) {
    setState("error", String(error.message ?? error), true);
  }
}

async function loadState(file) {
  try {
    model.loadState(new Uint8Array(await file.arrayBuffer()));
    setState("ready", `Loaded the state from ${file.name}; the conversation continues from it.`);
  } catch (error) {
    setState("error", String(error.message ?? error), true);
  }
}

function wire() {
  $("load-file").onclick = () => {
    const file = $("model-file").files[0];
    if (!file) return setState("error", "Choose a model file first.", true);
    const tokenizer = $("tokenizer-file").files[0];
    load(file.name, () => fileBytes(file, file.name), tokenizer && (() => fileBytes(tokenizer, tokenizer.name)));
  };
  $("load-url").onclick = () => {
    const url = $("model-url").value.trim();
    if (!url) return setState("error", "Enter a model URL first.", true);
    const tokenizerUrl = $("tokenizer-url").value.trim();
    load(url, () => fetchBytes(url, url), tokenizerUrl && (() => fetchBytes(tokenizerUrl, tokenizerUrl)));
  };
  $("load-demo").onclick = () =>
    load(
      "the demo model",
      () => fetchBytes("demo/model.safetensors", "the demo model"),
      () => fetchBytes("demo/tokenizer.json", "its tokenizer"),
    );
  $("generate").onclick = generate;
  $("stop-button").onclick = () => generation?.abort();
  $("reset").onclick = () => {
    model.reset();
    $("output").textContent = "";
    setState("ready", "The conversation was forgotten.");
  };
  // A chat starts from the initial state, not from the text continued before.
  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.onchange = () => {
      if (model && document.body.dataset.state !== "generating") {
        model.reset();
        $("output").textContent = "";
      }
    };
  }
  $("save-state").onclick = saveState;
  $("state-file").onchange = (event) => event.target.files[0] && loadState(event.target.files[0]);
}

wire();
if (!navigator.gpu) {
  setState(
    "error",
    "This browser has no WebGPU (navigator.gpu is missing): use a recent Chrome, Edge or Safari, or Firefox " +
      "with WebGPU enabled; on Linux, Chromium needs --enable-unsafe-webgpu.",
    true,
  );
} else {
  await init();
  setState("empty", "No model loaded.");
}
