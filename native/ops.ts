// The typed, validated facade over the model ops of a training step (DESIGN.md §4): RMSNorm,
// SwiGLU, embedding, cross-entropy, AdamW and gradient-norm helpers (native/src/model_ops.h).
// As in kernels.ts, every entry point checks its arguments and names the offending one before
// any native code runs, then runs the op off the JavaScript thread. Layouts are row-major.
import { addon } from './binding.js';
import { checkArray, checkInt, describe, fail, output } from './kernels.js';
import {
  checkAdamW,
  checkArrays,
  checkEmbedding,
  checkF32,
  checkFinite,
  checkIds,
  checkNumber,
  checkRmsNorm,
  checkShortConv,
  checkL2RowsBackward,
} from './op-checks.js';

export interface RmsNormSpec {
  /** Rows. */
  N: number;
  /** Row length. */
  D: number;
  /** [N,D] */
  x: Float32Array;
  /** [D] */
  w: Float32Array;
  /** Added to mean(x²). Default 1e-6. */
  eps?: number;
}

export interface EmbeddingSpec {
  /** Vocabulary size (table rows). */
  V: number;
  /** Embedding width. */
  D: number;
  /** Token ids [N], each in [0, V). */
  ids: Int32Array;
}

export interface CrossEntropySpec {
  /** Rows. */
  N: number;
  /** Classes (vocabulary size). */
  V: number;
  /** [N,V] */
  logits: Float32Array;
  /** [N], each in [0, V) or -1 (row ignored). */
  targets: Int32Array;
  /** dlogits = (softmax − onehot)·scale, e.g. 1 / (counted tokens over all ranks). Default 1. */
  scale?: number;
}

export interface CrossEntropyResult {
  /** Σ over counted rows of −log softmax(logits)[target] (accumulated in double). */
  loss: number;
  /** Rows whose target is not -1. */
  count: number;
  /** [N,V]; zero on ignored rows. */
  dlogits: Float32Array;
}

export interface AdamWState {
  /** Updated in place. */
  params: Float32Array;
  grads: Float32Array;
  /** First moment, updated in place (start at zero). */
  m: Float32Array;
  /** Second moment, updated in place (start at zero). */
  v: Float32Array;
}

export interface AdamWHyper {
  lr: number;
  /** Default 0.9. */
  beta1?: number;
  /** Default 0.999. */
  beta2?: number;
  /** Default 1e-8. */
  eps?: number;
  /** Decoupled (AdamW) weight decay. Default 0. */
  weightDecay?: number;
  /** 1 for the first step (bias correction). */
  step: number;
}

/** y = x / sqrt(mean(x²) + eps) ⊙ w per row; rstd [N] = 1/sqrt(mean(x²) + eps), for the backward. */
async function rmsNorm(spec: RmsNormSpec): Promise<{ y: Float32Array; rstd: Float32Array }> {
  const { N, D, eps, x, w } = checkRmsNorm(spec);
  const y = output(N * D);
  const rstd = output(N);
  await addon().rmsNormForward(N, D, eps, x, w, y, rstd);
  return { y, rstd };
}

/** Gradients of <dy, y> with respect to x [N,D] and w [D] (summed over rows, deterministically). */
async function rmsNormBackward(spec: RmsNormSpec, rstd: Float32Array, dy: Float32Array): Promise<{ dx: Float32Array; dw: Float32Array }> {
  const { N, D, x, w } = checkRmsNorm(spec);
  checkArray('rstd', rstd, N, '[N]');
  checkArray('dy', dy, N * D, '[N,D]');
  const dx = output(N * D);
  const dw = output(D);
  await addon().rmsNormBackward(N, D, x, w, rstd, dy, dx, dw);
  return { dx, dw };
}

/** g = logsigmoid(z) · invTau elementwise (log gates ≤ 0 from pre-activations). */
async function logSigmoidScaled(z: Float32Array, invTau: number): Promise<Float32Array> {
  checkF32('z', z);
  checkFinite('invTau', invTau);
  const g = output(z.length);
  await addon().logSigmoidScaled(z.length, z, invTau, g);
  return g;
}

