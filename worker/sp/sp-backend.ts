// The model backend under sequence parallelism: every op of the CPU backend, except that the
// attention kernel runs as generalised LASP-2 across the group (one AllGather of block summaries
// forward, one of state gradients backward, per layer and sequence). The model code is unchanged:
// it calls Backend.attention on its block, and this backend makes the collective calls. Softmax
// layers of hybrid models (softmax-sp.ts) receive the K/V rows of the earlier ranks and send their
// dK/dV back; sliding-window layers and the short convolution exchange a fixed-size halo with the
// neighbouring ranks.
import { convSpec, dims2, hostBackend, type AttentionContext, type Backend, type ConvContext, type Tensor } from '../../model/backend.js';
import type { AttentionSpec, BackwardResult } from '../../native/kernels.js';
import { cpuKernels, type KernelSet } from '../../native/kernel-set.js';
import type { Communicator } from '../collectives/communicator.js';
import { concatF32, pack, unpack } from './wire.js';
import { softmaxSpBackward, softmaxSpForward, type SoftmaxSpState } from './softmax-sp.js';
import { lasp2BackwardBatch, lasp2ForwardBatch, type CollectiveTiming, type SpBatchForward, type SpContext } from './lasp2.js';

interface SpSoftmaxContext extends SoftmaxSpState {
  readonly sp: SpContext;
}

interface SpAttentionContext extends AttentionContext {
  readonly sp: SpContext;
  readonly fwd: SpBatchForward;
}

export interface SpBackendOptions {
  /** Accumulates the time spent waiting for collectives (see SpContext.timing). Default none. */
  timing?: CollectiveTiming;
  /** The kernels of this rank's device (every op of the backend runs on them). Default the CPU's. */
  kernels?: KernelSet;
}

export class SpBackend {
  /** The collective tags' step: set before each forward (the trainer uses its step number). */
  step = 0;
  /** Appended to the tags' op names, e.g. "eval3" for an evaluation pass. Default "". */
  phase = '';
  readonly backend: Backend;
  private readonly k: KernelSet;

  constructor(
    readonly comm: Communicator,
    private readonly opts: SpBackendOptions = {},
  ) {
    this.k = opts.kernels ?? cpuKernels;
    this.backend = {
      ...hostBackend(this.k),
      attention: (specs, layer) => this.attention(specs, layer),
      attentionBackward: (ctx, dO) => this.attentionBackward(ctx, dO),
      softmaxAttention: async (seqs, shape, layer) => {
        const r = await softmaxSpForward(this.ctx(layer), undefined, shape, seqs);
        return { o: r.o, ctx: { ...r.state, sp: this.ctx(layer) } as SpSoftmaxContext };
      },
      softmaxAttentionBackward: (ctx, dO) => {
        const c = ctx as SpSoftmaxContext;
        if (!c.sp || !c.calls) throw new Error('SpBackend: softmaxAttentionBackward with a context from another backend');
        return softmaxSpBackward(c.sp, c, dO);
      },
      shortConv: (xs, ws, K, B, layer) => this.shortConv(xs, ws, K, B, layer),
      shortConvBackward: (ctx, dys) => this.shortConvBackward(ctx, dys),
    };
  }

  private tag(layer: number, op: string) {
    return { step: this.step, layer, op: this.phase ? `${op}.${this.phase}` : op };
  }

  private ctx(layer: number): SpContext {
    return {
      comm: this.comm,
      step: this.step,
      layer,
      ...(this.phase ? { scope: `.${this.phase}` } : {}),
      ...(this.opts.timing ? { timing: this.opts.timing } : {}),
      kernels: this.k,
    };
  }

  private async attention(specs: AttentionSpec[], layer: number): Promise<{ o: Float32Array[]; ctx: AttentionContext }> {
    const sp = this.ctx(layer);
    const fwd = await lasp2ForwardBatch(sp, specs);
    const ctx: SpAttentionContext = { specs, sp, fwd };
    return { o: fwd.results.map((r) => r.o), ctx };
  }

