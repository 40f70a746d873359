// The CUDA kernel set: the model's ops and attention kernels on the GPU (native/cuda-ops.ts,
// native/cuda-attention.ts), float32, with host-resident tensors — each op copies its inputs to
// the device and its outputs back (docs/cuda.md, "Training on a GPU"). Work on d×d summaries
// (the sequence-parallel folds) and element-wise accumulation of host arrays stay on the CPU:
// for host arrays the copies would cost more than the arithmetic.
import { cudaStatus } from './cuda.js';
import { cudaKernels } from './cuda-attention.js';
import { cudaOps } from './cuda-ops.js';
import { cpuKernels, type KernelSet } from './kernel-set.js';

/** The CUDA set, or an error naming why CUDA cannot run here. */
export function cudaKernelSet(): KernelSet {
  const status = cudaStatus();
  if (!status.available) throw new Error(`lasp cuda: unavailable: ${status.reason}`);
  return {
    ...cpuKernels,
    device: 'cuda',
    forward: cudaKernels.forward,
    backward: cudaKernels.backward,
    summary: cudaKernels.summary,
    stateGrad: cudaKernels.stateGrad,
    addStateTerm: cudaKernels.addStateTerm,
    softmax: cudaKernels.softmax,
    gemm: cudaOps.gemm,
    rmsNorm: cudaOps.rmsNorm,
    rmsNormBackward: cudaOps.rmsNormBackward,
    swiglu: cudaOps.swiglu,
    swigluBackward: cudaOps.swigluBackward,
    embedding: cudaOps.embedding,
    embeddingBackward: cudaOps.embeddingBackward,
    crossEntropy: cudaOps.crossEntropy,
    logSigmoidScaled: cudaOps.logSigmoidScaled,
    logSigmoidScaledBackward: cudaOps.logSigmoidScaledBackward,
    sigmoid: cudaOps.sigmoid,
    sigmoidBackward: cudaOps.sigmoidBackward,
    l2NormalizeRows: cudaOps.l2NormalizeRows,
    l2NormalizeRowsBackward: cudaOps.l2NormalizeRowsBackward,
    shortConv: cudaOps.shortConv,
    shortConvBackward: cudaOps.shortConvBackward,
  };
}
