// `lasp submit | status | list | cancel | logs | workers`: the coordinator's job queue through its
// HTTP API (coordinator/http-api.ts). Every command takes --api URL (default $LASP_API, else
// http://127.0.0.1:7780) and --json (the API's JSON as it came, one value per line).
//
// `lasp submit [job.json] [flags]` builds the job config like `lasp train` (the file, then the flags
// on top) but sends it raw: the coordinator validates it and fills in the defaults. Paths in it
// (data files, checkpoint.dir) are read by the coordinator and its workers, not here.
import { setTimeout as sleep } from 'node:timers/promises';
import { Option, type Command } from 'commander';
import { JOB_STATES, type JobState, type JobView, type MetricPoint, type WorkerView } from '../coordinator/job-types.js';
import { formatDuration, formatRate } from '../train/progress.js';
import { positiveInt } from './args.js';
import { addJobConfigOptions, integer, jobConfigFromFlags, type JobConfigFlags, type Json } from './job-flags.js';

export const DEFAULT_API = 'http://127.0.0.1:7780';
/** A request that takes longer than this fails (the server answers 503 after 30 s itself). */
const REQUEST_TIMEOUT_MS = 60_000;
/** While following a job, the API may be unreachable this long (a coordinator restart) before giving up. */
const UNREACHABLE_GRACE_MS = 60_000;
const TERMINAL: readonly JobState[] = ['completed', 'failed', 'cancelled'];

interface ApiFlags {
  api?: string;
  token?: string;
  json?: boolean;
}

interface SubmitFlags extends JobConfigFlags, ApiFlags {
  priority?: number;
  attempts?: number;
  wait?: boolean;
  intervalMs: number;
}

// ---------------------------------------------------------------------------------------------
// Flag parsers and the job config

// ---------------------------------------------------------------------------------------------
// The API client

/** The API could not be reached (connection refused, DNS, reset, timeout). */
export class ApiUnreachable extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ApiUnreachable';
  }
}

