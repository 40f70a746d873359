// `lasp worker --http-port`: the worker's /healthz, /readyz and /metrics. Ready once registered
// and heard from; not ready when the coordinator goes silent; healthy while the process serves.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Coordinator } from '../coordinator/coordinator.js';
import { spawnProbedWorker } from './helpers/worker-process.js';

test('worker HTTP probes: healthz, readyz follows the coordinator, Prometheus metrics', async () => {
  const coordinator = await Coordinator.start({ port: 0, heartbeatIntervalMs: 300 });
  const { child, url: probes } = spawnProbedWorker('probe-w', coordinator.address);
  let stopped = false;
  try {
    const url = await probes;
    const get = async (path: string) => {
      const r = await fetch(url + path);
      return { status: r.status, text: await r.text() };
    };
    assert.equal((await get('/healthz')).status, 200);
    let ready = await get('/readyz');
    for (let i = 0; i < 50 && ready.status !== 200; i++) {
      await new Promise((r) => setTimeout(r, 100));
      ready = await get('/readyz');
    }
    assert.equal(ready.status, 200, ready.text);
    const metrics = (await get('/metrics')).text;
    assert.match(metrics, /^lasp_worker_busy 0$/m);
    assert.match(metrics, /^lasp_worker_registrations 1$/m);
    assert.match(metrics, /^# TYPE lasp_worker_heartbeat_age_seconds gauge$/m);
    assert.equal((await get('/nope')).status, 404);

    await coordinator.stop();
    stopped = true;
    for (let i = 0; i < 40 && ready.status === 200; i++) {
      await new Promise((r) => setTimeout(r, 100));
      ready = await get('/readyz');
    }
    assert.equal(ready.status, 503, 'not ready once the coordinator stops answering');
    assert.equal((await get('/healthz')).status, 200, 'still healthy');
  } finally {
    child.kill('SIGKILL');
    if (!stopped) await coordinator.stop();
  }
});