  private async attentionBackward(ctx: AttentionContext, dO: Float32Array[]): Promise<BackwardResult[]> {
    const c = ctx as SpAttentionContext;
    if (!c.sp || !c.fwd) throw new Error('SpBackend: attentionBackward with a context from another backend');
    return lasp2BackwardBatch(c.sp, [...c.specs], c.fwd, dO);
  }

  /**
   * Short convolutions with a halo: rank r sends the last K−1 rows of every sequence of every x to
   * rank r+1 (one message) and receives the K−1 rows before its blocks from rank r−1. Blocks must
   * hold at least K−1 rows (the job config checks it).
   */
  private async shortConv(xs: Tensor[], ws: Float32Array[], K: number, B: number, layer: number) {
    const { rank, world } = this.comm;
    const h = K - 1;
    const shapes = xs.map((x) => dims2(x));
    let halos: (Float32Array | undefined)[] | undefined;
    if (h > 0 && world > 1) {
      for (const [rows] of shapes)
        if (rows / B < h) throw new Error(`a short convolution of size ${K} needs blocks of at least ${h} rows, this rank has ${rows / B}`);
      const tag = this.tag(layer, 'conv.halo');
      const sent =
        rank + 1 < world
          ? this.comm.send(tag, rank + 1, pack(xs.flatMap((x, i) => lastRows(x.data, B, shapes[i]![0] / B, shapes[i]![1], h))))
          : Promise.resolve();
      if (rank > 0) {
        const lengths = shapes.flatMap(([, C]) => Array.from({ length: B }, () => h * C));
        const parts = unpack(await this.comm.recv(tag, rank - 1), lengths, `conv.halo from rank ${rank - 1}`);
        halos = xs.map((_, i) => concatF32(parts.slice(i * B, (i + 1) * B)));
      }
      await sent;
    }
    const ys: Tensor[] = [];
    for (const [i, x] of xs.entries()) ys.push({ shape: x.shape, data: await this.k.shortConv(convSpec(x, ws[i]!, K, B, halos?.[i])) });
    const ctx: ConvContext = { xs, ws, K, B, layer, ...(halos ? { halos } : {}) };
    return { ys, ctx };
  }

  /** The backward: the halo rows' gradient goes back to rank r−1, which adds it to its last rows. */
  private async shortConvBackward(ctx: ConvContext, dys: Tensor[]) {
    const { rank, world } = this.comm;
    const { K, B } = ctx;
    const h = K - 1;
    const dxs: Tensor[] = [];
    const dws: Float32Array[] = [];
    const dhalos: Float32Array[] = [];
    for (const [i, x] of ctx.xs.entries()) {
      const g = await this.k.shortConvBackward(convSpec(x, ctx.ws[i]!, K, B, ctx.halos?.[i]), dys[i]!.data);
      dxs.push({ shape: x.shape, data: g.dx });
      dws.push(g.dw);
      if (g.dhalo) dhalos.push(g.dhalo);
    }
    if (h > 0 && world > 1) {
      const tag = this.tag(ctx.layer, 'conv.dhalo');
      const sent = rank > 0 ? this.comm.send(tag, rank - 1, pack(dhalos)) : Promise.resolve();
      if (rank + 1 < world) {
        const shapes = ctx.xs.map((x) => dims2(x));
        const parts = unpack(
          await this.comm.recv(tag, rank + 1),
          shapes.map(([, C]) => B * h * C),
          `conv.dhalo from rank ${rank + 1}`,
        );
        for (const [i, [rows, C]] of shapes.entries()) {
          const T = rows / B;
          for (let b = 0; b < B; b++)
            await this.k.addInto(
              dxs[i]!.data.subarray((b * T + T - h) * C, (b * T + T) * C),
              parts[i]!.subarray(b * h * C, (b + 1) * h * C),
            );
        }
      }
      await sent;
    }
    return { dxs, dws };
  }
}

/** The last h rows of each of B sequences of T rows of C floats (views). */
function lastRows(x: Float32Array, B: number, T: number, C: number, h: number): Float32Array[] {
  return Array.from({ length: B }, (_, b) => x.subarray((b * T + T - h) * C, (b * T + T) * C));
}
