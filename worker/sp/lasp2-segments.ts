// LASP-2 over a layout whose ranks hold several segments (the zig-zag layout: rank r holds
// segments r and 2W−1−r of 2W). The affine fold of DESIGN.md §3 runs unchanged over the segments
// in sequence order: each rank sends the summaries of all its segments in ONE AllGather message
// (forward) and their state gradients in one (backward), and every rank folds all segments.
import { summaryALength, type AttentionSpec, type BackwardResult } from '../../native/kernels.js';
import { kernelsOf, tag, stateSize, timed, type SpContext } from './lasp2.js';
import { ownSegments, type Layout } from './layout.js';
import { pack, unpack } from './wire.js';

export interface SegForward {
  /** Per own segment (sequence order): outputs and the state entering it. */
  o: Float32Array[];
  incoming: Float32Array[];
  /** State after the whole sequence. */
  finalState: Float32Array;
  /** Compact A of every segment of the layout, in sequence order. */
  a: Float32Array[];
}

function check(ctx: SpContext, layout: Layout, specs: AttentionSpec[]) {
  const own = ownSegments(layout, ctx.comm.rank);
  if (layout.world !== ctx.comm.world) throw new Error(`lasp2 segments: layout for ${layout.world} ranks, group has ${ctx.comm.world}`);
  if (specs.length !== own.length)
    throw new Error(`lasp2 segments: rank ${ctx.comm.rank} holds ${own.length} segments, got ${specs.length} specs`);
  for (const [i, s] of specs.entries()) {
    const want = own[i]!.block.end - own[i]!.block.start;
    if (s.T !== want) throw new Error(`lasp2 segments: segment ${own[i]!.index} has ${want} tokens, its spec ${s.T}`);
    if (s.causal === false) throw new Error('lasp2 segments: causal attention only');
  }
  return own;
}

/** Forward of one layer on this rank's segments (specs in sequence order, no initial states). */
export async function lasp2SegForward(
  ctx: SpContext,
  layout: Layout,
  specs: AttentionSpec[],
  initialState?: Float32Array,
): Promise<SegForward> {
  const own = check(ctx, layout, specs);
  const first = specs[0]!;
  const shape = { kind: first.kind, H: first.H, dk: first.dk, dv: first.dv };
  const n = stateSize(first);
  const aLen = summaryALength(first.kind, first.H, first.dk);
  const mine: Float32Array[] = [];
  for (const s of specs) {
    const x = await kernelsOf(ctx).summary(s);
    mine.push(x.a, x.u);
  }
  const parts = await timed(ctx, ctx.comm.allGather(tag(ctx, 'fwd.summary'), pack(mine)));
  // Every segment's summary, in sequence order.
  const summaries: { a: Float32Array; u: Float32Array }[] = new Array(layout.segments.length);
  for (const [r, p] of parts.entries()) {
    const segs = ownSegments(layout, r);
    const x = unpack(
      p,
      segs.flatMap(() => [aLen, n]),
      `fwd.summary from rank ${r}`,
    );
    for (const [i, s] of segs.entries()) summaries[s.index] = { a: x[2 * i]!, u: x[2 * i + 1]! };
  }
  const states = await kernelsOf(ctx).foldStates(shape, summaries, initialState);
  const o: Float32Array[] = [];
  const incoming: Float32Array[] = [];
  for (const [i, s] of specs.entries()) {
    const inc = states[own[i]!.index]!;
    incoming.push(inc);
    o.push((await kernelsOf(ctx).forward({ ...s, initialState: inc })).o);
  }
  return { o, incoming, finalState: states[layout.segments.length]!, a: summaries.map((s) => s.a) };
}

/** Backward: per own segment, the gradients; and dS_0 (the same on every rank). */
export async function lasp2SegBackward(
  ctx: SpContext,
  layout: Layout,
  specs: AttentionSpec[],
  fwd: SegForward,
  dO: Float32Array[],
  dFinalState?: Float32Array,
): Promise<{ grads: BackwardResult[]; dInitialState: Float32Array }> {
  const own = check(ctx, layout, specs);
  const first = specs[0]!;
  const shape = { kind: first.kind, H: first.H, dk: first.dk, dv: first.dv };
  const n = stateSize(first);
  const mine: Float32Array[] = [];
  for (const [i, s] of specs.entries()) mine.push(await kernelsOf(ctx).stateGrad(s, dO[i]!));
  const parts = await timed(ctx, ctx.comm.allGather(tag(ctx, 'bwd.stategrad'), pack(mine)));
  const d: Float32Array[] = new Array(layout.segments.length);
  for (const [r, p] of parts.entries()) {
    const segs = ownSegments(layout, r);
    const x = unpack(
      p,
      segs.map(() => n),
      `bwd.stategrad from rank ${r}`,
    );
    for (const [i, s] of segs.entries()) d[s.index] = x[i]!;
  }
  const { e, dInitialState } = await kernelsOf(ctx).suffixFold(shape, fwd.a, d, dFinalState);
  const grads: BackwardResult[] = [];
  for (const [i, s] of specs.entries())
    grads.push(await kernelsOf(ctx).backward({ ...s, initialState: fwd.incoming[i]! }, dO[i]!, e[own[i]!.index]));
  return { grads, dInitialState };
}
