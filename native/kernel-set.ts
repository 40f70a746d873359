// The kernels a model replica runs, as one set per device: the model backend (model/backend.ts)
// and the sequence-parallel layers (worker/sp/) call these instead of the CPU modules directly,
// so a worker started with `--device cuda:N` runs the same code on the CUDA kernels
// (native/cuda-kernel-set.ts). Every member has the CPU function's signature and results.
import { kernels } from './kernels.js';
import { ops } from './ops.js';

/**
 * Arithmetic of the attention kernels: float32 throughout, or (CUDA only) bf16 inputs, outputs and
 * gradients with float32 accumulation and state chains where a bf16 kernel exists
 * (native/cuda-bf16-attention.ts).
 */
export type Precision = 'fp32' | 'bf16';
export const PRECISIONS: readonly Precision[] = ['fp32', 'bf16'];

export interface KernelSet {
  /** "cpu", or "cuda" for the CUDA set. */
  readonly device: string;
  readonly precision: Precision;
  // Attention (DESIGN.md §2) and its sequence-parallel pieces (§3).
  readonly forward: typeof kernels.forward;
  readonly backward: typeof kernels.backward;
  readonly summary: typeof kernels.summary;
  readonly stateGrad: typeof kernels.stateGrad;
  readonly addStateTerm: typeof kernels.addStateTerm;
  /** d×d-sized work on gathered summaries: the CUDA set keeps the CPU's. */
  readonly foldStates: typeof kernels.foldStates;
  readonly suffixFold: typeof kernels.suffixFold;
  readonly softmax: { readonly forward: typeof kernels.softmax.forward; readonly backward: typeof kernels.softmax.backward };
  // The other layers.
  readonly gemm: typeof kernels.gemm;
  readonly addInto: typeof kernels.addInto;
  readonly rmsNorm: typeof ops.rmsNorm;
  readonly rmsNormBackward: typeof ops.rmsNormBackward;
  readonly swiglu: typeof ops.swiglu;
  readonly swigluBackward: typeof ops.swigluBackward;
  readonly embedding: typeof ops.embedding;
  readonly embeddingBackward: typeof ops.embeddingBackward;
  readonly crossEntropy: typeof ops.crossEntropy;
  readonly logSigmoidScaled: typeof ops.logSigmoidScaled;
  readonly logSigmoidScaledBackward: typeof ops.logSigmoidScaledBackward;
  readonly sigmoid: typeof ops.sigmoid;
  readonly sigmoidBackward: typeof ops.sigmoidBackward;
  readonly l2NormalizeRows: typeof ops.l2NormalizeRows;
  readonly l2NormalizeRowsBackward: typeof ops.l2NormalizeRowsBackward;
  readonly shortConv: typeof ops.shortConv;
  readonly shortConvBackward: typeof ops.shortConvBackward;
}

/** The native CPU kernels (native/src/, multi-threaded). */
export const cpuKernels: KernelSet = {
  device: 'cpu',
  precision: 'fp32',
  forward: kernels.forward,
  backward: kernels.backward,
  summary: kernels.summary,
  stateGrad: kernels.stateGrad,
  addStateTerm: kernels.addStateTerm,
  foldStates: kernels.foldStates,
  suffixFold: kernels.suffixFold,
  softmax: kernels.softmax,
  gemm: kernels.gemm,
  addInto: kernels.addInto,
  rmsNorm: ops.rmsNorm,
  rmsNormBackward: ops.rmsNormBackward,
  swiglu: ops.swiglu,
  swigluBackward: ops.swigluBackward,
  embedding: ops.embedding,
  embeddingBackward: ops.embeddingBackward,
  crossEntropy: ops.crossEntropy,
  logSigmoidScaled: ops.logSigmoidScaled,
  logSigmoidScaledBackward: ops.logSigmoidScaledBackward,
  sigmoid: ops.sigmoid,
  sigmoidBackward: ops.sigmoidBackward,
  l2NormalizeRows: ops.l2NormalizeRows,
  l2NormalizeRowsBackward: ops.l2NormalizeRowsBackward,
  shortConv: ops.shortConv,
  shortConvBackward: ops.shortConvBackward,
};
