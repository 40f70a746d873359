// Deterministic test data for the collectives tests, generated identically in the parent test
// process and in the worker processes, and the expected results computed the way the
// collectives compute them (same summation order, so results can be compared bit for bit).
import { createHash } from 'node:crypto';
import { ringSegments } from '../../worker/collectives/ring.js';

function xorshiftWords(seed: number, words: number): Uint32Array {
  const out = new Uint32Array(words);
  let x = seed >>> 0 || 0x9e3779b9;
  for (let i = 0; i < words; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x;
  }
  return out;
}

function mix(seed: number, rank: number, n: number): number {
  let h = (seed ^ Math.imul(rank + 1, 0x9e3779b9) ^ Math.imul(n + 7, 0x85ebca6b)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
  return (h ^ (h >>> 15)) >>> 0;
}

/** `size` pseudo-random bytes for `rank`. */
export function rankBytes(seed: number, rank: number, size: number): Uint8Array {
  const words = xorshiftWords(mix(seed, rank, size), Math.ceil(size / 4));
  return new Uint8Array(words.buffer, 0, size);
}

/** `n` float32 values for `rank`, of varied magnitude (so float sums depend on their order). */
export function rankFloats(seed: number, rank: number, n: number): Float32Array {
  const words = xorshiftWords(mix(seed, rank, n) ^ 0x5bd1e995, n);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const w = words[i]!;
    out[i] = ((w >>> 8) / 16777216 - 0.5) * 2 ** ((w & 15) - 8);
  }
  return out;
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * The sum over ranks as allReduceSum computes it: rank order 0..W−1 for arrays of at most
 * `directMaxBytes`, else per ring segment c the order c, c+1, …, c+W−1 (mod W).
 */
export function expectedSum(inputs: Float32Array[], directMaxBytes: number): Float32Array {
  const W = inputs.length;
  const n = inputs[0]!.length;
  const out = new Float32Array(n);
  if (W === 1 || n * 4 <= directMaxBytes) {
    out.set(inputs[0]!);
    for (let j = 1; j < W; j++) {
      const x = inputs[j]!;
      for (let i = 0; i < n; i++) out[i] = out[i]! + x[i]!;
    }
    return out;
  }
  ringSegments(n, W).forEach(({ start, end }, c) => {
    out.set(inputs[c]!.subarray(start, end), start);
    for (let j = 1; j < W; j++) {
      const x = inputs[(c + j) % W]!;
      for (let i = start; i < end; i++) out[i] = x[i]! + out[i]!;
    }
  });
  return out;
}
