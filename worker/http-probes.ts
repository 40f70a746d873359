// `lasp worker --http-port P`: the worker's HTTP probes for orchestrators and monitoring.
//   GET /healthz → 200 {ok: true, id, state} while the process serves
//   GET /readyz  → 200 once registered with the coordinator and heard from within 3 heartbeat
//                  intervals, and not draining; else 503
//   GET /metrics → Prometheus text: state, heartbeat age, registrations, training steps, last
//                  step's tokens/s, collective wait and duration; collective bytes sent/received
//                  and the latency of every collective op (histogram by op and outcome)
// No secrets and no control: these stay open even when the cluster has a token.
import { createServer } from 'node:http';
import { Gauge, Registry } from 'prom-client';
import { trainStats } from '../train/train-task.js';
import { collectiveRegistry } from './collectives/op-metrics.js';
import { joinAddress } from './collectives/h2-peer-stream.js';
import type { WorkerProcess } from './main.js';

export interface WorkerHttpOptions {
  /** Default "127.0.0.1". */
  host?: string;
  /** 0 picks a free port. */
  port: number;
  /** Heartbeat interval for /readyz. Default: the one the coordinator gave the worker. */
  heartbeatIntervalMs?: number;
}

export async function startWorkerHttp(worker: WorkerProcess, opts: WorkerHttpOptions): Promise<{ url: string; close(): Promise<void> }> {
  const registry = new Registry();
  const gauge = (name: string, help: string, value: () => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(value());
      },
    });
  gauge('lasp_worker_busy', '1 while the worker is in a group', () => (worker.control.status().state === 'busy' ? 1 : 0));
  gauge('lasp_worker_draining', '1 once the worker drains (SIGTERM or a drain request): it leaves when its job releases it', () =>
    worker.isDraining || worker.link.draining ? 1 : 0,
  );
  gauge('lasp_worker_heartbeat_age_seconds', 'Seconds since the coordinator last answered (-1 before the first time)', () =>
    worker.link.lastContact ? (Date.now() - worker.link.lastContact) / 1000 : -1,
  );
  gauge('lasp_worker_registrations', 'Successful registrations with a coordinator', () => worker.link.registrations);
  gauge('lasp_worker_train_steps', 'Training steps this worker ran', () => trainStats.steps);
  gauge(
    'lasp_worker_last_step_tokens_per_second',
    'Tokens per second of the last training step (whole batch)',
    () => trainStats.lastTokensPerSec,
  );
  gauge('lasp_worker_last_step_seconds', 'Duration of the last training step on this worker', () => trainStats.lastStepMs / 1000);
  gauge(
    'lasp_worker_last_step_collective_seconds',
    'Time the last training step waited in collectives',
    () => trainStats.lastCollectiveMs / 1000,
  );
  const interval = () => opts.heartbeatIntervalMs ?? worker.link.heartbeatIntervalMs;
  const json = (status: number, body: unknown) => ({ status, type: 'application/json; charset=utf-8', text: `${JSON.stringify(body)}\n` });
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://worker.invalid').pathname;
    const reply = async () => {
      if (req.method !== 'GET' && req.method !== 'HEAD') return json(405, { error: `method ${req.method} not allowed` });
      const state = worker.control.status().state;
      if (path === '/healthz') return json(200, { ok: true, id: worker.id, state });
      if (path === '/readyz') {
        const age = worker.link.lastContact ? Date.now() - worker.link.lastContact : Infinity;
        const draining = worker.isDraining || worker.link.draining;
        const ready = worker.link.registrations > 0 && age <= 3 * interval() && !draining;
        return json(ready ? 200 : 503, { ready, id: worker.id, state, draining, heartbeatAgeMs: Number.isFinite(age) ? age : null });
      }
      if (path === '/metrics') {
        const merged = Registry.merge([registry, collectiveRegistry]);
        return { status: 200, type: registry.contentType, text: await merged.metrics() };
      }
      return json(404, { error: `no route ${path} (try /healthz, /readyz, /metrics)` });
    };
    reply().then(
      (r) => {
        res.writeHead(r.status, { 'content-type': r.type, 'cache-control': 'no-store' });
        res.end(req.method === 'HEAD' ? undefined : r.text);
      },
      (e: unknown) => {
        res.writeHead(500, { 'content-type': 'application/json; charset=utf-8' });
        res.end(`${JSON.stringify({ error: (e as Error).message })}\n`);
      },
    );
  });
  const host = opts.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, host, () => resolve());
  });
  const addr = server.address();
  const port = addr && typeof addr === 'object' ? addr.port : opts.port;
  return {
    url: `http://${joinAddress(host, port)}`,
    close: () => new Promise((r) => server.close(() => r())),
  };
}
