#!/usr/bin/env bash
# One call on the GPU machine (the device tool's `run`, carry: build-cuda dist build .nodebin; see
# docs/cuda.md): unpacks Node and the runtime dependencies, then runs every GPU check and
# benchmark in order, each bounded in time, and writes their outputs to $OUT (default
# /tmp/lasp-gpu). Prints a summary. Usage: scripts/gpu-session.sh [tests|bench|all|scale] (default tests; tests and bench each fit the device tool's 10-minute call, all does not; scale: see below).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/lasp-gpu}
WHAT=${1:-tests}
mkdir -p "$OUT" /tmp/lasp-node
if ! command -v node > /dev/null; then
  [ -x /tmp/lasp-node/node ] || xz -dc .nodebin/node.xz > /tmp/lasp-node/node
  chmod +x /tmp/lasp-node/node
  export PATH=/tmp/lasp-node:$PATH
fi
[ -d node_modules/@grpc/grpc-js ] || tar -xJf .nodebin/node_modules.tar.xz
nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv > "$OUT/nvidia-smi.txt" 2>&1
step() { # name seconds command...
  local name=$1 secs=$2
  shift 2
  local t0=$SECONDS
  timeout "$secs" "$@" > "$OUT/$name.txt" 2>&1
  echo "$name: exit $? in $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
}
if [ "$WHAT" = tests ] || [ "$WHAT" = all ]; then
  step la-bench-test 90 ./build-cuda/la_bench test
  step node-gpu-tests 420 node --test --test-concurrency=1 dist/test/cuda.test.js dist/test/cuda-ops.test.js \
    dist/test/cuda-attention.test.js dist/test/cuda-bf16.test.js dist/test/cuda-memory.test.js dist/test/cuda-train.test.js \
    dist/test/bench-cuda.test.js
  grep -E "^\s*not ok|^# (tests|pass|fail|skipped)|^# .*(CPU vs|GPU workers)" "$OUT/node-gpu-tests.txt" | head -40
fi
if [ "$WHAT" = bench ] || [ "$WHAT" = all ]; then
  step la-bench 200 node dist/cli/lasp.js bench cuda
  cat "$OUT/la-bench.txt"
  step train-gpu 150 node --initial-old-space-size=256 dist/cli/lasp.js train --device cuda:0 --steps 20 --json
  tail -1 "$OUT/train-gpu.txt"
  # The same model in float32 and in bf16 attention (bench/configs/gpu-bf16.json: head dims 64, linear,
  # scalar_gate and delta layers; T = 8192), one worker: tokens/s and losses side by side.
  for p in fp32 bf16; do
    step "train-$p" 150 node --initial-old-space-size=256 dist/cli/lasp.js train --config bench/configs/gpu-bf16.json \
      --device cuda:0 --precision $p --checkpoint-dir "/tmp/lasp-gpu-bf16-$p" --json
    grep -o '"step":[0-9]*,"loss":[0-9.]*' "$OUT/train-$p.txt" | tr '\n' ' '
    tail -1 "$OUT/train-$p.txt" | cut -c1-160
  done
  # Weak scaling with two workers sharing GPU 0 (docs/scale-out.md); on several GPUs pass a list.
  step scale-gpu 200 node --initial-old-space-size=256 dist/cli/lasp.js bench scale --workers 1,2 --device "${LASP_GPU_DEVICES:-cuda:0}" \
    --seq-len-per-worker 4096 --steps 3 --loss-steps 1
  tail -6 "$OUT/scale-gpu.txt"
fi
if [ "$WHAT" = scale ]; then
  # Issue 9's weak-scaling runs (docs/scale-out.md) on what this machine has: W workers on the GPUs of
  # LASP_GPU_DEVICES (default cuda:0, i.e. all W share one GPU), T/W from LASP_SCALE_TPW, for the
  # default model (2 x gated_delta) and a 3:1 hybrid (LASP_SCALE_MODELS picks). Each bounded by LASP_SCALE_SECS.
  devs=${LASP_GPU_DEVICES:-cuda:0}
  for tpw in ${LASP_SCALE_TPW:-32768}; do
    for model in ${LASP_SCALE_MODELS:-default hybrid}; do
      layers=()
      [ "$model" = hybrid ] && layers=(--layers gated_delta,gated_delta,gated_delta,softmax)
      step "scale-$model-$tpw" "${LASP_SCALE_SECS:-240}" node --initial-old-space-size=256 dist/cli/lasp.js bench scale \
        --workers "${LASP_SCALE_WORKERS:-1,2,4}" --device "$devs" --seq-len-per-worker "$tpw" --steps 2 --warmup 1 --loss-steps 1 "${layers[@]}"
      tail -7 "$OUT/scale-$model-$tpw.txt"
    done
  done
fi
cat "$OUT/summary.txt"
