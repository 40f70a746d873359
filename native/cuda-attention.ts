// The general float32 CUDA attention kernels (native/cuda/general_attention.h,
// softmax_attention.cu) behind the same calls as the CPU kernels of kernels.ts: every linear-attention
// kind (causal, and non-causal linear), the sequence-parallel pieces, and causal / sliding-window
// softmax attention, for head dims up to 512. Arguments are validated exactly as kernels.ts does
// (its messages, "lasp kernels: ..."), then the addon build-cuda/lasp_cuda.node is loaded on first
// use; where CUDA is unavailable every call rejects with "lasp cuda: unavailable: <reason>".
//
// Each call copies its host inputs to the device and its outputs back (fresh Float32Arrays, not
// pooled). forward() ignores opts.saveForBackward (it validates it) and returns no `saved`;
// backward() accepts a `saved` and ignores it: it reruns the forward on the device to keep its own
// state checkpoints (one per 64 tokens), then walks the tokens in reverse.
import { cudaAddonPart } from './cuda.js';
import {
  checkArray,
  checkBackwardArgs,
  checkSaveOption,
  checkSpec,
  checkSoftmax as checkCpuSoftmax,
  checkSoftmaxBackward,
  fail,
  summaryALength,
  type SavedForward,
  type AttentionSpec,
  type BackwardResult,
  type BlockSummary,
  type ForwardOptions,
  type ForwardResult,
  type SoftmaxSpec,
} from './kernels.js';

type F32 = Float32Array;
type F32OrNull = Float32Array | null;

/** Largest dk (and dv for non-causal linear and softmax) the CUDA kernels take. */
export const CUDA_MAX_HEAD_DIM = 512;

interface GeneralAttentionAddon {
  ga_forward(
    kind: number,
    causal: boolean,
    T: number,
    H: number,
    dk: number,
    dv: number,
    q: F32,
    k: F32,
    v: F32,
    g: F32OrNull,
    beta: F32OrNull,
    s0: F32OrNull,
  ): Promise<{ o: F32; finalState: F32 }>;
  ga_backward(
    kind: number,
    causal: boolean,
    T: number,
    H: number,
    dk: number,
    dv: number,
    q: F32,
    k: F32,
    v: F32,
    g: F32OrNull,
    beta: F32OrNull,
    s0: F32OrNull,
    dO: F32,
    dFinalState: F32OrNull,
  ): Promise<{ dq: F32; dk: F32; dv: F32; dg?: F32; dbeta?: F32; dInitialState: F32 }>;
  ga_summary(
    kind: number,
    causal: boolean,
    T: number,
    H: number,
    dk: number,
    dv: number,
    q: F32,
    k: F32,
    v: F32,
    g: F32OrNull,
    beta: F32OrNull,
  ): Promise<{ a: F32; u: F32 }>;
  ga_stateGrad(
    kind: number,
    causal: boolean,
    T: number,
    H: number,
    dk: number,
    dv: number,
    q: F32,
    k: F32,
    v: F32,
    g: F32OrNull,
    beta: F32OrNull,
    dO: F32,
  ): Promise<F32>;
  ga_addStateTerm(
    kind: number,
    T: number,
    H: number,
    dk: number,
    dv: number,
    q: F32,
    k: F32,
    v: F32,
    g: F32OrNull,
    beta: F32OrNull,
    state: F32,
    o: F32,
  ): Promise<F32>;
  ga_softmaxForward(
    Tq: number,
    Tk: number,
    H: number,
    dk: number,
    dv: number,
    qOffset: number,
    causal: boolean,
    window: number,
    scale: number,
    q: F32,
    k: F32,
    v: F32,
  ): Promise<{ o: F32; lse: F32 }>;
  ga_softmaxBackward(
    Tq: number,
    Tk: number,
    H: number,
    dk: number,
    dv: number,
    qOffset: number,
    causal: boolean,
    window: number,
    scale: number,
    q: F32,
    k: F32,
    v: F32,
    o: F32,
    lse: F32,
    dO: F32,
  ): Promise<{ dq: F32; dk: F32; dv: F32 }>;
}

/** The addon's general attention kernels (loaded on first use); throws `lasp cuda: unavailable: <reason>` where they cannot run. */
function addon(): GeneralAttentionAddon {
  return cudaAddonPart<GeneralAttentionAddon>('ga_forward', 'general attention kernels');
}

function cudaFail(message: string): never {
  throw new Error(`lasp cuda: ${message}`);
}

type Checked = ReturnType<typeof checkSpec>;

/** checkSpec plus the CUDA kernels' own limit on head dims. */
function check(spec: AttentionSpec): Checked {
  const c = checkSpec(spec);
  if (c.dk > CUDA_MAX_HEAD_DIM) cudaFail(`dk must be <= ${CUDA_MAX_HEAD_DIM} for the CUDA kernels, got ${c.dk}`);
  if (!c.causal && c.dv > CUDA_MAX_HEAD_DIM) {
    cudaFail(`dv must be <= ${CUDA_MAX_HEAD_DIM} for non-causal (causal: false) attention on CUDA, got ${c.dv}`);
  }
  return c;
}

