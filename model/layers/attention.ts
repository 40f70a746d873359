// The linear-attention layer (DESIGN.md §4) for one kind:
//   q = x W_q, k = x W_k (L2-normalised per head for delta kinds), v = x W_v        [T,H,dk|dv]
//   g = logsigmoid(x W_g)/τ: per head (scalar_gate, gated_delta) or per (head, dk) (vector_gate)
//   β = sigmoid(x W_β) per head (delta, gated_delta)
//   o = attention kernel (identity feature map), per-head RMSNorm over dv, y = o W_o.
// The kernel call goes through Backend.attention, which the sequence-parallel version replaces.
import { reshape, type AttentionContext, type Backend, type Tensor } from '../backend.js';
import type { Kind } from '../../native/kernels.js';
import type { ParamStore } from '../params.js';
import { Linear, type LinearCache } from './linear.js';
import { RmsNorm, type RmsNormCache } from './rms-norm.js';

export interface AttentionConfig {
  kind: Kind;
  dModel: number;
  heads: number;
  dk: number;
  dv: number;
  /** Kernel chunk size. */
  chunk: number;
  /** Gate temperature τ. Default 16. */
  tau?: number;
  /** Per-head RMSNorm of the kernel output. Default true. */
  outNorm?: boolean;
}

export interface AttentionCache {
  q: LinearCache;
  k: LinearCache;
  v: LinearCache;
  g: LinearCache;
  b: LinearCache;
  o: LinearCache;
  norm: RmsNormCache;
  kUnit?: { y: Tensor; inv: Float32Array };
  gPre?: Tensor;
  beta?: Tensor;
  ctx?: AttentionContext;
}

export function attentionCache(): AttentionCache {
  return { q: {}, k: {}, v: {}, g: {}, b: {}, o: {}, norm: {} };
}

const gated = (k: Kind) => k === 'scalar_gate' || k === 'vector_gate' || k === 'gated_delta';
const isDelta = (k: Kind) => k === 'delta' || k === 'gated_delta';
const L2_EPS = 1e-6;

export class Attention {
  readonly wq: Linear;
  readonly wk: Linear;
  readonly wv: Linear;
  readonly wg: Linear | undefined;
  readonly wb: Linear | undefined;
  readonly norm: RmsNorm | undefined;
  readonly wo: Linear;
  readonly invTau: number;

  constructor(
    private readonly be: Backend,
    store: ParamStore,
    name: string,
    readonly cfg: AttentionConfig,
  ) {
    const { kind, dModel: D, heads: H, dk, dv } = cfg;
    this.wq = new Linear(be, store, `${name}.w_q`, D, H * dk);
    this.wk = new Linear(be, store, `${name}.w_k`, D, H * dk);
    this.wv = new Linear(be, store, `${name}.w_v`, D, H * dv);
    this.wg = gated(kind) ? new Linear(be, store, `${name}.w_g`, D, kind === 'vector_gate' ? H * dk : H) : undefined;
    this.wb = isDelta(kind) ? new Linear(be, store, `${name}.w_beta`, D, H) : undefined;
    this.norm = cfg.outNorm === false ? undefined : new RmsNorm(be, store, `${name}.out_norm`, dv);
    this.wo = new Linear(be, store, `${name}.w_o`, H * dv, D);
    this.invTau = 1 / (cfg.tau ?? 16);
  }

  async forward(x: Tensor, cache: AttentionCache): Promise<Tensor> {
    const { kind, heads: H, dk, dv, chunk } = this.cfg;
    const T = x.shape[0]!;
    const q = await this.wq.forward(x, cache.q);
    let k = await this.wk.forward(x, cache.k);
    const v = await this.wv.forward(x, cache.v);
    if (isDelta(kind)) {
      cache.kUnit = await this.be.l2NormalizeRows(k, dk, L2_EPS);
      k = cache.kUnit.y;
    }
    let g: Float32Array | undefined;
    if (this.wg) {
      cache.gPre = await this.wg.forward(x, cache.g);
      g = (await this.be.logSigmoidScaled(cache.gPre, this.invTau)).data;
    }
    if (this.wb) cache.beta = await this.be.sigmoid(await this.wb.forward(x, cache.b));
    const { o, ctx } = await this.be.attention({
      kind,
      T,
      H,
      dk,
      dv,
      q: q.data,
      k: k.data,
      v: v.data,
      ...(g ? { g } : {}),
      ...(cache.beta ? { beta: cache.beta.data } : {}),
      chunkSize: chunk,
    });
    cache.ctx = ctx;
    let oh: Tensor = { shape: [T * H, dv], data: o };
    if (this.norm) oh = await this.norm.forward(oh, cache.norm);
    return this.wo.forward(reshape(oh, [T, H * dv]), cache.o);
  }

  async backward(dy: Tensor, cache: AttentionCache): Promise<Tensor> {
    const { heads: H, dk, dv } = this.cfg;
    if (!cache.ctx) throw new Error('lasp model: Attention.backward without a forward cache');
    const T = dy.shape[0]!;
    let dO = reshape(await this.wo.backward(dy, cache.o), [T * H, dv]);
    if (this.norm) dO = await this.norm.backward(dO, cache.norm);
    const gr = await this.be.attentionBackward(cache.ctx, dO.data);
    const dx = await this.wq.backward({ shape: [T, H * dk], data: gr.dq }, cache.q);
    let dkT: Tensor = { shape: [T, H * dk], data: gr.dk };
    if (cache.kUnit) dkT = await this.be.l2NormalizeRowsBackward(cache.kUnit.y, cache.kUnit.inv, gr.dk, dk);
    await this.wk.backward(dkT, cache.k, dx);
    await this.wv.backward({ shape: [T, H * dv], data: gr.dv }, cache.v, dx);
    if (this.wg) {
      if (!cache.gPre || !gr.dg) throw new Error('lasp model: gate gradient missing');
      await this.wg.backward(await this.be.logSigmoidScaledBackward(cache.gPre, gr.dg, this.invTau), cache.g, dx);
    }
    if (this.wb) {
      if (!cache.beta || !gr.dbeta) throw new Error('lasp model: beta gradient missing');
      await this.wb.backward(await this.be.sigmoidBackward(cache.beta, gr.dbeta), cache.b, dx);
    }
    return dx;
  }
}
