// The coordinator's HTTP API (routing, status codes, body limits, JSON errors, query validation)
// and the job CLI (`lasp submit | status | list | cancel | logs | workers`) end to end against it.
// The job service here is a small in-memory one that validates configs with the real
// parseTrainConfig (so invalid configs fail with real ConfigErrors) and keeps jobs in a Map.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { startHttpApi, type HttpApi } from '../coordinator/http-api.js';
import type { JobService, JobState, JobView, MetricPoint, SubmitOptions, WorkerView } from '../coordinator/job-types.js';
import { parseTrainConfig } from '../train/config.js';
import { apiBase, formatJob, formatJobList, formatPoint, formatWorkers } from '../cli/jobs.js';
import { jobConfigFromFlags } from '../cli/job-flags.js';
import { waitUntil } from './helpers/control-wait.js';

class MemoryJobService implements JobService {
  readonly jobs = new Map<string, JobView>();
  /** The raw configs as submitted, by job id. */
  readonly raw = new Map<string, unknown>();
  workerList: WorkerView[] = [];
  healthy = true;
  /** Set to make every call throw this (an unexpected failure) or never answer ('hang'). */
  failure: Error | 'hang' | undefined;
  private next = 1;

  private async guard(): Promise<void> {
    if (this.failure === 'hang') await new Promise(() => {});
    if (this.failure) throw this.failure;
  }

  async submit(rawConfig: unknown, opts: SubmitOptions = {}): Promise<JobView> {
    await this.guard();
    const config = parseTrainConfig(rawConfig);
    const id = String(this.next++);
    const view: JobView = {
      id,
      state: 'waiting',
      priority: opts.priority ?? 0,
      createdAt: new Date(Date.now() + this.next).toISOString(),
      startedAt: null,
      finishedAt: null,
      progress: { phase: 'queued', step: 0, steps: config.training.steps, loss: null, tokensPerSec: null, etaSeconds: null, workers: [] },
      restarts: 0,
      attemptsMade: 0,
      attempts: opts.attempts ?? 3,
      metrics: [],
      result: null,
      failedReason: null,
      config,
    };
    this.jobs.set(id, view);
    this.raw.set(id, rawConfig);
    return structuredClone(view);
  }

  async get(id: string): Promise<JobView | undefined> {
    await this.guard();
    const j = this.jobs.get(id);
    return j && structuredClone(j);
  }

  async list(opts: { state?: JobState; limit?: number } = {}): Promise<JobView[]> {
    await this.guard();
    const all = [...this.jobs.values()].reverse().filter((j) => opts.state === undefined || j.state === opts.state);
    return all.slice(0, opts.limit ?? 100).map((j) => ({ ...structuredClone(j), metrics: [] }));
  }

  async cancel(id: string): Promise<JobView | undefined> {
    await this.guard();
    const j = this.jobs.get(id);
    if (j && (j.state === 'waiting' || j.state === 'active')) {
      j.state = 'cancelled';
      j.finishedAt = new Date().toISOString();
      j.progress.phase = 'done';
    }
    return j && structuredClone(j);
  }

  workers(): WorkerView[] {
    if (this.failure instanceof Error) throw this.failure;
    return structuredClone(this.workerList);
  }

  async health() {
    await this.guard();
    return { ok: this.healthy, redis: this.healthy, workers: { idle: this.workerList.length, busy: 0, dead: 0 } };
  }

  // Test drivers: what the real service does as workers train.
  start(id: string, workers: string[]): void {
    const j = this.jobs.get(id)!;
    Object.assign(j, { state: 'active', startedAt: new Date().toISOString(), attemptsMade: 1 });
    Object.assign(j.progress, { phase: 'running', workers });
  }

  step(id: string, p: MetricPoint): void {
    const j = this.jobs.get(id)!;
    j.metrics.push(p);
    Object.assign(j.progress, { step: p.step, loss: p.loss, tokensPerSec: p.tokensPerSec, etaSeconds: 1 });
  }

  end(id: string, state: 'completed' | 'failed', failedReason: string | null = null): void {
    const j = this.jobs.get(id)!;
    Object.assign(j, {
      state,
      failedReason,
      finishedAt: new Date().toISOString(),
      result: state === 'completed' ? { finalLoss: 1 } : null,
    });
    j.progress.phase = 'done';
  }
}

