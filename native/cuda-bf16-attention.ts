// The attention of the CUDA kernel set's `bf16` precision (docs/cuda.md, "bf16 in the model path"):
// causal linear, scalar_gate and delta layers with head dims 64 or 128 (delta: dk = dv) run on the
// fast chunked kernels (native/cuda/linear_attention.cu: bf16 q, k, v, o and gradients, float32
// accumulation, gates, beta and state chain); every other layer runs the float32 general kernels,
// so a bf16 worker trains any model. Arguments are checked as the CPU kernels check them, before
// anything reaches the device. The fast backward recomputes its forward (its own checkpoints), so
// the forward keeps no `saved`.
import { cudaBackward, cudaForward, type CudaKind, type CudaSpec } from './cuda.js';
import {
  checkBackwardArgs,
  checkSaveOption,
  checkSpec,
  type SavedForward,
  type AttentionSpec,
  type BackwardResult,
  type ForwardOptions,
  type ForwardResult,
} from './kernels.js';
import type { KernelSet } from './kernel-set.js';

/** Head dims the bf16 kernels are built for. */
export const BF16_HEAD_DIMS: readonly number[] = [64, 128];
const BF16_KINDS: readonly string[] = ['linear', 'scalar_gate', 'delta'];

/** Why `spec` runs on the float32 kernels under `bf16` precision, or undefined when it runs in bf16. */
export function bf16Unsupported(spec: Pick<AttentionSpec, 'kind' | 'dk' | 'dv' | 'causal'>): string | undefined {
  if (!BF16_KINDS.includes(spec.kind)) return `kind ${spec.kind} has no bf16 kernel (bf16: ${BF16_KINDS.join(', ')})`;
  if (spec.causal === false) return 'non-causal attention has no bf16 kernel';
  if (!BF16_HEAD_DIMS.includes(spec.dk) || !BF16_HEAD_DIMS.includes(spec.dv))
    return `head dims dk=${spec.dk}, dv=${spec.dv}: the bf16 kernels take ${BF16_HEAD_DIMS.join(' or ')}`;
  if (spec.kind === 'delta' && spec.dk !== spec.dv) return `delta in bf16 needs dk = dv, got ${spec.dk}, ${spec.dv}`;
  return undefined;
}

type Attention = Pick<KernelSet, 'forward' | 'backward'>;

/** forward/backward that take the bf16 kernels where bf16Unsupported allows and `general`'s elsewhere. */
export function bf16Attention(general: Attention): Attention {
  // The checked spec and its bf16 call, or no call where the float32 kernels run it.
  const fastSpec = (spec: AttentionSpec): { c: ReturnType<typeof checkSpec>; s?: CudaSpec } => {
    const c = checkSpec(spec);
    if (bf16Unsupported(c) !== undefined) return { c };
    const s: CudaSpec = { kind: c.kind as CudaKind, precision: 'bf16', B: 1, T: c.T, H: c.H, dk: c.dk, dv: c.dv, q: c.q, k: c.k, v: c.v };
    if (c.g) s.g = c.g;
    if (c.beta) s.beta = c.beta;
    if (c.s0) s.initialState = c.s0;
    return { c, s };
  };
  return {
    async forward(spec: AttentionSpec, opts?: ForwardOptions): Promise<ForwardResult> {
      const { c, s } = fastSpec(spec);
      if (s === undefined) return general.forward(spec, opts);
      checkSaveOption(c, opts);
      const r = await cudaForward(s);
      return { o: r.o, finalState: r.finalState };
    },
    async backward(spec: AttentionSpec, dO: Float32Array, dFinalState?: Float32Array, saved?: SavedForward): Promise<BackwardResult> {
      const { c, s } = fastSpec(spec);
      if (s === undefined) return general.backward(spec, dO, dFinalState, saved);
      checkBackwardArgs(c, dO, dFinalState, saved);
      const r = await cudaBackward(s, dO, dFinalState);
      const out: BackwardResult = { dq: r.dq, dk: r.dk, dv: r.dv };
      if (s.g) out.dg = r.dg!;
      if (s.beta) out.dbeta = r.dbeta!;
      if (s.initialState) out.dInitialState = r.dInitialState;
      return out;
    },
  };
}
