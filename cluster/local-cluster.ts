// A coordinator in this process plus W worker processes on this machine: the quickest way to run
// sequence parallelism locally (tests, benchmarks, `lasp train --local`).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Coordinator, type CoordinatorOptions } from '../coordinator/coordinator.js';
import type { Group, RunTaskOptions, TaskReply } from '../coordinator/rendezvous.js';
import { withWorkerNodeFlags } from './worker-node-flags.js';
import { parseDevice } from '../native/device.js';

export interface LocalClusterOptions {
  /** Number of worker processes. */
  workers: number;
  /** LASP_THREADS of each worker. Default max(1, floor(CPUs / workers)). */
  threadsPerWorker?: number;
  /** Extra environment for the workers (on top of this process's). Default none. */
  env?: Record<string, string>;
  /** Node.js options for the worker processes (e.g. --cpu-prof, --inspect), added to WORKER_NODE_FLAGS (worker-node-flags.ts). Default: LASP_WORKER_NODE_OPTIONS split on spaces, else none. */
  execArgv?: string[];
  /** Copy the workers' log lines, prefixed "[w<index>]", to this process's stderr. Default false. */
  verbose?: boolean;
  /** Coordinator heartbeat interval. Default 2000 ms. */
  heartbeatIntervalMs?: number;
  /** Missed heartbeats before a worker is dead. Default 3. */
  missesAllowed?: number;
  /** How long to wait for every worker to register. Default 20000 ms. */
  startTimeoutMs?: number;
  /** Workers' --collective-timeout-ms: deadline of every collective op. Default: the worker's (30000 ms). */
  collectiveTimeoutMs?: number;
  /** Workers' --stream-transport (http2, grpc-js, raw). Default: the worker's (http2). */
  streamTransport?: 'http2' | 'grpc-js' | 'raw' | 'native';
  /** Workers' --drain-timeout-ms: how long a SIGTERMed worker waits for its job to release it. Default 0 (stop at once: stop() means the whole cluster goes). */
  drainTimeoutMs?: number;
  /**
   * Workers' --device: "cpu", "cuda:N", or a comma-separated list handed out in turn (worker i gets
   * entry i mod length; e.g. "cuda:0,cuda:1"; two workers given "cuda:0" share that GPU). Default "cpu".
   */
  device?: string;
  /** Workers' --precision: 'fp32', or 'bf16' (CUDA devices only). Default: the worker's (fp32). */
  precision?: 'fp32' | 'bf16';
  /** Further coordinator options (host is always 127.0.0.1). Default none. */
  coordinator?: Omit<CoordinatorOptions, 'host' | 'port' | 'heartbeatIntervalMs' | 'missesAllowed'>;
}

export interface LocalWorker {
  index: number;
  /** Worker id, "local-<index>". */
  id: string;
  pid: number;
  process: ChildProcess;
  /** Resolves when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The last log lines of the process (for error messages). */
  logTail: string[];
}

export interface LocalCluster {
  /** The current coordinator (replaced by restartCoordinator). */
  readonly coordinator: Coordinator;
  readonly workers: LocalWorker[];
  /** A group of `world` workers (default: all of them) for `jobId`. */
  formGroup(jobId: string, world?: number): Promise<Group>;
  runTask(group: Group, type: string, config: unknown, opts?: RunTaskOptions): Promise<TaskReply[]>;
  releaseGroup(group: Group): Promise<void>;
  /** Stops the coordinator and starts a new one on the same port (the workers re-register). */
  restartCoordinator(): Promise<Coordinator>;
  /** SIGTERM to every worker (SIGKILL after 3 s), then closes the coordinator. Idempotent. */
  stop(): Promise<void>;
}

const LOG_TAIL_LINES = 30;

/** Path of the compiled worker entry point (dist/worker/entry.js). */
export function workerEntryPath(): string {
  const path = fileURLToPath(new URL('../worker/entry.js', import.meta.url));
  if (!existsSync(path))
    throw new Error(`worker entry point ${path} not found: build with \`npx tsc -p tsconfig.json\` and run from dist/`);
  return path;
}