/** The API answered with an error status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The base URL: --api, else $LASP_API, else the default; checked, without a trailing slash. */
export function apiBase(flag: string | undefined): string {
  const given = flag ?? (process.env.LASP_API || undefined);
  const raw = given ?? DEFAULT_API;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error(`${flag !== undefined ? '--api' : 'LASP_API'} must be a URL like ${DEFAULT_API}, got ${JSON.stringify(raw)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new Error(`${flag !== undefined ? '--api' : 'LASP_API'} must be an http:// or https:// URL, got ${JSON.stringify(raw)}`);
  return url.href.replace(/\/+$/, '');
}

function causeCode(e: unknown): string | undefined {
  const c = (e as { cause?: { code?: unknown; errors?: { code?: unknown }[] } }).cause;
  if (!c) return undefined;
  if (typeof c.code === 'string') return c.code;
  const first = c.errors?.[0]?.code;
  return typeof first === 'string' ? first : undefined;
}

function unreachable(base: string, e: unknown): ApiUnreachable {
  const hint = '(is `lasp coordinator --redis ... --http-port ...` running?)';
  if (e instanceof Error && (e.name === 'TimeoutError' || e.name === 'AbortError'))
    return new ApiUnreachable(`the coordinator API at ${base} did not answer within ${REQUEST_TIMEOUT_MS / 1000} s`);
  const code = causeCode(e);
  if (code === 'ECONNREFUSED') return new ApiUnreachable(`cannot reach the coordinator API at ${base} ${hint}`);
  const cause = (e as { cause?: { message?: unknown } }).cause;
  const detail = code ?? (typeof cause?.message === 'string' && cause.message ? cause.message : (e as Error).message);
  return new ApiUnreachable(`cannot reach the coordinator API at ${base}: ${detail} ${hint}`);
}

/** The server's error body as a message: the error, then every field not already in it. */
function errorMessage(status: number, body: unknown): string {
  const b = (typeof body === 'object' && body !== null ? body : {}) as { error?: unknown; fields?: unknown };
  let msg = typeof b.error === 'string' ? b.error : `HTTP ${status}`;
  if (status >= 500) msg = `the coordinator API failed (HTTP ${status}): ${msg}`;
  if (Array.isArray(b.fields)) {
    for (const f of b.fields as { field?: unknown; message?: unknown }[]) {
      const field = typeof f.field === 'string' ? f.field : '';
      const m = typeof f.message === 'string' ? f.message : '';
      if (m && msg.includes(m)) continue;
      msg += `\n  - ${m.startsWith(field) ? m : `${field}: ${m}`}`;
    }
  }
  return msg;
}

/** --token, else $LASP_TOKEN, else none. */
export function tokenOf(flag: string | undefined): string | undefined {
  const t = flag ?? process.env.LASP_TOKEN;
  return t === undefined || t === '' ? undefined : t;
}

export class ApiClient {
  constructor(
    readonly base: string,
    private readonly token?: string,
  ) {}

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const url = `${this.base}${path}`;
    let status: number;
    let text: string;
    try {
      const headers: Record<string, string> = {};
      if (this.token) headers.authorization = `Bearer ${this.token}`;
      const init: RequestInit = { method, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS), headers };
      if (body !== undefined) {
        headers['content-type'] = 'application/json';
        init.body = JSON.stringify(body);
      }
      const res = await fetch(url, init);
      status = res.status;
      text = await res.text();
    } catch (e) {
      throw unreachable(this.base, e);
    }
    let json: unknown;
    try {
      json = JSON.parse(text) as unknown;
    } catch {
      throw new ApiError(
        status,
        `${method} ${url} answered HTTP ${status} with something other than JSON (${JSON.stringify(text.slice(0, 80))}): is --api the coordinator's HTTP API?`,
      );
    }
    if (status < 200 || status >= 300) throw new ApiError(status, errorMessage(status, json));
    return json as T;
  }

  job(id: string, metricsAfter?: number): Promise<JobView> {
    const q = metricsAfter !== undefined ? `?metricsAfter=${metricsAfter}` : '';
    return this.request<JobView>('GET', `/v1/jobs/${encodeURIComponent(id)}${q}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Human output

/** Rows as columns padded to their widest cell, two spaces apart (the last column unpadded). */
export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ')).join('\n');
}

const time = (iso: string | null) => (iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '-');
const ago = (iso: string, now = Date.now()) => {
  const t = Date.parse(iso);
  return Number.isFinite(t) ? `${formatDuration(now - t)} ago` : iso;
};
const loss = (x: number | null) => (x === null ? '-' : x.toFixed(4));
const rate = (x: number | null) => (x === null ? '-' : formatRate(Number(x.toPrecision(3))));

function stateText(v: JobView): string {
  if (v.state === 'waiting' && v.progress.phase === 'waiting-for-workers') {
    const want = (v.config as { cluster?: { workers?: unknown } } | null)?.cluster?.workers;
    return `waiting for ${typeof want === 'number' ? `${want} ` : ''}free workers`;
  }
  if (v.state === 'waiting') return 'waiting in the queue';
  if (v.state === 'active') return v.progress.workers.length > 0 ? `running on ${v.progress.workers.join(', ')}` : 'running';
  if (v.state === 'failed') return `failed${v.failedReason ? `: ${v.failedReason}` : ''}`;
  return v.state;
}

function progressText(v: JobView): string {
  const p = v.progress;
  const parts = [`${p.step}/${p.steps} steps`];
  if (p.loss !== null) parts.push(`loss ${loss(p.loss)}`);
  if (p.tokensPerSec !== null) parts.push(`tok/s ${rate(p.tokensPerSec)}`);
  if (p.etaSeconds !== null && v.state === 'active') parts.push(`eta ${formatDuration(p.etaSeconds * 1000)}`);
  return parts.join('  ');
}

export function formatJob(v: JobView): string {
  const rows = [
    ['job', v.id],
    ['state', stateText(v)],
    ['progress', progressText(v)],
    ['priority', String(v.priority)],
    [
      'attempts',
      `${v.state === 'active' ? `attempt ${v.attemptsMade + 1} of ${v.attempts}` : `${v.attemptsMade} of ${v.attempts} used`}, ${v.restarts} restart${v.restarts === 1 ? '' : 's'}`,
    ],
    ['created', time(v.createdAt)],
    ['started', time(v.startedAt)],
    ['finished', time(v.finishedAt)],
  ];
  if (v.progress.workers.length > 0) rows.splice(3, 0, ['workers', v.progress.workers.join(', ')]);
  return table(rows);
}

export function formatJobList(jobs: JobView[]): string {
  if (jobs.length === 0) return 'no jobs';
  return table([
    ['ID', 'STATE', 'STEP', 'LOSS', 'TOK/S', 'PRIORITY', 'CREATED'],
    ...jobs.map((j) => [
      j.id,
      j.state,
      `${j.progress.step}/${j.progress.steps}`,
      loss(j.progress.loss),
      rate(j.progress.tokensPerSec),
      String(j.priority),
      time(j.createdAt),
    ]),
  ]);
}

export function formatWorkers(workers: WorkerView[], now = Date.now()): string {
  if (workers.length === 0) return 'no workers registered';
  return table([
    ['ID', 'STATE', 'PID', 'HOST', 'ADDRESS', 'DEVICE', 'THREADS', 'JOB', 'RANK', 'HEARTBEAT'],
    ...workers.map((w) => [
      w.id,
      w.state,
      String(w.pid),
      w.host,
      w.address,
      w.device,
      String(w.threads),
      w.job ?? '-',
      w.rank === null ? '-' : String(w.rank),
      ago(w.lastHeartbeat, now),
    ]),
  ]);
}

export const formatPoint = (p: MetricPoint) => `step ${p.step}  loss ${loss(p.loss)}  tok/s ${rate(p.tokensPerSec)}`;

// ---------------------------------------------------------------------------------------------
// Following a job

interface FollowOptions {
  intervalMs: number;
  /** Each new metric point, in step order. */
  point: (p: MetricPoint) => void;
  /** A line on every change of state, phase or restarts. */
  say: (line: string) => void;
}

/** Polls the job until it ends, reporting new metric points and changes; resolves with its final view. */
async function follow(api: ApiClient, id: string, o: FollowOptions): Promise<JobView> {
  let lastStep = 0;
  let lastKey = '';
  let restarts = 0;
  let lostSince: number | undefined;
  for (;;) {
    let v: JobView;
    try {
      v = await api.job(id, lastStep);
      if (lostSince !== undefined) o.say(`reached the coordinator API again`);
      lostSince = undefined;
    } catch (e) {
      if (!(e instanceof ApiUnreachable) && !(e instanceof ApiError && e.status === 503)) throw e;
      if (lostSince === undefined) {
        lostSince = Date.now();
        o.say(`${e.message}; retrying for up to ${UNREACHABLE_GRACE_MS / 1000} s`);
      } else if (Date.now() - lostSince > UNREACHABLE_GRACE_MS) throw e;
      await sleep(o.intervalMs);
      continue;
    }
    if (v.restarts > restarts) {
      o.say(`restarted (${v.restarts} restart${v.restarts === 1 ? '' : 's'} so far)`);
      restarts = v.restarts;
    }
    for (const p of [...v.metrics].sort((a, b) => a.step - b.step)) {
      if (p.step <= lastStep) continue;
      o.point(p);
      lastStep = p.step;
    }
    const key = `${v.state}/${v.progress.phase}/${v.progress.workers.join(',')}`;
    if (key !== lastKey) {
      o.say(v.state === 'completed' ? `completed: ${progressText(v)}` : stateText(v));
      lastKey = key;
    }
    if (TERMINAL.includes(v.state)) return v;
    await sleep(o.intervalMs);
  }
}

// ---------------------------------------------------------------------------------------------
// Commands

const out = (s: string) => process.stdout.write(`${s}\n`);
/** A reader that went away (`lasp logs 7 | head`) ends the command quietly, as SIGPIPE would. */
const quietOnEpipe = () =>
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') throw e;
    process.exit(process.exitCode ?? 0);
  });
const err = (s: string) => process.stderr.write(`${s}\n`);
const json = (v: unknown) => out(JSON.stringify(v));

function common(cmd: Command): Command {
  return cmd
    .option('--api <url>', `the coordinator's HTTP API (default: $LASP_API, else ${DEFAULT_API})`)
    .option('--token <secret>', 'bearer token of the API (default: $LASP_TOKEN)')
    .option('--json', "print the API's JSON");
}

async function submitCommand(file: string | undefined, f: SubmitFlags): Promise<void> {
  quietOnEpipe();
  const api = new ApiClient(apiBase(f.api), tokenOf(f.token));
  const config = await jobConfigFromFlags(file, f);
  const body: Json = { config };
  if (f.priority !== undefined) body.priority = f.priority;
  if (f.attempts !== undefined) body.attempts = f.attempts;
  const job = await api.request<JobView>('POST', '/v1/jobs', body);
  if (f.json) json(job);
  else {
    out(job.id);
    err(
      `queued job ${job.id} (priority ${job.priority}, up to ${job.attempts} attempts)${f.wait ? '' : `; follow it with: lasp logs ${job.id}`}`,
    );
  }
  if (!f.wait) return;
  const end = await follow(api, job.id, { intervalMs: f.intervalMs, point: (p) => err(formatPoint(p)), say: err });
  if (f.json) json(end);
  if (end.state !== 'completed') process.exitCode = 1;
}

export function registerJobCommands(program: Command): void {
  common(
    addJobConfigOptions(
      program
        .command('submit [file]')
        .description('queue a training job on the coordinator: the job config file (JSON), then the flags on top, as for `lasp train`'),
      true,
    )
      .option('--priority <p>', 'higher runs first among waiting jobs (default 0)', integer('--priority'))
      .option('--attempts <n>', 'attempts in all, a failed one retried with backoff (default 3)', positiveInt('--attempts'))
      .option(
        '--wait',
        'follow the job until it ends (progress on stderr; with --json, the final job view as a second line); exit status 0 only if it completed',
      )
      .option('--interval-ms <ms>', 'with --wait: how often to poll', positiveInt('--interval-ms'), 1000),
  ).action((file: string | undefined, f: SubmitFlags) => submitCommand(file, f));

  common(program.command('status <id>').description("a job's state, progress and attempts")).action(async (id: string, f: ApiFlags) => {
    const job = await new ApiClient(apiBase(f.api), tokenOf(f.token)).job(id);
    if (f.json) json(job);
    else out(formatJob(job));
  });

  common(
    program
      .command('list')
      .description('jobs, newest first')
      .addOption(new Option('--state <state>', 'only jobs in this state').choices(JOB_STATES))
      .option('--limit <n>', 'at most this many', positiveInt('--limit')),
  ).action(async (f: ApiFlags & { state?: JobState; limit?: number }) => {
    const q = new URLSearchParams();
    if (f.state !== undefined) q.set('state', f.state);
    if (f.limit !== undefined) q.set('limit', String(f.limit));
    const qs = q.toString();
    const jobs = await new ApiClient(apiBase(f.api), tokenOf(f.token)).request<JobView[]>('GET', `/v1/jobs${qs ? `?${qs}` : ''}`);
    if (f.json) json(jobs);
    else out(formatJobList(jobs));
  });

  common(program.command('cancel <id>').description('cancel a waiting or running job (its workers stop within a step)')).action(
    async (id: string, f: ApiFlags) => {
      const job = await new ApiClient(apiBase(f.api), tokenOf(f.token)).request<JobView>('DELETE', `/v1/jobs/${encodeURIComponent(id)}`);
      if (f.json) json(job);
      else if (job.state === 'cancelled') out(`job ${job.id} cancelled`);
      else if (TERMINAL.includes(job.state)) out(`job ${job.id} had already ended (${job.state}): nothing to cancel`);
      else out(`job ${job.id}: cancel requested (${job.state})`);
    },
  );

  common(
    program
      .command('logs <id>')
      .description(
        'follow a job: its metric points and state changes until it ends; exit status 0 only if it completed (--json: one JSON object per metric point, state changes on stderr)',
      )
      .option('--interval-ms <ms>', 'how often to poll', positiveInt('--interval-ms'), 1000),
  ).action(async (id: string, f: ApiFlags & { intervalMs: number }) => {
    quietOnEpipe();
    const api = new ApiClient(apiBase(f.api), tokenOf(f.token));
    const end = await follow(api, id, {
      intervalMs: f.intervalMs,
      point: (p) => (f.json ? json({ step: p.step, loss: p.loss, tokensPerSec: p.tokensPerSec }) : out(formatPoint(p))),
      say: f.json ? err : out,
    });
    if (end.state !== 'completed') process.exitCode = 1;
  });

  common(program.command('workers').description('the workers registered with the coordinator')).action(async (f: ApiFlags) => {
    const workers = await new ApiClient(apiBase(f.api), tokenOf(f.token)).request<WorkerView[]>('GET', '/v1/workers');
    if (f.json) json(workers);
    else out(formatWorkers(workers));
  });
}
