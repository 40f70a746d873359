// Task "sp-layer": run one attention layer forward + backward with sequence parallelism on
// this rank's block of a deterministic random problem, time LASP-2 against the baselines, and
// check the result against the single-process kernel on the whole sequence.
import { kernels } from '../../native/kernels.js';
import { registerTask, type TaskContext } from '../tasks.js';
import { cpuKernels, type KernelSet } from '../../native/kernel-set.js';
import type { Communicator } from '../collectives/communicator.js';
import { lasp1Backward, lasp1Forward, ringKvBackward, ringKvForward } from './baselines.js';
import { rows, splitBlocks } from './blocks.js';
import { lasp2Backward, lasp2Forward, type SpBackwardResult, type SpContext, type SpForwardResult } from './lasp2.js';
import { checkProblemConfig, makeProblem, type Problem, type ProblemConfig } from './random-problem.js';
import type { AttentionSpec, Kind } from '../../native/kernels.js';
import { LOCAL_KINDS, runHybridLayer, type HybridLayerConfig, type LocalKind } from './hybrid-layer.js';
import { LAYOUTS, type LayoutName } from './layout.js';

export const SP_MODES = ['lasp2', 'lasp1', 'ringkv'] as const;
export type SpMode = (typeof SP_MODES)[number];

export interface SpLayerConfig extends Omit<ProblemConfig, 'kind'> {
  /** A linear kind, or softmax / swa (sliding window) / conv (short convolution): DESIGN.md §3.1. */
  kind: Kind | LocalKind;
  /** swa: keys per query, itself included. */
  window?: number;
  /** conv: kernel size. Default 4. */
  convSize?: number;
  /** Default contiguous; zigzag: rank r holds segments r and 2W−1−r of 2W. */
  layout?: LayoutName;
  /** Which algorithms to run. Default ['lasp2']. */
  modes?: SpMode[];
  /** Timed iterations per mode (after one warm-up). Default 3. */
  repeats?: number;
  /** Compare with the single-process kernel on the whole sequence. Default true. */
  check?: boolean;
}

/** max |x - ref| and max |ref| of one tensor on one rank; the driver combines ranks. */
export interface ErrorPart {
  maxAbsDiff: number;
  maxAbsRef: number;
}

export interface SpLayerRankResult {
  rank: number;
  world: number;
  tokens: number;
  /** Median forward+backward wall time per mode (ms). */
  ms: Partial<Record<SpMode, number>>;
  /** Median time inside collectives per LASP-2 iteration (call to resolve, ms). */
  lasp2CollectiveMs: number | null;
  /** Payload bytes this rank sent in one LASP-2 forward+backward. */
  lasp2BytesSent: number | null;
  /** Median of (wall − collective wait) per LASP-2 iteration: this rank's own work (ms). */
  lasp2ComputeMs: number | null;
  /** Per timed LASP-2 iteration, this rank's collective waits (CollectiveTiming.phases). */
  lasp2Phases?: { ready: number; done: number }[][];
  /** Per mode, per tensor: the comparison with the single-process kernel (when checked). */
  errors: Partial<Record<SpMode, Record<string, ErrorPart>>>;
}

type Fwd = (ctx: SpContext, spec: AttentionSpec, s0?: Float32Array) => Promise<SpForwardResult>;
type Bwd = (ctx: SpContext, spec: AttentionSpec, f: SpForwardResult, dO: Float32Array, dSf?: Float32Array) => Promise<SpBackwardResult>;
const ALGORITHMS: Record<SpMode, [Fwd, Bwd]> = {
  lasp2: [lasp2Forward, lasp2Backward],
  lasp1: [lasp1Forward, lasp1Backward],
  ringkv: [ringKvForward, ringKvBackward],
};

function intIn(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    throw new Error(`${name} must be an integer in [${min}, ${max}], got ${JSON.stringify(v)}`);
  return v;
}

