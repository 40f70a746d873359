// The "sp-layer" task for the hybrid and local layers (DESIGN.md §3.1) and for the zig-zag layout:
// softmax attention (K/V gathered, dK/dV sent back to their owners), sliding-window attention
// (halo), the short convolution (halo), and the linear kinds folded over 2W segments. Each rank
// runs the layer forward + backward on its rows of a deterministic random problem (counter-based
// random streams, so a rank generates exactly its rows of the tensors the check generates whole)
// and compares them with the single-process computation on the whole sequence.
import { kernels, type AttentionSpec, type Kind } from '../../native/kernels.js';
import { ops } from '../../native/ops.js';
import type { Communicator } from '../collectives/communicator.js';
import { tensor } from '../../model/backend.js';
import type { SpContext } from './lasp2.js';
import { lasp2SegBackward, lasp2SegForward } from './lasp2-segments.js';
import { localRows, localSlice, makeLayout, ownSegments, type Layout, type LayoutName } from './layout.js';
import { makeProblem, type ProblemConfig } from './random-problem.js';
import { softmaxSpBackward, softmaxSpForward, type SoftmaxShape } from './softmax-sp.js';
import { SpBackend } from './sp-backend.js';
import { concatF32 } from './wire.js';

export const LOCAL_KINDS = ['softmax', 'swa', 'conv'] as const;
export type LocalKind = (typeof LOCAL_KINDS)[number];

export interface HybridLayerConfig {
  kind: Kind | LocalKind;
  T: number;
  H: number;
  dk: number;
  dv: number;
  seed: number;
  chunk?: number;
  /** swa: keys per query, itself included (2..). */
  window?: number;
  /** conv: kernel size. */
  convSize?: number;
  layout: LayoutName;
  withInitialState?: boolean;
  withFinalGrad?: boolean;
  repeats: number;
  check: boolean;
}

export interface ErrorPart {
  maxAbsDiff: number;
  maxAbsRef: number;
}

export interface HybridRankResult {
  tokens: number;
  ms: number;
  collectiveMs: number;
  computeMs: number;
  bytesSent: number | null;
  errors: Record<string, ErrorPart> | null;
}

