// The 'raw' stream transport (raw-peer-server.ts, raw-peer-stream.ts): collectives between two
// endpoints on loopback really go over the raw listener, tokens are checked there, malformed input
// closes only the offending connection, a closed peer fails the op, and it interoperates with
// 'http2' endpoints in both directions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import type { PeerEndpointOptions } from '../worker/peer-endpoint.js';
import { endpointOn, shut } from './helpers/peer-endpoint.js';
import { rawServerCounters } from '../worker/collectives/raw-peer-server.js';
import { rawClientCounters, RawPeerStream, RAW_PORT_HEADER, SwitchingPeerStream } from '../worker/collectives/raw-peer-stream.js';
import type { PieceStatus } from '../worker/collectives/peer-stream.js';
import { PEER_STREAM_PATH } from '../worker/collectives/h2-peer-server.js';
import { encodeHeaders, Flag, frame, FrameType, PREFACE, settingsFrame } from '../worker/collectives/raw-h2.js';
import type { Communicator } from '../worker/collectives/communicator.js';
import { caseSeed, Rng } from './helpers/rng.js';

function randomBytes(rng: Rng, n: number): Uint8Array {
  const d = new Uint8Array(n);
  for (let i = 0; i < n; i += 61) d[i] = rng.int(0, 255);
  if (n > 0) d[n - 1] = rng.int(0, 255);
  return d;
}

function randomSize(rng: Rng): number {
  const k = rng.int(0, 3);
  return k === 0 ? rng.int(1, 100) : k === 1 ? rng.int(100, 70_000) : k === 2 ? rng.int(70_000, 600_000) : rng.int(1 << 20, 3 << 20);
}

async function exchange(comms: Communicator[], rng: Rng, step: number): Promise<void> {
  const blocks = comms.map(() => randomBytes(rng, randomSize(rng)));
  const got = await Promise.all(comms.map((c, r) => c.allGather({ step, layer: 1, op: 'raw' }, blocks[r]!)));
  for (const [r, g] of got.entries())
    for (const [j, blk] of g.entries()) assert.ok(Buffer.from(blk).equals(Buffer.from(blocks[j]!)), `step ${step} rank ${r} block ${j}`);
  const n = Math.max(1, Math.floor(randomSize(rng) / 4));
  const xs = comms.map(() => Float32Array.from({ length: n }, () => rng.int(-1000, 1000) / 8));
  const want = Float32Array.from(xs[0]!, (v, i) => v + xs[1]![i]!);
  await Promise.all(comms.map((c, r) => c.allReduceSum({ step, layer: 2, op: 'raw' }, xs[r]!)));
  for (const x of xs) assert.ok(Buffer.from(x.buffer).equals(Buffer.from(want.buffer)), `allReduce step ${step}`);
  const msg = randomBytes(rng, randomSize(rng));
  const [, recvd] = await Promise.all([
    comms[0]!.send({ step, layer: 3, op: 'p2p' }, 1, msg),
    comms[1]!.recv({ step, layer: 3, op: 'p2p' }, 0),
  ]);
  assert.ok(Buffer.from(recvd).equals(Buffer.from(msg)), `send/recv step ${step}`);
}

/** The raw port `address` announces to a Stream call (null when none). */
/** A one-byte message of generation 1 from rank 0 (op "x", step and layer 0) for job `jobId`. */
function onePiece(jobId: string) {
  return {
    jobId,
    generation: 1,
    fromRank: 0,
    step: 0,
    layer: 0,
    op: 'x',
    piece: 0,
    pieces: 1,
    totalBytes: 1,
    offset: 0,
    data: new Uint8Array(1),
  };
}

async function announcedRawPort(address: string, token: string): Promise<number | null> {
  const session = http2.connect(`http://${address}`);
  try {
    const req = session.request({
      ':method': 'POST',
      ':path': PEER_STREAM_PATH,
      'content-type': 'application/grpc+proto',
      te: 'trailers',
      authorization: `Bearer ${token}`,
    });
    const headers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
      req.on('response', resolve);
      req.on('error', reject);
    });
    req.close();
    const v = headers[RAW_PORT_HEADER];
    return typeof v === 'string' ? Number(v) : null;
  } finally {
    session.close();
  }
}