export async function startLocalCluster(opts: LocalClusterOptions): Promise<LocalCluster> {
  const W = opts.workers;
  if (!Number.isInteger(W) || W < 1) throw new Error(`startLocalCluster: workers must be a positive integer, got ${W}`);
  if (opts.device !== undefined) workerDevice(opts.device, 0); // a bad list fails here, before any process starts
  if (opts.precision === 'bf16' && Array.from({ length: W }, (_, i) => workerDevice(opts.device ?? 'cpu', i)).includes('cpu'))
    throw new Error(
      `startLocalCluster: precision bf16 needs cuda devices for every worker, got device ${JSON.stringify(opts.device ?? 'cpu')}`,
    );
  const threads = opts.threadsPerWorker ?? Math.max(1, Math.floor(availableParallelism() / W));
  const coordinatorOpts: CoordinatorOptions = {
    ...opts.coordinator,
    host: '127.0.0.1',
    port: 0,
    heartbeatIntervalMs: opts.heartbeatIntervalMs,
    missesAllowed: opts.missesAllowed,
  };
  let coordinator = await Coordinator.start(coordinatorOpts);
  const entry = workerEntryPath();
  const workers: LocalWorker[] = [];
  const killAll = () => {
    for (const w of workers) if (w.process.exitCode === null && w.process.signalCode === null) w.process.kill('SIGKILL');
  };
  process.on('exit', killAll);

  for (let index = 0; index < W; index++) workers.push(spawnWorker(index, entry, coordinator.address, threads, opts));

  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      process.off('exit', killAll);
      await Promise.all(workers.map((w) => terminate(w, 3000)));
      await coordinator.stop();
    })());

  try {
    await waitForRegistration(coordinator, workers, opts.startTimeoutMs ?? 20_000);
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    get coordinator() {
      return coordinator;
    },
    workers,
    formGroup: (jobId, world = W) => coordinator.formGroup(jobId, { min: world, max: world }),
    runTask: (group, type, config, runOpts) => coordinator.runTask(group, type, config, runOpts),
    releaseGroup: (group) => coordinator.releaseGroup(group),
    restartCoordinator: async () => {
      const port = coordinator.port;
      await coordinator.stop();
      coordinator = await Coordinator.start({ ...coordinatorOpts, port });
      return coordinator;
    },
    stop,
  };
}

/** Worker `index`'s entry of a device list ("cpu", "cuda:0", "cuda:0,cuda:1", ...), checked. */
export function workerDevice(list: string, index: number): string {
  const entries = list.split(',').map((d) => d.trim());
  for (const d of entries) parseDevice(d, 'device');
  return entries[index % entries.length]!;
}

function spawnWorker(index: number, entry: string, coordinator: string, threads: number, opts: LocalClusterOptions): LocalWorker {
  const id = `local-${index}`;
  const args = [
    entry,
    '--coordinator',
    coordinator,
    '--id',
    id,
    '--threads',
    String(threads),
    '--exit-with-stdin',
    '--drain-timeout-ms',
    String(opts.drainTimeoutMs ?? 0),
    ...(opts.collectiveTimeoutMs !== undefined ? ['--collective-timeout-ms', String(opts.collectiveTimeoutMs)] : []),
    ...(opts.streamTransport !== undefined ? ['--stream-transport', opts.streamTransport] : []),
    ...(opts.device !== undefined ? ['--device', workerDevice(opts.device, index)] : []),
    ...(opts.precision !== undefined ? ['--precision', opts.precision] : []),
  ];
  const execArgv = withWorkerNodeFlags(opts.execArgv ?? (process.env.LASP_WORKER_NODE_OPTIONS ?? '').split(' ').filter((x) => x !== ''));
  const child = spawn(process.execPath, [...execArgv, ...args], {
    env: { ...process.env, ...opts.env, LASP_THREADS: String(threads) },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const logTail: string[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', () => resolve({ code: null, signal: null }));
  });
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    createInterface({ input: stream }).on('line', (line) => {
      logTail.push(line);
      if (logTail.length > LOG_TAIL_LINES) logTail.shift();
      if (opts.verbose) process.stderr.write(`[w${index}] ${line}\n`);
    });
  }
  return { index, id, pid: child.pid ?? -1, process: child, exited, logTail };
}

/** Resolves once every worker is registered and idle; rejects if one exits first or on timeout. */
async function waitForRegistration(coordinator: Coordinator, workers: LocalWorker[], timeoutMs: number): Promise<void> {
  const ids = new Set(workers.map((w) => w.id));
  const ready = coordinator.waitForWorkers(workers.length, timeoutMs).then(() => {
    const missing = [...ids].filter((id) => coordinator.registry.get(id)?.state !== 'idle');
    if (missing.length > 0) throw new Error(`local cluster: workers ${missing.join(', ')} did not register`);
  });
  const earlyExit = Promise.race(
    workers.map((w) =>
      w.exited.then(({ code, signal }) => {
        throw new Error(
          `local cluster: worker ${w.index} exited before registering (code ${code}, signal ${signal}):\n${w.logTail.join('\n')}`,
        );
      }),
    ),
  );
  earlyExit.catch(() => {}); // only matters while racing
  await Promise.race([ready, earlyExit]);
}

async function terminate(w: LocalWorker, graceMs: number): Promise<void> {
  if (w.process.exitCode !== null || w.process.signalCode !== null) return;
  w.process.kill('SIGTERM');
  const timer = setTimeout(() => w.process.kill('SIGKILL'), graceMs);
  await w.exited;
  clearTimeout(timer);
}
