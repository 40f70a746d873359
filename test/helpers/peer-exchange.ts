// Collective exchanges and raw-socket probes shared by the peer transport tests (raw-peer.test.ts,
// native-peer.test.ts).
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import type { Communicator } from '../../worker/collectives/communicator.js';
import { PEER_STREAM_PATH } from '../../worker/collectives/h2-peer-server.js';
import { RAW_PORT_HEADER } from '../../worker/collectives/raw-peer-stream.js';
import { encodeHeaders, Flag, frame, FrameType, PREFACE, settingsFrame } from '../../worker/collectives/raw-h2.js';
import type { Rng } from './rng.js';

export function randomBytes(rng: Rng, n: number): Uint8Array {
  const d = new Uint8Array(n);
  for (let i = 0; i < n; i += 61) d[i] = rng.int(0, 255);
  if (n > 0) d[n - 1] = rng.int(0, 255);
  return d;
}

export function randomSize(rng: Rng): number {
  const k = rng.int(0, 3);
  return k === 0 ? rng.int(1, 100) : k === 1 ? rng.int(100, 70_000) : k === 2 ? rng.int(70_000, 600_000) : rng.int(1 << 20, 3 << 20);
}

export async function exchange(comms: Communicator[], rng: Rng, step: number): Promise<void> {
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

/** A one-byte message of generation 1 from rank 0 (op "x", step and layer 0) for job `jobId`. */
export function onePiece(jobId: string) {
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

/** The raw port `address` announces to a Stream call (null when none). */
export async function announcedRawPort(address: string, token: string): Promise<number | null> {
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
export function closedAfter(port: number, bytes: Buffer, endAfter = false): Promise<void> {
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

/**
 * Connections to a raw or native listener on `port` that each break the protocol once (not HTTP/2,
 * random bytes, frames over the limits, Huffman-coded or split headers, DATA on an idle stream, a
 * cut preface, a gRPC message over the limit): each must be closed by the listener.
 */
export async function sendMalformed(port: number, rng: Rng, token: string): Promise<void> {
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
}
