// The job service end to end: a real redis-server (REDIS_URL, or one started here on a free
// port), a `lasp coordinator --redis` process with its HTTP API, and `lasp worker` processes.
// Submit → runs → completed with losses; two jobs when only one fits (the second waits, then
// runs); cancel while running (workers released); an invalid job → 400 naming the field, nothing
// queued; the coordinator killed mid-job and started again → the job resumes from its checkpoint
// and finishes.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startRedis, type TestRedis } from '../cluster/redis-server.js';

const lasp = fileURLToPath(new URL('../cli/lasp.js', import.meta.url));
const workerEntry = fileURLToPath(new URL('../worker/entry.js', import.meta.url));

let redis: TestRedis;
let dataDir: string;
let coordinator: { child: ChildProcess; grpc: string; api: string; log: string[] };
const workers: ChildProcess[] = [];
let queueName: string;

/** Starts `lasp coordinator` and resolves once its gRPC and HTTP ports are known. */
async function startCoordinator(grpcPort = 0, httpPort = 0): Promise<typeof coordinator> {
  const args = [
    lasp,
    'coordinator',
    '--port',
    String(grpcPort),
    '--redis',
    redis.url,
    '--http-port',
    String(httpPort),
    '--data-dir',
    dataDir,
    '--heartbeat-interval-ms',
    '500',
    '--lock-duration-ms',
    '3000',
    '--stalled-interval-ms',
    '1000',
    '--queue',
    queueName,
  ];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const log: string[] = [];
  return new Promise((resolve, reject) => {
    let grpc = '';
    const timer = setTimeout(() => reject(new Error(`coordinator did not start:\n${log.join('\n')}`)), 15_000);
    child.once('exit', (code) => reject(new Error(`coordinator exited with ${code}:\n${log.join('\n')}`)));
    createInterface({ input: child.stderr! }).on('line', (line) => {
      log.push(line);
      if (log.length > 200) log.shift();
      const g = /coordinator listening on ([\d.]+:\d+)/.exec(line);
      if (g) grpc = g[1]!;
      const h = /HTTP API listening on (http:\/\/[\d.]+:\d+)/.exec(line);
      if (h && grpc) {
        clearTimeout(timer);
        resolve({ child, grpc, api: h[1]!, log });
      }
    });
  });
}

function startWorker(id: string, coordinatorAddress: string): ChildProcess {
  const child = spawn(
    process.execPath,
    [workerEntry, '--coordinator', coordinatorAddress, '--id', id, '--threads', '1', '--exit-with-stdin'],
    {
      stdio: ['pipe', 'ignore', 'ignore'],
    },
  );
  workers.push(child);
  return child;
}

async function api<T = unknown>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
  const res = await fetch(coordinator.api + path, {
    method,
    ...(body !== undefined ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } } : {}),
  });
  return { status: res.status, body: (await res.json()) as T };
}

interface View {
  id: string;
  state: string;
  progress: { phase: string; step: number; workers: string[] };
  restarts: number;
  metrics: { step: number; loss: number; tokensPerSec: number }[];
  failedReason: string | null;
}

async function until<T>(what: string, f: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}\ncoordinator log:\n${coordinator.log.slice(-30).join('\n')}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const job = (steps: number, extra: Record<string, unknown> = {}) => ({
  model: { dModel: 16, layers: 1, heads: 2, ffn: 32 },
  data: { type: 'mqar', seqLen: 32, vocabSize: 16, numKvPairs: 2 },
  training: { steps, batchSize: 2, evalSequences: 2 },
  cluster: { workers: 2 },
  ...extra,
});

const view = async (id: string) => (await api<View>('GET', `/v1/jobs/${id}`)).body;
const terminal = (s: string) => s === 'completed' || s === 'failed' || s === 'cancelled';

before(async () => {
  redis = await startRedis();
  dataDir = await mkdtemp(join(tmpdir(), 'lasp-service-'));
  queueName = `lasp-test-${process.pid}-${Date.now()}`;
  coordinator = await startCoordinator();
  startWorker('svc-w0', coordinator.grpc);
  startWorker('svc-w1', coordinator.grpc);
  await until('two idle workers', async () => {
    const w = (await api<{ state: string }[]>('GET', '/v1/workers')).body;
    return w.filter((x) => x.state === 'idle').length === 2 ? true : undefined;
  });
});

after(async () => {
  for (const w of workers) w.kill('SIGKILL');
  coordinator?.child.kill('SIGKILL');
  await redis?.stop();
  await rm(dataDir, { recursive: true, force: true });
});

test('submit → runs on two workers → completed with per-step losses', async () => {
  const r = await api<View>('POST', '/v1/jobs', { config: job(8) });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const done = await until('completion', async () => {
    const v = await view(r.body.id);
    return terminal(v.state) ? v : undefined;
  });
  assert.equal(done.state, 'completed', JSON.stringify(done));
  assert.deepEqual(
    done.metrics.map((m) => m.step),
    [1, 2, 3, 4, 5, 6, 7, 8],
  );
  for (const m of done.metrics) assert.ok(Number.isFinite(m.loss) && m.tokensPerSec > 0);
  assert.equal(done.progress.step, 8);
  assert.equal(done.restarts, 0);
});

