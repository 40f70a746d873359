// The 'native' stream transport (native/src/h2_conn.cc, native-peer-server.ts,
// native-peer-stream.ts): collectives between two endpoints on loopback go over the addon's
// connections, tokens are checked there, malformed input closes only the offending connection, a
// closed peer fails the op, flow control holds with small windows, it interoperates with 'raw' and
// 'http2' endpoints both ways, and training across worker processes gives the same losses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import type { PeerEndpointOptions } from '../worker/peer-endpoint.js';
import { endpointOn, shut } from './helpers/peer-endpoint.js';
import { announcedRawPort, exchange, onePiece, randomBytes } from './helpers/peer-exchange.js';
import { checkClosedPeerFailsOp, checkListenerCollectives } from './helpers/listener-transport.js';
import { nativeServerCounters } from '../worker/collectives/native-peer-server.js';
import { nativeClientCounters, NativePeerStream } from '../worker/collectives/native-peer-stream.js';
import { rawServerCounters } from '../worker/collectives/raw-peer-server.js';
import { H2NativeClient, H2NativeListener, type H2Event } from '../native/h2-native.js';
import { caseSeed, Rng } from './helpers/rng.js';
import { assertTrainingMatchesHttp2 } from './helpers/transport-training.js';

test('native transport: collectives of 1 B … 3 MiB go over the addon, results equal the input; garbage closes only its connection', async () => {
  await checkListenerCollectives(
    {
      transport: 'native',
      served: () => nativeServerCounters.pieces,
      moved: () => nativeClientCounters.connections,
      movedWhat: 'both ranks opened native connections',
      open: (port, authorization) => new NativePeerStream('127.0.0.1', port, { authorization }),
      // Malformed connections end with GOAWAY where they are HTTP/2.
      refused: () => nativeServerCounters.closedWithError,
      minRefused: 8,
      refusedWhat: 'connections closed with GOAWAY',
    },
    new Rng(caseSeed('native-peer collectives')),
  );
});

test('native transport: a piece that completed when written and is refused later aborts its group', async () => {
  const opts: PeerEndpointOptions = { streamTransport: 'native', timeoutMs: 8000 };
  const a = await endpointOn(opts);
  const b = await endpointOn(opts);
  try {
    const peers = [a.address, b.address];
    const comms = [a.ep, b.ep].map((ep, rank) => ep.joinGroup({ jobId: 'late', generation: 1, rank, world: 2, peers }));
    const blk = new Uint8Array(4096).fill(7);
    // Accepted pieces of generation 1 on the native call: later ones complete once written.
    for (let step = 0; step < 3; step++) await Promise.all(comms.map((c) => c.allGather({ step, layer: 0, op: 'warm' }, blk)));
    const early0 = nativeClientCounters.completedWhenWritten;
    await Promise.all(comms.map((c) => c.allGather({ step: 3, layer: 0, op: 'warm' }, blk)));
    assert.ok(nativeClientCounters.completedWhenWritten > early0, 'pieces completed when written');
    // Rank 1 moves on to generation 2: a piece of generation 1 is refused (FAILED_PRECONDITION) after
    // its send completed, and rank 0's group 1 is aborted instead of waiting for its deadline.
    b.ep.joinGroup({ jobId: 'late', generation: 2, rank: 1, world: 2, peers });
    const late0 = nativeClientCounters.lateFailures;
    await comms[0]!.send({ step: 4, layer: 0, op: 'orphan' }, 1, blk);
    const t0 = Date.now();
    await assert.rejects(
      comms[0]!.recv({ step: 5, layer: 0, op: 'next' }, 1),
      /aborted: a piece sent to rank 1 .* completed when written but then failed: FAILED_PRECONDITION: generation must be 2/,
    );
    assert.ok(Date.now() - t0 < 2000, `failed after ${Date.now() - t0} ms (deadline 8000)`);
    assert.equal(nativeClientCounters.lateFailures - late0, 1);
  } finally {
    shut(a, b);
  }
});

