// The operations the model layers are written against (docs/training-plan.md, "To build" 1).
// Tensors are plain row-major Float32Arrays with a shape; `cpuBackend` runs every op through the
// native addon (off the JavaScript thread); hostBackend(k) runs them on another kernel set
// (native/kernel-set.ts), e.g. the CUDA one.
import {
  KINDS,
  output,
  zeros,
  type AttentionSpec,
  type BackwardResult,
  type Kind,
  type SavedForward,
  type SoftmaxSpec,
} from '../native/kernels.js';
import { cpuKernels, type KernelSet } from '../native/kernel-set.js';
import type { ShortConvSpec } from '../native/ops.js';

/** Attention kinds of a model layer: the linear kinds, softmax and sliding-window softmax (swa). */
export const LAYER_KINDS = [...KINDS, 'softmax', 'swa'] as const;
export type LayerKind = Kind | 'softmax' | 'swa';

export function isSoftmaxKind(k: LayerKind): k is 'softmax' | 'swa' {
  return k === 'softmax' || k === 'swa';
}

/** Shape of a softmax attention layer (causal). */
export interface SoftmaxShape {
  H: number;
  dk: number;
  dv: number;
  /** Sliding window (keys per query, itself included); 0: full causal attention. */
  window: number;
  /** Default 1/sqrt(dk). */
  scale?: number;
}

/** One sequence's rows of a softmax layer: q, k [T,H,dk], v [T,H,dv]. */
export interface LocalQkv {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
}

/** What a forward softmax attention call keeps for its backward (opaque to the layers). */
export interface SoftmaxContext {
  readonly sequences: number;
}

export interface Tensor {
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** A tensor over `data` (zero-filled when absent); the length must match the shape. */
export function tensor(shape: readonly number[], data?: Float32Array): Tensor {
  const n = numel(shape);
  const d = data ?? zeros(n);
  if (d.length !== n) throw new Error(`lasp model: data of length ${d.length} does not fit shape [${shape.join(',')}]`);
  return { shape: [...shape], data: d };
}

/** The same data under another shape of the same size. */
export function reshape(t: Tensor, shape: readonly number[]): Tensor {
  return tensor(shape, t.data);
}

/** [rows, cols] of a 2-D tensor. */
export function dims2(t: Tensor): [number, number] {
  if (t.shape.length !== 2) throw new Error(`lasp model: expected a 2-D tensor, got shape [${t.shape.join(',')}]`);
  return [t.shape[0]!, t.shape[1]!];
}

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
  /** Default 1. */
  alpha?: number;
  /** Default 0; with beta ≠ 0 the product is accumulated into `out`. */
  beta?: number;
  /** Written (or accumulated into) in place; allocated when absent. */
  out?: Float32Array;
}

/** What a forward attention call keeps for its backward (opaque to the layers). */
export interface AttentionContext {
  readonly specs: readonly AttentionSpec[];
  /** Per sequence, the chunk states the CPU backend keeps (absent where not kept). */
  readonly saved?: readonly (SavedForward | undefined)[];
}

/** What a forward short convolution keeps for its backward (opaque to the layers). */
export interface ConvContext {
  readonly xs: readonly Tensor[];
  readonly ws: readonly Float32Array[];
  readonly K: number;
  /** Sequences in the batch (the rows of each x are B sequences one after another). */
  readonly B: number;
  /** Per x: the rows before each sequence's first row [B,K−1,C], where they came from a previous rank. */
  readonly halos?: readonly (Float32Array | undefined)[];
  readonly layer: number;
}

