// Softmax and sliding-window attention layers under sequence parallelism (DESIGN.md §3.1).
//
// Softmax (window 0): every rank sends its K and V rows to the ranks whose queries see them
// (causal: the ranks holding a later segment; with the contiguous layout the ranks after it, with
// the zig-zag layout nearly all), each rank attends its queries to the keys before its segments'
// ends, and the backward sends the gathered keys' dK, dV back to their owners, who add them to
// their own (a reduce-scatter restricted to the pairs that exchanged keys). Traffic grows with T.
//
// Sliding window w (≤ segment length + 1): a segment's queries see at most the w−1 positions before
// it, all in the previous segment, so each segment fetches a fixed-size halo of w−1 K/V rows from
// the owner of the previous segment and sends their gradient back. Traffic does not grow with T.
//
// Every call moves the B sequences of a batch in one message per peer pair. With `layout`
// undefined the layout is contiguous and its block lengths are learned from the messages (the
// model backend does not know the other ranks' lengths); with a layout given (tests, benchmark,
// zig-zag) the lengths are checked against it.
import { output, type SoftmaxSpec } from '../../native/kernels.js';
import type { LocalQkv, SoftmaxContext, SoftmaxShape } from '../../model/backend.js';
import type { Block } from './blocks.js';
import { kernelsOf, tag, timed, type SpContext } from './lasp2.js';
import { ownSegments, type Layout } from './layout.js';
import { concatF32, pack, unpack } from './wire.js';

export type { LocalQkv, SoftmaxShape };

interface SegmentCall {
  /** Local first row and row count of the segment. */
  offset: number;
  rows: number;
  /** Global index of the segment (tags the halo messages). */
  index: number;
  spec: SoftmaxSpec;
  fwd: { o: Float32Array; lse: Float32Array };
  /** Sliding window: halo rows in front of the segment's keys. */
  halo: number;
}

/** What the forward keeps for the backward. */
export interface SoftmaxSpState extends SoftmaxContext {
  shape: SoftmaxShape;
  rows: number;
  /** Per sequence, per own segment. */
  calls: SegmentCall[][];
  /** Softmax: per peer, the segments whose keys were received from it (global blocks, in order). */
  received: Map<number, Block[]>;
  /** Softmax: per peer, this rank's segments (local offset, rows) whose keys were sent to it. */
  sent: Map<number, { offset: number; rows: number }[]>;
  /** Softmax: rows of the gathered key prefix [0, prefix). */
  prefix: number;
  /** Sliding window: the neighbours of each own segment that exchange halos. */
  halos: HaloPlan;
}

export interface HaloPlan {
  /** Own segments: index, local offset, rows, halo rows it receives and the rank it comes from. */
  segs: { index: number; offset: number; rows: number; halo: number; from: number; next: number | null; nextHalo: number }[];
}

function rowsOf(seqs: LocalQkv[], shape: SoftmaxShape): number {
  const { H, dk, dv } = shape;
  const first = seqs[0];
  if (!first) throw new Error('softmax SP layer: no sequences');
  const T = first.q.length / (H * dk);
  if (!Number.isInteger(T) || T < 1)
    throw new Error(`softmax SP layer: q has ${first.q.length} floats, not a multiple of H·dk = ${H * dk}`);
  for (const [b, s] of seqs.entries()) {
    if (s.q.length !== T * H * dk || s.k.length !== T * H * dk || s.v.length !== T * H * dv)
      throw new Error(
        `softmax SP layer: sequence ${b} has q/k/v of ${s.q.length}/${s.k.length}/${s.v.length} floats, expected ${T * H * dk}/${T * H * dk}/${T * H * dv}`,
      );
  }
  return T;
}

const view = (a: Float32Array, offset: number, rows: number, width: number) => a.subarray(offset * width, (offset + rows) * width);

