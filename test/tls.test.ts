// TLS on gRPC with real processes and certificates made here with the openssl CLI: a CA, a
// certificate for every process (subjectAltName IP:127.0.0.1, DNS:localhost; serverAuth and
// clientAuth), and a second, untrusted CA with its own certificate.
// - `lasp coordinator --redis --tls-*` (mutual) and two `lasp worker --tls-*`: a 2-rank job runs over
//   TLS (worker -> coordinator, coordinator -> workers, worker <-> worker collectives);
// - refused: a plaintext client, a client without a certificate, a client whose certificate comes
//   from the untrusted CA, a client that trusts only the untrusted CA, and a worker with the
//   untrusted CA's certificate (never registers); the coordinator keeps serving, and a second job
//   completes afterwards;
// - server-only TLS: a client with only the CA is served;
// - bad flags: a missing key, an unreadable file, a key of another certificate, a certificate of
//   another CA: the process exits with 2 and a message naming the flag and the path.
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { startRedis, type TestRedis } from '../cluster/redis-server.js';
import { loadTls } from '../cluster/tls.js';
import { Coordinator } from '../coordinator/coordinator.js';
import { protos } from '../proto/load.js';

const run = promisify(execFile);
const lasp = fileURLToPath(new URL('../cli/lasp.js', import.meta.url));
const OPENSSL = process.env.OPENSSL ?? 'openssl';

let dir: string;
let redis: TestRedis;
let coordinator: { child: ChildProcess; grpc: string; api: string; log: string[] };
const children: ChildProcess[] = [];
const f = (name: string) => join(dir, name);

async function openssl(...args: string[]): Promise<void> {
  await run(OPENSSL, args, { cwd: dir });
}

/** A CA (`<ca>.pem`, `<ca>.key`) and a leaf certificate issued by it (`<leaf>.pem`, `<leaf>.key`). */
async function makeCa(ca: string): Promise<void> {
  await openssl(
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    `${ca}.key`,
    '-out',
    `${ca}.pem`,
    '-days',
    '2',
    '-subj',
    `/CN=${ca}`,
  );
}
async function makeLeaf(ca: string, leaf: string): Promise<void> {
  await writeFile(
    f(`${leaf}.ext`),
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n',
  );
  await openssl(
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    `${leaf}.key`,
    '-out',
    `${leaf}.csr`,
    '-subj',
    `/CN=${leaf}`,
  );
  await openssl(
    'x509',
    '-req',
    '-in',
    `${leaf}.csr`,
    '-CA',
    `${ca}.pem`,
    '-CAkey',
    `${ca}.key`,
    '-CAcreateserial',
    '-out',
    `${leaf}.pem`,
    '-days',
    '2',
    '-extfile',
    `${leaf}.ext`,
  );
}

const tlsArgs = (leaf: string, ca = 'ca') => ['--tls-cert', f(`${leaf}.pem`), '--tls-key', f(`${leaf}.key`), '--tls-ca', f(`${ca}.pem`)];

function startCoordinator(): Promise<typeof coordinator> {
  const args = [
    lasp,
    'coordinator',
    '--port',
    '0',
    '--http-port',
    '0',
    '--redis',
    redis.url,
    '--data-dir',
    f('data'),
    '--heartbeat-interval-ms',
    '500',
    '--queue',
    `tls-${process.pid}`,
    ...tlsArgs('coord'),
  ];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  const log: string[] = [];
  return new Promise((resolve, reject) => {
    let grpcAddr = '';
    const timer = setTimeout(() => reject(new Error(`coordinator did not start:\n${log.join('\n')}`)), 15_000);
    child.once('exit', (code) => reject(new Error(`coordinator exited with ${code}:\n${log.join('\n')}`)));
    createInterface({ input: child.stderr! }).on('line', (line) => {
      log.push(line);
      const g = /coordinator listening on ([\d.]+:\d+) with TLS \(mutual/.exec(line);
      if (g) grpcAddr = g[1]!;
      const h = /HTTP API listening on (http:\/\/[\d.]+:\d+)/.exec(line);
      if (h && grpcAddr) {
        clearTimeout(timer);
        resolve({ child, grpc: grpcAddr, api: h[1]!, log });
      }
    });
  });
}

function startWorker(id: string, leaf: string, ca = 'ca'): { child: ChildProcess; log: string[] } {
  const child = spawn(
    process.execPath,
    [lasp, 'worker', '--coordinator', coordinator.grpc, '--id', id, '--threads', '1', '--exit-with-stdin', ...tlsArgs(leaf, ca)],
    {
      stdio: ['pipe', 'ignore', 'pipe'],
    },
  );
  children.push(child);
  const log: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (l) => log.push(l));
  return { child, log };
}

