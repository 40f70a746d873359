// The hand-written Peer wire format (worker/collectives/peer-wire.ts) against the generic encoder
// grpc-js uses (protobufjs through proto-loader), both ways, on random messages; the frame reader on
// random chunk splits and on malformed input; and the two Stream transports talking to each other
// over real gRPC connections (an 'http2' endpoint with a 'grpc-js' one, in both directions).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { poolStats } from '../native/kernels.js';
import { protos } from '../proto/load.js';
import {
  decodeDeliverReply,
  decodePeerMessage,
  encodeDeliverReply,
  encodePeerMessage,
  GrpcFrameReader,
  WireError,
  type WirePeerMessage,
} from '../worker/collectives/peer-wire.js';
import { endpointOn, shut } from './helpers/peer-endpoint.js';
import { caseSeed, Rng } from './helpers/rng.js';

interface Codec {
  requestSerialize(v: unknown): Buffer;
  requestDeserialize(b: Buffer): Record<string, unknown>;
  responseSerialize(v: unknown): Buffer;
  responseDeserialize(b: Buffer): Record<string, unknown>;
}

/** The serializers grpc-js uses for Peer.Stream (protobufjs). */
function generic(): Codec {
  return protos().peer.lasp.v1.Peer.service.Stream as unknown as Codec;
}

function randomString(rng: Rng, max: number): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz|.-_0123456789é€';
  let s = '';
  const n = rng.int(0, max);
  for (let i = 0; i < n; i++) s += alphabet[rng.int(0, alphabet.length - 1)];
  return s;
}

/** A uint of up to `bits` bits (all sizes of varint, 0 included), as a safe integer. */
function randomUint(rng: Rng, bits: number): number {
  const b = rng.int(0, bits);
  if (b === 0) return 0;
  return Math.min(Number.MAX_SAFE_INTEGER, Math.floor(rng.next() * 2 ** b));
}

function randomMessage(rng: Rng): WirePeerMessage {
  const data = new Uint8Array(rng.int(0, 1) === 0 ? rng.int(0, 40) : rng.int(100, 300_000));
  for (let i = 0; i < data.length; i++) data[i] = rng.int(0, 255);
  return {
    jobId: randomString(rng, 20),
    generation: randomUint(rng, 53),
    fromRank: randomUint(rng, 32) >>> 0,
    step: randomUint(rng, 53),
    layer: randomUint(rng, 32) >>> 0,
    op: randomString(rng, 30),
    piece: randomUint(rng, 32) >>> 0,
    pieces: randomUint(rng, 32) >>> 0,
    totalBytes: randomUint(rng, 53),
    offset: randomUint(rng, 53),
    data,
    seq: randomUint(rng, 53),
  };
}

function frameBody(parts: Buffer[]): Buffer {
  const all = Buffer.concat(parts);
  assert.equal(all[0], 0, 'compressed flag');
  assert.equal(all.readUInt32BE(1), all.length - 5, 'prefix length');
  return all.subarray(5);
}

function assertSameMessage(got: Record<string, unknown>, want: WirePeerMessage, what: string): void {
  for (const k of Object.keys(want) as (keyof WirePeerMessage)[]) {
    if (k === 'data') assert.ok(Buffer.from(want.data).equals(Buffer.from(got.data as Uint8Array)), `${what}: data`);
    else assert.equal(got[k], want[k], `${what}: ${k}`);
  }
}

test('PeerMessage and DeliverReply: hand encoding = protobufjs encoding, both ways, on random messages', () => {
  const rng = new Rng(caseSeed('peer-wire codec'));
  const codec = generic();
  for (let i = 0; i < 300; i++) {
    const m = randomMessage(rng);
    // ours → protobufjs
    const body = frameBody(encodePeerMessage(m));
    assertSameMessage(codec.requestDeserialize(body), m, `case ${i} decoded by protobufjs`);
    // protobufjs → ours (protobufjs writes data before seq: field order must not matter)
    const generic = codec.requestSerialize({ ...m, data: Buffer.from(m.data) });
    assertSameMessage(decodePeerMessage(generic) as unknown as Record<string, unknown>, m, `case ${i} decoded by peer-wire`);
    const r = { seq: randomUint(rng, 53), code: rng.int(0, 16), details: randomString(rng, 50) };
    assert.deepEqual(codec.responseDeserialize(frameBody([encodeDeliverReply(r)])), r, `reply ${i} decoded by protobufjs`);
    assert.deepEqual(decodeDeliverReply(codec.responseSerialize(r)), r, `reply ${i} decoded by peer-wire`);
  }
});