/** Send `bytes` to host:port on a raw socket; resolves when the server closes the connection. */
function closedAfter(port: number, bytes: Buffer, endAfter = false): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      s.write(bytes);
      if (endAfter) s.end();
    });
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`connection not closed after ${bytes.length} bytes`));
    }, 3000);
    s.on('data', () => {});
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

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
    const hdr = (len: number, type: number, flags: number, id: number) =>
      Buffer.from([len >>> 16, (len >>> 8) & 255, len & 255, type, flags, id >>> 24, (id >>> 16) & 255, (id >>> 8) & 255, id & 255]);
    const huffman = Buffer.concat([encodeHeaders([[':method', 'POST']]), Buffer.from([0x00, 0x84, 0x01, 0x02, 0x03, 0x04, 0x01, 0x61])]);
    await closedAfter(port, Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    await closedAfter(port, Buffer.from(Array.from({ length: 4096 }, () => rng.int(0, 255))));
    await closedAfter(port, Buffer.concat([PREFACE, hdr(0xffffff, FrameType.SETTINGS, 0, 0)]));
    await closedAfter(port, Buffer.concat([PREFACE, hdr(200_000, FrameType.HEADERS, Flag.END_HEADERS, 1)]));
    await closedAfter(port, Buffer.concat([PREFACE, frame(FrameType.HEADERS, Flag.END_HEADERS, 1, huffman)]));
    await closedAfter(port, Buffer.concat([PREFACE, settingsFrame([]), hdr(0xffffff, FrameType.DATA, 0, 1), Buffer.alloc(100)]));
    await closedAfter(port, Buffer.concat([PREFACE, hdr(100, FrameType.WINDOW_UPDATE, 0, 0), Buffer.alloc(100)]));
    await closedAfter(port, Buffer.concat([PREFACE, hdr(3, FrameType.PING, 0, 0), Buffer.alloc(3)]));
    await closedAfter(port, Buffer.concat([PREFACE, frame(FrameType.HEADERS, 0, 1, encodeHeaders([[':method', 'POST']]))]));
    await closedAfter(port, Buffer.concat([PREFACE, hdr(50, FrameType.DATA, 0, 1), Buffer.alloc(20)]), true);
    await closedAfter(port, Buffer.concat([PREFACE.subarray(0, 10)]), true);
    // A well-formed call whose gRPC message declares more than maxMessageBytes: the call ends, RESOURCE_EXHAUSTED.
    const call = encodeHeaders([
      [':method', 'POST'],
      [':path', PEER_STREAM_PATH],
      ['content-type', 'application/grpc'],
      ['authorization', `Bearer ${token}`],
    ]);
    const huge = Buffer.from([0, 0xff, 0xff, 0xff, 0xf0]);
    await closedAfter(
      port,
      Buffer.concat([PREFACE, frame(FrameType.HEADERS, Flag.END_HEADERS, 1, call), frame(FrameType.DATA, 0, 1, huge)]),
      true,
    );
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
  const { startLocalCluster } = await import('../cluster/local-cluster.js');
  const { parseTrainConfig } = await import('../train/config.js');
  const { runTraining } = await import('../train/driver.js');
  const { mkdtemp, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = await mkdtemp(join(tmpdir(), 'lasp-raw-train-'));
  const config = (name: string) =>
    parseTrainConfig({
      model: { dModel: 16, layers: 2, heads: 2, dk: 8, dv: 8, ffn: 32, kinds: ['gated_delta', 'softmax'], chunk: 8 },
      data: { type: 'mqar', seqLen: 64, seed: caseSeed('raw-train-data') },
      training: { steps: 4, batchSize: 2, lr: 3e-3, seed: caseSeed('raw-train-init'), evalSequences: 2 },
      cluster: { workers: 2 },
      checkpoint: { dir: join(dir, name) },
    });
  const raw = await startLocalCluster({ workers: 2, threadsPerWorker: 1, streamTransport: 'raw', env: { NODE_DEBUG: 'lasp-raw' } });
  const plain = await startLocalCluster({ workers: 2, threadsPerWorker: 1 });
  try {
    const a = await runTraining(config('raw'), { cluster: raw, writeFiles: false });
    const b = await runTraining(config('http2'), { cluster: plain, writeFiles: false });
    assert.deepEqual(a.losses, b.losses, 'the transport must not change a single bit of the losses');
    const moved = raw.workers.filter((w) => w.logTail.some((l) => /move to its raw listener/.test(l)));
    process.stdout.write(`# worker log lines kept: ${raw.workers.map((w) => w.logTail.length).join(', ')}\n`);
    assert.equal(
      moved.length,
      2,
      `workers whose pieces moved to a raw listener:\n${raw.workers.map((w) => w.logTail.join('\n')).join('\n---\n')}`,
    );
  } finally {
    await raw.stop();
    await plain.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
