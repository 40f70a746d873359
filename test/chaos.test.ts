// Failure recovery with real processes: a worker SIGKILLed in the middle of a job. The job's run
// fails (its collectives and RunTask calls error out instead of waiting), the job service counts a
// restart (cluster.maxRestarts) and after a 1 s pause forms a new group from the live workers,
// which resumes from the last checkpoint: the job completes with a restart, and every step's loss
// equals that of an uninterrupted run with the same seed.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, open, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startLocalCluster, type LocalCluster } from '../cluster/local-cluster.js';
import { startRedis, type TestRedis } from '../cluster/redis-server.js';
import { BullJobService } from '../coordinator/job-service.js';
import { describeWorkers } from '../coordinator/registry.js';
import type { JobView } from '../coordinator/job-types.js';

const workerEntry = fileURLToPath(new URL('../worker/entry.js', import.meta.url));
let redis: TestRedis;
let dir: string;
let cluster: LocalCluster;
let service: BullJobService;
const extra: ChildProcess[] = [];

before(async () => {
  redis = await startRedis();
  dir = await mkdtemp(join(tmpdir(), 'lasp-chaos-'));
  cluster = await startLocalCluster({ workers: 2, threadsPerWorker: 1, heartbeatIntervalMs: 500 });
  service = await BullJobService.start(cluster.coordinator, {
    redisUrl: redis.url,
    dataDir: dir,
    queueName: `chaos-${process.pid}`,
    log: (l) => serviceLog.push(l),
  });
});

after(async () => {
  for (const c of extra) c.kill('SIGKILL');
  await service?.close();
  await cluster?.stop();
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

const config = {
  model: { dModel: 16, layers: 2, heads: 2, ffn: 32, kinds: ['gated_delta', 'scalar_gate'] },
  data: { type: 'mqar', seqLen: 48, vocabSize: 16, numKvPairs: 2 },
  training: { steps: 30, batchSize: 4, evalSequences: 2, seed: 5 },
  cluster: { workers: 2 },
  checkpoint: { every: 5 },
};

/** A third worker, outside the launcher, that a test may kill or stop. */
async function startVictim(id: string): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [workerEntry, '--coordinator', cluster.coordinator.address, '--id', id, '--threads', '1', '--exit-with-stdin'],
    {
      stdio: ['pipe', 'ignore', 'ignore'],
    },
  );
  extra.push(child);
  for (let i = 0; i < 100 && cluster.coordinator.registry.get(id)?.state !== 'idle'; i++) await new Promise((r) => setTimeout(r, 100));
  return child;
}

let reference: JobView | undefined;
const serviceLog: string[] = [];

async function finished(id: string, timeoutMs = 120_000): Promise<JobView> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = (await service.get(id))!;
    if (v.state === 'completed' || v.state === 'failed' || v.state === 'cancelled') return v;
    if (Date.now() > end) {
      throw new Error(
        `job ${id} did not finish: ${JSON.stringify({ ...v, metrics: v.metrics.length })}\nworkers: ${describeWorkers(cluster.coordinator.registry.list())}\nservice log:\n${serviceLog.slice(-30).join('\n')}`,
      );
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function chaos(signal: 'SIGKILL' | 'SIGSTOP', corruptNewest = false): Promise<void> {
  reference ??= await finished((await service.submit(config)).id);
  assert.equal(reference.state, 'completed');
  const victimId = `victim-${signal}`;
  const victim = await startVictim(victimId);

  // Make sure the victim is in the group: hold one of the launcher's workers with a one-worker job.
  const hold = await service.submit({ ...config, training: { ...config.training, steps: 1_000_000 }, cluster: { workers: 1 } });
  for (let i = 0; i < 200 && (await service.get(hold.id))!.progress.phase !== 'running'; i++) await new Promise((r) => setTimeout(r, 100));
  const job = await service.submit(config);
  for (let i = 0; i < 600; i++) {
    const v = (await service.get(job.id))!;
    if (v.progress.step >= 12) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const running = (await service.get(job.id))!;
  assert.ok(running.progress.workers.includes(victimId), `the victim is in the group: ${running.progress.workers.join(', ')}`);
  const t0 = Date.now();
  victim.kill(signal);
  let corrupted: number | undefined;
  if (corruptNewest) {
    // The newest checkpoint of the job is damaged (a flipped byte in its data): the retry must
    // notice (checksum) and resume from the one before.
    const ckDir = join(dir, 'jobs', job.id);
    const files = (await readdir(ckDir)).filter((f) => /^ckpt-\d+\.lasp$/.test(f)).sort();
    const newest = files.at(-1)!;
    corrupted = Number(/\d+/.exec(newest)![0]);
    const fh = await open(join(ckDir, newest), 'r+');
    const { size } = await fh.stat();
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, size - 100);
    b[0] = b[0]! ^ 0xff;
    await fh.write(b, 0, 1, size - 100);
    await fh.close();
  }
  await service.cancel(hold.id); // frees a worker for the retry
  const done = await finished(job.id);
  assert.equal(done.state, 'completed', `${done.failedReason}`);
  assert.ok(done.restarts >= 1, `restarts ${done.restarts}`);
  assert.ok(!done.progress.workers.includes(victimId));
  assert.deepEqual(
    done.metrics.map((m) => m.step),
    reference.metrics.map((m) => m.step),
  );
  let worst = 0;
  for (const [i, m] of done.metrics.entries())
    worst = Math.max(worst, Math.abs(m.loss - reference.metrics[i]!.loss) / Math.abs(reference.metrics[i]!.loss));
  process.stdout.write(
    `# ${signal}: restarts ${done.restarts}; finished ${((Date.now() - t0) / 1000).toFixed(1)} s after the signal; largest relative loss difference to the uninterrupted run ${worst.toExponential(2)}\n`,
  );
  assert.ok(worst <= 1e-3, `losses differ from the uninterrupted run by ${worst}`);
  if (signal === 'SIGSTOP') victim.kill('SIGKILL');
  if (corrupted !== undefined) {
    assert.ok(
      serviceLog.some((l) => l.includes(`job ${job.id}: skipping checkpoint of step ${corrupted}`)),
      `the corrupt checkpoint of step ${corrupted} was skipped:\n${serviceLog.join('\n')}`,
    );
    const resumed = serviceLog.find((l) => l.startsWith(`job ${job.id}: resuming from`));
    assert.ok(resumed && !resumed.includes(`step ${corrupted})`), resumed);
  }
}

test('a worker SIGKILLed mid-job: the job restarts on live workers from its checkpoint, with the uninterrupted losses', () =>
  chaos('SIGKILL'));
test('a worker hung (SIGSTOP) mid-job: detected, and the job restarts on live workers with the uninterrupted losses', () =>
  chaos('SIGSTOP'));
test('the newest checkpoint corrupted as well: the retry skips it and resumes from the one before, with the uninterrupted losses', () =>
  chaos('SIGKILL', true));
