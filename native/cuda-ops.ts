// The model's non-attention ops on the GPU (native/cuda/model_ops.h, docs/cuda.md): the same
// functions, argument and result types and argument checks as the CPU `ops.*`, `kernels.gemm` and
// `kernels.addInto`, with results equal to theirs up to float32 rounding. A host-staged first
// step: every call copies its inputs to the device and its outputs back (through the lasp_cuda
// addon that scripts/build-cuda.sh builds); in-place ops (addInto, scaleInPlace, adamW, gemm with C)
// write the results back into the caller's arrays. Where the addon or a device is missing, every
// call rejects with `lasp cuda: unavailable: <reason>` (after the argument checks).
import { cudaAddonPart } from './cuda.js';
import { checkArray, checkGemm, checkInt, describe, fail, type GemmArgs } from './kernels.js';
import type { AdamWHyper, AdamWState, CrossEntropyResult, CrossEntropySpec, EmbeddingSpec, RmsNormSpec, ShortConvSpec } from './ops.js';
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

type F32 = Float32Array;

/** The lasp_cuda addon's model-op exports (native/cuda/addon_model_ops.cc). */
interface CudaOpsAddon {
  ops_gemm(
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    alpha: number,
    A: F32,
    B: F32,
    beta: number,
    C: F32 | null,
  ): Promise<{ C: F32 }>;
  ops_addInto(dst: F32, src: F32): Promise<{ dst: F32 }>;
  ops_scaleInPlace(x: F32, s: number): Promise<{ x: F32 }>;
  ops_rmsNorm(N: number, D: number, eps: number, x: F32, w: F32): Promise<{ y: F32; rstd: F32 }>;
  ops_rmsNormBackward(N: number, D: number, x: F32, w: F32, rstd: F32, dy: F32): Promise<{ dx: F32; dw: F32 }>;
  ops_swiglu(a: F32, b: F32): Promise<{ y: F32 }>;
  ops_swigluBackward(a: F32, b: F32, dy: F32): Promise<{ da: F32; db: F32 }>;
  ops_embedding(V: number, D: number, table: F32, ids: Int32Array): Promise<{ y: F32 }>;
  ops_embeddingBackward(V: number, D: number, ids: Int32Array, dy: F32): Promise<{ dTable: F32 }>;
  ops_crossEntropy(N: number, V: number, scale: number, logits: F32, targets: Int32Array): Promise<CrossEntropyResult>;
  ops_logSigmoidScaled(z: F32, invTau: number): Promise<{ g: F32 }>;
  ops_logSigmoidScaledBackward(z: F32, dg: F32, invTau: number): Promise<{ dz: F32 }>;
  ops_sigmoid(z: F32): Promise<{ y: F32 }>;
  ops_sigmoidBackward(y: F32, dy: F32): Promise<{ dz: F32 }>;
  ops_l2NormalizeRows(rows: number, d: number, x: F32, eps: number): Promise<{ y: F32; inv: F32 }>;
  ops_l2NormalizeRowsBackward(rows: number, d: number, y: F32, inv: F32, dy: F32): Promise<{ dx: F32 }>;
  ops_shortConv(B: number, T: number, C: number, K: number, silu: boolean, x: F32, halo: F32 | null, w: F32): Promise<{ y: F32 }>;
  ops_shortConvBackward(
    B: number,
    T: number,
    C: number,
    K: number,
    silu: boolean,
    x: F32,
    halo: F32 | null,
    w: F32,
    dy: F32,
  ): Promise<{ dx: F32; dw: F32; dhalo?: F32 }>;
  ops_adamW(
    params: F32,
    grads: F32,
    m: F32,
    v: F32,
    lr: number,
    beta1: number,
    beta2: number,
    eps: number,
    weightDecay: number,
    step: number,
  ): Promise<{ params: F32; m: F32; v: F32 }>;
  ops_sumSquares(arrays: F32[]): Promise<{ value: number }>;
  ops_gradNorm(arrays: F32[]): Promise<{ value: number }>;
}

/** The addon's model ops (loaded on first use), or a throw naming why they cannot run. */
function addon(): CudaOpsAddon {
  return cudaAddonPart<CudaOpsAddon>('ops_gemm', 'model ops');
}

// ---- the ops -------------------------------------------------------------------------------

/** C = alpha·op(A)·op(B) + beta·C, dense row-major (as kernels.gemm). Resolves with C (the caller's C when given). */
async function gemm(args: GemmArgs): Promise<Float32Array> {
  const { M, N, K, ta, tb, alpha, beta, A, B } = checkGemm(args);
  const C = args.C === undefined ? null : checkArray('C', args.C, M * N, '[M,N]');
  // (args.multiThreaded is a CPU setting: ignored.)
  const r = await addon().ops_gemm(ta, tb, M, N, K, alpha, A, B, beta, C);
  if (!C) return r.C;
  C.set(r.C);
  return C;
}

