// `lasp coordinator`: runs the coordinator until SIGTERM/SIGINT.
import { Command, InvalidArgumentError } from 'commander';
import { Coordinator } from './coordinator.js';

interface CoordinatorCliOptions {
  host: string;
  port: number;
  heartbeatIntervalMs: number;
  misses: number;
  quiet?: boolean;
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
  program
    .command('coordinator')
    .description('run the coordinator: worker registry, heartbeats, rendezvous')
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option('--port <n>', 'port to listen on (0 = any free port)', int('--port', 0), 7700)
    .option('--heartbeat-interval-ms <ms>', 'interval workers heartbeat at', int('--heartbeat-interval-ms', 1), 2000)
    .option('--misses <n>', 'missed heartbeats before a worker is dead', int('--misses', 1), 3)
    .option('--quiet', 'no log lines on stderr')
    .action(async (o: CoordinatorCliOptions) => {
      const log = o.quiet ? () => {} : (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);
      const coordinator = await Coordinator.start({
        host: o.host,
        port: o.port,
        heartbeatIntervalMs: o.heartbeatIntervalMs,
        missesAllowed: o.misses,
        log,
      });
      log(`coordinator listening on ${o.host}:${coordinator.port}`);
      let signalled = false;
      const onSignal = (sig: NodeJS.Signals) => {
        if (signalled) process.exit(1);
        signalled = true;
        log(`${sig}: shutting down`);
        coordinator.stop().then(
          () => process.exit(0),
          () => process.exit(1),
        );
      };
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
    });
}
