// The service across hosts: the coordinator (with its Redis) and two workers each in their own
// network namespace, joined by veth pairs on a bridge, each with its own address — nothing may
// assume that peers live on 127.0.0.1. The test process (root namespace, also on the bridge)
// uses the HTTP API at the coordinator's address; the workers exchange summaries and gradients
// directly between their namespaces. Needs root (ip netns), as CI runs.
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startRedis, type TestRedis } from '../cluster/redis-server.js';

const lasp = fileURLToPath(new URL('../cli/lasp.js', import.meta.url));
const workerEntry = fileURLToPath(new URL('../worker/entry.js', import.meta.url));
const tag = (process.pid % 10000).toString(36);
const subnet = `10.213.${process.pid % 250}`;
const bridge = `lbr${tag}`;
const hosts = [
  { ns: `lascn${tag}`, ip: `${subnet}.1`, veth: `lvc${tag}` },
  { ns: `lasw0${tag}`, ip: `${subnet}.2`, veth: `lv0${tag}` },
  { ns: `lasw1${tag}`, ip: `${subnet}.3`, veth: `lv1${tag}` },
];
const children: ChildProcess[] = [];
let redis: TestRedis | undefined;
let dataDir: string | undefined;

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function setUpNetwork(): void {
  ip('link', 'add', bridge, 'type', 'bridge');
  ip('addr', 'add', `${subnet}.254/24`, 'dev', bridge);
  ip('link', 'set', bridge, 'up');
  for (const h of hosts) {
    ip('netns', 'add', h.ns);
    ip('link', 'add', h.veth, 'type', 'veth', 'peer', 'name', `${h.veth}p`);
    ip('link', 'set', `${h.veth}p`, 'netns', h.ns);
    ip('link', 'set', h.veth, 'master', bridge);
    ip('link', 'set', h.veth, 'up');
    ip('netns', 'exec', h.ns, 'ip', 'addr', 'add', `${h.ip}/24`, 'dev', `${h.veth}p`);
    ip('netns', 'exec', h.ns, 'ip', 'link', 'set', `${h.veth}p`, 'up');
    ip('netns', 'exec', h.ns, 'ip', 'link', 'set', 'lo', 'up');
  }
}

function tearDownNetwork(): void {
  for (const h of hosts) {
    try {
      ip('netns', 'del', h.ns);
    } catch {
      /* not created */
    }
  }
  try {
    ip('link', 'del', bridge);
  } catch {
    /* not created */
  }
}

function inNs(ns: string, args: string[]): ChildProcess {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, ...args], { stdio: ['pipe', 'ignore', 'pipe'] });
  children.push(child);
  return child;
}

after(async () => {
  for (const c of children) c.kill('SIGKILL');
  await new Promise((r) => setTimeout(r, 200));
  await redis?.stop();
  tearDownNetwork();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

test('coordinator and workers in separate network namespaces: workers register by their own addresses and a 2-rank job completes', async () => {
  try {
    setUpNetwork();
  } catch (e) {
    assert.fail(`cannot create network namespaces (root and iproute2 needed, as in CI): ${(e as Error).message}`);
  }
  const [c, w0, w1] = hosts as [(typeof hosts)[0], (typeof hosts)[0], (typeof hosts)[0]];
  redis = await startRedis({ wrap: ['ip', 'netns', 'exec', c.ns], port: 6379 });
  dataDir = await mkdtemp(join(tmpdir(), 'lasp-netns-'));
  const coordinator = inNs(c.ns, [
    lasp,
    'coordinator',
    '--host',
    c.ip,
    '--port',
    '7700',
    '--redis',
    redis.url,
    '--http-host',
    c.ip,
    '--http-port',
    '7780',
    '--data-dir',
    dataDir,
    '--heartbeat-interval-ms',
    '500',
  ]);
  const log: string[] = [];
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`coordinator did not start:\n${log.join('\n')}`)), 15_000);
    createInterface({ input: coordinator.stderr! }).on('line', (line) => {
      log.push(line);
      if (/HTTP API listening/.test(line)) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  for (const [i, w] of [w0, w1].entries())
    inNs(w.ns, [
      workerEntry,
      '--coordinator',
      `${c.ip}:7700`,
      '--host',
      w.ip,
      '--id',
      `netns-w${i}`,
      '--threads',
      '1',
      '--exit-with-stdin',
    ]);
  const apiUrl = `http://${c.ip}:7780`;
  const get = async <T>(path: string) => (await (await fetch(apiUrl + path)).json()) as T;
  let workers: { id: string; host: string; address: string; state: string }[] = [];
  for (let i = 0; i < 100; i++) {
    workers = await get<typeof workers>('/v1/workers');
    if (workers.filter((x) => x.state === 'idle').length === 2) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.deepEqual(workers.map((x) => x.host).sort(), [w0.ip, w1.ip], JSON.stringify(workers));
  for (const x of workers) assert.ok(!x.address.startsWith('127.'), x.address);

  const res = await fetch(`${apiUrl}/v1/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      config: {
        model: { dModel: 16, layers: 1, heads: 2, ffn: 32 },
        data: { type: 'mqar', seqLen: 32, vocabSize: 16, numKvPairs: 2 },
        training: { steps: 6, batchSize: 2, evalSequences: 2 },
        cluster: { workers: 2 },
      },
    }),
  });
  assert.equal(res.status, 201);
  const { id } = (await res.json()) as { id: string };
  let v: { state: string; metrics: unknown[]; progress: { workers: string[] } } = { state: '', metrics: [], progress: { workers: [] } };
  for (let i = 0; i < 300 && !['completed', 'failed', 'cancelled'].includes(v.state); i++) {
    await new Promise((r) => setTimeout(r, 200));
    v = await get<typeof v>(`/v1/jobs/${id}`);
  }
  assert.equal(v.state, 'completed', `${JSON.stringify(v)}\n${log.slice(-20).join('\n')}`);
  assert.equal(v.metrics.length, 6);
  assert.deepEqual([...v.progress.workers].sort(), ['netns-w0', 'netns-w1']);
});