/** Configs that run in hybrid-layer.ts: the softmax / swa / conv kinds, and any kind zig-zag. */
function hybridConfig(c: unknown): HybridLayerConfig | null {
  if (c === null || typeof c !== 'object') return null;
  const o = c as Record<string, unknown>;
  const layout = o.layout ?? 'contiguous';
  if (!(LAYOUTS as readonly unknown[]).includes(layout))
    throw new Error(`layout must be one of ${LAYOUTS.join(', ')}, got ${JSON.stringify(o.layout)}`);
  const local = (LOCAL_KINDS as readonly unknown[]).includes(o.kind);
  if (!local && layout === 'contiguous') return null;
  const modes = o.modes ?? ['lasp2'];
  if (!Array.isArray(modes) || modes.length !== 1 || modes[0] !== 'lasp2')
    throw new Error(
      `modes must be ["lasp2"] for kind ${String(o.kind)} with layout ${String(layout)} (no baselines), got ${JSON.stringify(o.modes)}`,
    );
  if (o.causal === false) throw new Error(`causal must be true for kind ${String(o.kind)} with layout ${String(layout)}`);
  const kind = local ? (o.kind as LocalKind) : checkProblemConfig({ ...o, layout: undefined }).kind;
  const cfg: HybridLayerConfig = {
    kind,
    T: intIn('T', o.T, 1, 1 << 26),
    H: intIn('H', o.H, 1, 1024),
    dk: intIn('dk', o.dk, 1, 1024),
    dv: intIn('dv', o.dv, 1, 1024),
    seed: intIn('seed', o.seed, 0, 2 ** 40),
    layout: layout as LayoutName,
    repeats: o.repeats === undefined ? 3 : intIn('repeats', o.repeats, 1, 100),
    check: true,
  };
  if (o.check !== undefined && typeof o.check !== 'boolean') throw new Error(`check must be a boolean, got ${JSON.stringify(o.check)}`);
  if (o.check === false) cfg.check = false;
  if (o.chunk !== undefined) cfg.chunk = intIn('chunk', o.chunk, 1, 1024);
  if (kind === 'swa') cfg.window = intIn('window', o.window, 1, 1 << 26);
  else if (o.window !== undefined)
    throw new Error(`window applies to kind swa only, got window ${JSON.stringify(o.window)} with kind ${kind}`);
  if (kind === 'conv') cfg.convSize = o.convSize === undefined ? 4 : intIn('convSize', o.convSize, 1, 64);
  else if (o.convSize !== undefined)
    throw new Error(`convSize applies to kind conv only, got convSize ${JSON.stringify(o.convSize)} with kind ${kind}`);
  for (const f of ['withInitialState', 'withFinalGrad'] as const) {
    if (o[f] !== undefined && typeof o[f] !== 'boolean') throw new Error(`${f} must be a boolean, got ${JSON.stringify(o[f])}`);
    if (typeof o[f] === 'boolean') cfg[f] = o[f];
  }
  return cfg;
}

export function checkSpLayerConfig(c: unknown): Required<Pick<SpLayerConfig, 'modes' | 'repeats' | 'check'>> & ProblemConfig {
  const base = checkProblemConfig(c);
  const o = c as Record<string, unknown>;
  const modes = o.modes ?? ['lasp2'];
  if (!Array.isArray(modes) || modes.length === 0 || !modes.every((m) => (SP_MODES as readonly string[]).includes(m as string))) {
    throw new Error(`modes must be a non-empty list of ${SP_MODES.join(', ')}, got ${JSON.stringify(o.modes)}`);
  }
  if (base.causal === false && modes.some((m) => m !== 'lasp2')) throw new Error('lasp1 and ringkv baselines are causal only');
  const repeats = o.repeats ?? 3;
  if (typeof repeats !== 'number' || !Number.isInteger(repeats) || repeats < 1 || repeats > 100) {
    throw new Error(`repeats must be an integer in [1, 100], got ${JSON.stringify(o.repeats)}`);
  }
  const check = o.check ?? true;
  if (typeof check !== 'boolean') throw new Error(`check must be a boolean, got ${JSON.stringify(o.check)}`);
  return { ...base, modes: modes as SpMode[], repeats, check };
}

function compare(x: Float32Array, ref: Float32Array): ErrorPart {
  let maxAbsDiff = 0;
  let maxAbsRef = 0;
  for (let i = 0; i < ref.length; i++) {
    const r = ref[i] as number;
    const d = Math.abs((x[i] as number) - r);
    maxAbsDiff = d > maxAbsDiff || Number.isNaN(d) ? (Number.isNaN(d) ? Infinity : d) : maxAbsDiff;
    maxAbsRef = Math.max(maxAbsRef, Math.abs(r));
  }
  return { maxAbsDiff, maxAbsRef };
}