/** Forward of one softmax or sliding-window layer on this rank's rows of B sequences. */
export async function softmaxSpForward(
  ctx: SpContext,
  layout: Layout | undefined,
  shape: SoftmaxShape,
  seqs: LocalQkv[],
): Promise<{ o: Float32Array[]; state: SoftmaxSpState }> {
  const rows = rowsOf(seqs, shape);
  return shape.window > 0 ? windowForward(ctx, layout, shape, seqs, rows) : fullForward(ctx, layout, shape, seqs, rows);
}

/** Backward: dq, dk, dv of this rank's rows of each sequence, given dO of its outputs. */
export async function softmaxSpBackward(
  ctx: SpContext,
  state: SoftmaxSpState,
  dO: Float32Array[],
): Promise<{ dq: Float32Array; dk: Float32Array; dv: Float32Array }[]> {
  if (dO.length !== state.calls.length)
    throw new Error(`softmax SP backward: ${state.calls.length} sequences, ${dO.length} output gradients`);
  const { H, dv } = state.shape;
  for (const [b, d] of dO.entries())
    if (d.length !== state.rows * H * dv)
      throw new Error(`softmax SP backward: dO of sequence ${b} has ${d.length} floats, expected ${state.rows * H * dv}`);
  return state.shape.window > 0 ? windowBackward(ctx, state, dO) : fullBackward(ctx, state, dO);
}

// ------------------------------------------------------------------------------------------------
// Full causal softmax
// ------------------------------------------------------------------------------------------------