async function forward(spec: AttentionSpec, opts?: ForwardOptions): Promise<ForwardResult> {
  const c = check(spec);
  checkSaveOption(c, opts);
  const r = await addon().ga_forward(c.code, c.causal, c.T, c.H, c.dk, c.dv, c.q, c.k, c.v, c.g, c.beta, c.s0);
  return { o: r.o, finalState: r.finalState };
}

/**
 * Gradients of L = <dO, o> + <dFinalState, finalState>. `saved` is accepted for compatibility with
 * kernels.backward and ignored (the device recomputes its own checkpoints).
 */
async function backward(spec: AttentionSpec, dO: Float32Array, dFinalState?: Float32Array, saved?: SavedForward): Promise<BackwardResult> {
  const c = check(spec);
  const dS = checkBackwardArgs(c, dO, dFinalState, saved);
  const r = await addon().ga_backward(c.code, c.causal, c.T, c.H, c.dk, c.dv, c.q, c.k, c.v, c.g, c.beta, c.s0, dO, dS);
  const out: BackwardResult = { dq: r.dq, dk: r.dk, dv: r.dv };
  if (c.g) out.dg = r.dg as F32;
  if (c.beta) out.dbeta = r.dbeta as F32;
  if (c.s0) out.dInitialState = r.dInitialState;
  return out;
}

/** Block summary (A, U): S_end = A·S_start + U (initialState ignored), as kernels.summary. */
async function summary(spec: AttentionSpec): Promise<BlockSummary> {
  const c = check(spec);
  const r = await addon().ga_summary(c.code, c.causal, c.T, c.H, c.dk, c.dv, c.q, c.k, c.v, c.g, c.beta);
  if (r.a.length !== summaryALength(c.kind, c.H, c.dk)) cudaFail(`summary: the addon returned ${r.a.length} floats of A`);
  return { a: r.a, u: r.u };
}

/** D = ∂L/∂S_start of a block's own outputs, [H,dk,dv], as kernels.stateGrad. */
async function stateGrad(spec: AttentionSpec, dO: Float32Array): Promise<Float32Array> {
  const c = check(spec);
  checkArray('dO', dO, c.T * c.H * c.dv, '[T,H,dv]');
  return addon().ga_stateGrad(c.code, c.causal, c.T, c.H, c.dk, c.dv, c.q, c.k, c.v, c.g, c.beta, dO);
}

/** o_t += (e^{G_t} ⊙ q_t)^T P in place, as kernels.addStateTerm (causal linear, scalar_gate, vector_gate). */
async function addStateTerm(spec: AttentionSpec, state: Float32Array, o: Float32Array): Promise<void> {
  const c = check(spec);
  if (!c.causal || c.kind === 'delta' || c.kind === 'gated_delta') {
    fail(`addStateTerm needs causal linear, scalar_gate or vector_gate, got kind ${c.kind}${c.causal ? '' : ' (non-causal)'}`);
  }
  checkArray('state', state, c.H * c.dk * c.dv, '[H,dk,dv]');
  checkArray('o', o, c.T * c.H * c.dv, '[T,H,dv]');
  const r = await addon().ga_addStateTerm(c.code, c.T, c.H, c.dk, c.dv, c.q, c.k, c.v, c.g, c.beta, state, o);
  o.set(r);
}

/** kernels.ts's softmax checks (same messages), plus the CUDA head-dim limit. */
function checkSoftmax(spec: SoftmaxSpec) {
  const c = checkCpuSoftmax(spec);
  if (c.dk > CUDA_MAX_HEAD_DIM || c.dv > CUDA_MAX_HEAD_DIM) {
    cudaFail(`softmax dk and dv must be <= ${CUDA_MAX_HEAD_DIM} for the CUDA kernels, got ${c.dk}, ${c.dv}`);
  }
  return c;
}

const softmax = {
  /** o [Tq,H,dv] and lse [H,Tq] (kept for the backward), as kernels.softmax.forward. */
  async forward(spec: SoftmaxSpec): Promise<{ o: Float32Array; lse: Float32Array }> {
    const s = checkSoftmax(spec);
    return addon().ga_softmaxForward(s.Tq, s.Tk, s.H, s.dk, s.dv, s.qOffset, s.causal, s.window, s.scale, s.q, s.k, s.v);
  },
  /** dq, dk, dv from the forward's o and lse, as kernels.softmax.backward. */
  async backward(
    spec: SoftmaxSpec,
    fwd: { o: Float32Array; lse: Float32Array },
    dO: Float32Array,
  ): Promise<{ dq: Float32Array; dk: Float32Array; dv: Float32Array }> {
    const s = checkSoftmax(spec);
    checkSoftmaxBackward(s, fwd, dO);
    return addon().ga_softmaxBackward(
      s.Tq,
      s.Tk,
      s.H,
      s.dk,
      s.dv,
      s.qOffset,
      s.causal,
      s.window,
      s.scale,
      s.q,
      s.k,
      s.v,
      fwd.o,
      fwd.lse,
      dO,
    );
  },
};

/** The CUDA counterparts of kernels.forward/backward/summary/stateGrad/addStateTerm/softmax. */
export const cudaKernels = { forward, backward, summary, stateGrad, addStateTerm, softmax };