async function barrier(comm: Communicator, step: number): Promise<void> {
  await comm.allGather({ step, layer: 0, op: 'barrier' }, new Uint8Array(1));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

/**
 * One rank's side of `lasp bench sp`: the distributed layer on `deviceKernels` (the worker's device),
 * checked against the single-process CPU kernels.
 */
export async function runSpLayer(comm: Communicator, config: unknown, deviceKernels: KernelSet = cpuKernels): Promise<SpLayerRankResult> {
  const hybrid = hybridConfig(config);
  if (hybrid) {
    const r = await runHybridLayer(comm, hybrid, deviceKernels);
    return {
      rank: comm.rank,
      world: comm.world,
      tokens: r.tokens,
      ms: { lasp2: r.ms },
      lasp2CollectiveMs: r.collectiveMs,
      lasp2BytesSent: r.bytesSent,
      lasp2ComputeMs: r.computeMs,
      errors: r.errors ? { lasp2: r.errors } : {},
    };
  }
  const cfg = checkSpLayerConfig(config);
  const blocks = splitBlocks(cfg.T, comm.world);
  const block = blocks[comm.rank];
  if (!block) throw new Error(`rank ${comm.rank} has no block (world ${comm.world})`);
  const p: Problem = await makeProblem(cfg, block);
  const out: SpLayerRankResult = {
    rank: comm.rank,
    world: comm.world,
    tokens: block.end - block.start,
    ms: {},
    lasp2CollectiveMs: null,
    lasp2BytesSent: null,
    lasp2ComputeMs: null,
    errors: {},
  };
  const results: Partial<Record<SpMode, { f: SpForwardResult; b: SpBackwardResult }>> = {};
  let step = 0;
  for (const [layer, mode] of cfg.modes.entries()) {
    const [fwd, bwd] = ALGORITHMS[mode];
    const times: number[] = [];
    const coll: number[] = [];
    for (let it = 0; it <= cfg.repeats; it++) {
      await barrier(comm, ++step);
      const ctx: SpContext = { comm, step: ++step, layer: layer + 1, timing: { collectiveMs: 0, phases: [] }, kernels: deviceKernels };
      if (mode === 'lasp2' && it === 0) comm.resetStats();
      const t0 = performance.now();
      const f = await fwd(ctx, p.spec, p.initialState);
      const b = await bwd(ctx, p.spec, f, p.dO, p.dFinalState);
      const ms = performance.now() - t0;
      if (mode === 'lasp2' && it === 0) out.lasp2BytesSent = comm.stats.bytesSent;
      if (it === 0) results[mode] = { f, b };
      else {
        times.push(ms);
        coll.push(ctx.timing?.collectiveMs ?? 0);
        if (mode === 'lasp2') (out.lasp2Phases ??= []).push(ctx.timing?.phases ?? []);
      }
    }
    out.ms[mode] = median(times);
    if (mode === 'lasp2') {
      out.lasp2CollectiveMs = median(coll);
      out.lasp2ComputeMs = median(times.map((t, i) => t - coll[i]!));
    }
  }
  if (cfg.check) {
    const full = await makeProblem(cfg);
    const spec = { ...full.spec, ...(full.initialState ? { initialState: full.initialState } : {}) };
    const rf = await kernels.forward(spec);
    const rb = await kernels.backward(spec, full.dO, full.dFinalState);
    const { H, dk, dv } = cfg;
    const gw = cfg.kind === 'vector_gate' ? H * dk : H;
    for (const mode of cfg.modes) {
      const r = results[mode];
      if (!r) continue;
      const e: Record<string, ErrorPart> = {
        o: compare(r.f.o, rows(rf.o, block, H * dv)),
        dq: compare(r.b.dq, rows(rb.dq, block, H * dk)),
        dk: compare(r.b.dk, rows(rb.dk, block, H * dk)),
        dv: compare(r.b.dv, rows(rb.dv, block, H * dv)),
      };
      if (rb.dg && r.b.dg) e.dg = compare(r.b.dg, rows(rb.dg, block, gw));
      if (rb.dbeta && r.b.dbeta) e.dbeta = compare(r.b.dbeta, rows(rb.dbeta, block, H));
      // The final state and the initial-state gradient: LASP-2 gives them on every rank;
      // the baselines only on the last (final state) and first (dS_0) rank.
      if (mode === 'lasp2' || comm.rank === comm.world - 1) e.finalState = compare(r.f.finalState, rf.finalState);
      if (rb.dInitialState && (mode === 'lasp2' || comm.rank === 0)) e.dInitialState = compare(r.b.dInitialState, rb.dInitialState);
      out.errors[mode] = e;
    }
  }
  return out;
}

/**
 * Combines the ranks' comparisons: max over tensors of (max |diff|) / (max |ref|). Infinity when
 * a value is not finite; NaN when none of the named tensors was compared at all.
 */
export function combineErrors(parts: Record<string, ErrorPart>[], names: string[]): number {
  let worst = NaN;
  for (const name of names) {
    let diff = 0;
    let ref = 0;
    let seen = false;
    for (const p of parts) {
      const e = p[name];
      if (!e) continue;
      seen = true;
      if (!Number.isFinite(e.maxAbsDiff) || !Number.isFinite(e.maxAbsRef)) return Infinity;
      diff = Math.max(diff, e.maxAbsDiff);
      ref = Math.max(ref, e.maxAbsRef);
    }
    if (!seen) continue;
    const err = ref > 0 ? diff / ref : diff > 0 ? Infinity : 0;
    worst = Number.isNaN(worst) ? err : Math.max(worst, err);
  }
  return worst;
}

export const OUTPUT_TENSORS = ['o', 'finalState', 'y'];
export const GRAD_TENSORS = ['dq', 'dk', 'dv', 'dg', 'dbeta', 'dInitialState', 'dx', 'dw'];

registerTask('sp-layer', async ({ comm, config, kernels }: TaskContext) => ({ result: await runSpLayer(comm, config, kernels) }));