async function fullForward(ctx: SpContext, layout: Layout | undefined, shape: SoftmaxShape, seqs: LocalQkv[], rows: number) {
  const { comm } = ctx;
  const { H, dk, dv } = shape;
  const me = comm.rank;
  const B = seqs.length;
  // Who sends which of its segments to whom.
  const sent = new Map<number, { offset: number; rows: number }[]>();
  const expect = new Map<number, Block[] | null>(); // null: contiguous, length learned from the message
  let own: { offset: number; rows: number; block: Block | null; index: number }[];
  if (layout) {
    const mine = ownSegments(layout, me);
    const have = mine.reduce((s, x) => s + x.block.end - x.block.start, 0);
    if (have !== rows) throw new Error(`softmax SP layer: rank ${me} holds ${rows} rows per sequence, the layout gives it ${have}`);
    const maxEnd = (r: number) => Math.max(...ownSegments(layout, r).map((s) => s.block.end));
    for (let j = 0; j < comm.world; j++) {
      if (j === me) continue;
      const out = mine.filter((s) => s.block.start < maxEnd(j));
      if (out.length)
        sent.set(
          j,
          out.map((s) => ({ offset: s.offset, rows: s.block.end - s.block.start })),
        );
      const inc = ownSegments(layout, j).filter((s) => s.block.start < maxEnd(me));
      if (inc.length)
        expect.set(
          j,
          inc.map((s) => s.block),
        );
    }
    own = mine.map((s) => ({ offset: s.offset, rows: s.block.end - s.block.start, block: s.block, index: s.index }));
  } else {
    for (let j = me + 1; j < comm.world; j++) sent.set(j, [{ offset: 0, rows }]);
    for (let j = 0; j < me; j++) expect.set(j, null);
    own = [{ offset: 0, rows, block: null, index: me }];
  }
  const t = tag(ctx, 'softmax.kv');
  const sends = [...sent].map(([j, segs]) => {
    const parts: Float32Array[] = [];
    for (const s of seqs) {
      for (const g of segs) parts.push(view(s.k, g.offset, g.rows, H * dk));
      for (const g of segs) parts.push(view(s.v, g.offset, g.rows, H * dv));
    }
    return comm.send(t, j, pack(parts));
  });
  const received = new Map<number, Block[]>();
  // Per sequence: the pieces of the key prefix (global block, k rows, v rows).
  const pieces: { block: Block; k: Float32Array; v: Float32Array }[][] = seqs.map(() => []);
  let cursor = 0; // contiguous: the next global row
  for (const [j, blocks] of [...expect].sort((a, b) => a[0] - b[0])) {
    const msg = await timed(ctx, comm.recv(t, j));
    let bl: Block[];
    if (blocks) bl = blocks;
    else {
      const n = msg.byteLength / 4 / (B * H * (dk + dv));
      if (!Number.isInteger(n) || n < 1) throw new Error(`softmax.kv from rank ${j}: ${msg.byteLength} bytes is not B·T·H·(dk+dv) floats`);
      bl = [{ start: cursor, end: cursor + n }];
      cursor += n;
    }
    received.set(j, bl);
    const lens = bl.map((x) => x.end - x.start);
    const lengths = seqs.flatMap(() => [...lens.map((n) => n * H * dk), ...lens.map((n) => n * H * dv)]);
    const parts = unpack(msg, lengths, `softmax.kv from rank ${j}`);
    for (let b = 0; b < B; b++)
      for (const [i, block] of bl.entries())
        pieces[b]!.push({ block, k: parts[b * 2 * bl.length + i]!, v: parts[b * 2 * bl.length + bl.length + i]! });
  }
  await timed(ctx, Promise.all(sends));
  if (!layout) own[0]!.block = { start: cursor, end: cursor + rows };
  const prefix = Math.max(...own.map((s) => s.block!.end));
  const calls: SegmentCall[][] = [];
  const outs: Float32Array[] = [];
  for (const [b, s] of seqs.entries()) {
    for (const g of own)
      pieces[b]!.push({ block: g.block!, k: view(s.k, g.offset, g.rows, H * dk), v: view(s.v, g.offset, g.rows, H * dv) });
    const K = output(prefix * H * dk);
    const V = output(prefix * H * dv);
    let covered = 0;
    for (const p of pieces[b]!) {
      if (p.block.start >= prefix) continue;
      const n = Math.min(p.block.end, prefix) - p.block.start;
      K.set(p.k.subarray(0, n * H * dk), p.block.start * H * dk);
      V.set(p.v.subarray(0, n * H * dv), p.block.start * H * dv);
      covered += n;
    }
    if (covered !== prefix)
      throw new Error(`softmax SP layer: the gathered keys cover ${covered} of the ${prefix} rows before this rank's last query`);
    const segCalls: SegmentCall[] = [];
    for (const g of own) {
      const block = g.block!;
      const spec: SoftmaxSpec = {
        Tq: g.rows,
        Tk: block.end,
        H,
        dk,
        dv,
        causal: true,
        qOffset: block.start,
        q: view(s.q, g.offset, g.rows, H * dk),
        k: K.subarray(0, block.end * H * dk),
        v: V.subarray(0, block.end * H * dv),
        ...(shape.scale !== undefined ? { scale: shape.scale } : {}),
      };
      const fwd = await kernelsOf(ctx).softmax.forward(spec);
      segCalls.push({ offset: g.offset, rows: g.rows, index: g.index, spec, fwd, halo: 0 });
    }
    calls.push(segCalls);
    outs.push(segCalls.length === 1 ? segCalls[0]!.fwd.o : concatF32(segCalls.map((c) => c.fwd.o)));
  }
  const state: SoftmaxSpState = { sequences: seqs.length, shape, rows, calls, received, sent, prefix, halos: { segs: [] } };
  return { o: outs, state };
}