/** dst += src elementwise, in place. */
async function addInto(dst: Float32Array, src: Float32Array): Promise<void> {
  if (!(dst instanceof Float32Array)) fail(`dst must be a Float32Array, got ${describe(dst)}`);
  checkArray('src', src, dst.length, 'same length as dst');
  const r = await addon().ops_addInto(dst, src);
  dst.set(r.dst);
}

/** y = x / sqrt(mean(x²) + eps) ⊙ w per row; rstd [N]. */
async function rmsNorm(spec: RmsNormSpec): Promise<{ y: Float32Array; rstd: Float32Array }> {
  const { N, D, eps, x, w } = checkRmsNorm(spec);
  return addon().ops_rmsNorm(N, D, eps, x, w);
}

/** Gradients of <dy, y> with respect to x [N,D] and w [D]. */
async function rmsNormBackward(spec: RmsNormSpec, rstd: Float32Array, dy: Float32Array): Promise<{ dx: Float32Array; dw: Float32Array }> {
  const { N, D, x, w } = checkRmsNorm(spec);
  checkArray('rstd', rstd, N, '[N]');
  checkArray('dy', dy, N * D, '[N,D]');
  return addon().ops_rmsNormBackward(N, D, x, w, rstd, dy);
}

/** y = silu(a) ⊙ b elementwise. */
async function swiglu(a: Float32Array, b: Float32Array): Promise<Float32Array> {
  if (!(a instanceof Float32Array)) fail(`a must be a Float32Array, got ${describe(a)}`);
  checkArray('b', b, a.length, 'same length as a');
  return (await addon().ops_swiglu(a, b)).y;
}

/** Gradients of <dy, swiglu(a, b)> with respect to a and b. */
async function swigluBackward(a: Float32Array, b: Float32Array, dy: Float32Array): Promise<{ da: Float32Array; db: Float32Array }> {
  if (!(a instanceof Float32Array)) fail(`a must be a Float32Array, got ${describe(a)}`);
  checkArray('b', b, a.length, 'same length as a');
  checkArray('dy', dy, a.length, 'same length as a');
  return addon().ops_swigluBackward(a, b, dy);
}

/** y [N,D] = rows ids of table [V,D]. */
async function embedding(spec: EmbeddingSpec & { table: Float32Array }): Promise<Float32Array> {
  const { V, D, ids } = checkEmbedding(spec);
  const table = checkArray('table', spec.table, V * D, '[V,D]');
  return (await addon().ops_embedding(V, D, table, ids)).y;
}

/** dTable [V,D] = Σ_n onehot(ids[n]) dy[n,:] (atomic adds on the device: a shared row may differ in its last bits between runs). */
async function embeddingBackward(spec: EmbeddingSpec, dy: Float32Array): Promise<Float32Array> {
  const { N, V, D, ids } = checkEmbedding(spec);
  checkArray('dy', dy, N * D, '[N,D]');
  return (await addon().ops_embeddingBackward(V, D, ids, dy)).dTable;
}

/** Softmax cross-entropy: summed loss (double), counted rows, and dlogits. */
async function crossEntropy(spec: CrossEntropySpec): Promise<CrossEntropyResult> {
  if (spec === null || typeof spec !== 'object') fail(`spec must be an object, got ${describe(spec)}`);
  const N = checkInt('N', spec.N, 1);
  const V = checkInt('V', spec.V, 1);
  const scale = checkNumber('scale', spec.scale ?? 1, -Number.MAX_VALUE, Number.MAX_VALUE);
  const logits = checkArray('logits', spec.logits, N * V, '[N,V]');
  const targets = checkIds('targets', spec.targets, N, -1, V, '[N]');
  const { loss, count, dlogits } = await addon().ops_crossEntropy(N, V, scale, logits, targets);
  return { loss, count, dlogits };
}

/** g = logsigmoid(z) · invTau elementwise. */
async function logSigmoidScaled(z: Float32Array, invTau: number): Promise<Float32Array> {
  checkF32('z', z);
  checkFinite('invTau', invTau);
  return (await addon().ops_logSigmoidScaled(z, invTau)).g;
}

/** dz = dg · invTau · sigmoid(−z). */
async function logSigmoidScaledBackward(z: Float32Array, dg: Float32Array, invTau: number): Promise<Float32Array> {
  checkF32('z', z);
  checkArray('dg', dg, z.length, 'same length as z');
  checkFinite('invTau', invTau);
  return (await addon().ops_logSigmoidScaledBackward(z, dg, invTau)).dz;
}

