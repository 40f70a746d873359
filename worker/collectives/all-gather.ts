// AllGather with blocks of any size per rank (uneven blocks: sizes travel in the headers).
//
// Each rank picks the path of ITS OWN block by its size, without agreement:
// - small blocks (<= directMaxBytes) go directly to every peer (op "<op>|ag.d"): one hop;
// - large blocks go around the ring (op "<op>|ag.r<origin>"): each rank forwards a ring block to
//   its successor as soon as it has it, until the block reaches the rank before its origin. Every
//   link carries W−1 blocks, the ring's bandwidth-optimal pattern, and forwarding is streamed
//   (no barrier between the W−1 steps).
// A receiver waits for block j on both paths (directly from j, or from its predecessor) and takes
// whichever comes; the sender only ever uses one.
import type { CollectiveTag } from './communicator.js';
import type { OpScope } from './op-scope.js';
import { nextRank, prevRank } from './ring.js';
import { wireOp, type ScopedTransport } from './transport.js';

export interface AllGatherOptions {
  /** Blocks up to this many bytes go directly to every peer; larger ones around the ring. */
  directMaxBytes: number;
  /** When known (e.g. inside allReduceSum), the size every block must have. */
  expectedBytes?: number;
}

export async function allGather(
  t: ScopedTransport,
  scope: OpScope,
  tag: CollectiveTag,
  data: Uint8Array,
  opts: AllGatherOptions,
): Promise<Uint8Array[]> {
  const { rank, world } = t;
  const out: Uint8Array[] = new Array<Uint8Array>(world);
  out[rank] = data;
  if (world === 1) return out;
  const next = nextRank(rank, world);
  const prev = prevRank(rank, world);
  const direct = wireOp(tag, 'ag.d');
  const ring = (origin: number) => wireOp(tag, `ag.r${origin}`);

  const parts: Promise<unknown>[] = [];
  for (let j = 0; j < world; j++) {
    if (j === rank) continue;
    // Post both possible receives before anything is sent.
    const viaDirect = t.recv(scope, tag, direct, j, opts.expectedBytes);
    const viaRing = t.recv(scope, tag, ring(j), prev, opts.expectedBytes);
    parts.push(
      firstOf(viaDirect, viaRing).then(async ({ value, index }) => {
        out[j] = value;
        if (index === 1 && next !== j) await t.send(scope, tag, ring(j), next, value);
      }),
    );
  }
  if (data.byteLength <= opts.directMaxBytes) {
    for (let j = 0; j < world; j++) if (j !== rank) parts.push(t.send(scope, tag, direct, j, data));
  } else {
    parts.push(t.send(scope, tag, ring(rank), next, data));
  }
  await Promise.all(parts);
  return out;
}

/**
 * The first of two receives to resolve; the other is left pending and is cancelled when the op
 * ends (OpScope cancels its remaining parts; see GrpcCommunicator.runOp).
 */
function firstOf<T>(a: Promise<T>, b: Promise<T>): Promise<{ value: T; index: 0 | 1 }> {
  return Promise.race([a.then((value) => ({ value, index: 0 as const })), b.then((value) => ({ value, index: 1 as const }))]);
}
