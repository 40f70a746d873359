// Generalised LASP-2 (DESIGN.md §3): one AllGather of block summaries forward and one of state
// gradients backward per layer, whatever the sequence length. Works for all five kinds, causal
// and non-causal (linear), uneven blocks and an optional initial state.
import { cpuKernels, type KernelSet } from '../../native/kernel-set.js';
import { summaryALength, type AttentionSpec, type BackwardResult, type SavedForward } from '../../native/kernels.js';
import type { CollectiveTag, Communicator } from '../collectives/communicator.js';
import { f32Bytes, pack, unpack, bytesF32 } from './wire.js';

export interface SpContext {
  comm: Communicator;
  step: number;
  layer: number;
  /**
   * Accumulates the time this rank waits for collectives, for benchmarks: call to resolve, or,
   * where compute overlaps the collective, only the wait left after the compute.
   */
  timing?: CollectiveTiming;
  /** Appended to every op name, so several calls of one (step, layer) stay apart (e.g. "#3" for sequence 3). Default "". */
  scope?: string;
  /** The kernels of this rank's device. Default the CPU's. */
  kernels?: KernelSet;
}

/** The kernel set a context runs on. */
export function kernelsOf(ctx: SpContext): KernelSet {
  return ctx.kernels ?? cpuKernels;
}

/** What the forward keeps for the backward. */
export interface SpForwardResult {
  /** This rank's outputs [T_r,H,dv]. */
  o: Float32Array;
  /** State entering this rank's block (P_r) [H,dk,dv]; for non-causal, the other ranks' share. */
  incoming: Float32Array;
  /** State at the end of the whole sequence [H,dk,dv] (every rank knows it). */
  finalState: Float32Array;
  /** Compact A of every rank's block (causal), indexed by rank. */
  a: Float32Array[];
}

export type SpBackwardResult = BackwardResult & { dInitialState: Float32Array };

/** Where a rank's time in collectives goes (benchmarks). */
export interface CollectiveTiming {
  /** Sum of this rank's waits. */
  collectiveMs: number;
  /**
   * When given, one entry per collective wait, in order: when this rank was ready for it (its own
   * work before it done) and when it had the result. Epoch ms (performance.timeOrigin + now), so
   * that the ranks' entries, from processes of one machine, can be compared: the last rank ready to
   * the last rank done is the time the collective adds to the layer's critical path.
   */
  phases?: { ready: number; done: number }[];
}

/** Adds one wait, from `ready` to `done` (performance.now() values), to ctx.timing. */
function noteWait(ctx: SpContext, ready: number, done: number): void {
  if (!ctx.timing) return;
  ctx.timing.collectiveMs += Math.max(0, done - ready);
  ctx.timing.phases?.push({ ready: performance.timeOrigin + ready, done: performance.timeOrigin + Math.max(done, ready) });
}

export function tag(ctx: SpContext, op: string): CollectiveTag {
  return { step: ctx.step, layer: ctx.layer, op: ctx.scope ? op + ctx.scope : op };
}

/** Awaits `p`, adding the wait to ctx.timing.collectiveMs (when timing is on). */
export async function timed<T>(ctx: SpContext, p: Promise<T>): Promise<T> {
  const t0 = performance.now();
  try {
    return await p;
  } finally {
    noteWait(ctx, t0, performance.now());
  }
}

/** Kinds whose output separates into (zero-state forward) + (incoming-state term). */
function separable(spec: AttentionSpec): boolean {
  return spec.kind === 'linear' || spec.kind === 'scalar_gate' || spec.kind === 'vector_gate';
}

export function stateSize(spec: AttentionSpec): number {
  return spec.H * spec.dk * spec.dv;
}

/**
 * Forward of one layer on this rank's block. `spec` is the block (no initialState);
 * `initialState` is the whole sequence's S_0 (the same on every rank; used by rank 0's fold).
 */