const service = new MemoryJobService();
const logged: string[] = [];
let api: HttpApi;
let dir: string;
const MAX_BODY = 4096;

before(async () => {
  api = await startHttpApi(service, { maxBodyBytes: MAX_BODY, timeoutMs: 300, log: (l) => logged.push(l) });
  dir = await mkdtemp(join(tmpdir(), 'lasp-http-api-'));
});

after(async () => {
  await api.close();
  await rm(dir, { recursive: true, force: true });
});

interface Res {
  status: number;
  headers: Headers;
  body: Record<string, unknown> & { error?: string; fields?: { field: string; message: string }[] };
}

/** One request; asserts the response is JSON. */
async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Res> {
  const init: RequestInit = { method, headers };
  if (body !== undefined) {
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
    init.headers = { 'content-type': 'application/json', ...headers };
  }
  const res = await fetch(`${api.url}${path}`, init);
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/, `${method} ${path}: content-type`);
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: (method === 'HEAD' ? {} : JSON.parse(text)) as Res['body'] };
}

const small = { data: { type: 'mqar', seqLen: 64, vocabSize: 64, numKvPairs: 8 }, training: { steps: 5 }, cluster: { workers: 2 } };

test('POST /v1/jobs queues a valid config: 201, Location, the job view with the validated config', async () => {
  const r = await call('POST', '/v1/jobs', { config: small, priority: 5, attempts: 2 });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const id = r.body.id as string;
  assert.equal(r.headers.get('location'), `/v1/jobs/${id}`);
  assert.equal(r.body.state, 'waiting');
  assert.equal(r.body.priority, 5);
  assert.equal(r.body.attempts, 2);
  assert.equal((r.body.config as { model: { dModel: number } }).model.dModel, 64, 'defaults filled in by the service');
  assert.deepEqual(service.raw.get(id), small, 'the raw config reaches the service as sent');

  const got = await call('GET', `/v1/jobs/${id}`);
  assert.equal(got.status, 200);
  assert.equal(got.body.id, id);
  for (const k of ['state', 'progress', 'restarts', 'metrics']) assert.ok(k in got.body, k);
});

test('POST /v1/jobs with an invalid config: 400 with every bad field named, nothing queued', async () => {
  const before = service.jobs.size;
  const r = await call('POST', '/v1/jobs', { config: { training: { steps: 0, lr: 'fast' }, cluster: { workers: 2 }, bogus: {} } });
  assert.equal(r.status, 400);
  assert.match(r.body.error!, /invalid job config/);
  const fields = r.body.fields!.map((f) => f.field).sort();
  assert.deepEqual(fields, ['config.bogus', 'training.lr', 'training.steps']);
  for (const f of r.body.fields!) assert.ok(f.message.includes(f.field), f.message);
  assert.equal(service.jobs.size, before);
});

test('POST /v1/jobs body shape: config required and under "config", priority and attempts checked', async () => {
  const cases: [unknown, string, RegExp][] = [
    [{ training: { steps: 5 } }, 'training', /not a field of a job submission.*under "config"/],
    [{}, 'config', /config is missing/],
    [{ config: [1] }, 'config', /config must be an object/],
    [{ config: small, priority: 1.5 }, 'priority', /priority must be an integer/],
    [{ config: small, priority: 1e6 }, 'priority', /priority must be an integer in \[-999999, 999999\]/],
    [{ config: small, attempts: 0 }, 'attempts', /attempts must be an integer in \[1, 100\]/],
    [[small], 'body', /must be a JSON object/],
    ['{"config": ', 'body', /not valid JSON/],
    ['  ', 'body', /empty/],
  ];
  for (const [body, field, message] of cases) {
    const r = await call('POST', '/v1/jobs', body);
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.match(r.body.error!, message);
    assert.deepEqual(
      r.body.fields?.map((f) => f.field),
      [field],
    );
  }
});