function compare(x: Float32Array, ref: Float32Array): ErrorPart {
  let maxAbsDiff = 0;
  let maxAbsRef = 0;
  for (let i = 0; i < ref.length; i++) {
    const r = ref[i] as number;
    const d = Math.abs((x[i] as number) - r);
    maxAbsDiff = Number.isNaN(d) ? Infinity : Math.max(maxAbsDiff, d);
    maxAbsRef = Math.max(maxAbsRef, Math.abs(r));
  }
  return { maxAbsDiff, maxAbsRef };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

/** Rows of this rank's segments of a random [T, width] tensor (stream `stream` of the seed). */
async function localNormals(
  layout: Layout,
  rank: number,
  width: number,
  seed: number,
  stream: number,
  scale: number,
): Promise<Float32Array> {
  const out = new Float32Array(localRows(layout, rank) * width);
  for (const s of ownSegments(layout, rank))
    await kernels.fillRandom(out.subarray(s.offset * width, (s.offset + s.block.end - s.block.start) * width), {
      seed: seed * 8 + stream,
      offset: s.block.start * width,
      dist: 'normal',
      scale,
    });
  return out;
}

async function fullNormals(n: number, seed: number, stream: number, scale: number): Promise<Float32Array> {
  return kernels.fillRandom(new Float32Array(n), { seed: seed * 8 + stream, dist: 'normal', scale });
}

/** One forward + backward; returns the tensors to compare, by name. */
type Run = (ctx: SpContext) => Promise<Record<string, Float32Array>>;
/** The single-process tensors of the whole sequence, by name. */
type Reference = () => Promise<Record<string, Float32Array>>;

export async function runHybridLayer(comm: Communicator, cfg: HybridLayerConfig): Promise<HybridRankResult> {
  const layout = makeLayout(cfg.T, comm.world, cfg.layout);
  const me = comm.rank;
  const { T, H, dk, dv, seed } = cfg;
  let run: Run;
  let reference: Reference;
  /** Tensors of the distributed run that need a collective before the check. */
  let extra: (() => Promise<Record<string, Float32Array>>) | undefined;
  // Tensors compared whole (not per row): every rank holds the full value.
  const whole = new Set(['finalState', 'dInitialState', 'dw']);
  const width: Record<string, number> = {};

  if (cfg.kind === 'softmax' || cfg.kind === 'swa') {
    const window = cfg.kind === 'swa' ? (cfg.window ?? 0) : 0;
    if (cfg.kind === 'swa' && window < 1) throw new Error(`window must be an integer >= 1 for kind swa, got ${JSON.stringify(cfg.window)}`);
    const shape: SoftmaxShape = { H, dk, dv, window };
    const q = await localNormals(layout, me, H * dk, seed, 0, 1);
    const k = await localNormals(layout, me, H * dk, seed, 1, 1);
    const v = await localNormals(layout, me, H * dv, seed, 2, 1);
    const dO = await localNormals(layout, me, H * dv, seed, 5, 1);
    Object.assign(width, { o: H * dv, dq: H * dk, dk: H * dk, dv: H * dv });
    run = async (ctx) => {
      const f = await softmaxSpForward(ctx, layout, shape, [{ q, k, v }]);
      const [g] = await softmaxSpBackward(ctx, f.state, [dO]);
      return { o: f.o[0]!, dq: g!.dq, dk: g!.dk, dv: g!.dv };
    };
    reference = async () => {
      const spec = {
        Tq: T,
        Tk: T,
        H,
        dk,
        dv,
        causal: true,
        window,
        q: await fullNormals(T * H * dk, seed, 0, 1),
        k: await fullNormals(T * H * dk, seed, 1, 1),
        v: await fullNormals(T * H * dv, seed, 2, 1),
      };
      const f = await kernels.softmax.forward(spec);
      const g = await kernels.softmax.backward(spec, f, await fullNormals(T * H * dv, seed, 5, 1));
      return { o: f.o, dq: g.dq, dk: g.dk, dv: g.dv };
    };
  } else if (cfg.kind === 'conv') {
    if (cfg.layout !== 'contiguous') throw new Error(`kind conv runs with the contiguous layout only, got layout ${cfg.layout}`);
    const K = cfg.convSize ?? 4;
    const C = H * dk;
    const w = await fullNormals(K * C, seed, 3, 1 / Math.sqrt(K));
    const x = await localNormals(layout, me, C, seed, 0, 1);
    const dy = await localNormals(layout, me, C, seed, 5, 1);
    const rows = localRows(layout, me);
    const sp = new SpBackend(comm);
    Object.assign(width, { y: C, dx: C });
    let lastDw: Float32Array | undefined;
    run = async (ctx) => {
      sp.step = ctx.step;
      const f = await sp.backend.shortConv([tensor([rows, C], x)], [w], K, 1, ctx.layer);
      const g = await sp.backend.shortConvBackward(f.ctx, [tensor([rows, C], dy)]);
      lastDw = g.dws[0]!;
      return { y: f.ys[0]!.data, dx: g.dxs[0]!.data };
    };
    reference = async () => {
      const spec = { T, C, K, x: await fullNormals(T * C, seed, 0, 1), w, silu: true };
      const y = await ops.shortConv(spec);
      const g = await ops.shortConvBackward(spec, await fullNormals(T * C, seed, 5, 1));
      return { y, dx: g.dx, dw: g.dw };
    };
    // dw is this rank's share: the check sums it over ranks first.
    extra = async () => {
      const dw = new Float32Array(lastDw!);
      await comm.allReduceSum({ step: 0, layer: 0, op: 'check.dw' }, dw);
      return { dw };
    };
  } else {
    const kind = cfg.kind;
    const pc: ProblemConfig = { kind, T, H, dk, dv, seed, withFinalGrad: cfg.withFinalGrad ?? true };
    if (cfg.chunk !== undefined) pc.chunk = cfg.chunk;
    if (cfg.withInitialState) pc.withInitialState = true;
    const segs = ownSegments(layout, me);
    const probs = [];
    for (const s of segs) probs.push(await makeProblem(pc, s.block));
    const specs: AttentionSpec[] = probs.map((p) => p.spec);
    const dOs = probs.map((p) => p.dO);
    const s0 = probs[0]!.initialState;
    const dSf = probs[0]!.dFinalState;
    const gw = kind === 'vector_gate' ? H * dk : H;
    Object.assign(width, { o: H * dv, dq: H * dk, dk: H * dk, dv: H * dv, dg: gw, dbeta: H });
    run = async (ctx) => {
      const f = await lasp2SegForward(ctx, layout, specs, s0);
      const b = await lasp2SegBackward(ctx, layout, specs, f, dOs, dSf);
      const out: Record<string, Float32Array> = {
        o: concatF32(f.o),
        dq: concatF32(b.grads.map((g) => g.dq)),
        dk: concatF32(b.grads.map((g) => g.dk)),
        dv: concatF32(b.grads.map((g) => g.dv)),
        finalState: f.finalState,
      };
      if (b.grads[0]!.dg) out.dg = concatF32(b.grads.map((g) => g.dg!));
      if (b.grads[0]!.dbeta) out.dbeta = concatF32(b.grads.map((g) => g.dbeta!));
      if (s0) out.dInitialState = b.dInitialState;
      return out;
    };
    reference = async () => {
      const full = await makeProblem(pc);
      const spec = { ...full.spec, ...(full.initialState ? { initialState: full.initialState } : {}) };
      const f = await kernels.forward(spec);
      const g = await kernels.backward(spec, full.dO, full.dFinalState);
      const out: Record<string, Float32Array> = { o: f.o, dq: g.dq, dk: g.dk, dv: g.dv, finalState: f.finalState };
      if (g.dg) out.dg = g.dg;
      if (g.dbeta) out.dbeta = g.dbeta;
      if (full.initialState && g.dInitialState) out.dInitialState = g.dInitialState;
      return out;
    };
  }

  const times: number[] = [];
  const coll: number[] = [];
  let bytesSent: number | null = null;
  let got: Record<string, Float32Array> = {};
  let step = 1_000_000;
  for (let it = 0; it <= cfg.repeats; it++) {
    await comm.allGather({ step: ++step, layer: 0, op: 'barrier' }, new Uint8Array(1));
    const ctx: SpContext = { comm, step: ++step, layer: 1, timing: { collectiveMs: 0 } };
    if (it === 0) comm.resetStats();
    const t0 = performance.now();
    const r = await run(ctx);
    const ms = performance.now() - t0;
    if (it === 0) {
      bytesSent = comm.stats.bytesSent;
      got = r;
    } else {
      times.push(ms);
      coll.push(ctx.timing!.collectiveMs);
    }
  }
  let errors: Record<string, ErrorPart> | null = null;
  if (cfg.check) {
    const ref = await reference();
    if (extra) Object.assign(got, await extra());
    errors = {};
    for (const [name, r] of Object.entries(ref)) {
      const mine = got[name];
      if (!mine) throw new Error(`sp-layer check: the distributed run gave no ${name}`);
      errors[name] = whole.has(name) ? compare(mine, r) : compare(mine, localSlice(layout, me, r, width[name]!));
    }
  }
  const ms = median(times);
  const collectiveMs = median(coll);
  return {
    tokens: localRows(layout, me),
    ms,
    collectiveMs,
    computeMs: median(times.map((t, i) => t - coll[i]!)),
    bytesSent,
    errors,
  };
}
