// `lasp bench api`: load on the coordinator's HTTP API. A redis-server of its own (or REDIS_URL),
// a coordinator with the job service and HTTP API in this process, no workers (so every job stays
// queued): submit N jobs over HTTP, then R concurrent readers poll GET /v1/jobs/:id of random jobs
// for D seconds. Reports errors and latency percentiles.
import type { Command } from 'commander';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { positiveInt } from '../cli/args.js';
import { startRedis } from '../cluster/redis-server.js';
import { Coordinator } from '../coordinator/coordinator.js';
import { startHttpApi } from '../coordinator/http-api.js';
import { BullJobService } from '../coordinator/job-service.js';
import { formatTable } from './table.js';

export interface ApiBenchOptions {
  jobs: number;
  readers: number;
  durationS: number;
}

export interface ApiBenchResult {
  jobs: number;
  submitErrors: number;
  submitSeconds: number;
  readers: number;
  reads: number;
  readErrors: number;
  readsPerSec: number;
  /** GET /v1/jobs/:id latency percentiles (ms). */
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

export async function runApiBench(o: ApiBenchOptions): Promise<ApiBenchResult> {
  const redis = await startRedis();
  const dir = await mkdtemp(join(tmpdir(), 'lasp-bench-api-'));
  const coordinator = await Coordinator.start({ port: 0 });
  const service = await BullJobService.start(coordinator, { redisUrl: redis.url, dataDir: dir, queueName: `bench-api-${Date.now()}` });
  const api = await startHttpApi(service, { port: 0 });
  try {
    const config = { training: { steps: 10 }, cluster: { workers: 2 } };
    const ids: string[] = [];
    let submitErrors = 0;
    const t0 = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: 10 }, async () => {
        while (next < o.jobs) {
          next++;
          const r = await fetch(`${api.url}/v1/jobs`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ config }),
          }).catch(() => undefined);
          if (r?.status === 201) ids.push(((await r.json()) as { id: string }).id);
          else submitErrors++;
        }
      }),
    );
    const submitSeconds = (performance.now() - t0) / 1000;
    const lat: number[] = [];
    let readErrors = 0;
    const end = performance.now() + o.durationS * 1000;
    await Promise.all(
      Array.from({ length: o.readers }, async () => {
        while (performance.now() < end) {
          const id = ids[Math.floor(Math.random() * ids.length)];
          const s = performance.now();
          const r = await fetch(`${api.url}/v1/jobs/${id}`).catch(() => undefined);
          const ok = r?.status === 200 && ((await r.json()) as { id?: string }).id === id;
          lat.push(performance.now() - s);
          if (!ok) readErrors++;
        }
      }),
    );
    lat.sort((a, b) => a - b);
    return {
      jobs: ids.length,
      submitErrors,
      submitSeconds,
      readers: o.readers,
      reads: lat.length,
      readErrors,
      readsPerSec: lat.length / o.durationS,
      p50: pct(lat, 50),
      p90: pct(lat, 90),
      p99: pct(lat, 99),
      max: lat.at(-1) ?? NaN,
    };
  } finally {
    await api.close();
    await service.close();
    await coordinator.stop();
    await redis.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

export function registerApiBench(bench: Command): void {
  bench
    .command('api')
    .description('HTTP API under load: submit N jobs, then R concurrent readers of GET /v1/jobs/:id')
    .option('--jobs <n>', 'jobs to submit', positiveInt('--jobs'), 500)
    .option('--readers <n>', 'concurrent status readers', positiveInt('--readers'), 50)
    .option('--duration-s <s>', 'seconds of reading', positiveInt('--duration-s'), 15)
    .option('--json', 'print one JSON object')
    .action(async (o: ApiBenchOptions & { json?: boolean }) => {
      const r = await runApiBench(o);
      if (o.json) process.stdout.write(`${JSON.stringify(r)}\n`);
      else
        process.stdout.write(
          `${formatTable(
            ['jobs', 'submit errors', 'submit s', 'readers', 'reads', 'read errors', 'reads/s', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms'],
            [
              [
                r.jobs,
                r.submitErrors,
                r.submitSeconds.toFixed(1),
                r.readers,
                r.reads,
                r.readErrors,
                r.readsPerSec.toFixed(0),
                r.p50.toFixed(1),
                r.p90.toFixed(1),
                r.p99.toFixed(1),
                r.max.toFixed(1),
              ],
            ],
          )}\n`,
        );
    });
}
