// Elastic groups, draining and the restart budget with real worker processes (`lasp worker`, here
// through worker/entry.js), a real redis-server, the job service and its HTTP API:
// - elastic: a job of 3 workers with cluster.minWorkers 2 loses one (SIGKILL) while no worker is
//   free: it goes on with 2 from its last checkpoint and finishes with the losses of an
//   uninterrupted 3-worker run (relative difference <= 1e-3), one restart;
// - drain on SIGTERM: the worker finishes its step, the job checkpoints and moves to a free worker
//   (no restart counted), GET /v1/workers shows "draining", the worker exits 0;
// - drain on request (`lasp worker --drain --id ID --api URL`, POST /v1/workers/:id/drain): the same,
//   and the worker exits by itself;
// - restart budget: cluster.maxRestarts 1: a lost worker is replaced (one restart), a second lost
//   worker fails the job with a reason naming the budget and the last error; /metrics counts restarts.
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startRedis, type TestRedis } from '../cluster/redis-server.js';
import { Coordinator } from '../coordinator/coordinator.js';
import { startHttpApi, type HttpApi } from '../coordinator/http-api.js';
import { BullJobService } from '../coordinator/job-service.js';
import type { JobView, WorkerView } from '../coordinator/job-types.js';
import { parseTrainConfig } from '../train/config.js';

const workerEntry = fileURLToPath(new URL('../worker/entry.js', import.meta.url));
const lasp = fileURLToPath(new URL('../cli/lasp.js', import.meta.url));
let redis: TestRedis;
let dir: string;
let coordinator: Coordinator;
let service: BullJobService;
let api: HttpApi;
const serviceLog: string[] = [];
const procs = new Map<string, { child: ChildProcess; log: string[]; exit: Promise<number | null> }>();

before(async () => {
  redis = await startRedis();
  dir = await mkdtemp(join(tmpdir(), 'lasp-elastic-'));
  coordinator = await Coordinator.start({ port: 0, heartbeatIntervalMs: 500 });
  service = await BullJobService.start(coordinator, {
    redisUrl: redis.url,
    dataDir: dir,
    queueName: `elastic-${process.pid}`,
    log: (l) => serviceLog.push(`${new Date().toISOString()} ${l}`),
  });
  api = await startHttpApi(service, { port: 0, log: () => {} });
  await Promise.all(['w-a', 'w-b', 'w-c'].map(startWorker));
});

