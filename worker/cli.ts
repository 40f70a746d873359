// `lasp worker`: runs one worker process until SIGTERM/SIGINT.
import { nonNegativeInt, positiveInt } from '../cli/args.js';
import { WORKER_NODE_FLAGS } from '../cluster/worker-node-flags.js';
import { startWorkerHttp } from './http-probes.js';
import { Command, Option } from 'commander';
import { startWorker, stopOnSignals } from './main.js';
import { addTlsOptions, tlsFromFlags, type TlsFlagValues } from '../cluster/tls-flags.js';
import { TlsConfigError } from '../cluster/tls.js';
import { DEFAULT_STREAM_TRANSPORT, type StreamTransport } from './collectives/peer-clients.js';
import { tuneAllocator } from '../native/allocator.js';

interface WorkerCliOptions extends TlsFlagValues {
  coordinator?: string;
  host: string;
  bindHost?: string;
  port: number;
  threads?: number;
  id?: string;
  device: string;
  precision: string;
  token?: string;
  exitWithStdin?: boolean;
  quiet?: boolean;
  httpPort?: number;
  httpHost?: string;
  drainTimeoutMs: number;
  collectiveTimeoutMs: number;
  streamTransport: StreamTransport;
  allocator: 'tuned' | 'default';
  drain?: boolean;
  api?: string;
}

/** `lasp worker --drain --id ID`: asks the coordinator (HTTP API) to drain a running worker. */
async function requestDrain(o: WorkerCliOptions): Promise<void> {
  const { ApiClient, apiBase, tokenOf } = await import('../cli/jobs.js');
  if (!o.id) throw new Error('--drain needs --id <worker id> (the worker to drain; see lasp workers)');
  const api = new ApiClient(apiBase(o.api), tokenOf(o.token));
  const w = await api.request<{ id: string; state: string; job: string | null }>('POST', `/v1/workers/${encodeURIComponent(o.id)}/drain`);
  process.stdout.write(
    `worker ${w.id} is ${w.state}${w.job !== null ? `: job ${w.job} checkpoints after its current step and goes on without it` : ''}; the worker exits once released\n`,
  );
}

