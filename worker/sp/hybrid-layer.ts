// The "sp-layer" task for the hybrid and local layers (DESIGN.md §3.1) and for the zig-zag layout:
// softmax attention (K/V gathered, dK/dV sent back to their owners), sliding-window attention
// (halo), the short convolution (halo), and the linear kinds folded over 2W segments. Each rank
// runs the layer forward + backward on its rows of a deterministic random problem (counter-based
// random streams, so a rank generates exactly its rows of the tensors the check generates whole)
// and compares them with the single-process computation on the whole sequence.
import { kernels, type AttentionSpec, type Kind } from '../../native/kernels.js';
import { ops, type ShortConvSpec } from '../../native/ops.js';
import type { Communicator } from '../collectives/communicator.js';
import { tensor } from '../../model/backend.js';
import { tag, timed, type SpContext } from './lasp2.js';
import { cpuKernels, type KernelSet } from '../../native/kernel-set.js';
import { lasp2SegBackward, lasp2SegForward } from './lasp2-segments.js';
import { localRows, localSlice, makeLayout, ownSegments, type Layout, type LayoutName } from './layout.js';
import { makeProblem, type ProblemConfig } from './random-problem.js';
import { haloPlan, softmaxSpBackward, softmaxSpForward, type SoftmaxShape } from './softmax-sp.js';
import { SpBackend } from './sp-backend.js';
import { bytesF32, concatF32, f32Bytes } from './wire.js';

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

/**
 * The short convolution (+ SiLU) over a layout's segments, forward and backward: each segment gets
 * the K−1 rows before it from the owner of the previous segment (tag conv.halo.<i>; kept locally
 * where this rank owns both) and sends their gradient back (conv.dhalo.<i>). dw: this rank's share.
 */
async function segmentConv(ctx: SpContext, layout: Layout, x: Float32Array, w: Float32Array, dy: Float32Array, C: number, K: number) {
  const { comm } = ctx;
  const h = K - 1;
  const rows = localRows(layout, comm.rank);
  const plan = haloPlan(comm, layout, rows, h, `a short convolution of size ${K}`);
  const seg = (a: Float32Array, off: number, n: number) => a.subarray(off * C, (off + n) * C);
  const wait = <T>(p: Promise<T>): Promise<T> => timed(ctx, p);
  // Forward halos.
  const local = new Map<number, Float32Array>();
  const sends: Promise<void>[] = [];
  for (const s of plan.segs) {
    if (s.next === null || s.nextHalo === 0) continue;
    const last = seg(x, s.offset + s.rows - s.nextHalo, s.nextHalo);
    if (s.next === comm.rank) local.set(s.index + 1, last);
    else sends.push(comm.send(tag(ctx, `conv.halo.${s.index + 1}`), s.next, f32Bytes(last)));
  }
  const specs: ShortConvSpec[] = [];
  const y = new Float32Array(rows * C);
  for (const s of plan.segs) {
    let halo: Float32Array | undefined;
    if (s.halo > 0) {
      const got = local.get(s.index) ?? bytesF32(await wait(comm.recv(tag(ctx, `conv.halo.${s.index}`), s.from)), `conv.halo.${s.index}`);
      if (got.length !== s.halo * C)
        throw new Error(`conv.halo.${s.index} from rank ${s.from}: ${got.length} floats, expected ${s.halo * C}`);
      // Fewer than K−1 rows only when the segment starts before position K−1: zeros before them.
      halo = new Float32Array(h * C);
      halo.set(got, (h - s.halo) * C);
    }
    const spec: ShortConvSpec = { T: s.rows, C, K, x: seg(x, s.offset, s.rows), w, silu: true, ...(halo ? { halo } : {}) };
    specs.push(spec);
    y.set(await ops.shortConv(spec), s.offset * C);
  }
  await wait(Promise.all(sends));
  // Backward: dx per segment, the halo rows' gradient back to the previous segment's owner.
  const dx = new Float32Array(rows * C);
  const dw = new Float32Array(K * C);
  const back: Promise<void>[] = [];
  const localBack = new Map<number, Float32Array>();
  for (const [i, s] of plan.segs.entries()) {
    const g = await ops.shortConvBackward(specs[i]!, seg(dy, s.offset, s.rows));
    dx.set(g.dx, s.offset * C);
    await kernels.addInto(dw, g.dw);
    if (s.halo > 0 && g.dhalo) {
      const mine = g.dhalo.subarray((h - s.halo) * C);
      if (s.from === comm.rank) localBack.set(s.index, mine);
      else back.push(comm.send(tag(ctx, `conv.dhalo.${s.index}`), s.from, f32Bytes(mine)));
    }
  }
  for (const s of plan.segs) {
    if (s.next === null || s.nextHalo === 0) continue;
    const got =
      localBack.get(s.index + 1) ??
      bytesF32(await wait(comm.recv(tag(ctx, `conv.dhalo.${s.index + 1}`), s.next)), `conv.dhalo.${s.index + 1}`);
    if (got.length !== s.nextHalo * C)
      throw new Error(`conv.dhalo.${s.index + 1} from rank ${s.next}: ${got.length} floats, expected ${s.nextHalo * C}`);
    await kernels.addInto(seg(dx, s.offset + s.rows - s.nextHalo, s.nextHalo), got);
  }
  await wait(Promise.all(back));
  return { y, dx, dw };
}

/** One forward + backward; returns the tensors to compare, by name. */
type Run = (ctx: SpContext) => Promise<Record<string, Float32Array>>;
/** The single-process tensors of the whole sequence, by name. */
type Reference = () => Promise<Record<string, Float32Array>>;

export async function runHybridLayer(
  comm: Communicator,
  cfg: HybridLayerConfig,
  deviceKernels: KernelSet = cpuKernels,
): Promise<HybridRankResult> {
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
    const K = cfg.convSize ?? 4;
    const C = H * dk;
    const w = await fullNormals(K * C, seed, 3, 1 / Math.sqrt(K));
    const x = await localNormals(layout, me, C, seed, 0, 1);
    const dy = await localNormals(layout, me, C, seed, 5, 1);
    const rows = localRows(layout, me);
    const sp = new SpBackend(comm, { kernels: deviceKernels });
    Object.assign(width, { y: C, dx: C });
    let lastDw: Float32Array | undefined;
    run =
      cfg.layout === 'contiguous'
        ? async (ctx) => {
            // The model's path: SpBackend's halo exchange with the neighbouring ranks.
            sp.step = ctx.step;
            const f = await sp.backend.shortConv([tensor([rows, C], x)], [w], K, 1, ctx.layer);
            const g = await sp.backend.shortConvBackward(f.ctx, [tensor([rows, C], dy)]);
            lastDw = g.dws[0]!;
            return { y: f.ys[0]!.data, dx: g.dxs[0]!.data };
          }
        : async (ctx) => {
            const r = await segmentConv(ctx, layout, x, w, dy, C, K);
            lastDw = r.dw;
            return { y: r.y, dx: r.dx };
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
    const ctx: SpContext = { comm, step: ++step, layer: 1, timing: { collectiveMs: 0 }, kernels: deviceKernels };
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
