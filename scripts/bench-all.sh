#!/usr/bin/env bash
# Runs every benchmark the README reports and writes the raw outputs to ${1:-bench-results}/.
# Takes about 20 minutes on two cores; run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-results}
mkdir -p "$out"
lasp() { node dist/cli/lasp.js "$@"; }
lasp bench kernels > "$out/kernels.txt"
lasp bench collectives --workers 2 > "$out/collectives-w2.txt"
lasp bench collectives --workers 4 --sizes 1024,65536,1048576,4194304 > "$out/collectives-w4.txt"
: > "$out/sp.jsonl"
for T in 16384 65536 262144; do
  for W in 2 4; do
    check=()
    [ "$T" -gt 65536 ] && check=(--no-check)
    lasp bench sp --kind linear --workers "$W" --seq-len "$T" --heads 4 --head-dim 64 "${check[@]}" --json >> "$out/sp.jsonl"
  done
done
for T in 8192 65536; do
  lasp bench sp --kind gated_delta --workers 4 --seq-len "$T" --heads 4 --head-dim 64 --modes lasp2 --json >> "$out/sp.jsonl"
done
