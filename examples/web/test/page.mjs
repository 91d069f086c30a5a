// End-to-end test of the demo page and the npm package in a real headless browser, served by a
// request-counting server (server.mjs):
// 1. loading the demo model keeps the page's thread responsive (the engine runs in a worker);
// 2. greedy text matches the official package's, and two chat turns stream into bubbles;
// 3. a reload loads the model from the browser's cache, with no new request for the weights, and
//    generates the same text;
// 4. the API checks of api.mjs on test/api.html (chat completions, prefix cache, cache functions).
// usage: node page.mjs chromium|firefox SCREENSHOT.png
// Prints one JSON line of measurements; exits 1 with a message on any failure.
import puppeteer from "puppeteer-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { serve } from "./server.mjs";
import { apiChecks } from "./api.mjs";

const [browserName, screenshot] = process.argv.slice(2);
if (!["chromium", "firefox"].includes(browserName) || !screenshot) {
  console.error("usage: node page.mjs chromium|firefox SCREENSHOT.png");
  process.exit(2);
}
// The official package's greedy continuation of a prompt on the demo model
// (tools/make_demo_fixtures.py; its top-1/top-2 margins leave f32 rounding no room to flip a
// choice). The demo tokenizer is bytes: one token per character of this ASCII text.
const OFFICIAL = JSON.parse(fs.readFileSync(
  new URL("../../../tests/fixtures/demo/greedy.json", import.meta.url), "utf8"));
const TOKENS = OFFICIAL.continuation_tokens.length;
const MODEL = "/demo/model.safetensors";
// The longest the page's thread may go without running a 10 ms timer while the model loads in the
// worker; the main-thread engine's pauses are reported next to it for comparison.
const MAX_GAP_MS = 250;

