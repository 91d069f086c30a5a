#!/usr/bin/env bash
# The browser tests: the JavaScript API's tests (web/tests/browser.rs: the official logits,
# generation, state, errors) in headless Chromium and Firefox through wasm-bindgen-test-runner,
# then the demo page and the npm package's engine (web/npm) driven end to end in both by
# puppeteer-core, and `npm pack` of that package. `bash .ci/run` installs what
# they need; this script says what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
export WASM_BINDGEN_TEST_TIMEOUT=600

missing=()
need() { command -v "$1" >/dev/null || missing+=("$1 ($2)"); }
need chromium "apt-get install chromium"
need chromedriver "apt-get install chromium-driver"
need firefox-esr "apt-get install firefox-esr"
need geckodriver "cargo install geckodriver"
need node "apt-get install nodejs npm"
need npm "apt-get install npm"
wanted=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
found=$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $2}' || true)
[ "$found" = "$wanted" ] || missing+=("wasm-bindgen-test-runner $wanted, found ${found:-none} (cargo install wasm-bindgen-cli --version $wanted)")
rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown ||
  missing+=("the wasm32 target (rustup target add wasm32-unknown-unknown)")
if command -v firefox-esr >/dev/null; then
  firefox=$(firefox-esr --version | grep -o '[0-9]*' | head -1)
  # Release builds before 141 refuse WebGPU whatever the prefs say.
  [ "$firefox" -ge 141 ] || missing+=("Firefox ESR 153 or later, found $firefox (apt-get update && apt-get install firefox-esr)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "error: the browser tests need:" >&2
  printf '  %s\n' "${missing[@]}" >&2
  echo "bash .ci/run installs all of them." >&2
  exit 1
fi

echo "== JavaScript API in headless Chromium (WebGPU on SwiftShader: no shader-f16)"
env -u GECKODRIVER CHROMEDRIVER="$(command -v chromedriver)" \
  cargo test --release --target wasm32-unknown-unknown -p rwkv-wgpu-web --test browser -- --nocapture
echo "== JavaScript API in headless Firefox ESR (WebGPU on lavapipe: shader-f16)"
env -u CHROMEDRIVER GECKODRIVER="$(command -v geckodriver)" \
  cargo test --release --target wasm32-unknown-unknown -p rwkv-wgpu-web --test browser -- --nocapture

echo "== the demo page and the npm package's API, driven by puppeteer-core"
examples/web/build.sh
[ -d examples/web/test/node_modules/puppeteer-core ] || (cd examples/web/test && npm ci --no-audit --no-fund)
shots=target/web-screenshots
mkdir -p "$shots"
# page.mjs serves examples/web itself, counting requests (to see a reload skip the download).
for browser in chromium firefox; do
  node examples/web/test/page.mjs "$browser" "$shots/demo-$browser.png"
done

echo "== npm pack: the package (web/npm) with its wasm"
packed=$(cd web/npm && npm pack --silent --pack-destination "$PWD/../../target")
contents=$(tar tzf "target/$packed")
for file in index.js index.d.ts worker.js core.js cache.js chat.js pkg/rwkv_wgpu_web.js pkg/rwkv_wgpu_web_bg.wasm; do
  grep -qx "package/$file" <<<"$contents" || { echo "error: target/$packed lacks $file" >&2; exit 1; }
done
echo "target/$packed: $(wc -l <<<"$contents") files, $(du -h "target/$packed" | cut -f1)"
echo "browser tests passed; screenshots in $shots/"