async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(coordinator.api + path, {
    method,
    ...(body !== undefined ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } } : {}),
  });
  return (await res.json()) as T;
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}\ncoordinator log:\n${coordinator.log.slice(-20).join('\n')}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** grpc.health.v1 Check at `address` with `creds`: the status string, or the gRPC error. */
function check(address: string, creds: grpc.ChannelCredentials): Promise<{ status?: string; code?: number; details?: string }> {
  const client = new (protos().health.grpc.health.v1.Health)(address, creds, { 'grpc.initial_reconnect_backoff_ms': 100 });
  return new Promise((resolve) => {
    client.Check({ service: '' }, { deadline: Date.now() + 3000 }, (err, reply) => {
      client.close();
      resolve(err ? { code: err.code, details: err.details } : { status: reply?.status ?? '' });
    });
  });
}

const job = {
  model: { dModel: 16, layers: 1, heads: 2, ffn: 32 },
  data: { type: 'mqar', seqLen: 32, vocabSize: 16, numKvPairs: 2 },
  training: { steps: 6, batchSize: 2, evalSequences: 2 },
  cluster: { workers: 2 },
};

async function runJob(): Promise<{ state: string; metrics: unknown[]; progress: { workers: string[] }; failedReason: string | null }> {
  const submitted = await api<{ id: string }>('POST', '/v1/jobs', { config: job });
  return until(`job ${submitted.id}`, async () => {
    const v = await api<{ state: string; metrics: unknown[]; progress: { workers: string[] }; failedReason: string | null }>(
      'GET',
      `/v1/jobs/${submitted.id}`,
    );
    return ['completed', 'failed', 'cancelled'].includes(v.state) ? v : undefined;
  });
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lasp-tls-'));
  await makeCa('ca');
  for (const leaf of ['coord', 'w0', 'w1', 'client']) await makeLeaf('ca', leaf);
  await makeCa('rogue-ca');
  await makeLeaf('rogue-ca', 'rogue');
  redis = await startRedis();
  coordinator = await startCoordinator();
});

