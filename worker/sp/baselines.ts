// Baselines for the benchmark only (DESIGN.md §3), run in the same runtime as LASP-2:
//  - LASP-1: the running state is passed rank to rank (W-1 sequential hops each way).
//  - Ring-KV: every rank's raw block (k, v, gates) travels around the ring, and each rank
//    recomputes the summaries of the blocks before it; backward, (q, k, v, gates, dO) travel the
//    other way and each rank recomputes the state gradients of the blocks after it. Its traffic
//    grows with T, which is what LASP-2 avoids.
// Causal only.
import type { AttentionSpec, BlockSummary } from '../../native/kernels.js';
import { bytesF32, f32Bytes, pack, unpack } from './wire.js';
import { kernelsOf, stateSize, tag, type SpBackwardResult, type SpContext, type SpForwardResult } from './lasp2.js';

export async function lasp1Forward(ctx: SpContext, spec: AttentionSpec, initialState?: Float32Array): Promise<SpForwardResult> {
  const { comm } = ctx;
  const n = stateSize(spec);
  const incoming =
    comm.rank === 0 ? (initialState ?? new Float32Array(n)) : bytesF32(await comm.recv(tag(ctx, 'lasp1.fwd'), comm.rank - 1), 'lasp1.fwd');
  const f = await kernelsOf(ctx).forward({ ...spec, initialState: incoming });
  if (comm.rank < comm.world - 1) await comm.send(tag(ctx, 'lasp1.fwd'), comm.rank + 1, f32Bytes(f.finalState));
  return { o: f.o, incoming, finalState: f.finalState, a: [] };
}

export async function lasp1Backward(
  ctx: SpContext,
  spec: AttentionSpec,
  fwd: SpForwardResult,
  dO: Float32Array,
  dFinalState?: Float32Array,
): Promise<SpBackwardResult> {
  const { comm } = ctx;
  const n = stateSize(spec);
  const dEnd =
    comm.rank === comm.world - 1
      ? (dFinalState ?? new Float32Array(n))
      : bytesF32(await comm.recv(tag(ctx, 'lasp1.bwd'), comm.rank + 1), 'lasp1.bwd');
  const g = await kernelsOf(ctx).backward({ ...spec, initialState: fwd.incoming }, dO, dEnd);
  const dInitialState = g.dInitialState as Float32Array;
  if (comm.rank > 0) await comm.send(tag(ctx, 'lasp1.bwd'), comm.rank - 1, f32Bytes(dInitialState));
  return { ...g, dInitialState };
}

/** The tensors of a block that a ring step carries, with its token count first. */
function packBlock(spec: AttentionSpec, extra: Float32Array[]): Uint8Array {
  const parts = [Float32Array.of(spec.T), spec.q, spec.k, spec.v];
  if (spec.g) parts.push(spec.g);
  if (spec.beta) parts.push(spec.beta);
  return pack([...parts, ...extra]);
}

function unpackBlock(like: AttentionSpec, msg: Uint8Array, withDo: boolean): { spec: AttentionSpec; dO?: Float32Array } {
  const T = bytesF32(msg, 'ring block').at(0);
  if (T === undefined || !Number.isInteger(T) || T < 1) throw new Error(`ring block: bad token count ${T}`);
  const { H, dk, dv } = like;
  const lengths = [1, T * H * dk, T * H * dk, T * H * dv];
  const gLen = like.g ? (like.kind === 'vector_gate' ? T * H * dk : T * H) : 0;
  if (gLen) lengths.push(gLen);
  if (like.beta) lengths.push(T * H);
  if (withDo) lengths.push(T * H * dv);
  const parts = unpack(msg, lengths, 'ring block');
  let i = 1;
  const spec: AttentionSpec = { ...like, T, q: parts[i++] as Float32Array, k: parts[i++] as Float32Array, v: parts[i++] as Float32Array };
  delete spec.initialState;
  if (gLen) spec.g = parts[i++] as Float32Array;
  if (like.beta) spec.beta = parts[i++] as Float32Array;
  return withDo ? { spec, dO: parts[i] as Float32Array } : { spec };
}

/** Passes `own` around the ring; calls visit(j, message) for each other rank's block j. */
async function ring(ctx: SpContext, op: string, own: Uint8Array, direction: 1 | -1, visit: (j: number, msg: Uint8Array) => Promise<void>) {
  const { comm } = ctx;
  const W = comm.world;
  let cur = own;
  for (let s = 1; s < W; s++) {
    const to = (comm.rank + direction + W) % W;
    const from = (comm.rank - direction + W) % W;
    const t = tag(ctx, `${op}.${s}`);
    const [, got] = await Promise.all([comm.send(t, to, cur), comm.recv(t, from)]);
    await visit((comm.rank - direction * s + W * W) % W, got);
    cur = got;
  }
}

export async function ringKvForward(ctx: SpContext, spec: AttentionSpec, initialState?: Float32Array): Promise<SpForwardResult> {
  const { comm } = ctx;
  const shape = { kind: spec.kind, H: spec.H, dk: spec.dk, dv: spec.dv };
  const before: BlockSummary[] = new Array(comm.rank);
  await ring(ctx, 'ringkv.fwd', packBlock(spec, []), 1, async (j, msg) => {
    if (j < comm.rank) before[j] = await kernelsOf(ctx).summary(unpackBlock(spec, msg, false).spec);
  });
  const incoming =
    comm.rank === 0
      ? (initialState ?? new Float32Array(stateSize(spec)))
      : ((await kernelsOf(ctx).foldStates(shape, before, initialState)).at(-1) as Float32Array);
  const f = await kernelsOf(ctx).forward({ ...spec, initialState: incoming });
  return { o: f.o, incoming, finalState: f.finalState, a: [] };
}

export async function ringKvBackward(
  ctx: SpContext,
  spec: AttentionSpec,
  fwd: SpForwardResult,
  dO: Float32Array,
  dFinalState?: Float32Array,
): Promise<SpBackwardResult> {
  const { comm } = ctx;
  const shape = { kind: spec.kind, H: spec.H, dk: spec.dk, dv: spec.dv };
  const after: { a: Float32Array; d: Float32Array }[] = new Array(comm.world);
  await ring(ctx, 'ringkv.bwd', packBlock(spec, [dO]), -1, async (j, msg) => {
    if (j <= comm.rank) return;
    const b = unpackBlock(spec, msg, true);
    const [s, d] = await Promise.all([kernelsOf(ctx).summary(b.spec), kernelsOf(ctx).stateGrad(b.spec, b.dO as Float32Array)]);
    after[j] = { a: s.a, d };
  });
  const later = after.slice(comm.rank + 1);
  const dEnd = later.length
    ? (
        await kernelsOf(ctx).suffixFold(
          shape,
          later.map((x) => x.a),
          later.map((x) => x.d),
          dFinalState,
        )
      ).dInitialState
    : (dFinalState ?? new Float32Array(stateSize(spec)));
  const g = await kernelsOf(ctx).backward({ ...spec, initialState: fwd.incoming }, dO, dEnd);
  return { ...g, dInitialState: g.dInitialState as Float32Array };
}