test('the frame reader reassembles messages from any chunking and refuses bad prefixes before allocating', () => {
  const rng = new Rng(caseSeed('peer-wire frames'));
  for (let trial = 0; trial < 40; trial++) {
    const msgs = Array.from({ length: rng.int(1, 6) }, () => randomMessage(rng));
    const stream = Buffer.concat(msgs.flatMap((m) => encodePeerMessage(m)));
    const got: WirePeerMessage[] = [];
    const reader = new GrpcFrameReader(
      1 << 20,
      (b) => got.push(decodePeerMessage(b)),
      (e) => assert.fail(e.message),
    );
    let pos = 0;
    while (pos < stream.length) {
      const n = rng.int(0, 2) === 0 ? rng.int(1, 7) : rng.int(1, 70_000);
      reader.push(stream.subarray(pos, pos + n));
      pos += n;
    }
    assert.ok(reader.atBoundary, `trial ${trial}: ends at a message boundary`);
    assert.equal(got.length, msgs.length, `trial ${trial}: message count`);
    msgs.forEach((m, i) => assertSameMessage(got[i] as unknown as Record<string, unknown>, m, `trial ${trial} message ${i}`));
  }
  // A declared length over the limit and a compressed flag are refused (once), nothing more is read.
  for (const [prefix, expect] of [
    [Buffer.from([0, 0x7f, 0xff, 0xff, 0xff]), /exceeds the limit of 1024/],
    [Buffer.from([1, 0, 0, 0, 4, 1, 2, 3, 4]), /compressed/],
  ] as const) {
    const errors: string[] = [];
    let delivered = 0;
    const reader = new GrpcFrameReader(
      1024,
      () => delivered++,
      (e) => errors.push(e.message),
    );
    reader.push(prefix);
    reader.push(Buffer.from([0, 0, 0, 0, 0]));
    assert.equal(errors.length, 1);
    assert.match(errors[0]!, expect);
    assert.equal(delivered, 0);
  }
});

test('a message spread over chunks is assembled in a pooled buffer (warm pages), the same bytes', () => {
  const rng = new Rng(caseSeed('peer-wire pooled body'));
  const body = Buffer.from(rng.normals(300_000).buffer); // 1.2 MB
  const stream = Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), body]);
  stream.writeUInt32BE(body.length, 1);
  const got: Uint8Array[] = [];
  const reader = new GrpcFrameReader(
    1 << 22,
    (b) => got.push(b),
    (e) => assert.fail(e.message),
  );
  const before = poolStats();
  for (let pos = 0; pos < stream.length; pos += 65_536) reader.push(stream.subarray(pos, pos + 65_536));
  const after = poolStats();
  assert.equal(got.length, 1);
  assert.ok(Buffer.from(got[0]!.buffer, got[0]!.byteOffset, got[0]!.byteLength).equals(body), 'the assembled bytes');
  assert.equal(after.hits + after.misses - before.hits - before.misses, 1, 'one pool take for the message');
  assert.ok(after.liveBytes - before.liveBytes >= body.length, `pool live bytes grew by ${after.liveBytes - before.liveBytes}`);
});

test('malformed PeerMessage bodies are refused with a WireError naming what is wrong', () => {
  const cases: [number[], RegExp][] = [
    [[0x08], /generation is truncated/], // field 1? no: tag 0x08 = field 1 varint → wrong wire type below
    [[0x10], /generation is truncated/],
    [[0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], /not a valid varint/],
    [[0x10, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40], /at most 2\^53/],
    [[0x18, 0x80, 0x80, 0x80, 0x80, 0x10], /fromRank must fit in 32 bits/],
    [[0x5a, 0x05, 1, 2], /data declares 5 bytes but only 2 remain/],
    [[0x0a, 0x80], /length of job_id is truncated/],
    [[0x13], /field 2 must have wire type 0, got 3/],
    [[0x00], /field number 0/],
    [[0xfb, 0x01], /unsupported wire type 3/],
  ];
  cases[0]![1] = /field 1 must have wire type 2, got 0/;
  for (const [bytes, expect] of cases) {
    assert.throws(
      () => decodePeerMessage(Uint8Array.from(bytes)),
      (e: unknown) => e instanceof WireError && expect.test(e.message),
      `bytes ${JSON.stringify(bytes)} → ${expect}`,
    );
  }
  // Unknown fields of every wire type are skipped.
  const known = frameBody(encodePeerMessage({ ...randomMessage(new Rng(1)), seq: 9 }));
  const unknown = Buffer.from([0xa8, 0x01, 0x05, 0xb1, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0xba, 0x01, 2, 7, 7, 0xc5, 0x01, 1, 2, 3, 4]);
  assert.equal(decodePeerMessage(Buffer.concat([unknown, known])).seq, 9);
});

