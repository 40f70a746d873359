#!/usr/bin/env bash
# Builds the CUDA kernels and their standalone check/benchmark (build-cuda/la_bench) for Hopper
# (sm_90a), with the CUDA runtime linked statically, and the Node-API addon build-cuda/lasp_cuda.node
# when Node's headers and node-addon-api are there. Needs nvcc (CUDA 12.4+; 13.0 here).
#
# Usage: scripts/build-cuda.sh [--if-available] [nvcc flags...]
#   --if-available   exit 0 with a note when nvcc is not found (what `npm run build` uses: CUDA is
#                    compiled only where nvcc exists; `npm ci`, node-gyp and CI never run this)
# Incremental: an object is rebuilt only when it is missing or older than its source, any header
# in native/cuda/, or this script; extra nvcc flags force a full rebuild. The kernel files compile
# in parallel (one job per CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
IF_AVAILABLE=0
if [ "${1:-}" = --if-available ]; then
  IF_AVAILABLE=1
  shift
fi
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
if [ ! -x "$NVCC" ]; then
  if [ "$IF_AVAILABLE" = 1 ]; then
    echo "build-cuda: nvcc not found: CUDA kernels not built (the CPU build is complete; set NVCC to build them)"
    exit 0
  fi
  echo "build-cuda: nvcc not found (set NVCC or install the CUDA toolkit)" >&2
  exit 1
fi
ARCH=${LASP_CUDA_ARCH:--gencode arch=compute_90a,code=sm_90a}
OUT=build-cuda
mkdir -p "$OUT"
FORCE=0
[ $# -gt 0 ] && FORCE=1
HEADERS=(native/cuda/*.h native/cuda/*.cuh "$0")

# stale OUT SRC: whether OUT must be rebuilt from SRC.
stale() {
  local out=$1 src=$2 h
  [ "$FORCE" = 1 ] || [ ! -f "$out" ] || [ "$src" -nt "$out" ] && return 0
  for h in "${HEADERS[@]}"; do [ "$h" -nt "$out" ] && return 0; done
  return 1
}

# Jobs run in the background, at most one per CPU; `drain` waits for all and fails if one did.
JOBS=$(nproc 2> /dev/null || echo 2)
PIDS=()
run() {
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 0.2; done
  "$@" &
  PIDS+=($!)
}
drain() {
  local p ok=0
  for p in "${PIDS[@]}"; do wait "$p" || ok=1; done
  PIDS=()
  return $ok
}
compile_logged() { # log nvcc args...: keeps the ptxas report, prints it on failure
  local log=$1
  shift
  "$@" 2> "$log" || { cat "$log" >&2; return 1; }
}

FLAGS=(-std=c++17 -O3 $ARCH -cudart static -Xptxas -v -lineinfo)
for name in linear_attention la_bench; do
  if stale "$OUT/$name.o" "native/cuda/$name.cu"; then
    run compile_logged "$OUT/ptxas-$name.txt" "$NVCC" "${FLAGS[@]}" "$@" -c "native/cuda/$name.cu" -o "$OUT/$name.o"
  fi
done

# The Node-API addon (loaded by native/cuda.ts): Node's own headers (node-gyp's cache, or
# /usr/include/node) and node-addon-api.
NODE_INC=${NODE_INC:-}
if [ -z "$NODE_INC" ]; then
  for d in "$HOME/.cache/node-gyp/$(node -p process.versions.node 2> /dev/null)/include/node" /usr/include/node /usr/local/include/node; do
    if [ -f "$d/node_api.h" ]; then NODE_INC=$d; break; fi
  done
fi
OBJS=()
if [ -n "$NODE_INC" ] && [ -d node_modules/node-addon-api ]; then
  # Every kernel file (native/cuda/*.cu but the standalone bench) and every addon_*.cc part.
  for src in native/cuda/*.cu; do
    [ "$src" = native/cuda/la_bench.cu ] && continue
    o="$OUT/$(basename "$src" .cu).pic.o"
    stale "$o" "$src" && run "$NVCC" -std=c++17 -O3 $ARCH -Xcompiler -fPIC "$@" -c "$src" -o "$o"
    OBJS+=("$o")
  done
  for src in native/cuda/addon_*.cc; do
    o="$OUT/$(basename "$src" .cc).o"
    stale "$o" "$src" && run "$NVCC" -std=c++17 -O3 $ARCH -Xcompiler -fPIC -Xcompiler -fexceptions -I"$NODE_INC" \
      -Inode_modules/node-addon-api -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS -DNODE_ADDON_API_DISABLE_DEPRECATED "$@" -x cu -c "$src" -o "$o"
    OBJS+=("$o")
  done
fi
drain

newer_than() { # target inputs...: whether any input is newer than target (or target is missing)
  local t=$1 x
  shift
  [ -f "$t" ] || return 0
  for x in "$@"; do [ "$x" -nt "$t" ] && return 0; done
  return 1
}
if newer_than "$OUT/la_bench" "$OUT/linear_attention.o" "$OUT/la_bench.o"; then
  "$NVCC" $ARCH -cudart static "$OUT/linear_attention.o" "$OUT/la_bench.o" -o "$OUT/la_bench"
fi
echo "build-cuda: $OUT/la_bench"
if [ ${#OBJS[@]} -gt 0 ]; then
  if newer_than "$OUT/lasp_cuda.node" "${OBJS[@]}"; then "$NVCC" $ARCH -shared -cudart static "${OBJS[@]}" -o "$OUT/lasp_cuda.node"; fi
  echo "build-cuda: $OUT/lasp_cuda.node"
else
  echo "build-cuda: Node headers or node-addon-api not found: addon not built (la_bench only)" >&2
fi
grep -E 'spill|stack frame' "$OUT/ptxas-linear_attention.txt" | grep -v ' 0 bytes stack frame, 0 bytes spill' | sort | uniq -c || true
