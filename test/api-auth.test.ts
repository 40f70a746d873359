// The HTTP API with a bearer token (lasp coordinator --token / LASP_TOKEN) and its open probes:
// /v1 routes answer 401 without the token or with a wrong one (logged without the secret),
// /healthz, /readyz and /metrics stay open; /metrics is Prometheus text with the service's
// gauges; the CLI sends --token / LASP_TOKEN. Real redis-server, job service and HTTP API.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startRedis, type TestRedis } from '../cluster/redis-server.js';
import { Coordinator } from '../coordinator/coordinator.js';
import { startHttpApi, type HttpApi } from '../coordinator/http-api.js';
import { BullJobService } from '../coordinator/job-service.js';

const lasp = fileURLToPath(new URL('../cli/lasp.js', import.meta.url));
const TOKEN = `t0k-${process.pid}-${Math.random().toString(36).slice(2)}`;
let redis: TestRedis;
let dir: string;
let coordinator: Coordinator;
let service: BullJobService;
let api: HttpApi;
const logged: string[] = [];

before(async () => {
  redis = await startRedis();
  dir = await mkdtemp(join(tmpdir(), 'lasp-auth-'));
  coordinator = await Coordinator.start({ port: 0 });
  service = await BullJobService.start(coordinator, { redisUrl: redis.url, dataDir: dir, queueName: `auth-${process.pid}` });
  api = await startHttpApi(service, { port: 0, token: TOKEN, log: (l) => logged.push(l) });
});

after(async () => {
  await api?.close();
  await service?.close();
  await coordinator?.stop();
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

test('bearer token: 401 without it or with a wrong one, 200 with it; the secret is never logged', async () => {
  const none = await fetch(`${api.url}/v1/jobs`);
  assert.equal(none.status, 401);
  assert.equal(none.headers.get('www-authenticate'), 'Bearer');
  assert.match(((await none.json()) as { error: string }).error, /missing or wrong bearer token/);
  const wrong = await fetch(`${api.url}/v1/workers`, { headers: { authorization: `Bearer ${TOKEN}x` } });
  assert.equal(wrong.status, 401);
  const post = await fetch(`${api.url}/v1/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{"config":{}}',
  });
  assert.equal(post.status, 401, 'nothing is queued without the token');
  const ok = await fetch(`${api.url}/v1/jobs`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(ok.status, 200);
  assert.deepEqual(await ok.json(), []);
  assert.ok(logged.length >= 3 && logged.every((l) => !l.includes(TOKEN)), logged.join('\n'));
});

test('probes stay open: /healthz 200, /readyz 503 without live workers, /metrics in Prometheus format', async () => {
  const h = await fetch(`${api.url}/healthz`);
  assert.equal(h.status, 200);
  const r = await fetch(`${api.url}/readyz`);
  assert.equal(r.status, 503);
  assert.equal(((await r.json()) as { ready: boolean }).ready, false);
  const m = await fetch(`${api.url}/metrics`);
  assert.equal(m.status, 200);
  assert.match(m.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const text = await m.text();
  assert.match(text, /^# TYPE lasp_workers gauge$/m);
  assert.match(text, /^lasp_workers\{state="idle"\} 0$/m);
  assert.match(text, /^lasp_queue_jobs\{state="waiting"\} 0$/m);
  assert.match(text, /^# TYPE lasp_job_steps_total counter$/m);
});

function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [lasp, ...args], { env: { ...process.env, LASP_TOKEN: '', ...env } }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

test('CLI: --token and LASP_TOKEN are sent; without them the command fails with the 401 message', async () => {
  const a = await cli(['list', '--api', api.url, '--token', TOKEN, '--json']);
  assert.equal(a.code, 0, a.stderr);
  assert.deepEqual(JSON.parse(a.stdout), []);
  const b = await cli(['workers', '--api', api.url, '--json'], { LASP_TOKEN: TOKEN });
  assert.equal(b.code, 0, b.stderr);
  const c = await cli(['list', '--api', api.url]);
  assert.notEqual(c.code, 0);
  assert.match(c.stderr, /missing or wrong bearer token/);
});
