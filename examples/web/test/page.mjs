// End-to-end test of the demo page in a real headless browser: load the demo model, continue
// text greedily (which must match the official package), chat for a turn, take a screenshot.
// usage: node page.mjs URL chromium|firefox SCREENSHOT.png
// Prints one JSON line with the decode speed; exits 1 with a message on any failure.
import puppeteer from "puppeteer-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const [url, browserName, screenshot] = process.argv.slice(2);
if (!url || !["chromium", "firefox"].includes(browserName) || !screenshot) {
  console.error("usage: node page.mjs URL chromium|firefox SCREENSHOT.png");
  process.exit(2);
}
// The official package's greedy continuation of a prompt on the demo model
// (tools/make_demo_fixtures.py; its top-1/top-2 margins leave f32 rounding no room to flip a
// choice). The demo tokenizer is bytes: one token per character of this ASCII text.
const OFFICIAL = JSON.parse(fs.readFileSync(
  new URL("../../../tests/fixtures/demo/greedy.json", import.meta.url), "utf8"));
const TOKENS = OFFICIAL.continuation_tokens.length;

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

const browser = await launch();
const problems = [];
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1100, height: 1100 });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));

  // Waits until the page reaches `state`; an error state ends the test with the page's message.
  const reach = async (state, timeout) => {
    await page.waitForFunction(
      (wanted) => [wanted, "error"].includes(document.body.dataset.state),
      { timeout, polling: 100 },
      state,
    );
    const [now, status] = await page.$eval("body", (body) => [body.dataset.state, document.getElementById("status").textContent]);
    if (now !== state) throw new Error(`the page reports an error: ${status}`);
  };
  const set = (selector, value) =>
    page.$eval(selector, (element, value) => {
      element.value = value;
    }, value);

  await page.goto(url);
  await reach("empty", 60_000);
  await page.click("#load-demo");
  await reach("ready", 300_000);
  const info = await page.$eval("#info", (element) => element.textContent);
  if (!info.includes("RWKV-7")) throw new Error(`unexpected model info: ${info}`);

  // Continue text, greedy: the same tokens as the official package.
  await set("#prompt", OFFICIAL.prompt);
  await set("#max-tokens", String(TOKENS));
  await page.click("#greedy");
  await page.click("#generate");
  await reach("done", 300_000);
  const output = await page.$eval("#output", (element) => ({
    text: element.textContent,
    tokens: Number(element.dataset.tokens),
    tokensPerSecond: Number(element.dataset.tokensPerSecond),
  }));
  if (output.tokens !== TOKENS) throw new Error(`expected ${TOKENS} tokens, the page says ${output.tokens}`);
  if (output.text !== OFFICIAL.prompt + OFFICIAL.continuation) {
    throw new Error(`the page's greedy text differs from the official one: ${JSON.stringify(output.text)}`);
  }

  // One chat turn, sampled: it answers after "Assistant:" and stops at a blank line or the limit.
  await page.click("#greedy");
  await page.click('input[name="mode"][value="chat"]');
  await set("#prompt", "Who art thou?");
  await set("#max-tokens", "24");
  await page.click("#generate");
  await reach("done", 300_000);
  const chat = await page.$eval("#output", (element) => [element.textContent, Number(element.dataset.tokens)]);
  if (!chat[0].includes("User: Who art thou?\n\nAssistant:") || !(chat[1] >= 1)) {
    throw new Error(`no chat turn in ${JSON.stringify(chat[0].slice(-200))} (${chat[1]} tokens)`);
  }

  await page.screenshot({ path: screenshot, fullPage: true });
  if (problems.length) throw new Error(problems.join("; "));
  console.log(JSON.stringify({ browser: browserName, tokens: output.tokens, tokensPerSecond: output.tokensPerSecond, info }));
} catch (error) {
  console.error(`demo page test in ${browserName} failed: ${error.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
