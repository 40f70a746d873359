// The CUDA kernel set: the model's ops and attention kernels on the GPU (native/cuda-ops.ts,
// native/cuda-attention.ts), float32, with host-resident tensors — each op copies its inputs to
// the device and its outputs back (docs/cuda.md, "Training on a GPU"). With precision 'bf16' the
// attention layers that have a bf16 kernel run it (native/cuda-bf16-attention.ts). Work on d×d summaries
// (the sequence-parallel folds) and element-wise accumulation of host arrays stay on the CPU:
// for host arrays the copies would cost more than the arithmetic.
import { cudaStatus } from './cuda.js';
import { cudaKernels } from './cuda-attention.js';
import { cudaOps } from './cuda-ops.js';
import { bf16Attention } from './cuda-bf16-attention.js';
import { cpuKernels, type KernelSet, type Precision } from './kernel-set.js';

export interface CudaKernelSetOptions {
  /** 'bf16': the attention layers that have a bf16 kernel run it (the rest float32). Default 'fp32'. */
  precision?: Precision;
}

/** The CUDA set, or an error naming why CUDA cannot run here. */
export function cudaKernelSet(opts: CudaKernelSetOptions = {}): KernelSet {
  const status = cudaStatus();
  if (!status.available) throw new Error(`lasp cuda: unavailable: ${status.reason}`);
  const precision = opts.precision ?? 'fp32';
  const attention = precision === 'bf16' ? bf16Attention(cudaKernels) : cudaKernels;
  return {
    ...cpuKernels,
    device: 'cuda',
    precision,
    forward: attention.forward,
    backward: attention.backward,
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