test('two jobs when only one fits: the second waits, then runs', async () => {
  const a = (await api<View>('POST', '/v1/jobs', { config: job(25) })).body;
  const b = (await api<View>('POST', '/v1/jobs', { config: job(4) })).body;
  await until('the first running', async () => ((await view(a.id)).state === 'active' ? true : undefined));
  const vb = await view(b.id);
  assert.equal(vb.state, 'waiting', `the second job must wait while the first holds both workers: ${JSON.stringify(vb.progress)}`);
  const both = await until('both done', async () => {
    const [x, y] = [await view(a.id), await view(b.id)];
    return terminal(x.state) && terminal(y.state) ? [x, y] : undefined;
  });
  assert.deepEqual(
    both.map((v) => v.state),
    ['completed', 'completed'],
  );
  assert.equal(both[1]!.metrics.length, 4);
});

test('jobs run side by side as far as free workers allow, and waiting jobs get workers by priority', async () => {
  const one = (steps: number) => job(steps, { cluster: { workers: 1 } });
  // Two one-worker jobs run at the same time on the two workers.
  const a = (await api<View>('POST', '/v1/jobs', { config: one(100_000) })).body;
  const b = (await api<View>('POST', '/v1/jobs', { config: one(100_000) })).body;
  await until('both running', async () => {
    const [x, y] = [await view(a.id), await view(b.id)];
    return x.state === 'active' && y.state === 'active' && x.progress.step > 0 && y.progress.step > 0 ? true : undefined;
  });
  // With both workers busy, a low-priority job and then a high-priority one wait; when one worker
  // frees up, the high-priority job gets it although it came later.
  const low = (await api<View>('POST', '/v1/jobs', { config: one(3), priority: -5 })).body;
  const high = (await api<View>('POST', '/v1/jobs', { config: one(3), priority: 7 })).body;
  await until('both queued jobs waiting for workers', async () => {
    const [x, y] = [await view(low.id), await view(high.id)];
    return x.progress.phase === 'waiting-for-workers' && y.progress.phase === 'waiting-for-workers' ? true : undefined;
  });
  assert.equal((await api('DELETE', `/v1/jobs/${a.id}`)).status, 200);
  const first = await until('one of them running', async () => {
    const [x, y] = [await view(low.id), await view(high.id)];
    if (y.state === 'active' || y.state === 'completed') return 'high';
    if (x.state === 'active' || x.state === 'completed') return 'low';
    return undefined;
  });
  assert.equal(first, 'high');
  assert.equal(
    (await view(low.id)).state,
    'waiting',
    'the low-priority job still waits: one worker is free, and the high-priority job holds it',
  );
  assert.equal((await api('DELETE', `/v1/jobs/${b.id}`)).status, 200);
  for (const id of [high.id, low.id])
    assert.equal(
      (await until(`job ${id} done`, async () => ((v) => (terminal(v.state) ? v : undefined))(await view(id)))).state,
      'completed',
    );
});

test('cancel while running: the job ends cancelled and its workers are free again', async () => {
  const a = (await api<View>('POST', '/v1/jobs', { config: job(100_000) })).body;
  await until('two steps', async () => ((await view(a.id)).progress.step >= 2 ? true : undefined));
  const c = await api<View>('DELETE', `/v1/jobs/${a.id}`);
  assert.equal(c.status, 200);
  const v = await until(
    'cancelled',
    async () => {
      const x = await view(a.id);
      return terminal(x.state) ? x : undefined;
    },
    20_000,
  );
  assert.equal(v.state, 'cancelled', JSON.stringify(v));
  await until(
    'workers released',
    async () => {
      const w = (await api<{ state: string }[]>('GET', '/v1/workers')).body;
      return w.filter((x) => x.state === 'idle').length === 2 ? true : undefined;
    },
    10_000,
  );
});

test('invalid job: 400 naming the field, nothing queued', async () => {
  const before = (await api<View[]>('GET', '/v1/jobs')).body.length;
  const r = await api<{ error: string }>('POST', '/v1/jobs', { config: job(5, { model: { heads: 0 } }) });
  assert.equal(r.status, 400);
  assert.match(JSON.stringify(r.body), /model\.heads must be an integer in \[1, 1024\], got 0/);
  assert.equal((await api<View[]>('GET', '/v1/jobs')).body.length, before);
});

test('coordinator killed mid-job and started again: the job resumes from its checkpoint and finishes', async () => {
  const a = (await api<View>('POST', '/v1/jobs', { config: job(40, { checkpoint: { every: 5 } }) })).body;
  await until('step 12', async () => ((await view(a.id)).progress.step >= 12 ? true : undefined));
  const [grpcPort, httpPort] = [Number(coordinator.grpc.split(':')[1]), Number(new URL(coordinator.api).port)];
  coordinator.child.kill('SIGKILL');
  await new Promise((r) => coordinator.child.once('exit', r));
  coordinator = await startCoordinator(grpcPort, httpPort);
  const v = await until(
    'completion after the restart',
    async () => {
      const x = await view(a.id).catch(() => undefined);
      return x && terminal(x.state) ? x : undefined;
    },
    90_000,
  );
  assert.equal(v.state, 'completed', JSON.stringify({ ...v, metrics: v.metrics.length }));
  assert.ok(v.restarts >= 1, `restarts ${v.restarts}`);
  assert.deepEqual(
    v.metrics.map((m) => m.step),
    Array.from({ length: 40 }, (_, i) => i + 1),
  );
  assert.ok(
    coordinator.log.some((l) => /resuming from .*ckpt-0+(10|5|15)\.lasp/.test(l)),
    coordinator.log.join('\n'),
  );
});
