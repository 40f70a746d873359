#!/usr/bin/env node
// Standalone worker entry point (what the local cluster launcher spawns); same options as `lasp worker`.
import { workerCommand } from './cli.js';

workerCommand()
  .parseAsync(process.argv)
  .catch((err: unknown) => {
    process.stderr.write(`lasp worker: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
