// The coordinator's HTTP API: a thin JSON layer over the JobService (node:http, no framework).
//
//   POST   /v1/jobs        body {"config": {...}, "priority"?: int, "attempts"?: int}
//                          → 201 JobView, with Location: /v1/jobs/<id>
//   GET    /v1/jobs        ?state=waiting|active|completed|failed|cancelled  ?limit=1..1000
//                          → 200 JobView[] (newest first, metrics empty)
//   GET    /v1/jobs/:id    ?metricsAfter=N (only the metric points with step > N; for polling)
//                          → 200 JobView (with metrics) | 404
//   DELETE /v1/jobs/:id    → 200 JobView after cancelling (a job that had already ended comes back as it was) | 404
//   GET    /v1/workers     → 200 WorkerView[]
//   POST   /v1/workers/:id/drain → 200 WorkerView (state "draining": its job checkpoints after the
//                          current step and goes on without it; the worker exits once released) | 404
//   GET    /healthz        → 200 {ok: true, redis, workers} | 503 the same with ok: false
//   GET    /readyz         → 200 when Redis answers and a live worker is registered, else 503
//   GET    /metrics        → Prometheus text format (workers by state, jobs by state, steps, restarts)
//   GET    /               → the web page (text/html): workers, jobs, the selected job's loss curve
// With a token (HttpApiOptions.token), /v1 routes need `Authorization: Bearer <token>` (401 without;
// the page takes it from its URL: /#token=<token>).
//
// The submission body is always an object with the job config under "config" (a job config on its
// own is refused, naming the unexpected field): "priority" is an integer in [-999999, 999999], higher
// runs first, default 0; "attempts" an integer in [1, 100], default 3 (the service's defaults).
// Request bodies must be JSON (content-type application/json or application/*+json, UTF-8).
// GET routes also answer HEAD. Unknown query parameters are refused.
//
// Every response is JSON (content-type application/json; charset=utf-8). Errors are
//   {"error": "<message>", "fields"?: [{"field": "<name>", "message": "<message>"}]}
// with: 400 invalid JSON, body, job config (every bad field listed in "fields", as
// parseTrainConfig names them, e.g. "training.steps") or query parameter (named in "fields");
// 404 unknown route or job; 405 method not allowed (Allow header); 413 body over maxBodyBytes
// (reading stops, the connection is closed); 415 content-type not JSON; 500 unexpected errors
// (logged with their stack); 503 the job service did not answer within timeoutMs.
//
// There is no authentication: listen on loopback (the default) unless the network is trusted.
import { timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { WEB_PAGE } from './web-page.js';
import { JOB_STATES, type JobService, type JobState, type SubmitOptions } from './job-types.js';

export interface HttpApiOptions {
  /** Address to listen on. Default "127.0.0.1". */
  host?: string;
  /** Port to listen on; 0 picks a free one. Default 0. */
  port?: number;
  /** Largest request body accepted (413 above). Default 1 MiB. */
  maxBodyBytes?: number;
  /** A service call that takes longer is answered 503 (the call itself goes on). Default 30 000 ms. */
  timeoutMs?: number;
  /** Receives one line per unexpected error (with its stack). Default: stderr. */
  log?: (line: string) => void;
  /**
   * Bearer token: when set, every /v1 route answers 401 without `Authorization: Bearer <token>`;
   * /, /healthz, /readyz and /metrics stay open. Default none (no authentication).
   */
  token?: string;
}

export interface HttpApi {
  port: number;
  /** e.g. "http://127.0.0.1:7780" (no trailing slash). */
  url: string;
  /** Stops accepting connections, closes idle ones, lets requests in flight finish (for at most 2 s). */
  close(): Promise<void>;
}

/** The job service's range (BullMQ's priority is derived from it). */
export const PRIORITY_MIN = -999_999;
export const PRIORITY_MAX = 999_999;
export const ATTEMPTS_MAX = 100;
export const LIST_LIMIT_MAX = 1000;
const SUBMIT_FIELDS = ['config', 'priority', 'attempts'];
const CLOSE_GRACE_MS = 2000;

interface FieldProblem {
  field: string;
  message: string;
}

/** An error answered with its status and message (and fields / headers). */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly fields?: FieldProblem[],
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

const badField = (field: string, message: string) => new HttpError(400, message, [{ field, message }]);

/** The client went away before the request was read: nothing to answer. */
class ClientGone extends Error {}

interface Reply {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

type Method = 'GET' | 'POST' | 'DELETE';
interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  params: string[];
  query: URLSearchParams;
}
type Handler = (ctx: Ctx) => Promise<Reply>;

function show(v: unknown): string {
  if (v === undefined) return 'nothing';
  const s = JSON.stringify(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The query parameters of a route: only `allowed` ones, each at most once. */
function checkQuery(query: URLSearchParams, allowed: readonly string[]): void {
  const seen = new Set<string>();
  for (const key of query.keys()) {
    if (!allowed.includes(key)) {
      throw badField(
        key,
        allowed.length === 0
          ? `unknown query parameter ${JSON.stringify(key)}: this route takes none`
          : `unknown query parameter ${JSON.stringify(key)} (allowed: ${allowed.join(', ')})`,
      );
    }
    if (seen.has(key)) throw badField(key, `query parameter ${key} given more than once`);
    seen.add(key);
  }
}

function intParam(query: URLSearchParams, name: string, min: number, max: number): number | undefined {
  const v = query.get(name);
  if (v === null) return undefined;
  const n = /^-?\d+$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw badField(name, `query parameter ${name} must be an integer in [${min}, ${max}], got ${JSON.stringify(v)}`);
  return n;
}

function checkIntField(body: Record<string, unknown>, name: string, min: number, max: number): number | undefined {
  const v = body[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    throw badField(name, `${name} must be an integer in [${min}, ${max}], got ${show(v)}`);
  return v;
}

/** The submission body: {config: object, priority?, attempts?}. */
function parseSubmission(body: unknown): { config: Record<string, unknown>; opts: SubmitOptions } {
  if (!isObject(body))
    throw badField('body', `the request body must be a JSON object {"config": {...}, "priority"?, "attempts"?}, got ${show(body)}`);
  for (const key of Object.keys(body)) {
    if (!SUBMIT_FIELDS.includes(key))
      throw badField(
        key,
        `${key} is not a field of a job submission (allowed: ${SUBMIT_FIELDS.join(', ')}); the job config goes under "config"`,
      );
  }
  if (body.config === undefined)
    throw badField('config', 'config is missing: the body must be {"config": {...job config: model, data, training, cluster, checkpoint}}');
  if (!isObject(body.config)) throw badField('config', `config must be an object (the job config), got ${show(body.config)}`);
  const opts: SubmitOptions = {};
  const priority = checkIntField(body, 'priority', PRIORITY_MIN, PRIORITY_MAX);
  if (priority !== undefined) opts.priority = priority;
  const attempts = checkIntField(body, 'attempts', 1, ATTEMPTS_MAX);
  if (attempts !== undefined) opts.attempts = attempts;
  return { config: body.config, opts };
}

/** ConfigErrors (a list of ConfigError) or a single ConfigError from the service → 400 naming the fields. */
function configErrorOf(err: unknown): HttpError | undefined {
  if (!(err instanceof Error)) return undefined;
  const e = err as Error & { errors?: unknown; field?: unknown };
  if (e.name === 'ConfigErrors' && Array.isArray(e.errors)) {
    const fields = e.errors.map((x: unknown) => {
      const f = x as { field?: unknown; message?: unknown };
      return { field: typeof f.field === 'string' ? f.field : '', message: typeof f.message === 'string' ? f.message : String(x) };
    });
    return new HttpError(400, e.message, fields);
  }
  if (e.name === 'ConfigError' && typeof e.field === 'string')
    return new HttpError(400, e.message, [{ field: e.field, message: e.message }]);
  return undefined;
}

function isJsonType(contentType: string | undefined): boolean {
  if (!contentType) return false;
  const [type = '', ...params] = contentType.split(';').map((s) => s.trim().toLowerCase());
  if (type !== 'application/json' && !/^application\/[a-z0-9.!#$&^_-]+\+json$/.test(type)) return false;
  const charset = params.find((p) => p.startsWith('charset='));
  return charset === undefined || /^charset="?utf-8"?$/.test(charset);
}

/** Reads the whole body, up to `max` bytes (413 beyond, without reading the rest). */
function readBody(req: IncomingMessage, res: ServerResponse, max: number): Promise<Buffer> {
  const tooLarge = () => new HttpError(413, `request body too large: the limit is ${max} bytes`, undefined, { connection: 'close' });
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > max) return Promise.reject(tooLarge());
  // A client that asked first (Expect: 100-continue) sends the body only now.
  if (req.headers.expect?.toLowerCase() === '100-continue') res.writeContinue();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onGone);
      req.off('close', onGone);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        cleanup();
        req.pause();
        reject(tooLarge());
      } else chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(Buffer.concat(chunks));
    };
    const onGone = () => {
      cleanup();
      reject(new ClientGone('the client closed the connection while sending the body'));
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onGone);
    req.on('close', onGone);
  });
}

