// `lasp coordinator`: runs the coordinator until SIGTERM/SIGINT.
import { Command, InvalidArgumentError } from 'commander';
import { Coordinator } from './coordinator.js';
import type { BullJobService } from './job-service.js';
import { addTlsOptions, tlsFromFlags, type TlsFlagValues } from '../cluster/tls-flags.js';
import { TlsConfigError } from '../cluster/tls.js';

interface CoordinatorCliOptions extends TlsFlagValues {
  host: string;
  port: number;
  heartbeatIntervalMs: number;
  misses: number;
  quiet?: boolean;
  redis?: string;
  httpHost: string;
  httpPort: number;
  dataDir: string;
  queue: string;
  token?: string;
  lockDurationMs: number;
  stalledIntervalMs: number;
}

function int(name: string, min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min)
      throw new InvalidArgumentError(`${name} must be an integer >= ${min}, got ${JSON.stringify(value)}`);
    return n;
  };
}

export function registerCoordinatorCommand(program: Command): void {
  const cmd = program
    .command('coordinator')
    .description('run the coordinator: worker registry, heartbeats, rendezvous')
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option('--port <n>', 'port to listen on (0 = any free port)', int('--port', 0), 7700)
    .option('--heartbeat-interval-ms <ms>', 'interval workers heartbeat at', int('--heartbeat-interval-ms', 1), 2000)
    .option('--misses <n>', 'missed heartbeats before a worker is dead', int('--misses', 1), 3)
    .option('--quiet', 'no log lines on stderr')
    .option('--redis <url>', 'run the job service on this Redis (BullMQ queue), e.g. redis://127.0.0.1:6379 (default: $REDIS_URL)')
    .option('--http-host <addr>', 'address of the HTTP API', '127.0.0.1')
    .option('--http-port <n>', 'port of the HTTP API (0 = any free port)', int('--http-port', 0), 7780)
    .option(
      '--token <secret>',
      'cluster token: workers must present it (gRPC), and the HTTP API requires it as a bearer token on /v1 routes (default: $LASP_TOKEN; none: no authentication)',
    )
    .option('--queue <name>', 'BullMQ queue name (default: $LASP_QUEUE or lasp-jobs)', process.env.LASP_QUEUE ?? 'lasp-jobs')
    .option('--data-dir <dir>', 'job checkpoints and metrics go to <dir>/jobs/<id>', 'lasp-data')
    .option(
      '--lock-duration-ms <ms>',
      'how long a dead coordinator holds its jobs before another takes them up',
      int('--lock-duration-ms', 1000),
      30000,
    )
    .option('--stalled-interval-ms <ms>', 'how often jobs of dead coordinators are looked for', int('--stalled-interval-ms', 1000), 15000);
  addTlsOptions(cmd).action(async (o: CoordinatorCliOptions) => {
    const log = o.quiet ? () => {} : (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);
    let tls;
    try {
      tls = tlsFromFlags(o);
    } catch (err) {
      if (!(err instanceof TlsConfigError)) throw err;
      process.stderr.write(`lasp coordinator: ${err.message}\n`);
      process.exit(2);
    }
    const clusterToken = o.token ?? (process.env.LASP_TOKEN || undefined);
    const coordinator = await Coordinator.start({
      ...(clusterToken ? { token: clusterToken } : {}),
      host: o.host,
      port: o.port,
      heartbeatIntervalMs: o.heartbeatIntervalMs,
      missesAllowed: o.misses,
      ...(tls !== undefined ? { tls } : {}),
      log,
    });
    log(`coordinator listening on ${o.host}:${coordinator.port}${tls ? ` with ${tls.describe}` : ''}`);
    const redisUrl = o.redis ?? process.env.REDIS_URL;
    let service: BullJobService | undefined;
    let api: { url: string; close(): Promise<void> } | undefined;
    if (redisUrl) {
      // Loaded here, so that other `lasp` commands do not pay for loading BullMQ and ioredis.
      const [{ BullJobService: Service }, { startHttpApi }] = await Promise.all([import('./job-service.js'), import('./http-api.js')]);
      service = await Service.start(coordinator, {
        redisUrl,
        dataDir: o.dataDir,
        queueName: o.queue,
        lockDurationMs: o.lockDurationMs,
        stalledIntervalMs: o.stalledIntervalMs,
        log,
      });
      const token = o.token ?? (process.env.LASP_TOKEN || undefined);
      api = await startHttpApi(service, { host: o.httpHost, port: o.httpPort, ...(token ? { token } : {}) });
      if (!token) log('HTTP API without authentication (no --token or LASP_TOKEN): keep it on a trusted network');
      log(`job service on ${redisUrl}; HTTP API listening on ${api.url}`);
    } else log('no --redis: job service and HTTP API off (workers and rendezvous only)');
    let signalled = false;
    const onSignal = (sig: NodeJS.Signals) => {
      if (signalled) process.exit(1);
      signalled = true;
      log(`${sig}: shutting down`);
      Promise.all([api?.close(), service?.close()])
        .then(() => coordinator.stop())
        .then(
          () => process.exit(0),
          () => process.exit(1),
        );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