function launch() {
  if (browserName === "chromium") {
    const profile = fs.mkdtempSync(path.join(os.tmpdir(), "rwkv-page-test-"));
    return puppeteer.launch({
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      headless: true,
      userDataDir: profile,
      // Chromium offers WebGPU on a machine without a GPU (SwiftShader) only with this flag.
      args: ["--no-sandbox", "--enable-unsafe-webgpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
    });
  }
  return puppeteer.launch({
    browser: "firefox",
    executablePath: process.env.FIREFOX ?? "/usr/bin/firefox-esr",
    headless: true,
    extraPrefsFirefox: { "dom.webgpu.enabled": true, "gfx.webgpu.ignore-blocklist": true },
  });
}

const server = await serve(path.resolve(fileURLToPath(new URL("..", import.meta.url))));
const browser = await launch();
const problems = [];
const fetched = (urlPath) => server.requests.get(urlPath) ?? 0;
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1200, height: 1000 });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));

  // Waits until the page reaches `state`; an error state ends the test with the page's message.
  const reach = async (state, timeout) => {
    await page.waitForFunction(
      (wanted) => [wanted, "error"].includes(document.body.dataset.state),
      { timeout, polling: 100 },
      state,
    );
    const [now, status] = await page.$eval("body", (body) => [body.dataset.state, document.getElementById("status")?.textContent]);
    if (now !== state) throw new Error(`the page reports an error: ${status}`);
  };
  const set = (selector, value) =>
    page.$eval(selector, (element, value) => {
      element.value = value;
      element.dispatchEvent(new Event("change"));
    }, value);
  const lastMessage = () => page.$eval("#messages .message:last-child", (element) => ({
    text: element.querySelector(".prompt")?.textContent + element.querySelector(".body").textContent,
    reply: element.querySelector(".body").textContent,
    tokens: Number(element.dataset.tokens),
    tokensPerSecond: Number(element.dataset.tokensPerSecond),
    promptTokens: Number(element.dataset.promptTokens),
  }));
  // Longest gap between runs of a 10 ms timer on the page's thread, from start() to stop().
  const watchThread = {
    start: () => page.evaluate(() => {
      const ticks = { last: performance.now(), maxGap: 0, count: 0 };
      window.threadTicks = ticks;
      ticks.timer = setInterval(() => {
        const now = performance.now();
        ticks.maxGap = Math.max(ticks.maxGap, now - ticks.last);
        ticks.last = now;
        ticks.count += 1;
      }, 10);
    }),
    stop: () => page.evaluate(() => {
      clearInterval(window.threadTicks.timer);
      return { maxGapMs: Math.round(window.threadTicks.maxGap), ticks: window.threadTicks.count };
    }),
  };
  const greedyText = async () => {
    await set("#mode", "continue");
    await set("#prompt", OFFICIAL.prompt);
    await set("#max-tokens", String(TOKENS));
    await page.$eval("#greedy", (box) => {
      box.checked = true;
    });
    await page.click("#generate");
    await reach("done", 300_000);
    const output = await lastMessage();
    if (output.tokens !== TOKENS) throw new Error(`expected ${TOKENS} tokens, the page says ${output.tokens}`);
    if (output.text !== OFFICIAL.prompt + OFFICIAL.continuation) {
      throw new Error(`the page's greedy text differs from the official one: ${JSON.stringify(output.text)}`);
    }
    return output;
  };

  // 1. The first load downloads the model, in the worker, while the page's thread keeps running.
  await page.goto(server.url);
  await reach("empty", 60_000);
  await watchThread.start();
  await page.click("#load-demo");
  await reach("ready", 300_000);
  const load = await watchThread.stop();
  const [mode, source] = await page.$eval("body", (body) => [body.dataset.mode, body.dataset.source]);
  if (mode !== "worker") throw new Error(`the engine runs on the ${mode}: ${await page.$eval("#info", (e) => e.textContent)}`);
  if (source !== "network" || fetched(MODEL) !== 1) throw new Error(`first load: from ${source}, ${fetched(MODEL)} requests`);
  if (!(load.maxGapMs < MAX_GAP_MS)) throw new Error(`the page's thread paused ${load.maxGapMs} ms while the model loaded`);
  const info = await page.$eval("#current", (element) => element.textContent);
  if (!info.includes("RWKV-7")) throw new Error(`unexpected model info: ${info}`);

  // 2. Greedy text, the same tokens as the official package; the thread stays free meanwhile.
  await watchThread.start();
  const output = await greedyText();
  const generating = await watchThread.stop();

  // Two chat turns, sampled: a user bubble, then the reply streamed into the assistant's.
  await page.$eval("#greedy", (box) => {
    box.checked = false;
  });
  await set("#mode", "chat");
  await set("#prompt", "Who art thou?");
  await set("#max-tokens", "24");
  await page.click("#generate");
  await reach("done", 300_000);
  const reply = await lastMessage();
  await set("#prompt", "Art thou a king?");
  await page.click("#generate");
  await reach("done", 300_000);
  const bubbles = await page.$$eval("#messages .message", (elements) => elements.map((e) => e.className.split(" ")[1]));
  if (bubbles.join() !== "user,assistant,user,assistant" || !(reply.tokens >= 1)) {
    throw new Error(`no chat turns: bubbles ${bubbles}, ${reply.tokens} tokens`);
  }
  // The second turn continues the first's state: it reads its own text (one token a character)
  // and the token the first reply ended on, not the whole conversation again.
  const secondRead = (await lastMessage()).promptTokens;
  if (!(secondRead <= "\n\nUser: Art thou a king?\n\nAssistant:".length + 1)) {
    throw new Error(`the second chat turn read ${secondRead} tokens: the conversation was read again`);
  }
  await page.$eval("#settings", (details) => {
    details.open = true;
  });
  await page.screenshot({ path: screenshot, fullPage: true });

  // 3. A reload: the picker lists the saved model, which loads with no request for its weights.
  await page.reload();
  await reach("empty", 60_000);
  const entry = await page.$eval(`#cached li[data-url$="${MODEL}"]`, (item) => item.textContent);
  if (!entry.includes("6.9 MiB")) throw new Error(`the saved model is listed as ${JSON.stringify(entry)}`);
  await page.click(`#cached li[data-url$="${MODEL}"] button.load`);
  await reach("ready", 300_000);
  const again = await page.$eval("body", (body) => body.dataset.source);
  if (again !== "cache" || fetched(MODEL) !== 1) {
    throw new Error(`the reload loaded the model from ${again}; ${fetched(MODEL)} requests for ${MODEL}, expected 1`);
  }
  const cachedOutput = await greedyText();
  if (cachedOutput.text !== output.text) throw new Error("the cached model's greedy text differs");

  // 4. The package's API.
  await page.goto(new URL("test/api.html", server.url).href);
  await reach("ready", 60_000);
  const api = await apiChecks(page, server);

  if (problems.length) throw new Error(problems.join("; "));
  console.log(JSON.stringify({
    browser: browserName,
    decodeTokensPerSecond: output.tokensPerSecond,
    tokens: output.tokens,
    loadMaxGapMs: load.maxGapMs,
    generateMaxGapMs: generating.maxGapMs,
    mainThreadLoadMaxGapMs: api.mainThreadLoadMaxGapMs,
    secondTurn: api.secondTurn,
    modelRequests: fetched(MODEL),
    info,
  }));
} catch (error) {
  console.error(`page test in ${browserName} failed: ${error.message}`);
  if (process.env.DEBUG) console.error(error.stack);
  if (problems.length) console.error(problems.join("\n"));
  process.exitCode = 1;
} finally {
  await browser.close();
  await server.close();
}