async function readJson(req: IncomingMessage, res: ServerResponse, max: number): Promise<unknown> {
  if (!isJsonType(req.headers['content-type']))
    throw new HttpError(
      415,
      `the request body must be JSON (content-type: application/json), got ${req.headers['content-type'] === undefined ? 'no content-type' : JSON.stringify(req.headers['content-type'])}`,
    );
  const bytes = await readBody(req, res, max);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw badField('body', 'the request body is not valid UTF-8');
  }
  if (text.trim() === '') throw badField('body', 'the request body is empty: expected {"config": {...}}');
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw badField('body', `the request body is not valid JSON: ${(e as Error).message}`);
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new HttpError(503, `the job service did not answer within ${ms} ms (${what}); is Redis reachable?`)),
      ms,
    );
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Constant-time comparison of the bearer token (the secret is never logged). */
function authorized(req: IncomingMessage, token: string): boolean {
  const h = req.headers.authorization ?? '';
  const m = /^Bearer (.+)$/.exec(h);
  if (!m) return false;
  const a = Buffer.from(m[1]!);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  let text: string;
  try {
    text = `${JSON.stringify(body)}\n`;
  } catch (e) {
    status = 500;
    text = `${JSON.stringify({ error: `cannot encode the response as JSON: ${(e as Error).message}` })}\n`;
  }
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(Buffer.byteLength(text)),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

function errorBody(e: HttpError): { error: string; fields?: FieldProblem[] } {
  return e.fields ? { error: e.message, fields: e.fields } : { error: e.message };
}

/** A raw JSON response on a socket whose request could not be parsed (no ServerResponse exists). */
function rawReply(socket: Socket, status: number, reason: string, message: string): void {
  const text = `${JSON.stringify({ error: message })}\n`;
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`,
  );
}

export async function startHttpApi(service: JobService, opts: HttpApiOptions = {}): Promise<HttpApi> {
  const host = opts.host ?? '127.0.0.1';
  const maxBody = opts.maxBodyBytes ?? 1 << 20;
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const call = <T>(p: Promise<T>, what: string) => withTimeout(p, timeoutMs, what);
  const jobPath = (id: string) => `/v1/jobs/${encodeURIComponent(id)}`;
  const notFound = (id: string) => new HttpError(404, `no job ${JSON.stringify(id)}`);

  const routes: { pattern: RegExp; methods: Partial<Record<Method, Handler>> }[] = [
    {
      pattern: /^\/v1\/jobs$/,
      methods: {
        GET: async ({ query }) => {
          checkQuery(query, ['state', 'limit']);
          const state = query.get('state');
          if (state !== null && !(JOB_STATES as readonly string[]).includes(state))
            throw badField('state', `query parameter state must be one of ${JOB_STATES.join(', ')}, got ${JSON.stringify(state)}`);
          const limit = intParam(query, 'limit', 1, LIST_LIMIT_MAX);
          const listOpts: { state?: JobState; limit?: number } = {};
          if (state !== null) listOpts.state = state as JobState;
          if (limit !== undefined) listOpts.limit = limit;
          return { status: 200, body: await call(service.list(listOpts), 'listing jobs') };
        },
        POST: async ({ req, res, query }) => {
          checkQuery(query, []);
          const { config, opts: submitOpts } = parseSubmission(await readJson(req, res, maxBody));
          let view;
          try {
            view = await call(service.submit(config, submitOpts), 'submitting; the job may still have been queued');
          } catch (e) {
            throw configErrorOf(e) ?? e;
          }
          return { status: 201, body: view, headers: { location: jobPath(view.id) } };
        },
      },
    },
    {
      pattern: /^\/v1\/jobs\/([^/]+)$/,
      methods: {
        GET: async ({ params: [id = ''], query }) => {
          checkQuery(query, ['metricsAfter']);
          const after = intParam(query, 'metricsAfter', 0, Number.MAX_SAFE_INTEGER);
          const view = await call(service.get(id), `getting job ${id}`);
          if (!view) throw notFound(id);
          if (after !== undefined) view.metrics = view.metrics.filter((m) => m.step > after);
          return { status: 200, body: view };
        },
        DELETE: async ({ params: [id = ''], query }) => {
          checkQuery(query, []);
          const view = await call(service.cancel(id), `cancelling job ${id}`);
          if (!view) throw notFound(id);
          return { status: 200, body: view };
        },
      },
    },
    {
      pattern: /^\/v1\/workers$/,
      methods: {
        GET: async ({ query }) => {
          checkQuery(query, []);
          return { status: 200, body: service.workers() };
        },
      },
    },
    {
      pattern: /^\/v1\/workers\/([^/]+)\/drain$/,
      methods: {
        POST: async ({ params: [id = ''], query }) => {
          checkQuery(query, []);
          if (!service.drainWorker) throw new HttpError(404, 'draining is not supported by this job service');
          const w = service.drainWorker(id);
          if (!w) throw new HttpError(404, `no live worker ${JSON.stringify(id)}`);
          return { status: 200, body: w };
        },
      },
    },
    {
      pattern: /^\/readyz$/,
      methods: {
        GET: async ({ query }) => {
          checkQuery(query, []);
          try {
            const h = await call(service.health(), 'readiness check');
            const ready = h.redis && h.workers.idle + h.workers.busy > 0;
            return { status: ready ? 200 : 503, body: { ready, ...h } };
          } catch (e) {
            return { status: 503, body: { ready: false, error: (e as Error).message } };
          }
        },
      },
    },
    {
      pattern: /^\/healthz$/,
      methods: {
        GET: async ({ query }) => {
          checkQuery(query, []);
          try {
            const h = await call(service.health(), 'health check');
            return { status: h.ok ? 200 : 503, body: h };
          } catch (e) {
            return { status: 503, body: { ok: false, error: (e as Error).message } };
          }
        },
      },
    },
  ];

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const url = new URL(req.url ?? '/', 'http://api.invalid');
    let path = url.pathname;
    if (path.length > 1 && path.endsWith('/')) path = path.slice(0, -1);
    if (path === '/metrics' && (method === 'GET' || method === 'HEAD')) {
      try {
        const text = service.metricsText ? await call(service.metricsText(), 'metrics') : '';
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8', 'cache-control': 'no-store' });
        res.end(method === 'HEAD' ? undefined : text);
      } catch (e) {
        send(res, 503, { error: `metrics unavailable: ${(e as Error).message}` });
      }
      return;
    }
    if (opts.token !== undefined && path.startsWith('/v1') && !authorized(req, opts.token)) {
      log(
        `HTTP API: 401 for ${method} ${path} from ${req.socket.remoteAddress ?? '?'} (${req.headers.authorization ? 'wrong' : 'no'} bearer token)`,
      );
      send(
        res,
        401,
        { error: 'missing or wrong bearer token: send Authorization: Bearer <token> (lasp --token or LASP_TOKEN)' },
        {
          'www-authenticate': 'Bearer',
        },
      );
      return;
    }
    if (path === '/' && (method === 'GET' || method === 'HEAD')) {
      // The web page (coordinator/web-page.ts): the one response that is not JSON.
      res.writeHead(200, {
        'content-type': 'text/html; charset=utf-8',
        'content-length': String(Buffer.byteLength(WEB_PAGE)),
        'cache-control': 'no-store',
      });
      res.end(method === 'HEAD' ? undefined : WEB_PAGE);
      return;
    }
    try {
      for (const route of routes) {
        const m = route.pattern.exec(path);
        if (!m) continue;
        const name = method === 'HEAD' ? 'GET' : method;
        const handler = Object.hasOwn(route.methods, name) ? route.methods[name as Method] : undefined;
        if (!handler) {
          const allow = Object.keys(route.methods).flatMap((x) => (x === 'GET' ? ['GET', 'HEAD'] : [x]));
          throw new HttpError(405, `method ${method} is not allowed on ${path} (allowed: ${allow.join(', ')})`, undefined, {
            allow: allow.join(', '),
          });
        }
        let params: string[];
        try {
          params = m.slice(1).map((p) => decodeURIComponent(p));
        } catch {
          throw new HttpError(400, `malformed percent-encoding in ${JSON.stringify(path)}`);
        }
        const reply = await handler({ req, res, params, query: url.searchParams });
        send(res, reply.status, reply.body, reply.headers);
        return;
      }
      throw new HttpError(404, `no route ${method} ${path}`);
    } catch (e) {
      if (e instanceof ClientGone) return;
      if (e instanceof HttpError) {
        send(res, e.status, errorBody(e), e.headers);
        // A refused body is not read: close the connection once the answer is out.
        if (e.status === 413) res.once('finish', () => setTimeout(() => req.socket.destroy(), 100).unref());
        return;
      }
      log(`http-api: ${method} ${req.url ?? ''} failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      send(res, 500, { error: `internal error: ${e instanceof Error ? e.message : String(e)}` });
    }
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      log(`http-api: ${req.method ?? ''} ${req.url ?? ''}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      if (!res.headersSent) send(res, 500, { error: 'internal error' });
      else res.destroy();
    });
  });
  // Without this listener Node answers "100 Continue" itself before the handler runs; readBody does it once the request passed the checks.
  server.on('checkContinue', (req, res) => server.emit('request', req, res));
  server.requestTimeout = 60_000;
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    const pending = (socket as Socket & { _httpMessage?: ServerResponse })._httpMessage;
    if (err.code === 'ECONNRESET' || !socket.writable || pending?.headersSent) {
      socket.destroy();
      return;
    }
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') rawReply(socket, 408, 'Request Timeout', 'the request took too long to arrive');
    else if (err.code === 'HPE_HEADER_OVERFLOW') rawReply(socket, 431, 'Request Header Fields Too Large', 'request headers too large');
    else rawReply(socket, 400, 'Bad Request', `malformed HTTP request: ${err.message}`);
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => reject(new Error(`HTTP API: cannot listen on ${host}:${opts.port ?? 0}: ${e.message}`));
    server.once('error', onError);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : (opts.port ?? 0);
  const urlHost = host.includes(':') ? `[${host}]` : host;
  return {
    port,
    url: `http://${urlHost}:${port}`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        const force = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
        force.unref();
        server.close((err) => {
          clearTimeout(force);
          if (err) reject(err);
          else resolve();
        });
        server.closeIdleConnections();
      }),
  };
}