test('an http2-transport endpoint and a grpc-js-transport endpoint exchange messages both ways (same protocol)', async () => {
  const rng = new Rng(caseSeed('peer-wire interop'));
  const token = 'interop-token';
  // Small pieces so that messages travel as several pieces in flight.
  const a = await endpointOn({ streamTransport: 'http2', token, pieceBytes: 64 << 10, timeoutMs: 10_000 });
  const b = await endpointOn({ streamTransport: 'grpc-js', token, pieceBytes: 64 << 10, timeoutMs: 10_000 });
  try {
    const peers = [a.address, b.address];
    const comms = [a.ep, b.ep].map((ep, rank) => ep.joinGroup({ jobId: 'interop', generation: 3, rank, world: 2, peers }));
    for (let step = 0; step < 6; step++) {
      const blocks = [0, 1].map(() => {
        const d = new Uint8Array(rng.int(0, 1) === 0 ? rng.int(0, 3000) : rng.int(100_000, 700_000));
        for (let i = 0; i < d.length; i += 97) d[i] = rng.int(0, 255);
        return d;
      });
      const got = await Promise.all(comms.map((c, r) => c.allGather({ step, layer: 1, op: 'interop' }, blocks[r]!)));
      for (const [r, g] of got.entries()) {
        for (const [j, blk] of g.entries())
          assert.ok(Buffer.from(blk).equals(Buffer.from(blocks[j]!)), `step ${step} rank ${r} block ${j}`);
      }
      const sums = [0, 1].map((r) => Float32Array.of(r + step, 2 * r));
      await Promise.all(comms.map((c, r) => c.allReduceSum({ step, layer: 2, op: 'interop' }, sums[r]!)));
      for (const s of sums) assert.deepEqual([...s], [1 + 2 * step, 2]);
    }
  } finally {
    shut(a, b);
  }
});

test('the http2 transport: a wrong token is UNAUTHENTICATED, a dead peer fails the op within its deadline', async () => {
  const a = await endpointOn({ token: 'right', timeoutMs: 3000 });
  const b = await endpointOn({ token: 'wrong', timeoutMs: 3000 });
  try {
    const peers = [a.address, b.address];
    const comms = [a.ep, b.ep].map((ep, rank) => ep.joinGroup({ jobId: 'auth', generation: 1, rank, world: 2, peers }));
    const results = await Promise.allSettled(comms.map((c) => c.allGather({ step: 0, layer: 0, op: 'auth' }, new Uint8Array(10))));
    for (const r of results) {
      assert.equal(r.status, 'rejected');
      assert.match(String((r as PromiseRejectedResult).reason), /UNAUTHENTICATED|deadline|timed out/);
    }
    assert.ok(
      results.some((r) => /UNAUTHENTICATED/.test(String((r as PromiseRejectedResult).reason))),
      'at least one side names UNAUTHENTICATED',
    );
  } finally {
    shut(a, b);
  }
  // A peer whose server is gone: the send fails fast (UNAVAILABLE), well inside the deadline.
  const c = await endpointOn({ timeoutMs: 20_000 });
  const d = await endpointOn({ timeoutMs: 20_000 });
  const peers = [c.address, d.address];
  shut(d);
  const comm = c.ep.joinGroup({ jobId: 'dead', generation: 1, rank: 0, world: 2, peers });
  const t0 = Date.now();
  await assert.rejects(comm.allGather({ step: 0, layer: 0, op: 'dead' }, new Uint8Array(1000)), /UNAVAILABLE/);
  assert.ok(Date.now() - t0 < 10_000, `failed after ${Date.now() - t0} ms`);
  shut(c);
});
