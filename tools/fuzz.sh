#!/usr/bin/env bash
# Fuzzes the readers of untrusted input with cargo-fuzz (libFuzzer), each target for SECONDS:
# the safetensors, .pth and GGUF readers, the World tokenizer and the state-file reader. Seeds come
# from the committed fixtures; what libFuzzer finds goes to fuzz/artifacts/<target>/.
#   usage: tools/fuzz.sh [SECONDS=60] [TARGET…]
#   needs: rustup toolchain install nightly; cargo install cargo-fuzz
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors pth gguf tokenizer state)
seeds_for() {
  case "$1" in
    safetensors) echo tests/fixtures/v7/tiny tests/fixtures/v4/A ;;
    pth) echo tests/fixtures/pth tests/fixtures/v7/tiny ;;
    gguf) echo tests/fixtures/formats/gguf ;;
    tokenizer) echo tests/fixtures/tokenizer ;;
    state) echo tests/fixtures/fuzz ;;
  esac
}
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target"
  # shellcheck disable=SC2046
  cargo +nightly fuzz run "$target" "fuzz/corpus/$target" $(seeds_for "$target") -- \
    -max_total_time="$seconds" -max_len=1048576 -rss_limit_mb=4096 -timeout=10
done
