// A private redis-server for tests and benchmarks: REDIS_URL when set, else a fresh server on a free
// port with no persistence, stopped (and its data gone) by stop().
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestRedis {
  url: string;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (a && typeof a === 'object' ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

export interface StartRedisOptions {
  /** A command the server runs under, e.g. ['ip', 'netns', 'exec', 'ns1']; REDIS_URL is then ignored. Default none. */
  wrap?: string[];
  /** Port. Default: a free one of this network namespace. */
  port?: number;
}

export async function startRedis(opts: StartRedisOptions = {}): Promise<TestRedis> {
  if (process.env.REDIS_URL && !opts.wrap) return { url: process.env.REDIS_URL, stop: async () => {} };
  const port = opts.port ?? (await freePort());
  const dir = await mkdtemp(join(tmpdir(), 'lasp-redis-'));
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir];
  const [cmd, ...pre] = opts.wrap ? [...opts.wrap, 'redis-server'] : ['redis-server'];
  const child = spawn(cmd!, [...pre, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server did not start within 10 s:\n${out}`)), 10_000);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot start redis-server (is it installed? .ci/run installs it): ${e.message}`));
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`redis-server exited with code ${code}:\n${out}`));
    });
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('Ready to accept connections')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  child.removeAllListeners('exit');
  return {
    url: `redis://127.0.0.1:${port}`,
    stop: async () => {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
