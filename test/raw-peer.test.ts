// The 'raw' stream transport (raw-peer-server.ts, raw-peer-stream.ts): collectives between two
// endpoints on loopback really go over the raw listener, tokens are checked there, malformed input
// closes only the offending connection, a closed peer fails the op, and it interoperates with
// 'http2' endpoints in both directions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import type { PeerEndpointOptions } from '../worker/peer-endpoint.js';
import { endpointOn, shut } from './helpers/peer-endpoint.js';
import { rawServerCounters } from '../worker/collectives/raw-peer-server.js';
import { rawClientCounters, RawPeerStream, RAW_PORT_HEADER, SwitchingPeerStream } from '../worker/collectives/raw-peer-stream.js';
import type { PieceStatus } from '../worker/collectives/peer-stream.js';
import { caseSeed, Rng } from './helpers/rng.js';
import { assertTrainingMatchesHttp2 } from './helpers/transport-training.js';
import { announcedRawPort, exchange, onePiece, sendMalformed } from './helpers/peer-exchange.js';

test('raw transport: collectives of 1 B … 3 MiB go over the raw listener, results equal the input', async () => {
  const rng = new Rng(caseSeed('raw-peer collectives'));
  const token = 'raw-token';
  const opts: PeerEndpointOptions = { streamTransport: 'raw', token, pieceBytes: 512 << 10, timeoutMs: 10_000 };
  const a = await endpointOn(opts);
  const b = await endpointOn(opts);
  const pieces0 = rawServerCounters.pieces;
  const switches0 = rawClientCounters.switches;
  try {
    const peers = [a.address, b.address];
    const comms = [a.ep, b.ep].map((ep, rank) => ep.joinGroup({ jobId: 'raw', generation: 1, rank, world: 2, peers }));
    for (let step = 0; step < 8; step++) await exchange(comms, rng, step);
    assert.ok(rawClientCounters.switches - switches0 >= 2, 'both ranks switched to raw');
    assert.ok(rawServerCounters.pieces - pieces0 > 20, `pieces over raw: ${rawServerCounters.pieces - pieces0}`);

    // Token checked on the raw listener itself.
    const port = await announcedRawPort(a.address, token);
    assert.ok(port !== null && port > 0, 'the raw port is announced');
    const wrong = new RawPeerStream('127.0.0.1', port, { authorization: 'Bearer nope' });
    const st = await new Promise((resolve) => wrong.send({ ...onePiece('raw'), fromRank: 1 }, resolve));
    assert.equal((st as { code: number }).code, grpc.status.UNAUTHENTICATED);
    wrong.close();

    // Malformed input closes only that connection; the endpoint keeps serving.
    const errs0 = rawServerCounters.protocolErrors;
    await sendMalformed(port, rng, token);
    assert.ok(rawServerCounters.protocolErrors - errs0 >= 9, `protocol errors counted: ${rawServerCounters.protocolErrors - errs0}`);
    const before = rawServerCounters.pieces;
    await exchange(comms, rng, 100);
    assert.ok(rawServerCounters.pieces > before, 'still served over raw after the garbage');
  } finally {
    shut(a, b);
  }
});

test('raw transport: a peer closed mid-op fails the op within its deadline', async () => {
  const opts: PeerEndpointOptions = { streamTransport: 'raw', timeoutMs: 4000 };
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
});

test('raw transport interoperates with http2 endpoints both ways', async () => {
  const rng = new Rng(caseSeed('raw-peer interop'));
  for (const [ta, tb] of [
    ['http2', 'raw'],
    ['raw', 'http2'],
  ] as const) {
    const a = await endpointOn({ streamTransport: ta, token: 't', pieceBytes: 256 << 10, timeoutMs: 10_000 });
    const b = await endpointOn({ streamTransport: tb, token: 't', pieceBytes: 256 << 10, timeoutMs: 10_000 });
    try {
      const peers = [a.address, b.address];
      const comms = [a.ep, b.ep].map((ep, rank) => ep.joinGroup({ jobId: 'interop', generation: 1, rank, world: 2, peers }));
      for (let step = 0; step < 3; step++) await exchange(comms, rng, step);
    } finally {
      shut(a, b);
    }
  }
});

test('raw transport: an announced raw port that cannot be reached fails its pieces once, then the peer stays on http2', async () => {
  const closed = net.createServer();
  const port = await new Promise<number>((resolve) =>
    closed.listen(0, '127.0.0.1', () => resolve((closed.address() as net.AddressInfo).port)),
  );
  await new Promise<void>((resolve) => closed.close(() => resolve()));
  let h2Sends = 0;
  const s = new SwitchingPeerStream('127.0.0.1', (onResponse) => ({
    send: (_msg, cb) => {
      h2Sends++;
      onResponse({ [RAW_PORT_HEADER]: String(port) });
      setImmediate(() => cb(null));
      return () => {};
    },
    close: () => {},
  }));
  const piece = onePiece('j');
  const sendOne = () => new Promise<PieceStatus | null>((resolve) => s.send(piece, resolve));
  assert.equal(await sendOne(), null); // over http2; announces the (dead) raw port
  assert.equal((await sendOne())?.code, grpc.status.UNAVAILABLE); // over raw: refused
  assert.equal(await sendOne(), null); // back on http2
  assert.equal(await sendOne(), null);
  assert.equal(h2Sends, 3);
  assert.equal(s.onRaw, false);
  s.close();
});

test('raw transport between worker processes: training gives the same losses as http2, and the pieces moved to the raw listener', async () => {
  await assertTrainingMatchesHttp2('raw');
});
