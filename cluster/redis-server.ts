// A private redis-server for tests and benchmarks: REDIS_URL when set, else a fresh server on a free
// port with no persistence, stopped (and its data gone) by stop().
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestRedis {
  url: string;
  port: number;
  /** The server's data directory. */
  dir: string;
  /** Stops the server; its data directory is removed unless keepData. */
  stop(opts?: { keepData?: boolean }): Promise<void>;
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
  /** Append-only file with fsync on every write, so a restarted server has every job. Default false. */
  persist?: boolean;
  /** Data directory (e.g. of a stopped server, to restart it). Default: a new temporary one. */
  dir?: string;
}

export async function startRedis(opts: StartRedisOptions = {}): Promise<TestRedis> {
  if (process.env.REDIS_URL && !opts.wrap && !opts.persist) {
    const u = new URL(process.env.REDIS_URL);
    return { url: process.env.REDIS_URL, port: Number(u.port || 6379), dir: '', stop: async () => {} };
  }
  const port = opts.port ?? (await freePort());
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'lasp-redis-')));
  const aof = opts.persist ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'];
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', ...aof, '--dir', dir];
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
    port,
    dir,
    stop: async (o = {}) => {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
      if (!o.keepData) await rm(dir, { recursive: true, force: true });
    },
  };
}