test('native transport: a message over the limit ends the call with RESOURCE_EXHAUSTED', async () => {
  const token = 'limit';
  const a = await endpointOn({ streamTransport: 'native', token, pieceBytes: 64 << 10, timeoutMs: 5000 });
  try {
    const port = await announcedRawPort(a.address, token);
    assert.ok(port !== null);
    // maxMessageBytes is max(4 MiB, pieceBytes + 64 KiB) = 4 MiB: a 5 MiB piece is refused.
    const s = new NativePeerStream('127.0.0.1', port, { authorization: `Bearer ${token}` });
    const big = { ...onePiece('x'), totalBytes: 5 << 20, data: new Uint8Array(5 << 20) };
    const st = await new Promise((resolve) => s.send(big, resolve));
    assert.equal((st as { code: number }).code, grpc.status.RESOURCE_EXHAUSTED, JSON.stringify(st));
    assert.match((st as { details: string }).details, /exceeds the limit of 4194304/);
    s.close();
  } finally {
    shut(a);
  }
});

test('native transport: a peer closed mid-op fails the op within its deadline', () => checkClosedPeerFailsOp('native'));

test('native transport interoperates with raw and http2 endpoints both ways', async () => {
  const rng = new Rng(caseSeed('native-peer interop'));
  for (const [ta, tb] of [
    ['native', 'raw'],
    ['raw', 'native'],
    ['http2', 'native'],
    ['native', 'http2'],
  ] as const) {
    const a = await endpointOn({ streamTransport: ta, token: 't', pieceBytes: 256 << 10, timeoutMs: 10_000 });
    const b = await endpointOn({ streamTransport: tb, token: 't', pieceBytes: 256 << 10, timeoutMs: 10_000 });
    const native0 = nativeServerCounters.pieces;
    const raw0 = rawServerCounters.pieces;
    try {
      const peers = [a.address, b.address];
      const comms = [a.ep, b.ep].map((ep, rank) => ep.joinGroup({ jobId: 'interop', generation: 1, rank, world: 2, peers }));
      for (let step = 0; step < 3; step++) await exchange(comms, rng, step);
      // A raw or native client moves to whichever listener its peer announces.
      const direct = (ta === 'http2' ? 0 : 1) + (tb === 'http2' ? 0 : 1);
      const onNative = nativeServerCounters.pieces - native0;
      const onRaw = rawServerCounters.pieces - raw0;
      if (direct === 2) assert.ok(onNative > 0 && onRaw > 0, `${ta}/${tb}: native ${onNative}, raw ${onRaw}`);
      else assert.equal(onNative + onRaw, 0, `${ta}/${tb}: an http2 peer neither announces nor moves`);
    } finally {
      shut(a, b);
    }
  }
});

