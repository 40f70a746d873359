// The 'raw' stream transport (raw-peer-server.ts, raw-peer-stream.ts): collectives between two
// endpoints on loopback really go over the raw listener, tokens are checked there, malformed input
// closes only the offending connection, a closed peer fails the op, and it interoperates with
// 'http2' endpoints in both directions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { endpointOn, shut } from './helpers/peer-endpoint.js';
import { rawServerCounters } from '../worker/collectives/raw-peer-server.js';
import { rawClientCounters, RawPeerStream, RAW_PORT_HEADER, SwitchingPeerStream } from '../worker/collectives/raw-peer-stream.js';
import type { PieceStatus } from '../worker/collectives/peer-stream.js';
import { caseSeed, Rng } from './helpers/rng.js';
import { assertTrainingMatchesHttp2 } from './helpers/transport-training.js';
import { exchange, onePiece } from './helpers/peer-exchange.js';
import { checkClosedPeerFailsOp, checkListenerCollectives } from './helpers/listener-transport.js';

test('raw transport: collectives of 1 B … 3 MiB go over the raw listener, results equal the input', async () => {
  await checkListenerCollectives(
    {
      transport: 'raw',
      served: () => rawServerCounters.pieces,
      moved: () => rawClientCounters.switches,
      movedWhat: 'both ranks switched to raw',
      open: (port, authorization) => new RawPeerStream('127.0.0.1', port, { authorization }),
      refused: () => rawServerCounters.protocolErrors,
      minRefused: 9,
      refusedWhat: 'protocol errors counted',
    },
    new Rng(caseSeed('raw-peer collectives')),
  );
});

test('raw transport: a peer closed mid-op fails the op within its deadline', () => checkClosedPeerFailsOp('raw'));

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
