#!/usr/bin/env bash
# Packs what tools/gpu_round.sh runs on the lent GPU machine into .dev/ (git-ignored through
# .git/info/exclude): the stripped release binary, examples/product_kernels and
# value_product, and the test binaries of the GPU-only paths,
# xz-compressed to stay within the device tool's 64 MiB. Carry `.dev` (and `.gl`, see
# ../shared/notes/gpu-machine.md) and run `bash tools/gpu_round.sh` there.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.dev/' .git/info/exclude 2>/dev/null || echo '/.dev/' >>.git/info/exclude
mkdir -p .dev
cargo build --release --quiet
cargo build --release --quiet --example product_kernels --example value_product
tests=(coop conformance recurrences kernels long_prompts fused_decode demo value_by_input)
built=$(cargo test --release --no-run --message-format=json $(printf -- '--test %s ' "${tests[@]}") 2>/dev/null |
  grep -o '"executable":"[^"]*"' | cut -d'"' -f4)
for exe in target/release/rwkv-wgpu target/release/examples/product_kernels target/release/examples/value_product $built; do
  name=$(basename "$exe" | sed 's/-[0-9a-f]\{16\}$//')
  strip -o ".dev/$name" "$exe"
  xz -f -T0 -6 ".dev/$name"
done
# The peer, for the side-by-side figures the issues ask for: web-rwkv's bench example, built
# from crates.io by ../shared/bench/bench_webrwkv.sh (WORK=/tmp/webrwkv-bench), and the script
# that writes random-weight models in its layout on the device (torch is installed there).
peer=${WEBRWKV_BENCH:-/tmp/webrwkv-bench/web-rwkv/target/release/examples/bench}
models=${GEN_MODELS:-../shared/bench/gen_models.py}
if [ -x "$peer" ] && [ -f "$models" ]; then
  strip -o .dev/webrwkv-bench "$peer"
  xz -f -T0 -6 .dev/webrwkv-bench
  cp "$models" .dev/gen_models.py
else
  rm -f .dev/webrwkv-bench.xz .dev/gen_models.py
  echo "note: no web-rwkv bench at $peer or no $models: the round's peer part will be skipped" >&2
fi
du -ch .dev/*.xz | tail -1
