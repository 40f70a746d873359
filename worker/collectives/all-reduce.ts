// AllReduce (sum) of float32 arrays, in place. Every rank ends with bit-identical results:
// - small arrays (<= directMaxBytes): AllGather, then every rank sums the blocks in rank order
//   0, 1, …, W−1 (the same additions everywhere);
// - large arrays: ring reduce-scatter (W−1 steps) then ring all-gather (W−1 steps). Segment c
//   (ringSegments) starts at rank c and is accumulated by ranks c+1, …, c+W−1 in that order
//   (each adds its own values to the partial sum it received); the rank that completes it
//   broadcasts it around the ring, so no rank ever sums it differently.
import { allGather } from './all-gather.js';
import type { CollectiveTag } from './communicator.js';
import type { OpScope } from './op-scope.js';
import { addInto, asFloat32, bytesOf } from './reduce.js';
import { mod, nextRank, prevRank, ringSegments } from './ring.js';
import { wireOp, type ScopedTransport } from './transport.js';

export interface AllReduceOptions {
  /** Arrays up to this many bytes are reduced by AllGather + local sum; larger ones by the ring. */
  directMaxBytes: number;
  /** Passed to the AllGather of the direct path. */
  gatherDirectMaxBytes: number;
}

export async function allReduceSum(
  t: ScopedTransport,
  scope: OpScope,
  tag: CollectiveTag,
  data: Float32Array,
  opts: AllReduceOptions,
): Promise<void> {
  const { rank, world } = t;
  if (world === 1) return;
  if (data.byteLength <= opts.directMaxBytes) {
    const gathered = await allGather(t, scope, { ...tag, op: wireOp(tag, 'ar') }, bytesOf(data), {
      directMaxBytes: opts.gatherDirectMaxBytes,
      expectedBytes: data.byteLength,
    });
    const acc = asFloat32(gathered[0]!).slice();
    for (let j = 1; j < world; j++) await addInto(acc, asFloat32(gathered[j]!));
    data.set(acc);
    return;
  }
  const segs = ringSegments(data.length, world);
  const next = nextRank(rank, world);
  const prev = prevRank(rank, world);
  const seg = (c: number) => {
    const s = segs[c]!;
    return data.subarray(s.start, s.end);
  };
  // Post every receive of both phases up front: a faster predecessor's messages then never wait in
  // the unposted buffer.
  const rsRecv: Promise<Uint8Array>[] = [];
  const agRecv: Promise<Uint8Array>[] = [];
  for (let s = 0; s < world - 1; s++) {
    rsRecv.push(t.recv(scope, tag, wireOp(tag, `ar.rs${s}`), prev, seg(mod(rank - s - 1, world)).byteLength));
    agRecv.push(t.recv(scope, tag, wireOp(tag, `ar.ag${s}`), prev, seg(mod(rank - s, world)).byteLength));
  }
  // Reduce-scatter: at step s send segment (rank − s), receive the partial sum of (rank − s − 1) and add our values to it.
  for (let s = 0; s < world - 1; s++) {
    const [, partial] = await Promise.all([
      t.send(scope, tag, wireOp(tag, `ar.rs${s}`), next, bytesOf(seg(mod(rank - s, world)))),
      rsRecv[s]!,
    ]);
    await addInto(seg(mod(rank - s - 1, world)), asFloat32(partial));
  }
  // All-gather: rank holds the complete segment (rank + 1); pass complete segments around.
  for (let s = 0; s < world - 1; s++) {
    const [, full] = await Promise.all([
      t.send(scope, tag, wireOp(tag, `ar.ag${s}`), next, bytesOf(seg(mod(rank + 1 - s, world)))),
      agRecv[s]!,
    ]);
    seg(mod(rank - s, world)).set(asFloat32(full));
  }
}