after(async () => {
  for (const c of children) c.kill('SIGKILL');
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

test('mutual TLS: a 2-rank job runs over TLS between coordinator and workers and between the workers', async () => {
  const t0 = Date.now();
  startWorker('tls-w0', 'w0');
  startWorker('tls-w1', 'w1');
  await until('two idle workers', async () => {
    const ws = await api<{ state: string }[]>('GET', '/v1/workers');
    return ws.filter((w) => w.state === 'idle').length === 2 ? true : undefined;
  });
  const done = await runJob();
  assert.equal(done.state, 'completed', `${done.failedReason}`);
  assert.equal(done.metrics.length, 6);
  assert.deepEqual([...done.progress.workers].sort(), ['tls-w0', 'tls-w1']);
  process.stdout.write(`# TLS job: 2 workers registered and 6 steps done in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
});

test('refused: plaintext, no client certificate, an untrusted CA either way, a worker of another CA; the coordinator keeps serving', async () => {
  const read = (n: string) => loadTls({ cert: f(`${n}.pem`), key: f(`${n}.key`) }, {})!;
  const ca = (n: string) => readFileSync(f(`${n}.pem`));
  const client = read('client');
  const rogue = read('rogue');
  const good = await check(coordinator.grpc, grpc.credentials.createSsl(ca('ca'), client.key, client.cert));
  assert.equal(good.status, 'SERVING', JSON.stringify(good));
  const refused = {
    plaintext: await check(coordinator.grpc, grpc.credentials.createInsecure()),
    'no client certificate': await check(coordinator.grpc, grpc.credentials.createSsl(ca('ca'))),
    'certificate of the untrusted CA': await check(coordinator.grpc, grpc.credentials.createSsl(ca('ca'), rogue.key, rogue.cert)),
    'server not trusted (client trusts only the rogue CA)': await check(
      coordinator.grpc,
      grpc.credentials.createSsl(ca('rogue-ca'), client.key, client.cert),
    ),
  };
  for (const [what, r] of Object.entries(refused)) {
    assert.equal(r.status, undefined, `${what}: served ${JSON.stringify(r)}`);
    assert.equal(r.code, grpc.status.UNAVAILABLE, `${what}: ${JSON.stringify(r)}`);
  }
  // The workers' servers (WorkerControl, Peer) likewise.
  const worker = (await api<{ id: string; address: string }[]>('GET', '/v1/workers')).find((w) => w.id === 'tls-w0')!;
  assert.equal((await check(worker.address, grpc.credentials.createSsl(ca('ca'), client.key, client.cert))).status, 'SERVING');
  for (const creds of [
    grpc.credentials.createInsecure(),
    grpc.credentials.createSsl(ca('ca')),
    grpc.credentials.createSsl(ca('ca'), rogue.key, rogue.cert),
  ])
    assert.equal((await check(worker.address, creds)).code, grpc.status.UNAVAILABLE);
  const intruder = startWorker('tls-rogue', 'rogue', 'rogue-ca');
  await until(
    'the rogue worker to fail registering',
    async () => (intruder.log.some((l) => /register failed/.test(l)) ? true : undefined),
    15_000,
  );
  const ws = await api<{ id: string }[]>('GET', '/v1/workers');
  assert.ok(!ws.some((w) => w.id === 'tls-rogue'), JSON.stringify(ws));
  intruder.child.kill('SIGKILL');
  // Still serving: a good client and a second job.
  assert.equal((await check(coordinator.grpc, grpc.credentials.createSsl(ca('ca'), client.key, client.cert))).status, 'SERVING');
  const done = await runJob();
  assert.equal(done.state, 'completed', `${done.failedReason}`);
  assert.equal(coordinator.child.exitCode, null);
});

test('server-only TLS (--tls-server-only): a client with just the CA is served; plaintext is not', async () => {
  const tls = loadTls({ cert: f('coord.pem'), key: f('coord.key'), ca: f('ca.pem'), serverOnly: true }, {})!;
  assert.equal(tls.mutual, false);
  const c = await Coordinator.start({ port: 0, tls });
  try {
    assert.equal((await check(c.address, grpc.credentials.createSsl(tls.ca!))).status, 'SERVING');
    assert.equal((await check(`localhost:${c.port}`, grpc.credentials.createSsl(tls.ca!))).status, 'SERVING');
    assert.equal((await check(c.address, grpc.credentials.createInsecure())).code, grpc.status.UNAVAILABLE);
  } finally {
    await c.stop();
  }
});

test('bad TLS flags: exit 2 with the flag and the path named', async () => {
  const start = async (args: string[]) => {
    try {
      await run(process.execPath, [lasp, 'worker', '--coordinator', '127.0.0.1:1', ...args], { timeout: 20_000 });
      return { code: 0, stderr: '' };
    } catch (err) {
      const e = err as { code?: number; stderr?: string };
      return { code: e.code, stderr: e.stderr ?? '' };
    }
  };
  const cases: [string[], RegExp][] = [
    [['--tls-cert', f('w0.pem')], /needs both --tls-cert and --tls-key .*no --tls-key/],
    [
      ['--tls-cert', f('missing.pem'), '--tls-key', f('w0.key')],
      new RegExp(`--tls-cert ${f('missing.pem')}: cannot read the file: ENOENT`),
    ],
    [['--tls-cert', f('w0.pem'), '--tls-key', f('w0.ext')], new RegExp(`--tls-key ${f('w0.ext')}: not a PEM file`)],
    [
      ['--tls-cert', f('w0.pem'), '--tls-key', f('w1.key')],
      new RegExp(`--tls-key ${f('w1.key')} does not belong to the certificate --tls-cert ${f('w0.pem')}`),
    ],
    [[...tlsArgs('rogue', 'ca')], new RegExp(`--tls-cert ${f('rogue.pem')} is not issued by a CA in --tls-ca ${f('ca.pem')}`)],
    [['--tls-cert', f('w0.pem'), '--tls-key', f('w0.key'), '--tls-ca', f('w0.key')], new RegExp(`--tls-ca ${f('w0.key')}: no certificate`)],
  ];
  for (const [args, want] of cases) {
    const r = await start(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, want);
  }
});
