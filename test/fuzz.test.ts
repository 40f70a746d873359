// Malformed, truncated and oversized messages at every gRPC method of the coordinator and of a
// worker (raw bytes, not produced by our encoder): each call ends with a status (none hangs to
// its deadline), no process dies, and the cluster still forms a group and runs a distributed task
// afterwards. (The HTTP API's malformed requests are in http-api.test.ts.)
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { startLocalCluster } from '../cluster/local-cluster.js';
import { rngFor } from './helpers/rng.js';

const identity = (b: Buffer) => b;

function payloads(seed: number): { what: string; bytes: Buffer }[] {
  const rng = rngFor(`fuzz-${seed}`);
  const random = (n: number) => Buffer.from(Array.from({ length: n }, () => rng.int(0, 255)));
  return [
    { what: 'empty', bytes: Buffer.alloc(0) },
    { what: '1 random byte', bytes: random(1) },
    { what: '97 random bytes', bytes: random(97) },
    { what: '64 KiB random', bytes: randomBytes(65536) },
    // Field 1, length-delimited, claiming 2^35 bytes that never come.
    { what: 'huge declared length', bytes: Buffer.from([0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x41]) },
    // A varint that never ends.
    { what: 'unterminated varint', bytes: Buffer.from([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]) },
    // Field 2 (varint) followed by a truncated string field.
    { what: 'truncated field', bytes: Buffer.from([0x10, 0x05, 0x1a, 0x10, 0x61, 0x62]) },
    // A repeated numeric field claiming 2^31 elements (a size from the network).
    { what: 'huge element count', bytes: Buffer.from([0x32, 0xff, 0xff, 0xff, 0xff, 0x07, 0x01, 0x02]) },
    // Field 1 (worker_id, job_id, ...) a 40,000-character non-ASCII string: a status that echoed it
    // whole would be a grpc-message trailer far over HTTP/2's 16 KiB header limit, never delivered.
    { what: 'long non-ASCII string in field 1', bytes: longStringField(1, 'é'.repeat(40_000)) },
    { what: '8 MiB (over the message limit)', bytes: Buffer.alloc(8 << 20, 0x0a) },
  ];
}

function varint(n: number): number[] {
  const out: number[] = [];
  for (; n >= 0x80; n = Math.floor(n / 128)) out.push((n % 128) | 0x80);
  out.push(n);
  return out;
}

function longStringField(field: number, s: string): Buffer {
  const body = Buffer.from(s, 'utf8');
  return Buffer.concat([Buffer.from([(field << 3) | 2, ...varint(body.length)]), body]);
}

function unary(client: grpc.Client, path: string, bytes: Buffer): Promise<grpc.status> {
  return new Promise((resolve) => {
    client.makeUnaryRequest(path, identity, identity, bytes, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (err) =>
      resolve(err ? err.code : grpc.status.OK),
    );
  });
}

function stream(client: grpc.Client, path: string, frames: Buffer[]): Promise<grpc.status> {
  return new Promise((resolve) => {
    const call = client.makeBidiStreamRequest(path, identity, identity, new grpc.Metadata(), { deadline: Date.now() + 10_000 });
    call.on('data', () => {});
    call.on('error', (e: grpc.ServiceError) => resolve(e.code));
    call.on('status', (s: grpc.StatusObject) => resolve(s.code));
    for (const f of frames) call.write(f);
    call.end();
  });
}

test('fuzz: garbage at every gRPC method gets a status, processes keep serving', async () => {
  const cluster = await startLocalCluster({ workers: 2, threadsPerWorker: 1 });
  try {
    const coordinator = new grpc.Client(cluster.coordinator.address, grpc.credentials.createInsecure());
    const workerAddress = cluster.coordinator.registry.get('local-0')!.address;
    const worker = new grpc.Client(workerAddress, grpc.credentials.createInsecure());
    const targets: [grpc.Client, string][] = [
      [coordinator, '/lasp.v1.Coordinator/Register'],
      [coordinator, '/lasp.v1.Coordinator/Heartbeat'],
      [worker, '/lasp.v1.WorkerControl/Assign'],
      [worker, '/lasp.v1.WorkerControl/Abort'],
      [worker, '/lasp.v1.WorkerControl/RunTask'],
      [worker, '/lasp.v1.Peer/Deliver'],
    ];
    const seen: string[] = [];
    for (const [client, path] of targets)
      for (const p of payloads(1)) {
        const code = await unary(client, path, p.bytes);
        assert.notEqual(code, grpc.status.DEADLINE_EXCEEDED, `${path} with ${p.what} hung`);
        seen.push(`${path} ${p.what}: ${grpc.status[code]}`);
      }
    const streamCode = await stream(
      worker,
      '/lasp.v1.Peer/Stream',
      payloads(2)
        .slice(0, -1)
        .map((p) => p.bytes),
    );
    assert.notEqual(streamCode, grpc.status.DEADLINE_EXCEEDED, 'Stream with garbage frames hung');
    const byCode = new Map<string, number>();
    for (const line of seen) {
      const code = line.slice(line.lastIndexOf(' ') + 1);
      byCode.set(code, (byCode.get(code) ?? 0) + 1);
    }
    // OK answers are calls whose bytes happen to decode to a harmless message (e.g. a heartbeat of
    // an unknown worker, an abort of no job): they change nothing.
    process.stdout.write(
      `# ${seen.length + 1} garbage calls answered: ${[...byCode].map(([c, n]) => `${c} ${n}`).join(', ')}; Stream ${grpc.status[streamCode]}\n`,
    );
    coordinator.close();
    worker.close();

    for (const w of cluster.workers) assert.equal(w.process.exitCode, null, `worker ${w.index} died`);
    const group = await cluster.formGroup('after-fuzz', 2);
    const replies = await cluster.runTask(group, 'sp-layer', { kind: 'delta', T: 48, H: 1, dk: 8, dv: 8, seed: 4, repeats: 1 });
    assert.equal(replies.length, 2);
    await cluster.releaseGroup(group);
  } finally {
    await cluster.stop();
  }
});