after(async () => {
  for (const p of procs.values()) p.child.kill('SIGKILL');
  await api?.close();
  await service?.close();
  await coordinator?.stop();
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

const config = (cluster: Record<string, number>) => ({
  model: { dModel: 16, layers: 2, heads: 2, ffn: 32, kinds: ['gated_delta', 'scalar_gate'] },
  data: { type: 'mqar', seqLen: 48, vocabSize: 16, numKvPairs: 2 },
  training: { steps: 30, batchSize: 4, evalSequences: 2, seed: 7 },
  cluster,
  checkpoint: { every: 5 },
});

async function startWorker(id: string): Promise<void> {
  const child = spawn(
    process.execPath,
    [workerEntry, '--coordinator', coordinator.address, '--id', id, '--threads', '1', '--drain-timeout-ms', '30000'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const log: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (l) => log.push(l));
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  procs.set(id, { child, log, exit });
  await until(`worker ${id} idle`, async () => (coordinator.registry.get(id)?.state === 'idle' ? true : undefined), 15_000);
}

async function until<T>(what: string, f: () => Promise<T | undefined>, timeoutMs = 90_000, everyMs = 100): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) {
      const workers = [...procs].map(
        ([id, p]) => `worker ${id} (exit ${p.child.exitCode ?? p.child.signalCode ?? 'running'}):\n${p.log.slice(-10).join('\n')}`,
      );
      throw new Error(`timed out waiting for ${what}\nservice log:\n${serviceLog.slice(-15).join('\n')}\n${workers.join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

const finished = (id: string) =>
  until(`job ${id} to finish`, async () => {
    const v = (await service.get(id))!;
    return ['completed', 'failed', 'cancelled'].includes(v.state) ? v : undefined;
  });

async function atStep(id: string, step: number): Promise<JobView> {
  return until(`job ${id} at step ${step}`, async () => {
    const v = (await service.get(id))!;
    return v.progress.step >= step ? v : undefined;
  });
}

function worstDiff(a: JobView, b: JobView): number {
  assert.deepEqual(
    a.metrics.map((m) => m.step),
    b.metrics.map((m) => m.step),
  );
  let worst = 0;
  for (const [i, m] of a.metrics.entries()) worst = Math.max(worst, Math.abs(m.loss - b.metrics[i]!.loss) / Math.abs(b.metrics[i]!.loss));
  return worst;
}

let reference: JobView;

test('elastic: one of 3 workers killed with none free; the job goes on with 2 (minWorkers) and matches the uninterrupted losses', async () => {
  reference = await finished((await service.submit(config({ workers: 3 }))).id);
  assert.equal(reference.state, 'completed', `${reference.failedReason}`);
  const job = await service.submit(config({ workers: 3, minWorkers: 2 }));
  const running = await atStep(job.id, 12);
  assert.deepEqual([...running.progress.workers].sort(), ['w-a', 'w-b', 'w-c']);
  const t0 = Date.now();
  procs.get('w-c')!.child.kill('SIGKILL');
  const done = await finished(job.id);
  const seconds = (Date.now() - t0) / 1000;
  assert.equal(done.state, 'completed', `${done.failedReason}`);
  assert.deepEqual([...done.progress.workers].sort(), ['w-a', 'w-b']);
  assert.equal(done.restarts, 1);
  const worst = worstDiff(done, reference);
  process.stdout.write(
    `# elastic 3 -> 2: finished ${seconds.toFixed(1)} s after SIGKILL at step ${running.progress.step}; largest relative loss difference ${worst.toExponential(2)}\n`,
  );
  assert.ok(worst <= 1e-3, `losses differ by ${worst}`);
  assert.ok(serviceLog.some((l) => l.includes(`job ${job.id}: going on with 2 of 3 workers`)));
  const metrics = await (await fetch(`${api.url}/metrics`)).text();
  assert.match(metrics, /^lasp_job_restarts_total [1-9]/m);
});

test('drain on SIGTERM: the job checkpoints after the current step and moves to a free worker; the worker shows draining and exits 0', async () => {
  await startWorker('w-d');
  const job = await service.submit(config({ workers: 2 }));
  const running = await atStep(job.id, 8);
  assert.deepEqual([...running.progress.workers].sort(), ['w-a', 'w-b']);
  const t0 = Date.now();
  procs.get('w-a')!.child.kill('SIGTERM');
  const seen = await until(
    'w-a draining in GET /v1/workers',
    async () => {
      const ws = (await (await fetch(`${api.url}/v1/workers`)).json()) as WorkerView[];
      return ws.find((w) => w.id === 'w-a' && w.state === 'draining');
    },
    10_000,
    20,
  );
  assert.equal(seen.state, 'draining');
  assert.equal(await procs.get('w-a')!.exit, 0);
  const exitedAfter = (Date.now() - t0) / 1000;
  const done = await finished(job.id);
  assert.equal(done.state, 'completed', `${done.failedReason}`);
  assert.deepEqual([...done.progress.workers].sort(), ['w-b', 'w-d']);
  assert.equal(done.restarts, 0, 'a drain is not a restart');
  const worst = worstDiff(done, reference);
  assert.ok(worst <= 1e-3, `losses differ by ${worst}`);
  const left = serviceLog.find((l) => l.includes(`job ${job.id}: left the group after step`));
  assert.ok(left, serviceLog.join('\n'));
  assert.ok(procs.get('w-a')!.log.some((l) => /drained in \d+ ms/.test(l)));
  process.stdout.write(
    `# drain (SIGTERM at step ${running.progress.step}): the worker exited after ${exitedAfter.toFixed(1)} s; ${left}\n`,
  );
});

test('drain on request: lasp worker --drain --id ID --api URL; the worker leaves by itself and the job goes on', async () => {
  await startWorker('w-e');
  const job = await service.submit(config({ workers: 2 }));
  const running = await atStep(job.id, 8);
  assert.deepEqual([...running.progress.workers].sort(), ['w-b', 'w-d']);
  const t0 = Date.now();
  const cli = await promisify(execFile)(process.execPath, [lasp, 'worker', '--drain', '--id', 'w-b', '--api', api.url]);
  assert.match(cli.stdout, /worker w-b is draining: job job-\d+ checkpoints after its current step/);
  assert.equal(await procs.get('w-b')!.exit, 0);
  const exitedAfter = (Date.now() - t0) / 1000;
  const done = await finished(job.id);
  assert.equal(done.state, 'completed', `${done.failedReason}`);
  assert.deepEqual([...done.progress.workers].sort(), ['w-d', 'w-e']);
  assert.equal(done.restarts, 0);
  assert.ok(worstDiff(done, reference) <= 1e-3);
  const unknown = await fetch(`${api.url}/v1/workers/nobody/drain`, { method: 'POST' });
  assert.equal(unknown.status, 404);
  process.stdout.write(`# drain (request at step ${running.progress.step}): the worker exited after ${exitedAfter.toFixed(1)} s\n`);
});

test('restart budget: cluster.maxRestarts 1; the first lost worker is replaced, the second fails the job naming the budget and the last error', async () => {
  await startWorker('w-f');
  const job = await service.submit(config({ workers: 2, maxRestarts: 1 }));
  const running = await atStep(job.id, 6);
  assert.deepEqual([...running.progress.workers].sort(), ['w-d', 'w-e']);
  procs.get('w-e')!.child.kill('SIGKILL');
  const moved = await until(`job ${job.id} on w-d and w-f`, async () => {
    const v = (await service.get(job.id))!;
    return v.progress.workers.includes('w-f') && v.progress.step > running.progress.step + 1 ? v : undefined;
  });
  assert.equal(moved.restarts, 1);
  procs.get('w-f')!.child.kill('SIGKILL');
  const done = await finished(job.id);
  assert.equal(done.state, 'failed');
  assert.match(done.failedReason ?? '', /^restart budget spent \(cluster\.maxRestarts = 1, 1 restarts made\); last error: .*rank \d/);
  assert.equal(done.restarts, 1);
  assert.equal(done.attemptsMade, 1, 'not retried by BullMQ either');
  process.stdout.write(`# restart budget: ${done.failedReason}\n`);
});

test('cluster.minWorkers and cluster.maxRestarts are validated by name; defaults workers and 3', async () => {
  await assert.rejects(
    () => service.submit(config({ workers: 2, minWorkers: 3, maxRestarts: -1 })),
    (err: Error) => {
      assert.match(err.message, /cluster\.minWorkers must be at most cluster\.workers = 2, got 3/);
      assert.match(err.message, /cluster\.maxRestarts/);
      return true;
    },
  );
  const c = parseTrainConfig(config({ workers: 3 }));
  assert.equal(c.cluster.minWorkers, 3);
  assert.equal(c.cluster.maxRestarts, 3);
});
