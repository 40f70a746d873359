// The collectives under faults, with real worker processes on loopback: malformed or foreign
// Deliver calls are refused with the right status and the worker keeps serving; a wrong token is
// refused; an abort fails pending ops at once; a late joiner is waited for; a peer killed
// mid-collective makes the survivors' op reject within the deadline.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import type { PeerMessage } from '../proto/generated/lasp/v1/PeerMessage.js';
import { Cluster, type RunResult } from './helpers/collectives-cluster.js';
import { RawPeerClient } from './helpers/collectives-raw-client.js';
import type { Step } from './helpers/collectives-protocol.js';
import { caseSeed } from './helpers/rng.js';

const MiB = 1 << 20;

function assertOk(r: RunResult, what: string): void {
  if (!r.ok) assert.fail(`${what} failed: ${r.error}`);
}

/** A small allGather + allReduce on every rank: proves the group still works. */
async function healthy(cluster: Cluster, step: number, what: string): Promise<void> {
  const seed = caseSeed(what);
  const plan: Step[] = [
    { kind: 'allGather', tag: { step, layer: 0, op: 'health' }, sizes: Array.from({ length: cluster.world }, () => 1000), seed },
    { kind: 'allReduce', tag: { step, layer: 0, op: 'health' }, n: 100, seed },
  ];
  const reports = await cluster.runAll(() => plan);
  reports.forEach((r, rank) => assertOk(r, `${what}: rank ${rank}`));
}

test('bad Deliver calls get INVALID_ARGUMENT / FAILED_PRECONDITION / RESOURCE_EXHAUSTED / INTERNAL and the worker keeps serving', async () => {
  const maxMessageBytes = 8 * MiB;
  const cluster = await Cluster.start(2, { timeoutMs: 5000, maxMessageBytes });
  const raw = new RawPeerClient(cluster.peers[0]!);
  try {
    await healthy(cluster, 1, 'before the bad calls');
    const valid: PeerMessage = {
      jobId: cluster.jobId,
      generation: cluster.generation,
      fromRank: 1,
      step: 7,
      layer: 0,
      op: 'bad',
      piece: 0,
      pieces: 1,
      totalBytes: 4,
      offset: 0,
      data: Buffer.alloc(4),
    };
    const { INVALID_ARGUMENT, FAILED_PRECONDITION, RESOURCE_EXHAUSTED, INTERNAL, OK } = grpc.status;
    const cases: [string, PeerMessage | Buffer, grpc.status, RegExp?][] = [
      ['garbage bytes (not a PeerMessage)', Buffer.from([0x0f, 0xff, 0xff, 0xff]), INTERNAL],
      ['another job', { ...valid, jobId: 'other-job' }, FAILED_PRECONDITION, /job_id/],
      ['an old generation', { ...valid, generation: 0 }, FAILED_PRECONDITION, /generation must be 1.*got 0/],
      ['a newer generation', { ...valid, generation: 2 }, FAILED_PRECONDITION, /generation must be 1.*got 2/],
      ['from_rank out of range', { ...valid, fromRank: 5 }, INVALID_ARGUMENT, /from_rank/],
      ["from_rank = the receiver's own rank", { ...valid, fromRank: 0 }, INVALID_ARGUMENT, /from_rank/],
      ['pieces = 0', { ...valid, pieces: 0 }, INVALID_ARGUMENT, /pieces/],
      ['piece >= pieces', { ...valid, piece: 1, pieces: 1 }, INVALID_ARGUMENT, /piece must be < pieces/],
      ['a truncated piece (offset + length > total_bytes)', { ...valid, offset: 2 }, INVALID_ARGUMENT, /offset \+ data length/],
      [
        'total_bytes above maxMessageBytes',
        { ...valid, totalBytes: maxMessageBytes + 1, pieces: 9 },
        INVALID_ARGUMENT,
        /total_bytes must be <= 8388608/,
      ],
      [
        'a piece at the wrong offset',
        { ...valid, op: 'layout', totalBytes: 8, pieces: 2, piece: 1, offset: 2, data: Buffer.alloc(4) },
        INVALID_ARGUMENT,
        /must cover offset 4/,
      ],
      ['first piece of a 2-piece message', { ...valid, op: 'dup', totalBytes: 8, pieces: 2, data: Buffer.alloc(4) }, OK],
      [
        'the same piece again (duplicate)',
        { ...valid, op: 'dup', totalBytes: 8, pieces: 2, data: Buffer.alloc(4) },
        INVALID_ARGUMENT,
        /duplicate piece 0/,
      ],
      [
        'pieces disagreeing with an earlier piece',
        { ...valid, op: 'dup', totalBytes: 8, pieces: 4, piece: 1, offset: 2, data: Buffer.alloc(2) },
        INVALID_ARGUMENT,
        /pieces must be 2/,
      ],
      [
        'total_bytes disagreeing with an earlier piece',
        { ...valid, op: 'dup', totalBytes: 10, pieces: 2, piece: 1, offset: 5, data: Buffer.alloc(5) },
        INVALID_ARGUMENT,
        /total_bytes must be 8/,
      ],
      // Unclaimed messages are bounded by 2 × maxMessageBytes (16 MiB); 8 B are held already.
      ['8 MiB buffered before its receive', { ...valid, op: 'buf.a', totalBytes: 8 * MiB, pieces: 8, data: Buffer.alloc(MiB) }, OK],
      [
        'another 8 MiB (over the bound)',
        { ...valid, op: 'buf.b', totalBytes: 8 * MiB, pieces: 8, data: Buffer.alloc(MiB) },
        RESOURCE_EXHAUSTED,
        /receive buffer full/,
      ],
    ];
    for (const [what, msg, code, details] of cases) {
      const got = Buffer.isBuffer(msg) ? await raw.deliverRaw(msg) : await raw.deliver(msg);
      assert.equal(grpc.status[got.code], grpc.status[code], `${what}: status (details: ${got.details})`);
      if (details) assert.match(got.details, details, `${what}: details`);
    }
    await healthy(cluster, 2, 'after the bad calls');
  } finally {
    raw.close();
    await cluster.close();
  }
});

