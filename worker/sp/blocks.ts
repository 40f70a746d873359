// How a sequence is split between ranks, and views of one rank's rows of [T, ...] tensors.
import type { AttentionSpec } from '../../native/kernels.js';

export interface Block {
  /** First token (inclusive). */
  start: number;
  /** Last token (exclusive). */
  end: number;
}

/** Contiguous blocks of T tokens over W ranks; lengths differ by at most one token. */
export function splitBlocks(T: number, W: number): Block[] {
  if (!Number.isInteger(T) || !Number.isInteger(W) || W < 1 || T < W) {
    throw new Error(`cannot split ${T} tokens over ${W} ranks: need integers with T >= W >= 1`);
  }
  return Array.from({ length: W }, (_, r) => ({ start: Math.floor((r * T) / W), end: Math.floor(((r + 1) * T) / W) }));
}

/** Rows [start, end) of a row-major tensor whose rows are `width` floats (a view, no copy). */
export function rows(a: Float32Array, b: Block, width: number): Float32Array {
  return a.subarray(b.start * width, b.end * width);
}

/** The spec of one block of a whole-sequence spec (views into its arrays; no initial state). */
export function blockSpec(full: AttentionSpec, b: Block): AttentionSpec {
  const { H, dk, dv } = full;
  const spec: AttentionSpec = {
    kind: full.kind,
    T: b.end - b.start,
    H,
    dk,
    dv,
    q: rows(full.q, b, H * dk),
    k: rows(full.k, b, H * dk),
    v: rows(full.v, b, H * dv),
  };
  if (full.causal !== undefined) spec.causal = full.causal;
  if (full.chunkSize !== undefined) spec.chunkSize = full.chunkSize;
  if (full.g) spec.g = rows(full.g, b, full.kind === 'vector_gate' ? H * dk : H);
  if (full.beta) spec.beta = rows(full.beta, b, H);
  return spec;
}