async function fullBackward(ctx: SpContext, state: SoftmaxSpState, dO: Float32Array[]) {
  const { comm } = ctx;
  const { H, dk, dv } = state.shape;
  const { rows, prefix } = state;
  // Per sequence: dq of the own rows, dK/dV over the whole key prefix.
  const dqs: Float32Array[] = [];
  const dKs: Float32Array[] = [];
  const dVs: Float32Array[] = [];
  for (const [b, segCalls] of state.calls.entries()) {
    const dq = segCalls.length === 1 ? null : output(rows * H * dk);
    let dK: Float32Array | null = null;
    let dV: Float32Array | null = null;
    let dqOnly: Float32Array | null = null;
    for (const c of segCalls) {
      const g = await kernelsOf(ctx).softmax.backward(c.spec, c.fwd, view(dO[b]!, c.offset, c.rows, H * dv));
      if (dq) dq.set(g.dq, c.offset * H * dk);
      else dqOnly = g.dq;
      const Tk = c.spec.Tk ?? c.rows;
      if (!dK || !dV) {
        if (Tk === prefix) {
          dK = g.dk;
          dV = g.dv;
        } else {
          dK = output(prefix * H * dk).fill(0);
          dV = output(prefix * H * dv).fill(0);
          await kernelsOf(ctx).addInto(dK.subarray(0, g.dk.length), g.dk);
          await kernelsOf(ctx).addInto(dV.subarray(0, g.dv.length), g.dv);
        }
      } else {
        await kernelsOf(ctx).addInto(dK.subarray(0, g.dk.length), g.dk);
        await kernelsOf(ctx).addInto(dV.subarray(0, g.dv.length), g.dv);
      }
    }
    dqs.push(dq ?? dqOnly!);
    dKs.push(dK!);
    dVs.push(dV!);
  }
  // dK, dV of the received keys go back to their owners; ours come back from those we sent to.
  const t = tag(ctx, 'softmax.dkv');
  const sends = [...state.received].map(([j, blocks]) => {
    const parts: Float32Array[] = [];
    for (let b = 0; b < dKs.length; b++) {
      for (const x of blocks) parts.push(dKs[b]!.subarray(x.start * H * dk, Math.min(x.end, prefix) * H * dk));
      for (const x of blocks) parts.push(dVs[b]!.subarray(x.start * H * dv, Math.min(x.end, prefix) * H * dv));
    }
    return comm.send(t, j, pack(parts));
  });
  // Own rows' dK/dV: this rank's own contribution first, then the peers' in rank order.
  const out: { dq: Float32Array; dk: Float32Array; dv: Float32Array }[] = [];
  const ownSegs = state.calls[0] ?? [];
  for (let b = 0; b < dKs.length; b++) {
    const dkOwn = output(rows * H * dk);
    const dvOwn = output(rows * H * dv);
    for (const c of ownSegs) {
      const start = c.spec.qOffset ?? 0;
      dkOwn.set(dKs[b]!.subarray(start * H * dk, (start + c.rows) * H * dk), c.offset * H * dk);
      dvOwn.set(dVs[b]!.subarray(start * H * dv, (start + c.rows) * H * dv), c.offset * H * dv);
    }
    out.push({ dq: dqs[b]!, dk: dkOwn, dv: dvOwn });
  }
  for (const [j, segs] of [...state.sent].sort((a, b) => a[0] - b[0])) {
    const msg = await timed(ctx, comm.recv(t, j));
    const lengths = out.flatMap(() => [...segs.map((g) => g.rows * H * dk), ...segs.map((g) => g.rows * H * dv)]);
    const parts = unpack(msg, lengths, `softmax.dkv from rank ${j}`);
    for (const [b, o] of out.entries())
      for (const [i, g] of segs.entries()) {
        await kernelsOf(ctx).addInto(view(o.dk, g.offset, g.rows, H * dk), parts[b * 2 * segs.length + i]!);
        await kernelsOf(ctx).addInto(view(o.dv, g.offset, g.rows, H * dv), parts[b * 2 * segs.length + segs.length + i]!);
      }
  }
  await timed(ctx, Promise.all(sends));
  return out;
}

// ------------------------------------------------------------------------------------------------
// Sliding window: halo exchange
// ------------------------------------------------------------------------------------------------

/**
 * Which halo of h rows each own segment receives (from the previous segment's owner) and sends
 * (to the next segment's owner). `what` names the layer in errors.
 */