test('Stream: every piece is answered in order with the status Deliver would give; a refused piece does not end the call', async () => {
  const maxMessageBytes = 8 * MiB;
  const cluster = await Cluster.start(2, { timeoutMs: 5000, maxMessageBytes });
  const raw = new RawPeerClient(cluster.peers[0]!);
  try {
    const valid: PeerMessage = {
      jobId: cluster.jobId,
      generation: cluster.generation,
      fromRank: 1,
      step: 7,
      layer: 0,
      op: 'sbad',
      piece: 0,
      pieces: 1,
      totalBytes: 4,
      offset: 0,
      data: Buffer.alloc(4),
    };
    const { INVALID_ARGUMENT, FAILED_PRECONDITION, RESOURCE_EXHAUSTED, OK } = grpc.status;
    const cases: [string, PeerMessage, grpc.status, RegExp?][] = [
      ['another job', { ...valid, jobId: 'other-job' }, FAILED_PRECONDITION, /job_id/],
      ['an old generation', { ...valid, generation: 0 }, FAILED_PRECONDITION, /generation must be 1.*got 0/],
      ['from_rank out of range', { ...valid, fromRank: 5 }, INVALID_ARGUMENT, /from_rank/],
      ['a valid piece', valid, OK],
      ['pieces = 0', { ...valid, op: 'p0', pieces: 0 }, INVALID_ARGUMENT, /pieces/],
      ['a truncated piece', { ...valid, op: 'tr', offset: 2 }, INVALID_ARGUMENT, /offset \+ data length/],
      ['first piece of a 2-piece message', { ...valid, op: 'dup', totalBytes: 8, pieces: 2, data: Buffer.alloc(4) }, OK],
      [
        'the same piece again',
        { ...valid, op: 'dup', totalBytes: 8, pieces: 2, data: Buffer.alloc(4) },
        INVALID_ARGUMENT,
        /duplicate piece 0/,
      ],
      ['8 MiB buffered before its receive', { ...valid, op: 'buf.a', totalBytes: 8 * MiB, pieces: 8, data: Buffer.alloc(MiB) }, OK],
      [
        'another 8 MiB (over the bound)',
        { ...valid, op: 'buf.b', totalBytes: 8 * MiB, pieces: 8, data: Buffer.alloc(MiB) },
        RESOURCE_EXHAUSTED,
        /receive buffer full/,
      ],
    ];
    const got = await raw.stream(cases.map((c) => c[1]));
    assert.equal(got.length, cases.length);
    cases.forEach(([what, , code, details], i) => {
      const g = got[i]!;
      assert.equal(g.seq, i + 1, `${what}: replies come in order with the piece's seq`);
      assert.equal(grpc.status[g.code], grpc.status[code], `${what}: status (details: ${g.details})`);
      if (details) assert.match(g.details, details, `${what}: details`);
    });
    await healthy(cluster, 2, 'after the bad stream');
  } finally {
    raw.close();
    await cluster.close();
  }
});

