// The collective metrics on a worker's /metrics (`lasp worker --http-port`): after a short 2-rank
// training run between two real worker processes, each worker reports the bytes it sent and
// received (equal to what its peer received and sent) and a latency histogram per collective op.
// A draining worker is not ready (/readyz 503, draining: true) and stops once its group releases it.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Coordinator } from '../coordinator/coordinator.js';
import { spawnProbedWorker } from './helpers/worker-process.js';
import { parseTrainConfig } from '../train/config.js';
import { runTraining } from '../train/driver.js';
import { startWorkerHttp } from '../worker/http-probes.js';
import { startWorker as startInProcessWorker } from '../worker/main.js';

function startWorker(id: string, coordinator: string) {
  return spawnProbedWorker(id, coordinator, ['--threads', '1']);
}

function sample(text: string, name: string, labels: string): number {
  const escaped = `${name}{${labels}}`.replace(/[{}+.]/g, (c) => `\\${c}`);
  const m = new RegExp(`^${escaped} (\\S+)$`, 'm').exec(text);
  assert.ok(m, `no sample ${name}{${labels}} in:\n${text}`);
  return Number(m[1]);
}

test('worker /metrics: collective bytes sent/received and per-op latency histograms after a 2-rank run', async () => {
  const coordinator = await Coordinator.start({ port: 0, heartbeatIntervalMs: 300 });
  const dir = await mkdtemp(join(tmpdir(), 'lasp-wmetrics-'));
  const workers = [startWorker('m-0', coordinator.address), startWorker('m-1', coordinator.address)];
  try {
    const urls = await Promise.all(workers.map((w) => w.url));
    await coordinator.waitForWorkers(2, 15_000);
    const config = parseTrainConfig({
      model: { dModel: 16, layers: 1, heads: 2, ffn: 32 },
      data: { type: 'mqar', seqLen: 32, vocabSize: 16, numKvPairs: 2 },
      training: { steps: 3, batchSize: 2, evalSequences: 2 },
      cluster: { workers: 2 },
      checkpoint: { dir },
    });
    const summary = await runTraining(config, {
      cluster: {
        formGroup: (jobId, world) => coordinator.formGroup(jobId, { min: world, max: world }),
        runTask: (g, type, cfg, o) => coordinator.runTask(g, type, cfg, o),
        releaseGroup: (g) => coordinator.releaseGroup(g),
      },
      writeFiles: false,
    });
    assert.equal(summary.step, 3);
    const texts = await Promise.all(urls.map(async (u) => (await fetch(`${u}/metrics`)).text()));
    const sent = texts.map((t) => sample(t, 'lasp_worker_collective_bytes_total', 'direction="sent"'));
    const received = texts.map((t) => sample(t, 'lasp_worker_collective_bytes_total', 'direction="received"'));
    assert.ok(sent[0]! > 0 && sent[1]! > 0, `sent ${sent.join(', ')}`);
    assert.equal(sent[0], received[1], 'what rank 0 sent, rank 1 received');
    assert.equal(sent[1], received[0], 'what rank 1 sent, rank 0 received');
    for (const t of texts) {
      assert.match(t, /^# TYPE lasp_worker_collective_op_seconds histogram$/m);
      const ops = sample(t, 'lasp_worker_collective_op_seconds_count', 'op="allGather",outcome="ok"');
      assert.ok(ops >= 3, `allGather ops ${ops}`);
      assert.ok(sample(t, 'lasp_worker_collective_op_seconds_sum', 'op="allGather",outcome="ok"') > 0);
      assert.equal(sample(t, 'lasp_worker_collective_op_seconds_bucket', 'le="+Inf",op="allGather",outcome="ok"'), ops);
      assert.match(t, /^lasp_worker_draining 0$/m);
    }
    process.stdout.write(`# 3 steps, W=2: bytes sent per rank ${sent.join(', ')}\n`);
  } finally {
    for (const w of workers) w.child.kill('SIGKILL');
    await coordinator.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

test('a draining worker: /readyz 503 with draining true while its group holds it; it stops once released', async () => {
  const coordinator = await Coordinator.start({ port: 0, heartbeatIntervalMs: 200 });
  const worker = await startInProcessWorker({ coordinator: coordinator.address, id: 'drain-probe', threads: 1, drainTimeoutMs: 20_000 });
  const http = await startWorkerHttp(worker, { port: 0 });
  try {
    await worker.registered;
    const group = await coordinator.formGroup('drain-job', { min: 1, max: 1 });
    const drained = worker.drain('test');
    const r = await fetch(`${http.url}/readyz`);
    assert.equal(r.status, 503);
    assert.deepEqual(((await r.json()) as { draining: boolean }).draining, true);
    assert.equal(coordinator.registry.get('drain-probe')?.state, 'draining');
    let settled = false;
    void drained.then(() => (settled = true));
    await new Promise((res) => setTimeout(res, 500));
    assert.equal(settled, false, 'waits while its group holds it');
    const t0 = Date.now();
    await coordinator.releaseGroup(group);
    await drained;
    process.stdout.write(`# drained ${Date.now() - t0} ms after its group was released\n`);
  } finally {
    await http.close();
    await worker.stop();
    await coordinator.stop();
  }
});
