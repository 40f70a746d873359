// `lasp worker --http-port`: the worker's /healthz, /readyz and /metrics. Ready once registered
// and heard from; not ready when the coordinator goes silent; healthy while the process serves.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Coordinator } from '../coordinator/coordinator.js';

const lasp = fileURLToPath(new URL('../cli/lasp.js', import.meta.url));

test('worker HTTP probes: healthz, readyz follows the coordinator, Prometheus metrics', async () => {
  const coordinator = await Coordinator.start({ port: 0, heartbeatIntervalMs: 300 });
  const child = spawn(process.execPath, [lasp, 'worker', '--coordinator', coordinator.address, '--id', 'probe-w', '--http-port', '0'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stopped = false;
  try {
    const url = await new Promise<string>((resolve, reject) => {
      const lines: string[] = [];
      const timer = setTimeout(() => reject(new Error(`no HTTP probes line:\n${lines.join('\n')}`)), 15_000);
      createInterface({ input: child.stderr! }).on('line', (l) => {
        lines.push(l);
        const m = /HTTP probes on (http:\/\/[\d.]+:\d+)/.exec(l);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
    });
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