/** y = sigmoid(z) elementwise. */
async function sigmoid(z: Float32Array): Promise<Float32Array> {
  checkF32('z', z);
  return (await addon().ops_sigmoid(z)).y;
}

/** dz = dy · y (1 − y), given y = sigmoid(z). */
async function sigmoidBackward(y: Float32Array, dy: Float32Array): Promise<Float32Array> {
  checkF32('y', y);
  checkArray('dy', dy, y.length, 'same length as y');
  return (await addon().ops_sigmoidBackward(y, dy)).dz;
}

/** Row-wise L2 normalisation of x [rows, d]: y = x / sqrt(Σx² + eps); inv [rows]. */
async function l2NormalizeRows(x: Float32Array, rows: number, d: number, eps = 1e-6): Promise<{ y: Float32Array; inv: Float32Array }> {
  checkInt('rows', rows, 0);
  checkInt('d', d, 1);
  checkArray('x', x, rows * d, '[rows,d]');
  if (checkFinite('eps', eps) < 0) fail(`eps must be >= 0, got ${eps}`);
  return addon().ops_l2NormalizeRows(rows, d, x, eps);
}

/** dx = inv · (dy − y (y·dy)) per row. */
async function l2NormalizeRowsBackward(
  y: Float32Array,
  inv: Float32Array,
  dy: Float32Array,
  rows: number,
  d: number,
): Promise<Float32Array> {
  checkL2RowsBackward(y, inv, dy, rows, d);
  return (await addon().ops_l2NormalizeRowsBackward(rows, d, y, inv, dy)).dx;
}

/** y[b,t,c] = act(Σ_j w[j,c] · x[b,t−j,c]), act = SiLU or identity; rows before t = 0 from `halo` or zero. */
async function shortConv(spec: ShortConvSpec): Promise<Float32Array> {
  const { B, T, C, K, x, w, halo, silu } = checkShortConv(spec);
  return (await addon().ops_shortConv(B, T, C, K, silu, x, halo, w)).y;
}

/** Gradients of <dy, shortConv(spec)>: dx [B,T,C], dw [K,C], and dhalo [B,K−1,C] when the spec has a halo. */
async function shortConvBackward(
  spec: ShortConvSpec,
  dy: Float32Array,
): Promise<{ dx: Float32Array; dw: Float32Array; dhalo?: Float32Array }> {
  const { B, T, C, K, x, w, halo, silu } = checkShortConv(spec);
  checkArray('dy', dy, B * T * C, '[B,T,C]');
  const r = await addon().ops_shortConvBackward(B, T, C, K, silu, x, halo, w, dy);
  return halo && r.dhalo ? { dx: r.dx, dw: r.dw, dhalo: r.dhalo } : { dx: r.dx, dw: r.dw };
}

/** One AdamW step, in place on params, m and v (decoupled weight decay, bias-corrected moments). */
async function adamW(state: AdamWState, hyper: AdamWHyper): Promise<void> {
  const { grads, m, v, lr, beta1, beta2, eps, weightDecay, step } = checkAdamW(state, hyper);
  const r = await addon().ops_adamW(state.params, grads, m, v, lr, beta1, beta2, eps, weightDecay, step);
  state.params.set(r.params);
  m.set(r.m);
  v.set(r.v);
}

/** Σ over the arrays of Σ x² (double accumulation, fixed order). */
async function sumSquares(arrays: readonly Float32Array[]): Promise<number> {
  const list = checkArrays(arrays);
  return (await addon().ops_sumSquares(list)).value;
}

/** The global L2 norm of several gradient arrays: sqrt(sumSquares(arrays)). */
async function gradNorm(arrays: readonly Float32Array[]): Promise<number> {
  const list = checkArrays(arrays);
  return (await addon().ops_gradNorm(list)).value;
}

/** x *= s in place. */
async function scaleInPlace(x: Float32Array, s: number): Promise<void> {
  if (!(x instanceof Float32Array)) fail(`x must be a Float32Array, got ${describe(x)}`);
  const r = await addon().ops_scaleInPlace(x, checkNumber('s', s, -Number.MAX_VALUE, Number.MAX_VALUE));
  x.set(r.x);
}

export const cudaOps = {
  gemm,
  addInto,
  rmsNorm,
  rmsNormBackward,
  swiglu,
  swigluBackward,
  embedding,
  embeddingBackward,
  crossEntropy,
  logSigmoidScaled,
  logSigmoidScaledBackward,
  sigmoid,
  sigmoidBackward,
  l2NormalizeRows,
  l2NormalizeRowsBackward,
  shortConv,
  shortConvBackward,
  scaleInPlace,
  sumSquares,
  gradNorm,
  adamW,
};