/** dz = dg · invTau · sigmoid(−z): the backward of logSigmoidScaled. */
async function logSigmoidScaledBackward(z: Float32Array, dg: Float32Array, invTau: number): Promise<Float32Array> {
  checkF32('z', z);
  checkArray('dg', dg, z.length, 'same length as z');
  checkFinite('invTau', invTau);
  const dz = output(z.length);
  await addon().logSigmoidScaledBackward(z.length, z, dg, invTau, dz);
  return dz;
}

/** y = sigmoid(z) elementwise. */
async function sigmoid(z: Float32Array): Promise<Float32Array> {
  checkF32('z', z);
  const y = output(z.length);
  await addon().sigmoidForward(z.length, z, y);
  return y;
}

/** dz = dy · y (1 − y), given y = sigmoid(z). */
async function sigmoidBackward(y: Float32Array, dy: Float32Array): Promise<Float32Array> {
  checkF32('y', y);
  checkArray('dy', dy, y.length, 'same length as y');
  const dz = output(y.length);
  await addon().sigmoidBackward(y.length, y, dy, dz);
  return dz;
}

/** Row-wise L2 normalisation of x [rows, d]: y = x / sqrt(Σx² + eps); inv [rows] for the backward. */
async function l2NormalizeRows(x: Float32Array, rows: number, d: number, eps = 1e-6): Promise<{ y: Float32Array; inv: Float32Array }> {
  checkInt('rows', rows, 0);
  checkInt('d', d, 1);
  checkArray('x', x, rows * d, '[rows,d]');
  if (checkFinite('eps', eps) < 0) fail(`eps must be >= 0, got ${eps}`);
  const y = output(rows * d);
  const inv = output(rows);
  await addon().l2NormalizeRows(rows, d, x, eps, y, inv);
  return { y, inv };
}

/** dx = inv · (dy − y (y·dy)) per row: the backward of l2NormalizeRows. */
async function l2NormalizeRowsBackward(
  y: Float32Array,
  inv: Float32Array,
  dy: Float32Array,
  rows: number,
  d: number,
): Promise<Float32Array> {
  checkL2RowsBackward(y, inv, dy, rows, d);
  const dx = output(rows * d);
  await addon().l2NormalizeRowsBackward(rows, d, y, inv, dy, dx);
  return dx;
}

/** y = silu(a) ⊙ b elementwise (silu(z) = z·sigmoid(z)); a and b of the same length. */
async function swiglu(a: Float32Array, b: Float32Array): Promise<Float32Array> {
  if (!(a instanceof Float32Array)) fail(`a must be a Float32Array, got ${describe(a)}`);
  checkArray('b', b, a.length, 'same length as a');
  const y = output(a.length);
  await addon().swigluForward(a.length, a, b, y);
  return y;
}

/** Gradients of <dy, swiglu(a, b)> with respect to a and b. */
async function swigluBackward(a: Float32Array, b: Float32Array, dy: Float32Array): Promise<{ da: Float32Array; db: Float32Array }> {
  if (!(a instanceof Float32Array)) fail(`a must be a Float32Array, got ${describe(a)}`);
  checkArray('b', b, a.length, 'same length as a');
  checkArray('dy', dy, a.length, 'same length as a');
  const da = output(a.length);
  const db = output(a.length);
  await addon().swigluBackward(a.length, a, b, dy, da, db);
  return { da, db };
}

/** A short causal depthwise convolution over B sequences of T rows of C channels (kernel K). */
export interface ShortConvSpec {
  /** Sequences. Default 1. */
  B?: number;
  /** Rows per sequence. */
  T: number;
  /** Channels. */
  C: number;
  /** Kernel size (1..64). */
  K: number;
  /** Input [B,T,C]. */
  x: Float32Array;
  /** Weights [K,C]: w[j,c] multiplies x[t−j,c]. */
  w: Float32Array;
  /** Rows −(K−1)..−1 of each sequence [B,K−1,C] (oldest first); zeros when absent. */
  halo?: Float32Array;
  /** Apply SiLU to the convolution. Default false. */
  silu?: boolean;
}

/** y[b,t,c] = act(Σ_j w[j,c] · x[b,t−j,c]), act = SiLU or identity; rows before t = 0 from `halo` or zero. */
async function shortConv(spec: ShortConvSpec): Promise<Float32Array> {
  const { B, T, C, K, x, w, halo, silu } = checkShortConv(spec);
  const y = output(B * T * C);
  await addon().shortConvForward(B, T, C, K, silu, x, halo, w, y);
  return y;
}

