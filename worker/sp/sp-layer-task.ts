// Task "sp-layer": run one attention layer forward + backward with sequence parallelism on
// this rank's block of a deterministic random problem, time LASP-2 against the baselines, and
// check the result against the single-process kernel on the whole sequence.
import { kernels } from '../../native/kernels.js';
import { registerTask, type TaskContext } from '../tasks.js';
import type { Communicator } from '../collectives/communicator.js';
import { lasp1Backward, lasp1Forward, ringKvBackward, ringKvForward } from './baselines.js';
import { rows, splitBlocks } from './blocks.js';
import { lasp2Backward, lasp2Forward, type SpBackwardResult, type SpContext, type SpForwardResult } from './lasp2.js';
import { checkProblemConfig, makeProblem, type Problem, type ProblemConfig } from './random-problem.js';
import type { AttentionSpec } from '../../native/kernels.js';

export const SP_MODES = ['lasp2', 'lasp1', 'ringkv'] as const;
export type SpMode = (typeof SP_MODES)[number];

export interface SpLayerConfig extends ProblemConfig {
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

export async function runSpLayer(comm: Communicator, config: unknown): Promise<SpLayerRankResult> {
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
      const ctx: SpContext = { comm, step: ++step, layer: layer + 1, timing: { collectiveMs: 0 } };
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
      }
    }
    out.ms[mode] = median(times);
    if (mode === 'lasp2') out.lasp2CollectiveMs = median(coll);
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

export const OUTPUT_TENSORS = ['o', 'finalState'];
export const GRAD_TENSORS = ['dq', 'dk', 'dv', 'dg', 'dbeta', 'dInitialState'];

registerTask('sp-layer', async ({ comm, config }: TaskContext) => ({ result: await runSpLayer(comm, config) }));
