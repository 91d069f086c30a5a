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
du -ch .dev/*.xz | tail -1