export interface Backend {
  /** op(a) · op(b) (2-D), alpha/beta as in GEMM. */
  matmul(a: Tensor, b: Tensor, opts?: MatmulOptions): Promise<Tensor>;
  /** a + b into a new tensor. */
  add(a: Tensor, b: Tensor): Promise<Tensor>;
  /** dst += src in place. */
  addInto(dst: Float32Array, src: Float32Array): Promise<void>;
  rmsNorm(x: Tensor, w: Float32Array, eps: number): Promise<{ y: Tensor; rstd: Float32Array }>;
  rmsNormBackward(x: Tensor, w: Float32Array, eps: number, rstd: Float32Array, dy: Tensor): Promise<{ dx: Tensor; dw: Float32Array }>;
  swiglu(a: Tensor, b: Tensor): Promise<Tensor>;
  swigluBackward(a: Tensor, b: Tensor, dy: Tensor): Promise<{ da: Tensor; db: Tensor }>;
  /** Rows `ids` of table [V,D] → [N,D]. */
  embedding(table: Float32Array, V: number, D: number, ids: Int32Array): Promise<Tensor>;
  embeddingBackward(V: number, D: number, ids: Int32Array, dy: Tensor): Promise<Float32Array>;
  /** Summed loss over counted rows; dlogits = (softmax − onehot)·scale. */
  crossEntropy(logits: Tensor, targets: Int32Array, scale: number): Promise<{ loss: number; count: number; dlogits: Tensor }>;
  /**
   * The attention kernel on each of B sequences (under sequence parallelism: this rank's block of
   * each), o [T,H,dv] per sequence; the context feeds attentionBackward. `layer` tags the
   * collectives of a sequence-parallel backend (every rank makes the same calls in the same order).
   */
  attention(specs: AttentionSpec[], layer: number): Promise<{ o: Float32Array[]; ctx: AttentionContext }>;
  attentionBackward(ctx: AttentionContext, dO: Float32Array[]): Promise<BackwardResult[]>;
  /**
   * Causal softmax attention (sliding window when shape.window > 0) on each of B sequences, o
   * [T,H,dv] per sequence. A sequence-parallel backend gathers the keys before the block (or a
   * halo of window − 1 rows) from the other ranks and sends their gradients back.
   */
  softmaxAttention(seqs: LocalQkv[], shape: SoftmaxShape, layer: number): Promise<{ o: Float32Array[]; ctx: SoftmaxContext }>;
  softmaxAttentionBackward(ctx: SoftmaxContext, dO: Float32Array[]): Promise<{ dq: Float32Array; dk: Float32Array; dv: Float32Array }[]>;
  /**
   * SiLU of a short causal depthwise convolution (kernel K, weights [K,C]) of each x [B·T, C_i],
   * per sequence. A sequence-parallel backend fetches the K−1 rows before each block from the
   * previous rank (and sends their gradient back in the backward).
   */
  shortConv(xs: Tensor[], ws: Float32Array[], K: number, sequences: number, layer: number): Promise<{ ys: Tensor[]; ctx: ConvContext }>;
  shortConvBackward(ctx: ConvContext, dys: Tensor[]): Promise<{ dxs: Tensor[]; dws: Float32Array[] }>;
  /** Element-wise gate ops. */
  logSigmoidScaled(z: Tensor, invTau: number): Promise<Tensor>;
  logSigmoidScaledBackward(z: Tensor, dg: Float32Array, invTau: number): Promise<Tensor>;
  sigmoid(z: Tensor): Promise<Tensor>;
  sigmoidBackward(y: Tensor, dy: Float32Array): Promise<Tensor>;
  /** Row-wise L2 normalisation of x viewed as [rows, d]. */
  l2NormalizeRows(x: Tensor, d: number, eps: number): Promise<{ y: Tensor; inv: Float32Array }>;
  l2NormalizeRowsBackward(y: Tensor, inv: Float32Array, dy: Float32Array, d: number): Promise<Tensor>;
}

/**
 * The backend over one kernel set with host-resident tensors: every op hands its Float32Arrays to
 * the set's kernels (for the CUDA set: copied to the device and back, docs/cuda.md).
 */
