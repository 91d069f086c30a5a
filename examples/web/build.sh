#!/usr/bin/env bash
# Builds the browser package: web/ through wasm-bindgen into the npm package's web/npm/pkg, then
# copies the package (engine, worker and wasm) into examples/web/rwkv-wgpu and the demo model
# next to the page; with --serve [PORT], then serves the page on 127.0.0.1.
# Needs: rustup target add wasm32-unknown-unknown; cargo install wasm-bindgen-cli --version V
# (V = the wasm-bindgen version in Cargo.lock; binaryen's wasm-opt is not needed).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"

wanted=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
found=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$found" != "$wanted" ]; then
  echo "error: wasm-bindgen ${found:-not found}; this package needs the CLI at the version in Cargo.lock:" >&2
  echo "  cargo install wasm-bindgen-cli --version $wanted" >&2
  exit 1
fi
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  echo "error: the wasm32 target is missing: rustup target add wasm32-unknown-unknown" >&2
  exit 1
fi

cargo build --quiet --release --target wasm32-unknown-unknown -p rwkv-wgpu-web
NPM="$ROOT/web/npm"
wasm-bindgen --target web --out-dir "$NPM/pkg" target/wasm32-unknown-unknown/release/rwkv_wgpu_web.wasm
rm -rf "$HERE/rwkv-wgpu"
mkdir -p "$HERE/rwkv-wgpu" "$HERE/demo"
cp -r "$NPM"/*.js "$NPM/pkg" "$HERE/rwkv-wgpu/"
cp assets/demo/model.safetensors assets/demo/tokenizer.json "$HERE/demo/"
echo "built $NPM/pkg ($(du -h "$NPM/pkg/rwkv_wgpu_web_bg.wasm" | cut -f1) of wasm), copied to $HERE/rwkv-wgpu"

if [ "${1:-}" = --serve ]; then
  port=${2:-8080}
  echo "serving http://127.0.0.1:$port/ (Ctrl-C stops)"
  exec python3 -m http.server "$port" --bind 127.0.0.1 --directory "$HERE"
fi