/** Gradients of <dy, shortConv(spec)>: dx [B,T,C], dw [K,C], and dhalo [B,K−1,C] when the spec has a halo. */
async function shortConvBackward(
  spec: ShortConvSpec,
  dy: Float32Array,
): Promise<{ dx: Float32Array; dw: Float32Array; dhalo?: Float32Array }> {
  const { B, T, C, K, x, w, halo, silu } = checkShortConv(spec);
  checkArray('dy', dy, B * T * C, '[B,T,C]');
  const dx = output(B * T * C);
  const dw = output(K * C);
  const dhalo = halo ? output(B * (K - 1) * C) : null;
  await addon().shortConvBackward(B, T, C, K, silu, x, halo, w, dy, dx, dw, dhalo);
  return dhalo ? { dx, dw, dhalo } : { dx, dw };
}

/** y [N,D] = rows ids of table [V,D]. */
async function embedding(spec: EmbeddingSpec & { table: Float32Array }): Promise<Float32Array> {
  const { N, V, D, ids } = checkEmbedding(spec);
  const table = checkArray('table', spec.table, V * D, '[V,D]');
  const y = output(N * D);
  await addon().embeddingForward(N, V, D, table, ids, y);
  return y;
}

/** dTable [V,D] = Σ_n onehot(ids[n]) dy[n,:], summed in token order (deterministic). */
async function embeddingBackward(spec: EmbeddingSpec, dy: Float32Array): Promise<Float32Array> {
  const { N, V, D, ids } = checkEmbedding(spec);
  checkArray('dy', dy, N * D, '[N,D]');
  const dTable = output(V * D);
  await addon().embeddingBackward(N, V, D, ids, dy, dTable);
  return dTable;
}

/** Softmax cross-entropy: summed loss, counted rows, and dlogits (stable log-sum-exp). */
async function crossEntropy(spec: CrossEntropySpec): Promise<CrossEntropyResult> {
  if (spec === null || typeof spec !== 'object') fail(`spec must be an object, got ${describe(spec)}`);
  const N = checkInt('N', spec.N, 1);
  const V = checkInt('V', spec.V, 1);
  const scale = checkNumber('scale', spec.scale ?? 1, -Number.MAX_VALUE, Number.MAX_VALUE);
  const logits = checkArray('logits', spec.logits, N * V, '[N,V]');
  const targets = checkIds('targets', spec.targets, N, -1, V, '[N]');
  const dlogits = output(N * V);
  const { loss, count } = await addon().crossEntropy(N, V, scale, logits, targets, dlogits);
  return { loss, count, dlogits };
}

/** One AdamW step, in place on params, m and v (decoupled weight decay, bias-corrected moments). */
async function adamW(state: AdamWState, hyper: AdamWHyper): Promise<void> {
  const { n, grads, m, v, lr, beta1, beta2, eps, weightDecay, step } = checkAdamW(state, hyper);
  await addon().adamwStep(n, state.params, grads, m, v, lr, beta1, beta2, eps, weightDecay, step);
}

/** Σ over the arrays of Σ x² (double accumulation, fixed order: the same bits every run). */
async function sumSquares(arrays: readonly Float32Array[]): Promise<number> {
  return addon().sumSquares(checkArrays(arrays));
}

/** The global L2 norm of several gradient arrays: sqrt(sumSquares(arrays)). */
async function gradNorm(arrays: readonly Float32Array[]): Promise<number> {
  return Math.sqrt(await sumSquares(arrays));
}

/** x *= s in place (e.g. gradient clipping). */
async function scaleInPlace(x: Float32Array, s: number): Promise<void> {
  if (!(x instanceof Float32Array)) fail(`x must be a Float32Array, got ${describe(x)}`);
  await addon().scaleInPlace(x.length, x, checkNumber('s', s, -Number.MAX_VALUE, Number.MAX_VALUE));
}

export const ops = {
  shortConv,
  shortConvBackward,
  rmsNorm,
  rmsNormBackward,
  logSigmoidScaled,
  logSigmoidScaledBackward,
  sigmoid,
  sigmoidBackward,
  l2NormalizeRows,
  l2NormalizeRowsBackward,
  swiglu,
  swigluBackward,
  embedding,
  embeddingBackward,
  crossEntropy,
  adamW,
  sumSquares,
  gradNorm,
  scaleInPlace,
};
