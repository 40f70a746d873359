// The linear-attention layer (DESIGN.md §4) for one kind:
//   q = x W_q, k = x W_k (L2-normalised per head for delta kinds), v = x W_v        [T,H,dk|dv]
//   g = logsigmoid(x W_g)/τ: per head (scalar_gate, gated_delta) or per (head, dk) (vector_gate)
//   β = sigmoid(x W_β) per head (delta, gated_delta)
//   o = attention kernel (identity feature map), per-head RMSNorm over dv, y = o W_o.
// The kernel call goes through Backend.attention, which the sequence-parallel version replaces.
// Kinds softmax and swa (hybrid models, DESIGN.md §3.1): the same q, k, v projections (and short
// convolution), no gates, causal softmax attention (swa: over the last `window` positions) with
// scale 1/sqrt(dk) through Backend.softmaxAttention, then the same output norm and projection.
import {
  isSoftmaxKind,
  reshape,
  type AttentionContext,
  type Backend,
  type ConvContext,
  type LayerKind,
  type SoftmaxContext,
  type Tensor,
} from '../backend.js';
import { output, type AttentionSpec, type BackwardResult } from '../../native/kernels.js';
import type { Param, ParamStore } from '../params.js';
import { Linear, type LinearCache } from './linear.js';
import { RmsNorm, type RmsNormCache } from './rms-norm.js';

export interface AttentionConfig {
  kind: LayerKind;
  /** Kind swa: keys per query, itself included. */
  window?: number;
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
  /** Layer index (tags the sequence-parallel collectives). Default 0. */
  layer?: number;
  /** Kernel size of the short causal convolution (+ SiLU) on q, k and v; 0 for none. Default 0. */
  conv?: number;
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
  sctx?: SoftmaxContext;
  conv?: ConvContext;
}

export function attentionCache(): AttentionCache {
  return { q: {}, k: {}, v: {}, g: {}, b: {}, o: {}, norm: {} };
}

