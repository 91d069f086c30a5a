#!/usr/bin/env bash
# One round on the lent GPU machine, from the checkout's root there (tools/pack_gpu_round.sh
# packs .dev here): the tests of the paths only GPUs take (tensor cores required), then the
# speed of each GPU path against its fallback, 1.5B synthetic, in one call. Every step has its
# own timeout and appends to $OUT/log.txt, so a round cut short still returns what it measured.
#   carry .gl .dev; command: bash tools/gpu_round.sh [tests|speed|peers|all]
# `peers` measures our decode and prefill on the released shapes next to web-rwkv's (when the
# pack found its bench), the table issues 17 and 18 ask for. Run one part per device call: each
# part's step timeouts add up to more than a call's 600 s (the steps themselves take less).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PART=${1:-all}
for f in .gl/*.deb; do dpkg -x "$f" / ; done; ldconfig
export XDG_RUNTIME_DIR=/tmp
ls /usr/share/vulkan/icd.d/*nvidia* /etc/vulkan/icd.d/*nvidia* >/dev/null 2>&1 ||
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
# The test binaries find their fixtures under the path they were built in.
[ -e /work/main ] || { mkdir -p /work; ln -s "$PWD" /work/main; }
B=/tmp/bin; mkdir -p $B
for x in .dev/*.xz; do n=$(basename "$x" .xz); [ -x $B/$n ] || { xz -dc "$x" > $B/$n; chmod +x $B/$n; }; done
log() { echo "== $(date +%T) $*" | tee -a "$OUT/log.txt"; }
step() { local t=$1; shift; log "$*"; timeout "$t" "$@" 2>&1 | grep -v -E '^\s*$|WARN' | tail -40 | tee -a "$OUT/log.txt"; }
R=$B/rwkv-wgpu
if [ "$PART" = all ] || [ "$PART" = tests ]; then
  step 20 $R adapters
  export RWKV_WGPU_REQUIRE_COOP=1
  step 120 $B/coop --test-threads 1
  step 120 $B/conformance --test-threads 1 cooperative
  step 120 $B/conformance --test-threads 1 every_kernel_variant
  step 120 $B/recurrences --test-threads 1 wkv7
  step 120 $B/long_prompts --test-threads 1 v7_long
  step 120 $B/fused_decode --test-threads 1
  step 180 $B/value_by_input --test-threads 1
  # --f16-arithmetic on the tiled kernels and on tensor cores against the official fp16 path.
  step 120 $B/demo --test-threads 1 --nocapture f16_arithmetic
  step 180 $B/kernels --test-threads 2
fi
if [ "$PART" = all ] || [ "$PART" = speed ]; then
  # The one-row and four-row products on every matrix-vector kernel, 64 per submit, 1.5B shapes.
  step 60 $B/product_kernels 1 2048 2048
  step 60 $B/product_kernels 1 2048 8192
  step 60 $B/product_kernels 4 2048 2048
  # One product on every kernel (blocked, tiled, cooperative matrices), 1.5B shapes.
  step 60 $B/product_kernels 128 2048 2048
  step 60 $B/product_kernels 1024 2048 2048
  step 60 $B/product_kernels 1024 2048 8192
  # The one-token W_v product, stored by output and by input with every split of by_input's
  # workgroup (88% zero inputs; then dense): which by_input_lanes a GPU wants (default 4).
  step 60 $B/value_product 2048 0.88 1,2,4,8,16,32
  step 60 $B/value_product 2048 0 1,2,4,8,16,32
  step 60 $B/value_product 4096 0.88 2,4,8,16
  # Each GPU path against its fallback, same shape and run.
  step 90 $R bench --shape 1.5b --prefill 512 --gen 64 --batch 1 --repeats 3
  step 90 $R bench --shape 1.5b --prefill 512 --gen 8 --batch 1 --repeats 3 --no-coop
  step 90 $R bench --shape 1.5b --prefill 512 --gen 8 --batch 1 --repeats 3 --wkv-chunks false
  step 90 $R bench --shape 1.5b --prefill 512 --gen 64 --batch 1 --repeats 3 --no-fused-decode
  step 90 $R bench --shape 1.5b --prefill 512 --gen 64 --batch 1 --repeats 3 --value-by-input false
  # Rows per prompt step: 128 (the default) gives a 2048-wide product only 64–128 workgroups.
  step 90 $R bench --shape 1.5b --prefill 1024 --gen 8 --batch 1 --repeats 2 --chunk 512
  step 90 $R bench --shape 1.5b --prefill 1024 --gen 8 --batch 1 --repeats 2 --chunk 1024
  step 90 $R bench --shape 1.5b --prefill 128 --gen 16 --batch 1 --repeats 1 --profile
  step 150 $R bench --shape 1.5b --prefill 128 --gen 8 --batch 1,16,64 --repeats 2 --quant f16,int8,nf4
fi
if [ "$PART" = all ] || [ "$PART" = peers ]; then
  step 60 $R bench --shape 0.4b --prefill 512 --gen 64 --batch 1 --repeats 3
  [ "$PART" = peers ] && step 90 $R bench --shape 1.5b --prefill 512 --gen 64 --batch 1 --repeats 3
  step 90 $R bench --shape 2.9b --prefill 256 --gen 64 --batch 1 --repeats 2
  if [ -x $B/webrwkv-bench ]; then
    W=$B/webrwkv-bench; M=/tmp/m; mkdir -p $M
    g() { [ -f $M/$1.st ] || step 120 python3 .dev/gen_models.py $M/$1 "${@:2}"; }
    g 04b --layers 24 --embd 1024; g 15b --layers 24 --embd 2048; g 29b --layers 32 --embd 2560
    step 60 $W --adapter --model $M/04b.st --prefill-length 512 --generation-length 64
    step 60 $W --adapter --model $M/15b.st --prefill-length 512 --generation-length 64
    step 90 $W --adapter --model $M/29b.st --prefill-length 512 --generation-length 64
    step 60 $W --adapter --model $M/15b.st --prefill-length 512 --generation-length 64 --quant 24
    step 60 $W --adapter --model $M/15b.st --prefill-length 512 --generation-length 64 --quant-nf4 24
  else
    log "no web-rwkv bench packed: peers skipped"
  fi
fi
log done