test('with a cluster token, calls without it or with a wrong one are UNAUTHENTICATED; peers use it', async () => {
  const cluster = await Cluster.start(2, { timeoutMs: 5000, token: 's3cret' });
  const msg: PeerMessage = {
    jobId: cluster.jobId,
    generation: cluster.generation,
    fromRank: 1,
    step: 1,
    layer: 0,
    op: 'x',
    pieces: 1,
    totalBytes: 1,
    data: Buffer.alloc(1),
  };
  const none = new RawPeerClient(cluster.peers[0]!);
  const wrong = new RawPeerClient(cluster.peers[0]!, 'guess');
  const right = new RawPeerClient(cluster.peers[0]!, 's3cret');
  try {
    assert.equal((await none.deliver(msg)).code, grpc.status.UNAUTHENTICATED, 'no token');
    assert.equal((await wrong.deliver(msg)).code, grpc.status.UNAUTHENTICATED, 'wrong token');
    assert.equal((await right.deliver(msg)).code, grpc.status.OK, 'right token');
    // Stream: the token is checked when the call starts; without it the call ends UNAUTHENTICATED
    // and no piece is accepted.
    for (const [client, what] of [
      [none, 'no token'],
      [wrong, 'wrong token'],
    ] as const) {
      const got = await client.stream([{ ...msg, op: 'stream.bad' }]);
      assert.equal(grpc.status[got[0]!.code], 'UNAUTHENTICATED', `Stream with ${what}`);
    }
    assert.deepEqual(
      (await right.stream([{ ...msg, op: 'stream.ok' }])).map((g) => g.code),
      [grpc.status.OK],
      'Stream with the right token',
    );
    await healthy(cluster, 2, 'with a token');
  } finally {
    for (const c of [none, wrong, right]) c.close();
    await cluster.close();
  }
});

test('abortGroup fails a pending recv at once; a rank joining the next generation late is waited for', async () => {
  const cluster = await Cluster.start(2, { timeoutMs: 10_000 });
  try {
    const pending = cluster.run(0, [{ kind: 'recv', tag: { step: 1, layer: 0, op: 'never' }, from: 1 }]);
    await new Promise((r) => setTimeout(r, 100));
    const t0 = performance.now();
    cluster.abort(0, 'coordinator: rank 1 missed 3 heartbeats');
    const r = await pending;
    const ms = performance.now() - t0;
    assert.ok(!r.ok && /missed 3 heartbeats/.test(r.error), `the recv rejects with the abort reason, got ${JSON.stringify(r)}`);
    assert.ok(ms < 1000, `rejected ${ms.toFixed(0)} ms after the abort`);

    // Generation 2: rank 0 starts before rank 1 has joined; its pieces are refused with
    // FAILED_PRECONDITION and retried until rank 1 joins.
    await cluster.join(0, 2);
    const seed = caseSeed('late joiner');
    const step: Step = { kind: 'allGather', tag: { step: 1, layer: 0, op: 'late' }, sizes: [2 * MiB, 100], seed };
    const early = cluster.run(0, [step]);
    await new Promise((res) => setTimeout(res, 300));
    await cluster.join(1, 2);
    const [a, b] = await Promise.all([early, cluster.run(1, [step])]);
    assertOk(a!, 'rank 0 (joined first)');
    assertOk(b!, 'rank 1 (joined 300 ms later)');
  } finally {
    await cluster.close();
  }
});

test('a peer killed (SIGKILL) mid-collective: the survivors reject within the deadline, not hang', async () => {
  const timeoutMs = 2000;
  const cluster = await Cluster.start(3, { timeoutMs });
  try {
    const seed = caseSeed('kill');
    const loop: Step = {
      kind: 'repeat',
      count: 100_000,
      step: { kind: 'allGather', tag: { step: 0, layer: 0, op: 'loop' }, sizes: [MiB, MiB, MiB], seed },
    };
    const runs = [0, 1, 2].map((r) => cluster.run(r, [loop]));
    runs[2]!.catch(() => {}); // it dies
    await new Promise((r) => setTimeout(r, 500));
    const tKill = performance.now();
    cluster.kill(2);
    const survivors = await Promise.all([runs[0]!, runs[1]!]);
    const ms = performance.now() - tKill;
    survivors.forEach((r, rank) => assert.ok(!r.ok, `rank ${rank}: the loop must fail after the kill`));
    assert.ok(ms < 5000, `survivors rejected ${ms.toFixed(0)} ms after the kill (deadline ${timeoutMs} ms)`);
    for (const r of survivors) if (!r.ok) assert.match(r.error, /rank 2|timed out/, 'the error names the dead rank or the timeout');
    // A new op that sends to the dead rank fails promptly (UNAVAILABLE), not at the deadline.
    const t1 = performance.now();
    const send = await cluster.run(0, [{ kind: 'send', tag: { step: 1, layer: 0, op: 'to-dead' }, to: 2, size: 10, seed }]);
    const sendMs = performance.now() - t1;
    assert.ok(!send.ok && /UNAVAILABLE/.test(send.error), `send to the dead rank: ${JSON.stringify(send)}`);
    assert.ok(sendMs < 1500, `send to the dead rank failed after ${sendMs.toFixed(0)} ms`);
  } finally {
    await cluster.close();
  }
});

test('with useStreams: false the collectives still run on unary Deliver calls', async () => {
  const cluster = await Cluster.start(2, { timeoutMs: 5000, useStreams: false });
  try {
    await healthy(cluster, 1, 'unary Deliver path');
  } finally {
    await cluster.close();
  }
});