export function haloPlan(
  comm: SpContext['comm'],
  layout: Layout | undefined,
  rows: number,
  h: number,
  what = `a sliding window of ${h + 1}`,
): HaloPlan {
  const me = comm.rank;
  if (!layout) {
    if (comm.world > 1 && rows < h) throw new Error(`${what} needs blocks of at least ${h} rows, this rank has ${rows}`);
    return {
      segs: [
        {
          index: me,
          offset: 0,
          rows,
          halo: me > 0 ? h : 0,
          from: me - 1,
          next: me + 1 < comm.world ? me + 1 : null,
          nextHalo: me + 1 < comm.world ? h : 0,
        },
      ],
    };
  }
  const segs = layout.segments;
  const haloOf = (i: number) => {
    if (i === 0) return 0;
    const need = Math.min(h, segs[i]!.start);
    const prev = segs[i - 1]!;
    if (need > prev.end - prev.start)
      throw new Error(`${what} needs segments of at least ${h} tokens; segment ${i - 1} has ${prev.end - prev.start}`);
    return need;
  };
  return {
    segs: ownSegments(layout, me).map((s) => ({
      index: s.index,
      offset: s.offset,
      rows: s.block.end - s.block.start,
      halo: haloOf(s.index),
      from: s.index > 0 ? layout.owner[s.index - 1]! : -1,
      next: s.index + 1 < segs.length ? layout.owner[s.index + 1]! : null,
      nextHalo: s.index + 1 < segs.length ? haloOf(s.index + 1) : 0,
    })),
  };
}

async function windowForward(ctx: SpContext, layout: Layout | undefined, shape: SoftmaxShape, seqs: LocalQkv[], rows: number) {
  const { comm } = ctx;
  const { H, dk, dv, window } = shape;
  const h = window - 1;
  const plan = haloPlan(comm, layout, rows, h);
  // Halo messages: segment i's last rows go to the owner of segment i+1 (kept locally when that is us).
  const local = new Map<number, Float32Array[]>();
  const sends: Promise<void>[] = [];
  for (const s of plan.segs) {
    if (s.next === null || s.nextHalo === 0) continue;
    const parts: Float32Array[] = [];
    for (const q of seqs) {
      parts.push(view(q.k, s.offset + s.rows - s.nextHalo, s.nextHalo, H * dk));
      parts.push(view(q.v, s.offset + s.rows - s.nextHalo, s.nextHalo, H * dv));
    }
    if (s.next === comm.rank) local.set(s.index + 1, parts);
    else sends.push(comm.send(tag(ctx, `swa.halo.${s.index + 1}`), s.next, pack(parts)));
  }
  const halos = new Map<number, Float32Array[]>();
  for (const s of plan.segs) {
    if (s.halo === 0) continue;
    const got = local.get(s.index);
    if (got) halos.set(s.index, got);
    else {
      const msg = await timed(ctx, comm.recv(tag(ctx, `swa.halo.${s.index}`), s.from));
      halos.set(
        s.index,
        unpack(
          msg,
          seqs.flatMap(() => [s.halo * H * dk, s.halo * H * dv]),
          `swa.halo.${s.index} from rank ${s.from}`,
        ),
      );
    }
  }
  await timed(ctx, Promise.all(sends));
  const calls: SegmentCall[][] = [];
  const outs: Float32Array[] = [];
  for (const [b, q] of seqs.entries()) {
    const segCalls: SegmentCall[] = [];
    for (const s of plan.segs) {
      const halo = halos.get(s.index);
      const k = view(q.k, s.offset, s.rows, H * dk);
      const v = view(q.v, s.offset, s.rows, H * dv);
      const spec: SoftmaxSpec = {
        Tq: s.rows,
        Tk: s.halo + s.rows,
        H,
        dk,
        dv,
        causal: true,
        qOffset: s.halo,
        window,
        q: view(q.q, s.offset, s.rows, H * dk),
        k: halo ? concatF32([halo[2 * b]!, k]) : k,
        v: halo ? concatF32([halo[2 * b + 1]!, v]) : v,
        ...(shape.scale !== undefined ? { scale: shape.scale } : {}),
      };
      segCalls.push({
        offset: s.offset,
        rows: s.rows,
        index: s.index,
        spec,
        fwd: await kernelsOf(ctx).softmax.forward(spec),
        halo: s.halo,
      });
    }
    calls.push(segCalls);
    outs.push(segCalls.length === 1 ? segCalls[0]!.fwd.o : concatF32(segCalls.map((c) => c.fwd.o)));
  }
  return {
    o: outs,
    state: {
      sequences: seqs.length,
      shape,
      rows,
      calls,
      received: new Map(),
      sent: new Map(),
      prefix: 0,
      halos: plan,
    } satisfies SoftmaxSpState,
  };
}

