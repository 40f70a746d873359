// Redis restarted while jobs are queued and running (append-only persistence, as a production
// Redis for lasp should run): nothing is lost. The running job keeps training while Redis is down
// (its workers need no Redis), BullMQ and ioredis reconnect, the queued job is still there and
// runs, and both complete with every step's metric.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { startLocalCluster } from '../cluster/local-cluster.js';
import { startRedis } from '../cluster/redis-server.js';
import { BullJobService } from '../coordinator/job-service.js';
import type { JobView } from '../coordinator/job-types.js';

test('Redis restarted mid-job: the running and the queued job both complete, nothing lost', async () => {
  let redis = await startRedis({ persist: true });
  const dir = await mkdtemp(join(tmpdir(), 'lasp-redis-restart-'));
  const cluster = await startLocalCluster({ workers: 2, threadsPerWorker: 1 });
  const service = await BullJobService.start(cluster.coordinator, { redisUrl: redis.url, dataDir: dir, queueName: `rr-${process.pid}` });
  try {
    const config = (steps: number) => ({
      model: { dModel: 16, layers: 1, heads: 2, ffn: 32 },
      data: { type: 'mqar', seqLen: 32, vocabSize: 16, numKvPairs: 2 },
      training: { steps, batchSize: 2, evalSequences: 2 },
      cluster: { workers: 2 },
    });
    const a = await service.submit(config(120));
    const b = await service.submit(config(5));
    for (let i = 0; i < 300 && (await service.get(a.id))!.progress.step < 5; i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal((await service.get(b.id))!.state, 'waiting');

    const { port, dir: data } = redis;
    await redis.stop({ keepData: true });
    await new Promise((r) => setTimeout(r, 1000));
    redis = await startRedis({ persist: true, port, dir: data });

    const views: JobView[] = [];
    for (const id of [a.id, b.id]) {
      let v: JobView | undefined;
      for (let i = 0; i < 600; i++) {
        v = await service.get(id).catch(() => undefined);
        if (v && (v.state === 'completed' || v.state === 'failed' || v.state === 'cancelled')) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.ok(v, `job ${id} is still known after the restart`);
      views.push(v);
    }
    assert.deepEqual(
      views.map((v) => v.state),
      ['completed', 'completed'],
      JSON.stringify(views.map((v) => ({ id: v.id, state: v.state, reason: v.failedReason }))),
    );
    assert.equal(views[1]!.metrics.length, 5);
    // Steps of the first job finished while Redis was down have no stored metric; the rest do.
    assert.ok(
      views[0]!.metrics.length > 0 && views[0]!.metrics.at(-1)!.step === 120,
      `last metric ${JSON.stringify(views[0]!.metrics.at(-1))}`,
    );
  } finally {
    await service.close();
    await cluster.stop();
    await redis.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