export function hostBackend(k: KernelSet): Backend {
  return {
    async matmul(a, b, opts = {}) {
      const [ar, ac] = dims2(a);
      const [br, bc] = dims2(b);
      const [M, K] = opts.transA ? [ac, ar] : [ar, ac];
      const [K2, N] = opts.transB ? [bc, br] : [br, bc];
      if (K !== K2) throw new Error(`lasp model: matmul inner dimensions differ: ${K} vs ${K2}`);
      const C = await k.gemm({
        M,
        N,
        K,
        A: a.data,
        B: b.data,
        transA: opts.transA ?? false,
        transB: opts.transB ?? false,
        alpha: opts.alpha ?? 1,
        beta: opts.beta ?? 0,
        ...(opts.out ? { C: opts.out } : {}),
        multiThreaded: true,
      });
      return tensor([M, N], C);
    },
    async add(a, b) {
      const out = output(a.data.length);
      out.set(a.data);
      await k.addInto(out, b.data);
      return tensor(a.shape, out);
    },
    addInto: (dst, src) => k.addInto(dst, src),
    async rmsNorm(x, w, eps) {
      const [N, D] = dims2(x);
      const { y, rstd } = await k.rmsNorm({ N, D, x: x.data, w, eps });
      return { y: tensor([N, D], y), rstd };
    },
    async rmsNormBackward(x, w, eps, rstd, dy) {
      const [N, D] = dims2(x);
      const { dx, dw } = await k.rmsNormBackward({ N, D, x: x.data, w, eps }, rstd, dy.data);
      return { dx: tensor([N, D], dx), dw };
    },
    async swiglu(a, b) {
      return tensor(a.shape, await k.swiglu(a.data, b.data));
    },
    async swigluBackward(a, b, dy) {
      const { da, db } = await k.swigluBackward(a.data, b.data, dy.data);
      return { da: tensor(a.shape, da), db: tensor(b.shape, db) };
    },
    async embedding(table, V, D, ids) {
      return tensor([ids.length, D], await k.embedding({ V, D, ids, table }));
    },
    embeddingBackward: (V, D, ids, dy) => k.embeddingBackward({ V, D, ids }, dy.data),
    async crossEntropy(logits, targets, scale) {
      const [N, V] = dims2(logits);
      const r = await k.crossEntropy({ N, V, logits: logits.data, targets, scale });
      return { loss: r.loss, count: r.count, dlogits: tensor([N, V], r.dlogits) };
    },
    async attention(specs) {
      const o: Float32Array[] = [];
      const saved: (SavedForward | undefined)[] = [];
      for (const spec of specs) {
        const r = await k.forward(spec, { saveForBackward: true });
        o.push(r.o);
        saved.push(r.saved);
      }
      return { o, ctx: { specs, saved } };
    },
    async attentionBackward(ctx, dO) {
      const out: BackwardResult[] = [];
      for (const [b, spec] of ctx.specs.entries()) out.push(await k.backward(spec, dO[b]!, undefined, ctx.saved?.[b]));
      return out;
    },
    async softmaxAttention(seqs, shape) {
      const calls: { spec: SoftmaxSpec; fwd: { o: Float32Array; lse: Float32Array } }[] = [];
      for (const s of seqs) {
        const T = s.q.length / (shape.H * shape.dk);
        const spec: SoftmaxSpec = { Tq: T, Tk: T, H: shape.H, dk: shape.dk, dv: shape.dv, causal: true, window: shape.window, ...s };
        if (shape.scale !== undefined) spec.scale = shape.scale;
        calls.push({ spec, fwd: await k.softmax.forward(spec) });
      }
      const ctx: CpuSoftmaxContext = { sequences: seqs.length, calls };
      return { o: calls.map((c) => c.fwd.o), ctx };
    },
    async softmaxAttentionBackward(ctx, dO) {
      const c = ctx as CpuSoftmaxContext;
      if (!c.calls) throw new Error('lasp model: softmaxAttentionBackward with a context from another backend');
      const out: { dq: Float32Array; dk: Float32Array; dv: Float32Array }[] = [];
      for (const [b, x] of c.calls.entries()) out.push(await k.softmax.backward(x.spec, x.fwd, dO[b]!));
      return out;
    },
    async shortConv(xs, ws, K, sequences, layer) {
      const ys: Tensor[] = [];
      for (const [i, x] of xs.entries()) ys.push(tensor(x.shape, await k.shortConv(convSpec(x, ws[i]!, K, sequences))));
      return { ys, ctx: { xs, ws, K, B: sequences, layer } };
    },
    async shortConvBackward(ctx, dys) {
      const dxs: Tensor[] = [];
      const dws: Float32Array[] = [];
      for (const [i, x] of ctx.xs.entries()) {
        const g = await k.shortConvBackward(convSpec(x, ctx.ws[i]!, ctx.K, ctx.B, ctx.halos?.[i]), dys[i]!.data);
        dxs.push(tensor(x.shape, g.dx));
        dws.push(g.dw);
      }
      return { dxs, dws };
    },
    logSigmoidScaled: async (z, invTau) => tensor(z.shape, await k.logSigmoidScaled(z.data, invTau)),
    logSigmoidScaledBackward: async (z, dg, invTau) => tensor(z.shape, await k.logSigmoidScaledBackward(z.data, dg, invTau)),
    sigmoid: async (z) => tensor(z.shape, await k.sigmoid(z.data)),
    sigmoidBackward: async (y, dy) => tensor(y.shape, await k.sigmoidBackward(y.data, dy)),
    async l2NormalizeRows(x, d, eps) {
      const rows = x.data.length / d;
      const { y, inv } = await k.l2NormalizeRows(x.data, rows, d, eps);
      return { y: tensor(x.shape, y), inv };
    },
    l2NormalizeRowsBackward: async (y, inv, dy, d) => tensor(y.shape, await k.l2NormalizeRowsBackward(y.data, inv, dy, inv.length, d)),
  };
}

/** The native CPU kernels. */
export const cpuBackend: Backend = hostBackend(cpuKernels);

interface CpuSoftmaxContext extends SoftmaxContext {
  readonly calls: readonly { spec: SoftmaxSpec; fwd: { o: Float32Array; lse: Float32Array } }[];
}

/** The ops.shortConv spec of x [B·T, C] (SiLU applied). */
export function convSpec(x: Tensor, w: Float32Array, K: number, B: number, halo?: Float32Array): ShortConvSpec {
  const [rows, C] = dims2(x);
  return { B, T: rows / B, C, K, x: x.data, w, silu: true, ...(halo ? { halo } : {}) };
}