export async function lasp2Forward(ctx: SpContext, spec: AttentionSpec, initialState?: Float32Array): Promise<SpForwardResult> {
  const { comm } = ctx;
  const shape = { kind: spec.kind, H: spec.H, dk: spec.dk, dv: spec.dv };
  const n = stateSize(spec);
  if (spec.causal === false) {
    // Every output reads the common state S_0 + sum_j K_j^T V_j.
    const own = await kernelsOf(ctx).summary(spec);
    const parts = await timed(ctx, comm.allGather(tag(ctx, 'fwd.kv'), f32Bytes(own.u)));
    const others = parts
      .map((p, r) => ({ r, u: unpack(p, [n], `fwd.kv from rank ${r}`)[0] as Float32Array }))
      .filter((x) => x.r !== comm.rank);
    const incoming = others.length
      ? ((
          await kernelsOf(ctx).foldStates(
            shape,
            others.map((x) => ({ a: new Float32Array(0), u: x.u })),
            initialState,
          )
        ).at(-1) as Float32Array)
      : (initialState ?? new Float32Array(n));
    const f = await kernelsOf(ctx).forward({ ...spec, initialState: incoming });
    return { o: f.o, incoming, finalState: f.finalState, a: [] };
  }
  const aLen = summaryALength(spec.kind, spec.H, spec.dk);
  const own = await kernelsOf(ctx).summary(spec);
  let parts: Uint8Array[];
  let local: Promise<{ o: Float32Array }> | undefined;
  if (separable(spec)) {
    // Linear and gated (non-delta) kinds: the intra-block work needs no incoming state, so it
    // runs while the summaries are in flight; the state term is added afterwards. Only the time
    // this rank then still waits for the summaries counts as communication.
    let gatherDone = 0;
    let localDone = 0;
    const gather = comm.allGather(tag(ctx, 'fwd.summary'), pack([own.a, own.u])).then((r) => ((gatherDone = performance.now()), r));
    local = kernelsOf(ctx)
      .forward(spec)
      .then((r) => ((localDone = performance.now()), r));
    [parts] = await Promise.all([gather, local]);
    noteWait(ctx, localDone, gatherDone);
  } else {
    parts = await timed(ctx, comm.allGather(tag(ctx, 'fwd.summary'), pack([own.a, own.u])));
  }
  const summaries = parts.map((p, r) => {
    const [a, u] = unpack(p, [aLen, n], `fwd.summary from rank ${r}`) as [Float32Array, Float32Array];
    return { a, u };
  });
  const states = await kernelsOf(ctx).foldStates(shape, summaries, initialState);
  const incoming = states[comm.rank] as Float32Array;
  const finalState = states[comm.world] as Float32Array;
  let o: Float32Array;
  if (local) {
    o = (await local).o;
    await kernelsOf(ctx).addStateTerm(spec, incoming, o);
  } else {
    o = (await kernelsOf(ctx).forward({ ...spec, initialState: incoming })).o;
  }
  return { o, incoming, finalState, a: summaries.map((s) => s.a) };
}

/**
 * Backward of one layer on this rank's block, given dO of its outputs and (optionally) the
 * gradient of the whole sequence's final state. dInitialState is the gradient of S_0 (every
 * rank computes the same value).
 */
export async function lasp2Backward(
  ctx: SpContext,
  spec: AttentionSpec,
  fwd: SpForwardResult,
  dO: Float32Array,
  dFinalState?: Float32Array,
): Promise<SpBackwardResult> {
  const { comm } = ctx;
  const shape = { kind: spec.kind, H: spec.H, dk: spec.dk, dv: spec.dv };
  const n = stateSize(spec);
  const own = await kernelsOf(ctx).stateGrad(spec, dO);
  const parts = await timed(ctx, comm.allGather(tag(ctx, 'bwd.stategrad'), f32Bytes(own)));
  const d = parts.map((p, r) => bytesF32(p, `bwd.stategrad from rank ${r}`));
  for (const [r, x] of d.entries())
    if (x.length !== n) throw new Error(`bwd.stategrad from rank ${r}: expected ${n} floats, got ${x.length}`);
  if (spec.causal === false) {
    // Gradient of the common state: sum of every rank's Q^T dO plus dFinal.
    const sum = async (parts: Float32Array[]) =>
      (
        await kernelsOf(ctx).suffixFold(
          shape,
          parts.map(() => new Float32Array(0)),
          parts,
          dFinalState,
        )
      ).dInitialState;
    const others = d.filter((_, r) => r !== comm.rank);
    const fromOthers = others.length ? await sum(others) : dFinalState;
    const g = await kernelsOf(ctx).backward({ ...spec, initialState: fwd.incoming }, dO, fromOthers);
    return { ...g, dInitialState: await sum(d) };
  }
  const { e, dInitialState } = await kernelsOf(ctx).suffixFold(shape, fwd.a, d, dFinalState);
  const g = await kernelsOf(ctx).backward({ ...spec, initialState: fwd.incoming }, dO, e[comm.rank]);
  return { ...g, dInitialState };
}

/** Forward results of a batch of sequences, and what their backward needs. */
export interface SpBatchForward {
  results: SpForwardResult[];
  /** Per sequence: the chunk states of its forward (non-separable kinds), for the backward. */
  saved: (SavedForward | undefined)[];
}

/**
 * Forward of one layer on this rank's block of B sequences (causal, no initial state) with ONE
 * AllGather for the whole batch: every rank sends the B summaries of its blocks in one message,
 * so a step costs one round trip per layer, not B. Same results as B calls of lasp2Forward.
 */