const gated = (k: LayerKind) => k === 'scalar_gate' || k === 'vector_gate' || k === 'gated_delta';
const isDelta = (k: LayerKind) => k === 'delta' || k === 'gated_delta';
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
  /** Short-convolution weights of q, k, v ([K, width] each), when cfg.conv > 0. */
  readonly conv: Param[] | undefined;

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
    if (kind === 'swa' && !(Number.isInteger(cfg.window) && cfg.window! >= 1))
      throw new Error(`lasp model: kind swa needs window >= 1, got ${JSON.stringify(cfg.window)}`);
    const K = cfg.conv ?? 0;
    this.conv =
      K > 0
        ? [
            store.add(`${name}.conv_q`, [K, H * dk], { dist: 'normal', scale: 1 / Math.sqrt(K) }),
            store.add(`${name}.conv_k`, [K, H * dk], { dist: 'normal', scale: 1 / Math.sqrt(K) }),
            store.add(`${name}.conv_v`, [K, H * dv], { dist: 'normal', scale: 1 / Math.sqrt(K) }),
          ]
        : undefined;
  }

  /** x [B·T, D]: `sequences` = B sequences of T rows each, one after another. */
  async forward(x: Tensor, cache: AttentionCache, sequences = 1): Promise<Tensor> {
    const { kind, heads: H, dk, dv, chunk } = this.cfg;
    const rows = x.shape[0]!;
    const T = rows / sequences;
    if (!Number.isInteger(T) || T < 1) throw new Error(`lasp model: ${rows} rows do not split into ${sequences} sequences`);
    let q = await this.wq.forward(x, cache.q);
    let k = await this.wk.forward(x, cache.k);
    let v = await this.wv.forward(x, cache.v);
    if (this.conv) {
      const c = await this.be.shortConv(
        [q, k, v],
        this.conv.map((p) => p.value),
        this.cfg.conv!,
        sequences,
        this.cfg.layer ?? 0,
      );
      cache.conv = c.ctx;
      [q, k, v] = c.ys as [Tensor, Tensor, Tensor];
    }
    if (isSoftmaxKind(kind)) {
      const seq = (a: Float32Array, w: number, b: number) => a.subarray(b * T * w, (b + 1) * T * w);
      const seqs = Array.from({ length: sequences }, (_, b) => ({
        q: seq(q.data, H * dk, b),
        k: seq(k.data, H * dk, b),
        v: seq(v.data, H * dv, b),
      }));
      const window = kind === 'swa' ? this.cfg.window! : 0;
      const r = await this.be.softmaxAttention(seqs, { H, dk, dv, window }, this.cfg.layer ?? 0);
      cache.sctx = r.ctx;
      return this.output(r.o, rows, T, cache);
    }
    if (isDelta(kind)) {
      cache.kUnit = await this.be.l2NormalizeRows(k, dk, L2_EPS);
      k = cache.kUnit.y;
    }
    let g: Float32Array | undefined;
    const gw = kind === 'vector_gate' ? H * dk : H;
    if (this.wg) {
      cache.gPre = await this.wg.forward(x, cache.g);
      g = (await this.be.logSigmoidScaled(cache.gPre, this.invTau)).data;
    }
    if (this.wb) cache.beta = await this.be.sigmoid(await this.wb.forward(x, cache.b));
    const specs: AttentionSpec[] = [];
    for (let b = 0; b < sequences; b++) {
      const seq = (a: Float32Array, w: number) => a.subarray(b * T * w, (b + 1) * T * w);
      specs.push({
        kind,
        T,
        H,
        dk,
        dv,
        q: seq(q.data, H * dk),
        k: seq(k.data, H * dk),
        v: seq(v.data, H * dv),
        ...(g ? { g: seq(g, gw) } : {}),
        ...(cache.beta ? { beta: seq(cache.beta.data, H) } : {}),
        chunkSize: chunk,
      });
    }
    const r = await this.be.attention(specs, this.cfg.layer ?? 0);
    cache.ctx = r.ctx;
    return this.output(r.o, rows, T, cache);
  }

  /** Per-sequence kernel outputs → per-head norm → output projection. */
  private async output(os: Float32Array[], rows: number, T: number, cache: AttentionCache): Promise<Tensor> {
    const { heads: H, dv } = this.cfg;
    const o = os.length === 1 ? os[0]! : output(rows * H * dv);
    if (os.length > 1) for (const [b, ob] of os.entries()) o.set(ob, b * T * H * dv);
    let oh: Tensor = { shape: [rows * H, dv], data: o };
    if (this.norm) oh = await this.norm.forward(oh, cache.norm);
    return this.wo.forward(reshape(oh, [rows, H * dv]), cache.o);
  }

  async backward(dy: Tensor, cache: AttentionCache): Promise<Tensor> {
    const { kind, heads: H, dk, dv } = this.cfg;
    const B = cache.sctx?.sequences ?? cache.ctx?.specs.length;
    if (B === undefined) throw new Error('lasp model: Attention.backward without a forward cache');
    const rows = dy.shape[0]!;
    const T = rows / B;
    let dO = reshape(await this.wo.backward(dy, cache.o), [rows * H, dv]);
    if (this.norm) dO = await this.norm.backward(dO, cache.norm);
    const dOs = Array.from({ length: B }, (_, b) => dO.data.subarray(b * T * H * dv, (b + 1) * T * H * dv));
    const grads: Pick<BackwardResult, 'dq' | 'dk' | 'dv' | 'dg' | 'dbeta'>[] = cache.sctx
      ? await this.be.softmaxAttentionBackward(cache.sctx, dOs)
      : await this.be.attentionBackward(cache.ctx!, dOs);
    const gw = kind === 'vector_gate' ? H * dk : H;
    const cat = (name: string, width: number, part: (g: (typeof grads)[number]) => Float32Array | undefined): Float32Array => {
      const parts = grads.map((g) => {
        const p = part(g);
        if (!p) throw new Error(`lasp model: attention gradient ${name} missing`);
        return p;
      });
      if (parts.length === 1) return parts[0]!;
      const out = output(rows * width);
      for (const [b, p] of parts.entries()) out.set(p, b * T * width);
      return out;
    };
    const dq = cat('dq', H * dk, (g) => g.dq);
    const dk_ = cat('dk', H * dk, (g) => g.dk);
    const dv_ = cat('dv', H * dv, (g) => g.dv);
    const dg = this.wg ? cat('dg', gw, (g) => g.dg) : undefined;
    const dbeta = this.wb ? cat('dbeta', H, (g) => g.dbeta) : undefined;
    let dqT: Tensor = { shape: [rows, H * dk], data: dq };
    let dkT: Tensor = { shape: [rows, H * dk], data: dk_ };
    let dvT: Tensor = { shape: [rows, H * dv], data: dv_ };
    if (cache.kUnit) dkT = await this.be.l2NormalizeRowsBackward(cache.kUnit.y, cache.kUnit.inv, dk_, dk);
    if (this.conv) {
      if (!cache.conv) throw new Error('lasp model: convolution context missing');
      const g = await this.be.shortConvBackward(cache.conv, [dqT, dkT, dvT]);
      for (const [i, p] of this.conv.entries()) await this.be.addInto(p.grad, g.dws[i]!);
      [dqT, dkT, dvT] = g.dxs as [Tensor, Tensor, Tensor];
    }
    const dx = await this.wq.backward(dqT, cache.q);
    await this.wk.backward(dkT, cache.k, dx);
    await this.wv.backward(dvT, cache.v, dx);
    if (this.wg && dg) {
      if (!cache.gPre) throw new Error('lasp model: gate pre-activation missing');
      await this.wg.backward(await this.be.logSigmoidScaledBackward(cache.gPre, dg, this.invTau), cache.g, dx);
    }
    if (this.wb && dbeta) {
      if (!cache.beta) throw new Error('lasp model: beta missing');
      await this.wb.backward(await this.be.sigmoidBackward(cache.beta, dbeta), cache.b, dx);
    }
    return dx;
  }
}
