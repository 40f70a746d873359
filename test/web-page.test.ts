// The coordinator's web page in a real headless Chromium (Debian's chromium, driven by
// playwright-core; .ci/run installs it): with a real redis-server, job service, HTTP API and two
// worker processes, the page lists the workers, shows a submitted job progressing to completed,
// and draws its loss curve from the job's metrics, updating live.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { chromium } from 'playwright-core';
import { startLocalCluster } from '../cluster/local-cluster.js';
import { startRedis } from '../cluster/redis-server.js';
import { startHttpApi } from '../coordinator/http-api.js';
import { BullJobService } from '../coordinator/job-service.js';

const CHROMIUM = process.env.LASP_CHROMIUM ?? ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));

test('web page: workers, a job running to completion, and its loss curve, live in Chromium', async () => {
  assert.ok(CHROMIUM, 'no Chromium found (install Debian chromium, as .ci/run does, or set LASP_CHROMIUM)');
  const redis = await startRedis();
  const dir = await mkdtemp(join(tmpdir(), 'lasp-web-'));
  const cluster = await startLocalCluster({ workers: 2, threadsPerWorker: 1 });
  const service = await BullJobService.start(cluster.coordinator, { redisUrl: redis.url, dataDir: dir, queueName: `web-${process.pid}` });
  const api = await startHttpApi(service, { port: 0 });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(api.url + '/');
    await page.waitForSelector('#workers tbody tr[data-worker-id="local-0"]');
    assert.equal(await page.locator('#workers tbody tr').count(), 2);

    const job = await service.submit({
      model: { dModel: 16, layers: 1, heads: 2, ffn: 32 },
      data: { type: 'mqar', seqLen: 32, vocabSize: 16, numKvPairs: 2 },
      training: { steps: 30, batchSize: 2, evalSequences: 2 },
      cluster: { workers: 2 },
    });
    const row = page.locator(`#jobs tbody tr[data-job-id="${job.id}"]`);
    await row.waitFor();
    // Live: the curve grows while the job runs, then the row says completed.
    await page.waitForFunction(
      () => (document.querySelector('#line')?.getAttribute('points') ?? '').split(' ').filter(Boolean).length >= 3,
    );
    const early = (await page.getAttribute('#line', 'points'))!.split(' ').length;
    await page.waitForFunction(
      (id) => document.querySelector(`#jobs tr[data-job-id="${id}"] td:nth-child(2)`)?.textContent === 'completed',
      job.id,
      {
        timeout: 60_000,
      },
    );
    await page.waitForFunction(
      () => (document.querySelector('#line')?.getAttribute('points') ?? '').split(' ').filter(Boolean).length === 30,
    );
    const points = (await page.getAttribute('#line', 'points'))!.split(' ').map((p) => p.split(',').map(Number));
    assert.ok(early < 30, `the curve was first drawn with ${early} points, before the job ended`);
    for (const [x, y] of points) assert.ok(Number.isFinite(x) && Number.isFinite(y) && x! >= 0 && x! <= 720 && y! >= 0 && y! <= 300);
    assert.match((await row.textContent()) ?? '', /30 \/ 30/);
    assert.match((await page.textContent('#job-title')) ?? '', new RegExp(`job ${job.id} \\(completed\\)`));
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await api.close();
    await service.close();
    await cluster.stop();
    await redis.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
