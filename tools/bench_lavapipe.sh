#!/usr/bin/env bash
# Our side of the side-by-side figures in BENCHMARKS.md: the shapes web-rwkv's bench runs through
# ../shared/bench/bench_webrwkv.sh (RWKV-7, vocab 65536, random weights), measured by
# `rwkv-wgpu bench` on synthetic models of the same shape, on the default adapter.
#   usage: tools/bench_lavapipe.sh [quick]
# Run it alternately with web-rwkv's bench on the same machine, and compare medians.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
BIN=target/release/rwkv-wgpu
if [ "${1:-}" = quick ]; then
  "$BIN" bench --layers 2 --embd 128 --vocab 65536 --prefill 64 --gen 16 --batch 1 --repeats 5
else
  "$BIN" bench --layers 2 --embd 128 --vocab 65536 --prefill 128 --gen 32 --batch 1 --repeats 5 --quant f16,int8,nf4
  "$BIN" bench --shape 0.1b --prefill 128 --gen 8 --batch 1 --repeats 3
fi