/** Collects the events of one native object. */
class Events {
  readonly list: H2Event[] = [];
  private waiter: (() => void) | undefined;
  push = (e: H2Event) => {
    this.list.push(e);
    this.waiter?.();
  };
  async until(pred: (es: H2Event[]) => boolean, what: string, ms = 5000): Promise<void> {
    const t0 = Date.now();
    while (!pred(this.list)) {
      if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}; events: ${this.list.map((e) => e.kind).join(', ')}`);
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
        setTimeout(resolve, 50);
      });
    }
  }
}

function grpcMessage(payload: Uint8Array): Buffer {
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(payload.length, 1);
  return Buffer.concat([prefix, payload]);
}

test('native HTTP/2 connections: flow control with 64 KiB windows, several streams of messages, replies, bad arguments', async () => {
  const rng = new Rng(caseSeed('native-h2 flow'));
  const server = new Events();
  const listener = new H2NativeListener(
    '127.0.0.1',
    { maxMessageBytes: 4 << 20, recvWindow: 65535, windowBatch: 16384, maxStreams: 4, establishMs: 2000 },
    server.push,
  );
  const client = new Events();
  const c = new H2NativeClient('127.0.0.1', listener.port, { maxMessageBytes: 1 << 20, recvWindow: 65535, windowBatch: 8192 }, client.push);
  try {
    await client.until((es) => es.some((e) => e.kind === 'established'), 'established');
    const fields: [string, string][] = [
      [':method', 'POST'],
      [':path', '/x'],
      ['content-type', 'application/grpc'],
    ];
    assert.equal(c.request(1, fields), true);
    assert.equal(c.request(3, fields), true);
    // Messages of up to 3 MiB through 64 KiB windows: the writer must wait for WINDOW_UPDATEs.
    const sizes = [0, 1, 5, 65535, 65536, 200_000, 3 << 20, rng.int(1, 1 << 20)];
    const sent: Buffer[] = [];
    for (const [i, n] of sizes.entries()) {
      const payload = randomBytes(rng, n);
      const msg = grpcMessage(payload);
      sent.push(Buffer.from(payload));
      // The head is the first bytes, the rest is lent (as a piece's header buffer and its data).
      const cut = Math.min(msg.length, 3 + (i % 5));
      const r = c.send(i % 2 === 0 ? 1 : 3, msg.subarray(0, cut), msg.length > cut ? msg.subarray(cut) : undefined);
      // The first message that no longer fits the 64 KiB connection window (65,540 bytes after 21)
      // cannot go out whole; it and everything behind it wait for WINDOW_UPDATEs. (A small one may
      // also be 'queued' when another thread happens to be writing.)
      if (i === 3) assert.equal(r, 'queued', `send ${i} (${msg.length} B) exceeds the window`);
      else assert.notEqual(r, 'over', `send ${i} (${msg.length} B)`);
    }
    await server.until((es) => es.filter((e) => e.kind === 'message').length === sizes.length, 'all messages');
    const heads = server.list.filter((e) => e.kind === 'headers');
    assert.equal(heads.length, 2);
    const h = heads[0] as Extract<H2Event, { kind: 'headers' }>;
    assert.equal(h.fields.get(':path'), '/x');
    const msgs = server.list.filter((e): e is Extract<H2Event, { kind: 'message' }> => e.kind === 'message');
    for (const sid of [1, 3]) {
      const want = sent.filter((_, i) => (i % 2 === 0 ? 1 : 3) === sid);
      const got = msgs.filter((m) => m.streamId === sid).map((m) => m.body);
      assert.equal(got.length, want.length, `stream ${sid}`);
      for (const [i, g] of got.entries()) assert.ok(Buffer.from(g).equals(want[i]!), `stream ${sid} message ${i} (${want[i]!.length} B)`);
    }
    // Replies back, then trailers end stream 1.
    const connId = msgs[0]!.connId;
    assert.equal(listener.respond(connId, 1, [[':status', '200']], false), true);
    for (let i = 0; i < 20; i++) assert.equal(listener.send(connId, 1, grpcMessage(randomBytes(rng, 9000))), true);
    assert.equal(listener.respond(connId, 1, [['grpc-status', '0']], true), true);
    await client.until((es) => es.some((e) => e.kind === 'headers' && e.endStream), 'trailers');
    assert.equal(client.list.filter((e) => e.kind === 'message').length, 20);
    // Bad arguments are refused with the field named.
    assert.throws(() => new H2NativeClient('127.0.0.1', 0, {}, () => {}), /port must be in \[1, 65535\]/);
    assert.throws(() => new H2NativeListener('127.0.0.1', { recvWindow: 10 }, () => {}), /options.recvWindow must be an integer/);
    assert.throws(() => c.request(2, fields), /streamId must be odd/);
  } finally {
    c.close();
    listener.close();
  }
  assert.throws(() => c.send(1, new Uint8Array(1), undefined), /the connection is closed/);
});

test('native HTTP/2 client: a port nobody listens on ends with a closed event naming it', async () => {
  const probe = new H2NativeListener('127.0.0.1', {}, () => {});
  const port = probe.port;
  probe.close();
  const ev = new Events();
  const c = new H2NativeClient('127.0.0.1', port, { establishMs: 2000 }, ev.push);
  try {
    await ev.until((es) => es.some((e) => e.kind === 'closed'), 'closed');
    const closed = ev.list.find((e) => e.kind === 'closed') as Extract<H2Event, { kind: 'closed' }>;
    assert.match(closed.reason, new RegExp(`cannot connect to 127.0.0.1:${port}`));
  } finally {
    c.close();
  }
});

test('native transport between worker processes: training gives the same losses as http2', async () => {
  await assertTrainingMatchesHttp2('native');
});
