// The npm package's API, checked in the browser on test/api.html (window.rwkv = index.js):
// OpenAI-style chat completions (plain and streamed) against the Model API's greedy output, the
// prefix cache across turns, cached loads against a download (same logits), progress, the cache
// functions and a full disk, and the main-thread engine (with its pauses, for comparison).

/** Runs the checks on `page` (test/api.html, loaded); resolves to measurements, throws on a failure. */
export async function apiChecks(page, server) {
  const modelPath = "/demo/model.safetensors";
  const before = server.requests.get(modelPath) ?? 0;
  const result = await page.evaluate(inBrowser, { modelUrl: "../demo/model.safetensors", tokenizerUrl: "../demo/tokenizer.json" });
  // Two downloads: the engine loaded with `cache: false`, and the one after the cache was emptied;
  // the others read the cache.
  const downloads = (server.requests.get(modelPath) ?? 0) - before;
  if (downloads !== 2) throw new Error(`the API checks fetched the model ${downloads} times, expected twice`);
  return result;
}

// Runs in the page: everything it needs comes as arguments.
async function inBrowser({ modelUrl, tokenizerUrl }) {
  const { rwkv } = window;
  const check = (condition, message) => {
    if (!condition) throw new Error(message);
  };
  const absolute = new URL(modelUrl, document.baseURI).href;
  const same = (a, b) => a.length === b.length && a.every((value, i) => Object.is(value, b[i]));
  const out = {};

  // A cached load (the page test's loads put the model in the cache) against a fresh download.
  const stages = new Set();
  let converted = 0; // the bytes Model.load reported converting, through onProgress
  const cached = await rwkv.createWorkerEngine(modelUrl, {
    tokenizerUrl,
    onProgress: (p) => {
      if (p.percent === 100) stages.add(p.stage);
      if (p.stage === "convert") converted = Math.max(converted, p.total > 1 ? p.done : 0);
    },
  });
  check(cached.mode === "worker", `the engine runs on ${cached.mode}: ${cached.fallbackReason}`);
  check(cached.loaded.source === "cache", `the model came from ${cached.loaded.source}, expected the cache`);
  check(stages.has("cache") && stages.has("convert"), `progress reached 100% in ${[...stages]} only`);
  check(converted > 7_000_000, `the conversion's progress went to ${converted} bytes`);
  const downloadStages = new Set();
  const fresh = await rwkv.createWorkerEngine(modelUrl, {
    tokenizerUrl, cache: false, onProgress: (p) => p.percent === 100 && downloadStages.add(p.stage),
  });
  check(fresh.loaded.source === "network", `cache: false read ${fresh.loaded.source}`);
  check(downloadStages.has("download"), `a download's progress reached 100% in ${[...downloadStages]} only`);
  const ids = await cached.tokenize("KING HENRY. Now, my good lord,");
  const [a, b] = [await cached.logits(ids), await fresh.logits(ids)];
  check(a.length === cached.modelInfo.vocab && same(Array.from(a), Array.from(b)), "cached and downloaded weights give different logits");
  fresh.terminate();

  // chat.completions against generate: the same greedy text, whole and streamed.
  const engine = cached;
  const maxTokens = 40;
  const messages = [{ role: "user", content: "Who art thou?" }];
  const prompt = rwkv.chatPrompt(messages);
  check(prompt === "User: Who art thou?\n\nAssistant:", `chatPrompt gave ${JSON.stringify(prompt)}`);
  await engine.reset();
  const direct = await engine.generate(prompt, { greedy: true, maxTokens, stop: ["\n\n"] });
  const expected = direct.text.replace(/^ /, "");
  const request = { messages, temperature: 0, max_tokens: maxTokens };
  const completion = await engine.chat.completions.create(request);
  const [choice] = completion.choices;
  check(completion.object === "chat.completion" && completion.id.startsWith("chatcmpl-") && Number.isInteger(completion.created),
    `not a chat.completion: ${JSON.stringify(completion).slice(0, 200)}`);
  check(choice.message.role === "assistant" && choice.message.content === expected,
    `chat gave ${JSON.stringify(choice.message.content)}, generate ${JSON.stringify(expected)}`);
  check(choice.finish_reason === (direct.finish === "maxTokens" ? "length" : "stop"), `finish_reason ${choice.finish_reason} after ${direct.finish}`);
  const promptTokens = (await engine.tokenize(prompt)).length;
  // A prompt that is not a continuation of the conversation is read whole, from the zero state.
  check(completion.usage.prompt_tokens === promptTokens && completion.usage.completion_tokens === direct.tokens &&
    completion.usage.total_tokens === promptTokens + direct.tokens, `usage ${JSON.stringify(completion.usage)}`);

  const stream = await engine.chat.completions.create({ ...request, stream: true });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  const streamed = chunks.map((chunk) => chunk.choices[0].delta.content ?? "").join("");
  const last = chunks.at(-1);
  check(chunks.every((chunk) => chunk.object === "chat.completion.chunk" && chunk.id === chunks[0].id), "chunks differ in id or object");
  check(chunks[0].choices[0].delta.role === "assistant", "the first chunk gives no role");
  check(streamed === expected, `stream gave ${JSON.stringify(streamed)}, generate ${JSON.stringify(expected)}`);
  check(last.choices[0].finish_reason === choice.finish_reason && last.usage?.completion_tokens === direct.tokens,
    `last chunk ${JSON.stringify(last)}`);
  check(chunks.slice(0, -1).every((chunk) => chunk.choices[0].finish_reason === null), "finish_reason before the last chunk");

  // The next turn continues the conversation's state: it reads only its new text.
  check(typeof engine.conversationText === "function", "no conversationText");
  const known = await engine.conversationText();
  const turn2 = [...messages, { role: "assistant", content: streamed }, { role: "user", content: "Art thou a king?" }];
  const prompt2 = rwkv.chatPrompt(turn2);
  check(typeof known === "string" && prompt2.startsWith(known),
    `the second turn's prompt does not continue the conversation's text ${JSON.stringify(known)}`);
  const newTokens = (await engine.tokenize(prompt2.slice(known.length))).length;
  const second = await engine.chat.completions.create({ messages: turn2, temperature: 0, max_tokens: 8 });
  // The token the first reply chose last and never read (its stop) is read first.
  const pending = last.usage.completion_tokens > 0 ? 1 : 0;
  check(second.usage.prompt_tokens === newTokens + pending,
    `the second turn read ${second.usage.prompt_tokens} tokens, expected ${newTokens} new + ${pending} pending`);
  const wholeTokens = (await engine.tokenize(prompt2)).length;
  check(second.usage.prompt_tokens < wholeTokens, "the second turn read the whole conversation again");
  out.secondTurn = { promptTokens: second.usage.prompt_tokens, newTokens, wholeTokens };
  // A conversation that does not continue the state starts over, as from scratch.
  const restarted = await engine.chat.completions.create(request);
  check(restarted.choices[0].message.content === expected && restarted.usage.prompt_tokens === promptTokens,
    "a new conversation after another one did not start from the zero state");

  // A stream stopped early ends the generation; the engine goes on.
  const stopped = await engine.chat.completions.create({ ...request, stream: true, max_tokens: 200 });
  let seen = 0;
  for await (const chunk of stopped) if (chunk.choices[0].delta.content && ++seen === 2) break;
  const after = await engine.chat.completions.create(request);
  check(after.choices[0].message.content === expected, "the engine misbehaved after a stream was stopped");

  // response_format: JSON, shaped by the grammar.
  const json = await engine.chat.completions.create({
    messages: [{ role: "user", content: "Give me a JSON object." }], max_tokens: 48, seed: 1,
    response_format: { type: "json_object" },
  });
  const content = json.choices[0].message.content;
  check(content.trimStart().startsWith("{"), `json_object gave ${JSON.stringify(content)}`);
  if (json.choices[0].finish_reason === "stop") JSON.parse(content);
  let refused = "";
  try {
    await engine.chat.completions.create({ messages: [{ role: "robot", content: "x" }] });
  } catch (error) {
    refused = error.message;
  }
  check(/unknown role/.test(refused), `a bad role gave ${JSON.stringify(refused)}`);
  engine.terminate();

  // The cache functions: the model and its tokenizer are listed, and deleted together.
  const listed = (await rwkv.listCachedModels()).find((entry) => entry.url === absolute);
  check(listed?.bytes === 7196400 && listed.tokenizerUrl === new URL(tokenizerUrl, document.baseURI).href,
    `listCachedModels: ${JSON.stringify(listed)}`);
  check(await rwkv.deleteCachedModel(absolute), "deleteCachedModel found nothing");
  const left = await rwkv.listCachedFiles();
  check(left.length === 0, `left in the cache: ${JSON.stringify(left)}`);

  // The engine on the page's thread (where workers lack WebGPU), for a full disk: the download
  // still loads, with a clear warning and no cache entry; and how long the thread pauses.
  const put = Cache.prototype.put;
  Cache.prototype.put = () => Promise.reject(new DOMException("the quota has been exceeded", "QuotaExceededError"));
  const warnings = [];
  const ticks = { last: performance.now(), maxGap: 0 };
  const timer = setInterval(() => {
    const now = performance.now();
    ticks.maxGap = Math.max(ticks.maxGap, now - ticks.last);
    ticks.last = now;
  }, 10);
  let onPage;
  try {
    onPage = await rwkv.createWorkerEngine(modelUrl, { tokenizerUrl, worker: false, onWarning: (w) => warnings.push(w) });
  } finally {
    clearInterval(timer);
    Cache.prototype.put = put;
  }
  check(onPage.mode === "main-thread", "worker: false still used a worker");
  check(onPage.loaded.source === "network" && warnings.some((w) => w.startsWith(`not enough storage to cache ${absolute} (6.9 MiB)`)),
    `a full disk gave the warnings ${JSON.stringify(warnings)}`);
  check((await rwkv.listCachedModels()).length === 0, "a model that could not be stored is listed");
  check(same(Array.from(await onPage.logits(ids)), Array.from(a)), "the main-thread engine gives different logits");
  onPage.terminate();
  out.mainThreadLoadMaxGapMs = Math.round(ticks.maxGap);
  return out;
}
