// The cases the two transports with a listener of their own ('raw', 'native') must both pass, run
// with each one's counters and stream class (raw-peer.test.ts, native-peer.test.ts).
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import type { DirectPeerStream } from '../../worker/collectives/raw-peer-stream.js';
import { endpointOn, shut } from './peer-endpoint.js';
import { announcedRawPort, exchange, onePiece, sendMalformed } from './peer-exchange.js';
import type { Rng } from './rng.js';

export interface ListenerTransport {
  transport: 'raw' | 'native';
  /** Pieces its listeners served (a process-wide counter). */
  served(): number;
  /** A counter that grows by at least 2 when both ranks' calls move to the peer's listener, and what it counts. */
  moved(): number;
  movedWhat: string;
  /** The transport's call, straight to a listener's port. */
  open(port: number, authorization: string): DirectPeerStream;
  /** Malformed connections its listeners counted, at least how many of sendMalformed's, and what is counted. */
  refused(): number;
  minRefused: number;
  refusedWhat: string;
}

/**
 * Collectives of 1 B … 3 MiB between two endpoints go over the listener and return the input; the
 * token is checked on the listener itself; malformed connections close only themselves, and the
 * endpoint keeps serving.
 */
export async function checkListenerCollectives(t: ListenerTransport, rng: Rng): Promise<void> {
  const token = `${t.transport}-token`;
  const opts = { streamTransport: t.transport, token, pieceBytes: 512 << 10, timeoutMs: 10_000 };
  const a = await endpointOn(opts);
  const b = await endpointOn(opts);
  const served0 = t.served();
  const moved0 = t.moved();
  try {
    const peers = [a.address, b.address];
    const comms = [a.ep, b.ep].map((ep, rank) => ep.joinGroup({ jobId: t.transport, generation: 1, rank, world: 2, peers }));
    for (let step = 0; step < 8; step++) await exchange(comms, rng, step);
    assert.ok(t.moved() - moved0 >= 2, t.movedWhat);
    assert.ok(t.served() - served0 > 20, `pieces over ${t.transport}: ${t.served() - served0}`);

    // Token checked on the listener itself.
    const port = await announcedRawPort(a.address, token);
    assert.ok(port !== null && port > 0, `the ${t.transport} listener is announced`);
    const wrong = t.open(port, 'Bearer nope');
    const st = await new Promise((resolve) => wrong.send({ ...onePiece(t.transport), fromRank: 1 }, resolve));
    assert.equal((st as { code: number }).code, grpc.status.UNAUTHENTICATED);
    wrong.close();

    // Malformed input closes only that connection; the endpoint keeps serving.
    const refused0 = t.refused();
    await sendMalformed(port, rng, token);
    assert.ok(t.refused() - refused0 >= t.minRefused, `${t.refusedWhat}: ${t.refused() - refused0}`);
    const before = t.served();
    await exchange(comms, rng, 100);
    assert.ok(t.served() > before, `still served over ${t.transport} after the garbage`);
  } finally {
    shut(a, b);
  }
}

/** A peer closed in the middle of a 2 MiB AllGather makes the op fail within its deadline. */
export async function checkClosedPeerFailsOp(transport: 'raw' | 'native'): Promise<void> {
  const opts = { streamTransport: transport, timeoutMs: 4000 };
  const a = await endpointOn(opts);
  const b = await endpointOn(opts);
  const peers = [a.address, b.address];
  const comms = [a.ep, b.ep].map((ep, rank) => ep.joinGroup({ jobId: 'dead', generation: 1, rank, world: 2, peers }));
  try {
    const blk = new Uint8Array(2 << 20);
    await Promise.all(comms.map((c) => c.allGather({ step: 0, layer: 0, op: 'warm' }, blk)));
    const t0 = Date.now();
    const op = comms[0]!.allGather({ step: 1, layer: 0, op: 'dead' }, blk);
    setTimeout(() => shut(b), 20);
    await assert.rejects(op, /UNAVAILABLE|deadline|timed out|closed/);
    assert.ok(Date.now() - t0 < 6000, `failed after ${Date.now() - t0} ms`);
  } finally {
    shut(a, b);
  }
}