export async function lasp2ForwardBatch(ctx: SpContext, specs: AttentionSpec[]): Promise<SpBatchForward> {
  const { comm } = ctx;
  const first = specs[0];
  if (!first) return { results: [], saved: [] };
  for (const [b, s] of specs.entries()) {
    if (s.causal === false) throw new Error('lasp2ForwardBatch: causal attention only (use lasp2Forward)');
    if (s.kind !== first.kind || s.H !== first.H || s.dk !== first.dk || s.dv !== first.dv)
      throw new Error(`lasp2ForwardBatch: sequence ${b} has another kind or shape than sequence 0`);
  }
  const shape = { kind: first.kind, H: first.H, dk: first.dk, dv: first.dv };
  const n = stateSize(first);
  const aLen = summaryALength(first.kind, first.H, first.dk);
  const own: { a: Float32Array; u: Float32Array }[] = [];
  for (const s of specs) own.push(await kernelsOf(ctx).summary(s));
  const message = pack(own.flatMap((x) => [x.a, x.u]));
  const lengths = specs.flatMap(() => [aLen, n]);
  let parts: Uint8Array[];
  let local: Promise<Float32Array[]> | undefined;
  if (separable(first)) {
    // As in lasp2Forward: the zero-state forwards run while the summaries are in flight.
    let gatherDone = 0;
    let localDone = 0;
    const gather = comm.allGather(tag(ctx, 'fwd.summary'), message).then((r) => ((gatherDone = performance.now()), r));
    local = (async () => {
      const os: Float32Array[] = [];
      for (const s of specs) os.push((await kernelsOf(ctx).forward(s)).o);
      localDone = performance.now();
      return os;
    })();
    [parts] = await Promise.all([gather, local]);
    noteWait(ctx, localDone, gatherDone);
  } else {
    parts = await timed(ctx, comm.allGather(tag(ctx, 'fwd.summary'), message));
  }
  const unpacked = parts.map((p, r) => unpack(p, lengths, `fwd.summary from rank ${r}`));
  const localO = local ? await local : undefined;
  const results: SpForwardResult[] = [];
  const saved: (SavedForward | undefined)[] = [];
  for (const [b, spec] of specs.entries()) {
    const summaries = unpacked.map((x) => ({ a: x[2 * b] as Float32Array, u: x[2 * b + 1] as Float32Array }));
    const states = await kernelsOf(ctx).foldStates(shape, summaries);
    const incoming = states[comm.rank] as Float32Array;
    const finalState = states[comm.world] as Float32Array;
    let o: Float32Array;
    if (localO) {
      o = localO[b] as Float32Array;
      await kernelsOf(ctx).addStateTerm(spec, incoming, o);
      saved.push(undefined);
    } else {
      const f = await kernelsOf(ctx).forward({ ...spec, initialState: incoming }, { saveForBackward: true });
      o = f.o;
      saved.push(f.saved);
    }
    results.push({ o, incoming, finalState, a: summaries.map((s) => s.a) });
  }
  return { results, saved };
}

/** Backward of lasp2ForwardBatch: ONE AllGather of the B state gradients. */
export async function lasp2BackwardBatch(
  ctx: SpContext,
  specs: AttentionSpec[],
  fwd: SpBatchForward,
  dOs: Float32Array[],
): Promise<SpBackwardResult[]> {
  const { comm } = ctx;
  const first = specs[0];
  if (!first) return [];
  if (fwd.results.length !== specs.length || dOs.length !== specs.length)
    throw new Error(`lasp2BackwardBatch: ${specs.length} sequences, ${fwd.results.length} forward results, ${dOs.length} output gradients`);
  const shape = { kind: first.kind, H: first.H, dk: first.dk, dv: first.dv };
  const n = stateSize(first);
  const own: Float32Array[] = [];
  for (const [b, s] of specs.entries()) own.push(await kernelsOf(ctx).stateGrad(s, dOs[b] as Float32Array));
  const parts = await timed(ctx, comm.allGather(tag(ctx, 'bwd.stategrad'), pack(own)));
  const lengths = specs.map(() => n);
  const unpacked = parts.map((p, r) => unpack(p, lengths, `bwd.stategrad from rank ${r}`));
  const out: SpBackwardResult[] = [];
  for (const [b, spec] of specs.entries()) {
    const f = fwd.results[b] as SpForwardResult;
    const d = unpacked.map((x) => x[b] as Float32Array);
    const { e, dInitialState } = await kernelsOf(ctx).suffixFold(shape, f.a, d);
    const g = await kernelsOf(ctx).backward({ ...spec, initialState: f.incoming }, dOs[b] as Float32Array, e[comm.rank], fwd.saved[b]);
    out.push({ ...g, dInitialState });
  }
  return out;
}