test('POST /v1/jobs: 415 unless the body is JSON', async () => {
  for (const ct of ['text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=latin1']) {
    const r = await call('POST', '/v1/jobs', JSON.stringify({ config: small }), { 'content-type': ct });
    assert.equal(r.status, 415, ct);
    assert.match(r.body.error!, /must be JSON/);
  }
  const res = await fetch(`${api.url}/v1/jobs`, { method: 'POST', body: new Blob([JSON.stringify({ config: small })]) });
  assert.equal(res.status, 415, 'no content-type');
  const ok = await call('POST', '/v1/jobs', JSON.stringify({ config: small }), {
    'content-type': 'application/vnd.lasp+json; charset=UTF-8',
  });
  assert.equal(ok.status, 201);
});

/** A POST whose body is streamed in chunks (no content-length); resolves with the response or the socket error. */
function chunkedPost(total: number): Promise<{ status: number; body: string } | { error: string }> {
  return new Promise((resolve) => {
    const req = request(`${api.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', (e) => resolve({ error: e.message }));
    });
    req.on('error', (e) => resolve({ error: e.message }));
    let sent = 0;
    const pump = () => {
      while (sent < total) {
        sent += 1024;
        if (!req.write('x'.repeat(1024))) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
  });
}

test('413 for a body over maxBodyBytes, declared or streamed; the server keeps serving', async () => {
  const big = { config: { ...small, checkpoint: { dir: 'x'.repeat(MAX_BODY) } } };
  const r = await call('POST', '/v1/jobs', big);
  assert.equal(r.status, 413);
  assert.match(r.body.error!, new RegExp(`limit is ${MAX_BODY} bytes`));
  const streamed = await chunkedPost(10 * MAX_BODY);
  assert.ok('status' in streamed, `the 413 arrives before the connection closes: ${JSON.stringify(streamed)}`);
  assert.equal(streamed.status, 413);
  assert.match(JSON.parse(streamed.body).error, /too large/);
  assert.equal((await call('GET', '/healthz')).status, 200);
});

test('GET /v1/jobs: newest first, state and limit filters, query parameters validated', async () => {
  const a = (await call('POST', '/v1/jobs', { config: small })).body.id as string;
  const b = (await call('POST', '/v1/jobs', { config: small })).body.id as string;
  await call('DELETE', `/v1/jobs/${a}`);
  const all = await call('GET', '/v1/jobs');
  assert.equal(all.status, 200);
  const ids = (all.body as unknown as JobView[]).map((j) => j.id);
  assert.ok(ids.indexOf(b) < ids.indexOf(a), 'newest first');
  const cancelled = (await call('GET', '/v1/jobs?state=cancelled')).body as unknown as JobView[];
  assert.ok(cancelled.length >= 1 && cancelled.every((j) => j.state === 'cancelled'));
  const one = (await call('GET', '/v1/jobs?limit=1')).body as unknown as JobView[];
  assert.deepEqual(
    one.map((j) => j.id),
    [b],
  );
  const bad: [string, string, RegExp][] = [
    ['state=bogus', 'state', /query parameter state must be one of waiting, active, completed, failed, cancelled/],
    ['limit=0', 'limit', /query parameter limit must be an integer in \[1, 1000\]/],
    ['limit=abc', 'limit', /limit/],
    ['limit=2.5', 'limit', /limit/],
    ['sort=id', 'sort', /unknown query parameter "sort"/],
    ['state=active&state=failed', 'state', /more than once/],
  ];
  for (const [q, field, message] of bad) {
    const r = await call('GET', `/v1/jobs?${q}`);
    assert.equal(r.status, 400, q);
    assert.match(r.body.error!, message);
    assert.deepEqual(
      r.body.fields?.map((f) => f.field),
      [field],
    );
  }
});

test('GET /v1/jobs/:id with metrics (metricsAfter for polling), 404 for an unknown job; DELETE cancels', async () => {
  const id = (await call('POST', '/v1/jobs', { config: small })).body.id as string;
  service.start(id, ['w1', 'w2']);
  for (let s = 1; s <= 3; s++) service.step(id, { step: s, loss: 4 - s, tokensPerSec: 1000 * s });
  const full = await call('GET', `/v1/jobs/${id}`);
  assert.equal(full.body.state, 'active');
  assert.deepEqual(
    (full.body.metrics as MetricPoint[]).map((m) => m.step),
    [1, 2, 3],
  );
  const tail = await call('GET', `/v1/jobs/${id}?metricsAfter=2`);
  assert.deepEqual(tail.body.metrics, [{ step: 3, loss: 1, tokensPerSec: 3000 }]);
  assert.equal((await call('GET', `/v1/jobs/${id}?metricsAfter=-1`)).status, 400);

  const missing = await call('GET', '/v1/jobs/nope');
  assert.equal(missing.status, 404);
  assert.equal(missing.body.error, 'no job "nope"');
  assert.equal((await call('DELETE', '/v1/jobs/nope')).status, 404);

  const del = await call('DELETE', `/v1/jobs/${id}`);
  assert.equal(del.status, 200);
  assert.equal(del.body.state, 'cancelled');
  assert.equal((await call('GET', `/v1/jobs/${encodeURIComponent(id)}/`)).body.state, 'cancelled', 'trailing slash, encoded id');
});

test('unknown routes 404, wrong methods 405 with Allow, HEAD on GET routes', async () => {
  for (const path of ['/v1', '/v1/jobs/1/metrics', '/v2/jobs']) {
    const r = await call('GET', path);
    assert.equal(r.status, 404, path);
    assert.match(r.body.error!, /no route GET/);
  }
  const cases: [string, string, string][] = [
    ['PUT', '/v1/jobs', 'GET, HEAD, POST'],
    ['PATCH', '/v1/jobs/1', 'GET, HEAD, DELETE'],
    ['POST', '/v1/workers', 'GET, HEAD'],
    ['DELETE', '/healthz', 'GET, HEAD'],
  ];
  for (const [method, path, allow] of cases) {
    const r = await call(method, path);
    assert.equal(r.status, 405, `${method} ${path}`);
    assert.equal(r.headers.get('allow'), allow);
    assert.match(r.body.error!, new RegExp(`method ${method} is not allowed`));
  }
  assert.equal((await call('HEAD', '/v1/workers')).status, 200);
});

test('GET /v1/workers lists the workers; /healthz is 200 when ok, 503 when not', async () => {
  service.workerList = [
    {
      id: 'w1',
      state: 'idle',
      pid: 4242,
      host: 'node-a',
      address: '127.0.0.1:7801',
      device: 'cpu',
      threads: 4,
      lastHeartbeat: new Date().toISOString(),
      job: null,
      rank: null,
    },
  ];
  const w = await call('GET', '/v1/workers');
  assert.equal(w.status, 200);
  assert.deepEqual(w.body, service.workerList);
  const h = await call('GET', '/healthz');
  assert.equal(h.status, 200);
  assert.equal(h.body.ok, true);
  service.healthy = false;
  try {
    const down = await call('GET', '/healthz');
    assert.equal(down.status, 503);
    assert.equal(down.body.ok, false);
  } finally {
    service.healthy = true;
  }
});

test('unexpected service errors answer 500 (and are logged); a service that hangs answers 503 after timeoutMs', async () => {
  service.failure = new Error('redis exploded');
  try {
    const r = await call('GET', '/v1/jobs');
    assert.equal(r.status, 500);
    assert.match(r.body.error!, /redis exploded/);
    assert.ok(logged.some((l) => l.includes('redis exploded') && l.includes('GET /v1/jobs')));
    assert.equal((await call('GET', '/v1/workers')).status, 500);
    service.failure = 'hang';
    const t0 = Date.now();
    const slow = await call('POST', '/v1/jobs', { config: small });
    assert.equal(slow.status, 503);
    assert.match(slow.body.error!, /did not answer within 300 ms/);
    assert.ok(Date.now() - t0 < 2000);
    const health = await call('GET', '/healthz');
    assert.equal(health.status, 503);
  } finally {
    service.failure = undefined;
  }
});

// ---------------------------------------------------------------------------------------------
// The CLI against the API

const cli = fileURLToPath(new URL('../cli/lasp.js', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function lasp(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
    if (!('LASP_API' in env)) delete childEnv.LASP_API;
    execFile(process.execPath, [cli, ...args], { env: childEnv, timeout: 30_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout, stderr }),
    );
  });
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

const worker = (id: string, rank: number, job: string): WorkerView => ({
  id,
  state: 'busy',
  pid: 100 + rank,
  host: `node-${rank}`,
  address: `127.0.0.1:${7801 + rank}`,
  device: 'cpu',
  threads: 2,
  lastHeartbeat: new Date(Date.now() - 3000).toISOString(),
  job,
  rank,
});

test('jobConfigFromFlags merges the file, then the flags, as lasp train does, without filling in defaults', async () => {
  assert.deepEqual(await jobConfigFromFlags(undefined, { workers: 2, steps: 7, seed: 3, seqLen: 64 }), {
    data: { type: 'mqar', seqLen: 64, vocabSize: 64, numKvPairs: 8, seed: 1 },
    training: { steps: 7, seed: 3 },
    cluster: { workers: 2 },
  });
  assert.deepEqual(await jobConfigFromFlags(undefined, {}), {});
  assert.deepEqual(await jobConfigFromFlags(undefined, { workers: 3, minWorkers: 2, maxRestarts: 0 }), {
    cluster: { workers: 3, minWorkers: 2, maxRestarts: 0 },
  });
  const file = join(dir, 'merge.json');
  await writeFile(file, JSON.stringify({ model: { kinds: ['delta', 'linear'] }, data: { type: 'bytes', path: 'a.txt', seqLen: 32 } }));
  assert.deepEqual(await jobConfigFromFlags(file, { kind: 'linear', data: 'bytes:b.txt', seqLen: 48, checkpointDir: 'runs/x', lr: 0.5 }), {
    model: { kind: 'linear' },
    data: { type: 'bytes', path: 'b.txt', seqLen: 48 },
    training: { lr: 0.5 },
    checkpoint: { dir: 'runs/x' },
  });
  const notJson = join(dir, 'not.json');
  await writeFile(notJson, '{"training": ');
  await assert.rejects(jobConfigFromFlags(notJson, {}), /not\.json is not valid JSON/);
  await assert.rejects(jobConfigFromFlags(join(dir, 'missing.json'), {}), /cannot read the job config .*missing\.json/);
  await writeFile(notJson, '[1]');
  await assert.rejects(jobConfigFromFlags(notJson, {}), /must hold a JSON object/);
});

test('apiBase: --api, else $LASP_API, else the default; checked', () => {
  const saved = process.env.LASP_API;
  try {
    delete process.env.LASP_API;
    assert.equal(apiBase(undefined), 'http://127.0.0.1:7780');
    process.env.LASP_API = 'http://coord:9000/';
    assert.equal(apiBase(undefined), 'http://coord:9000');
    assert.equal(apiBase('https://x.example/api/'), 'https://x.example/api');
    assert.throws(() => apiBase('ftp://x'), /--api must be an http:\/\/ or https:\/\/ URL/);
    process.env.LASP_API = 'nonsense';
    assert.throws(() => apiBase(undefined), /LASP_API must be a URL/);
  } finally {
    if (saved === undefined) delete process.env.LASP_API;
    else process.env.LASP_API = saved;
  }
});

test('human output: job, job list and worker tables', () => {
  const view: JobView = {
    id: '12',
    state: 'active',
    priority: 0,
    createdAt: '2025-01-02T03:04:05.678Z',
    startedAt: '2025-01-02T03:04:06.000Z',
    finishedAt: null,
    progress: { phase: 'running', step: 40, steps: 200, loss: 2.34567, tokensPerSec: 12345, etaSeconds: 65, workers: ['w1', 'w2'] },
    restarts: 1,
    attemptsMade: 1,
    attempts: 3,
    metrics: [],
    result: null,
    failedReason: null,
    config: {},
  };
  assert.equal(
    formatJob(view),
    [
      'job       12',
      'state     running on w1, w2',
      'progress  40/200 steps  loss 2.3457  tok/s 12.3K  eta 1m05s',
      'workers   w1, w2',
      'priority  0',
      'attempts  attempt 2 of 3, 1 restart',
      'created   2025-01-02 03:04:05Z',
      'started   2025-01-02 03:04:06Z',
      'finished  -',
    ].join('\n'),
  );
  assert.equal(
    formatJobList([view, { ...view, id: '9', state: 'waiting', progress: { ...view.progress, step: 0, loss: null, tokensPerSec: null } }]),
    [
      'ID  STATE    STEP    LOSS    TOK/S  PRIORITY  CREATED',
      '12  active   40/200  2.3457  12.3K  0         2025-01-02 03:04:05Z',
      '9   waiting  0/200   -       -      0         2025-01-02 03:04:05Z',
    ].join('\n'),
  );
  assert.equal(formatJobList([]), 'no jobs');
  const now = Date.parse('2025-01-02T03:05:00Z');
  assert.equal(
    formatWorkers(
      [
        { ...worker('w1', 0, '12'), lastHeartbeat: '2025-01-02T03:04:58Z' },
        { ...worker('w10', 1, '12'), state: 'idle', job: null, rank: null, lastHeartbeat: '2025-01-02T03:04:00Z' },
      ],
      now,
    ),
    [
      'ID   STATE  PID  HOST    ADDRESS         DEVICE  THREADS  JOB  RANK  HEARTBEAT',
      'w1   busy   100  node-0  127.0.0.1:7801  cpu     2        12   0     2s ago',
      'w10  idle   101  node-1  127.0.0.1:7802  cpu     2        -    -     1m00s ago',
    ].join('\n'),
  );
  assert.equal(formatWorkers([]), 'no workers registered');
  assert.equal(formatPoint({ step: 7, loss: 1.23456, tokensPerSec: 999.5 }), 'step 7  loss 1.2346  tok/s 1.00K');
});

test('lasp submit, status, list, cancel, workers against the API', async () => {
  const file = join(dir, 'job.json');
  await writeFile(file, JSON.stringify({ training: { lr: 0.003, steps: 50 }, cluster: { workers: 2 } }));
  const u = ['--api', api.url];
  const sub = await lasp(['submit', file, '--steps', '7', '--seq-len', '64', '--priority', '-2', '--attempts', '1', '--json', ...u]);
  assert.equal(sub.code, 0, sub.stderr);
  const a = JSON.parse(sub.stdout) as JobView;
  assert.equal(a.state, 'waiting');
  assert.equal(a.priority, -2);
  assert.equal(a.attempts, 1);
  assert.deepEqual(
    service.raw.get(a.id),
    {
      training: { lr: 0.003, steps: 7 },
      cluster: { workers: 2 },
      data: { type: 'mqar', seqLen: 64, vocabSize: 64, numKvPairs: 8, seed: 1 },
    },
    'the raw merged config (file, then flags), no defaults filled in',
  );

  service.start(a.id, ['w1', 'w2']);
  service.step(a.id, { step: 1, loss: 3.5, tokensPerSec: 2048 });
  service.workerList = [worker('w1', 0, a.id), worker('w2', 1, a.id)];
  const other = (await call('POST', '/v1/jobs', { config: small })).body.id as string;
  const [status, list, workers, cancel] = await Promise.all([
    lasp(['status', a.id, '--json', ...u]),
    lasp(['list', '--state', 'active', ...u]),
    lasp(['workers', '--json', ...u]),
    lasp(['cancel', other, ...u]),
  ]);
  assert.equal(status.code, 0, status.stderr);
  const s = JSON.parse(status.stdout) as JobView;
  assert.equal(s.state, 'active');
  assert.equal(s.restarts, 0);
  assert.equal(s.progress.step, 1);
  assert.deepEqual(s.metrics, [{ step: 1, loss: 3.5, tokensPerSec: 2048 }]);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /^ID\s+STATE\s+STEP\s+LOSS/);
  assert.match(list.stdout, new RegExp(`^${a.id}\\s+active\\s+1/7\\s+3\\.5000`, 'm'));
  assert.equal(workers.code, 0, workers.stderr);
  assert.deepEqual(JSON.parse(workers.stdout), service.workerList);

  assert.equal(cancel.code, 0, cancel.stderr);
  assert.equal(cancel.stdout, `job ${other} cancelled\n`);
  assert.equal(service.jobs.get(other)!.state, 'cancelled');
});

test('lasp submit with an invalid config: exit 1, every bad field named, nothing queued', async () => {
  const bad = join(dir, 'bad.json');
  await writeFile(bad, JSON.stringify({ training: { steps: 3 }, model: { kind: 'nope' } }));
  const before = service.jobs.size;
  const r = await lasp(['submit', bad, '--batch-size', '2', '--seed', '99999999999', '--api', api.url]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^lasp: invalid job config \(2 problems\)/);
  assert.match(r.stderr, /training\.seed must be an integer/);
  assert.match(r.stderr, /model\.kind must be one of/);
  assert.equal(r.stdout, '');
  assert.equal(service.jobs.size, before);
});

test('lasp: connection refused names the API URL', async () => {
  const url = `http://127.0.0.1:${await closedPort()}`;
  const r = await lasp(['status', '1'], { LASP_API: url });
  assert.equal(r.code, 1);
  assert.equal(
    r.stderr,
    `lasp: cannot reach the coordinator API at ${url} (is \`lasp coordinator --redis ... --http-port ...\` running?)\n`,
  );
});

/** Spawns `lasp ...`, calling onLine for each stdout line; resolves at exit. */
function laspLive(args: string[], env: Record<string, string>, onLine: (line: string) => void): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    const run: Run = { code: null, stdout: '', stderr: '' };
    const kill = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.stderr.on('data', (d: Buffer) => (run.stderr += d.toString()));
    createInterface({ input: child.stdout }).on('line', (line) => {
      run.stdout += `${line}\n`;
      onLine(line);
    });
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(kill);
      resolve({ ...run, code });
    });
  });
}