/** The `worker` command, standalone (worker/entry.ts) or under `lasp`. */
export function workerCommand(): Command {
  const cmd = new Command('worker')
    .description('run a worker: registers with the coordinator, joins groups, runs tasks and collectives')
    .addOption(new Option('--coordinator <host:port>', 'coordinator address (required unless --drain)').env('LASP_COORDINATOR'))
    .option('--host <addr>', 'address to advertise to the coordinator and peers', '127.0.0.1')
    .option('--bind-host <addr>', 'address to listen on (default: --host)')
    .option('--port <n>', 'port to listen on (0 = any free port)', nonNegativeInt('--port'), 0)
    .option('--threads <n>', 'compute threads (sets LASP_THREADS; default: LASP_THREADS or all CPUs)', nonNegativeInt('--threads'))
    .option('--id <id>', 'stable worker id (default: <hostname>-<pid>)')
    .option('--device <dev>', '"cpu" or "cuda:N"', 'cpu')
    .addOption(
      new Option(
        '--precision <p>',
        'attention arithmetic: fp32, or bf16 (cuda only: linear, scalar_gate and delta layers with head dims 64/128 run the bf16 kernels, the rest float32; docs/cuda.md)',
      )
        .choices(['fp32', 'bf16'])
        .default('fp32'),
    )
    .addOption(
      new Option(
        '--token <token>',
        'cluster token: required on calls to this worker, sent on its calls (default: $LASP_TOKEN, else $LASP_CLUSTER_TOKEN)',
      ).env('LASP_TOKEN'),
    )
    .addOption(new Option('--exit-with-stdin', 'exit when stdin closes (used by launchers so workers die with their parent)').hideHelp())
    .option('--quiet', 'no log lines on stderr')
    .option(
      '--http-port <n>',
      'serve /healthz, /readyz and /metrics on this port (0 = any free port; default: off)',
      nonNegativeInt('--http-port'),
    )
    .option('--http-host <addr>', 'address of the HTTP probes (default: --bind-host, else --host)')
    .option(
      '--drain-timeout-ms <ms>',
      'on SIGTERM/SIGINT or a drain request: wait at most this long for the job to checkpoint and release this worker (0: stop at once)',
      nonNegativeInt('--drain-timeout-ms'),
      120000,
    )
    .option(
      '--collective-timeout-ms <ms>',
      'deadline of every collective op: a peer that has not answered by then fails the step (raise it when ranks legitimately wait long on each other, e.g. contiguous softmax layers at long T)',
      positiveInt('--collective-timeout-ms'),
      30000,
    )
    .addOption(
      new Option(
        '--stream-transport <t>',
        "what carries collective pieces to peers: native (default; plaintext: HTTP/2 connections on the addon's threads, on a second listener announced over gRPC; with TLS it stays on http2), http2 (gRPC framing by hand on node:http2), grpc-js, or raw (as native, with the framing in JavaScript); all speak the same protocol (docs/collectives.md)",
      )
        .choices(['http2', 'grpc-js', 'raw', 'native'])
        .default(DEFAULT_STREAM_TRANSPORT),
    )
    .addOption(
      new Option(
        '--allocator <mode>',
        "tuned (default): glibc keeps freed memory for reuse (mallopt: heap below 32 MiB, trim above 256 MiB free), so socket reads and buffers land on warm pages; default: the C library's own settings (docs/collectives.md)",
      )
        .choices(['tuned', 'default'])
        .default('tuned'),
    )
    .option(
      '--drain',
      "do not run a worker: ask the coordinator's HTTP API to drain the running worker --id (its job checkpoints after the current step and goes on without it; the worker exits)",
    )
    .option(
      '--api <url>',
      "with --drain: the coordinator's HTTP API (default: $LASP_API, else http://127.0.0.1:7780); --token is its bearer token",
    );
  return addTlsOptions(cmd).action(async (o: WorkerCliOptions) => {
    if (o.drain) {
      try {
        await requestDrain(o);
      } catch (err) {
        process.stderr.write(`lasp worker --drain: ${(err as Error).message}\n`);
        process.exit(1);
      }
      return;
    }
    const coordinator = o.coordinator;
    if (!coordinator) return cmd.error("error: required option '--coordinator <host:port>' not specified (or LASP_COORDINATOR)");
    if (o.threads !== undefined && o.threads > 0) process.env.LASP_THREADS = String(o.threads);
    const log = o.quiet ? () => {} : (line: string) => process.stderr.write(`${line}\n`);
    if (o.allocator === 'tuned') {
      const t = tuneAllocator();
      if (!t.applied) log(`lasp worker: allocator left as it is: ${t.reason}`);
    }
    let tls;
    try {
      tls = tlsFromFlags(o);
    } catch (err) {
      if (!(err instanceof TlsConfigError)) throw err;
      process.stderr.write(`lasp worker: ${err.message}\n`);
      process.exit(2);
    }
    const worker = await startWorker({
      coordinator,
      drainTimeoutMs: o.drainTimeoutMs,
      collectiveTimeoutMs: o.collectiveTimeoutMs,
      streamTransport: o.streamTransport,
      host: o.host,
      bindHost: o.bindHost,
      port: o.port,
      threads: o.threads || undefined,
      id: o.id,
      device: o.device,
      precision: o.precision,
      token: o.token,
      ...(tls !== undefined ? { tls } : {}),
      log,
    });
    log(
      `worker ${worker.id} listening on ${worker.address}${tls ? ` with ${tls.describe}` : ''}, coordinator ${o.coordinator}, device ${o.device}` +
        (o.precision === 'bf16' ? ', precision bf16 (linear, scalar_gate and delta layers with head dims 64/128; the rest float32)' : ''),
    );
    if (!WORKER_NODE_FLAGS.every((f) => process.execArgv.includes(f))) {
      log(
        `worker ${worker.id}: node was started without ${WORKER_NODE_FLAGS.join(' ')}: collectives and kernels will spend much of their time ` +
          `in full garbage collections (start it as \`node ${WORKER_NODE_FLAGS.join(' ')} …/lasp.js worker\`, or through the lasp command)`,
      );
    }
    if (o.httpPort !== undefined) {
      const http = await startWorkerHttp(worker, { host: o.httpHost ?? o.bindHost ?? o.host, port: o.httpPort });
      log(`worker ${worker.id}: HTTP probes on ${http.url} (/healthz, /readyz, /metrics)`);
    }
    stopOnSignals(worker, log);
    void worker.closed.then(() => process.exit(0)); // e.g. drained at the coordinator's request
    if (o.exitWithStdin) {
      // The launcher is gone: stop at once (no drain: nobody drives the job any more).
      const exit = () => void worker.stop('the launcher exited').finally(() => process.exit(0));
      process.stdin.on('end', exit);
      process.stdin.on('error', exit);
      process.stdin.resume();
    }
  });
}

export function registerWorkerCommand(program: Command): void {
  program.addCommand(workerCommand());
}
