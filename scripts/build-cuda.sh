#!/usr/bin/env bash
# Builds the CUDA kernels and their standalone check/benchmark (build-cuda/la_bench) for Hopper
# (sm_90a), with the CUDA runtime linked statically. Needs nvcc (CUDA 12.4+; 13.0 here); the
# CPU build (`npm ci`, node-gyp) never runs this. Usage: scripts/build-cuda.sh [nvcc flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
if [ ! -x "$NVCC" ]; then
  echo "build-cuda: nvcc not found (set NVCC or install the CUDA toolkit)" >&2
  exit 1
fi
ARCH=${LASP_CUDA_ARCH:--gencode arch=compute_90a,code=sm_90a}
OUT=build-cuda
mkdir -p "$OUT"
FLAGS=(-std=c++17 -O3 $ARCH -cudart static -Xptxas -v -lineinfo)
"$NVCC" "${FLAGS[@]}" "$@" -c native/cuda/linear_attention.cu -o "$OUT/linear_attention.o" 2> "$OUT/ptxas-linear_attention.txt" &
"$NVCC" "${FLAGS[@]}" "$@" -c native/cuda/la_bench.cu -o "$OUT/la_bench.o" 2> "$OUT/ptxas-la_bench.txt" &
wait %1 || { cat "$OUT/ptxas-linear_attention.txt" >&2; exit 1; }
wait %2 || { cat "$OUT/ptxas-la_bench.txt" >&2; exit 1; }
"$NVCC" $ARCH -cudart static "$OUT/linear_attention.o" "$OUT/la_bench.o" -o "$OUT/la_bench"
# The Node-API addon (build-cuda/lasp_cuda.node, loaded by native/cuda.ts): Node's own headers
# (node-gyp's cache, or /usr/include/node) and node-addon-api.
NODE_INC=${NODE_INC:-}
if [ -z "$NODE_INC" ]; then
  for d in "$HOME/.cache/node-gyp/$(node -p process.versions.node 2>/dev/null)/include/node" /usr/include/node /usr/local/include/node; do
    if [ -f "$d/node_api.h" ]; then NODE_INC=$d; break; fi
  done
fi
if [ -n "$NODE_INC" ] && [ -d node_modules/node-addon-api ]; then
  # Every kernel file (native/cuda/*.cu but the standalone bench) and every addon_*.cc part.
  OBJS=()
  for src in native/cuda/*.cu; do
    [ "$src" = native/cuda/la_bench.cu ] && continue
    o="$OUT/$(basename "$src" .cu).pic.o"
    "$NVCC" -std=c++17 -O3 $ARCH -Xcompiler -fPIC -c "$src" -o "$o"
    OBJS+=("$o")
  done
  for src in native/cuda/addon_*.cc; do
    o="$OUT/$(basename "$src" .cc).o"
    "$NVCC" -std=c++17 -O3 $ARCH -Xcompiler -fPIC -Xcompiler -fexceptions -I"$NODE_INC" -Inode_modules/node-addon-api \
      -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS -DNODE_ADDON_API_DISABLE_DEPRECATED -x cu -c "$src" -o "$o"
    OBJS+=("$o")
  done
  "$NVCC" $ARCH -shared -cudart static "${OBJS[@]}" -o "$OUT/lasp_cuda.node"
  echo "build-cuda: $OUT/lasp_cuda.node"
else
  echo "build-cuda: Node headers or node-addon-api not found: addon not built (la_bench only)" >&2
fi
grep -E 'spill|stack frame' "$OUT/ptxas-linear_attention.txt" | grep -v ' 0 bytes stack frame, 0 bytes spill' | sort | uniq -c || true
echo "build-cuda: $OUT/la_bench"