test('lasp submit --wait follows the job to completion (exit 0); lasp logs prints the points and fails on a failed job', async () => {
  let id = '';
  const waited = laspLive(['submit', '--steps', '3', '--wait', '--interval-ms', '30'], { LASP_API: api.url }, (line) => {
    if (!id) id = line.trim();
  });
  await waitUntil(() => id !== '' && service.jobs.has(id), 'the submitted job id', 5000);
  service.start(id, ['w1', 'w2']);
  await sleep(100);
  for (let s = 1; s <= 3; s++) {
    service.step(id, { step: s, loss: 3 - s / 2, tokensPerSec: 1500 });
    await sleep(40);
  }
  service.end(id, 'completed');
  const w = await waited;
  assert.equal(w.code, 0, w.stderr);
  assert.equal(w.stdout, `${id}\n`, 'stdout: only the id');
  assert.match(w.stderr, new RegExp(`^queued job ${id} \\(priority 0, up to 3 attempts\\)$`, 'm'));
  assert.match(w.stderr, /running on w1, w2/);
  assert.match(w.stderr, /^step 1 {2}loss 2\.5000 {2}tok\/s 1\.50K$/m);
  assert.match(w.stderr, /^step 3 {2}loss 1\.5000/m);
  assert.match(w.stderr, /^completed: 3\/3 steps/m);
  const steps = [...w.stderr.matchAll(/^step (\d+) /gm)].map((m) => Number(m[1]));
  assert.deepEqual(steps, [1, 2, 3], 'each point once');

  const f = (await call('POST', '/v1/jobs', { config: small })).body.id as string;
  service.start(f, ['w1', 'w2']);
  service.step(f, { step: 1, loss: 2, tokensPerSec: 100 });
  service.step(f, { step: 2, loss: 1.5, tokensPerSec: 100 });
  service.end(f, 'failed', 'worker w2 died');
  const [logs, logsJson] = await Promise.all([
    lasp(['logs', f, '--interval-ms', '30', '--api', api.url]),
    lasp(['logs', f, '--json', '--api', api.url]),
  ]);
  assert.equal(logs.code, 1);
  assert.equal(logs.stdout, 'step 1  loss 2.0000  tok/s 100\nstep 2  loss 1.5000  tok/s 100\nfailed: worker w2 died\n');
  assert.equal(logsJson.code, 1);
  assert.deepEqual(
    logsJson.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as unknown),
    [
      { step: 1, loss: 2, tokensPerSec: 100 },
      { step: 2, loss: 1.5, tokensPerSec: 100 },
    ],
  );
  assert.match(logsJson.stderr, /failed: worker w2 died/);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