async function windowBackward(ctx: SpContext, state: SoftmaxSpState, dO: Float32Array[]) {
  const { comm } = ctx;
  const { H, dk, dv } = state.shape;
  const { rows } = state;
  const out: { dq: Float32Array; dk: Float32Array; dv: Float32Array }[] = [];
  // Per own segment index: the halo rows' gradient of each sequence ([dk, dv] per sequence).
  const dhalo = new Map<number, Float32Array[]>();
  for (const [b, segCalls] of state.calls.entries()) {
    const one = segCalls.length === 1;
    const dq = one ? null : output(rows * H * dk);
    const dkAll = one ? null : output(rows * H * dk);
    const dvAll = one ? null : output(rows * H * dv);
    let single: { dq: Float32Array; dk: Float32Array; dv: Float32Array } | null = null;
    for (const c of segCalls) {
      const g = await kernelsOf(ctx).softmax.backward(c.spec, c.fwd, view(dO[b]!, c.offset, c.rows, H * dv));
      const dkOwn = g.dk.subarray(c.halo * H * dk);
      const dvOwn = g.dv.subarray(c.halo * H * dv);
      if (c.halo > 0) {
        const list = dhalo.get(c.index) ?? [];
        list.push(g.dk.subarray(0, c.halo * H * dk), g.dv.subarray(0, c.halo * H * dv));
        dhalo.set(c.index, list);
      }
      if (one) single = { dq: g.dq, dk: dkOwn, dv: dvOwn };
      else {
        dq!.set(g.dq, c.offset * H * dk);
        dkAll!.set(dkOwn, c.offset * H * dk);
        dvAll!.set(dvOwn, c.offset * H * dv);
      }
    }
    out.push(single ?? { dq: dq!, dk: dkAll!, dv: dvAll! });
  }
  const plan = state.halos;
  const B = out.length;
  const sends: Promise<void>[] = [];
  const local = new Map<number, Float32Array[]>();
  for (const s of plan.segs) {
    if (s.halo === 0) continue;
    const parts = dhalo.get(s.index)!;
    if (s.from === comm.rank) local.set(s.index, parts);
    else sends.push(comm.send(tag(ctx, `swa.dhalo.${s.index}`), s.from, pack(parts)));
  }
  // The halo gradients of our segments' last rows, from the owner of each next segment (local
  // ones first: they come from segments this rank also holds).
  for (const s of plan.segs) {
    if (s.next === null || s.nextHalo === 0) continue;
    let parts = local.get(s.index + 1);
    if (!parts) {
      const msg = await timed(ctx, comm.recv(tag(ctx, `swa.dhalo.${s.index + 1}`), s.next));
      parts = unpack(
        msg,
        Array.from({ length: B }, () => [s.nextHalo * H * dk, s.nextHalo * H * dv]).flat(),
        `swa.dhalo.${s.index + 1} from rank ${s.next}`,
      );
    }
    for (const [b, o] of out.entries()) {
      await kernelsOf(ctx).addInto(view(o.dk, s.offset + s.rows - s.nextHalo, s.nextHalo, H * dk), parts[2 * b]!);
      await kernelsOf(ctx).addInto(view(o.dv, s.offset + s.rows - s.nextHalo, s.nextHalo, H * dv), parts[2 * b + 1]!);
    }
  }
  await timed(ctx, Promise.all(sends));
  return out;
}
