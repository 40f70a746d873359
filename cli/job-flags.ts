// The job-config flags shared by `lasp train` and `lasp submit`, their parsers, and how they are
// merged over a config file (the file first, then the flags on top).
import { readFile } from 'node:fs/promises';
import { InvalidArgumentError, type Command } from 'commander';
import { LAYER_KINDS } from '../model/backend.js';
import { DEFAULT_DATA } from '../train/config.js';
import { nonNegativeInt, positiveInt } from './args.js';

export type Json = Record<string, unknown>;

/** The flags that shape a job config (`lasp train` and `lasp submit`). */
export interface JobConfigFlags {
  workers?: number;
  steps?: number;
  seed?: number;
  seqLen?: number;
  kind?: string;
  /** One kind per layer, comma-separated (sets model.layers and model.kinds). */
  layers?: string;
  /** Keys per query of the swa (sliding-window softmax) layers (model.window). */
  window?: number;
  data?: string;
  batchSize?: number;
  lr?: number;
  evalEvery?: number;
  checkpointEvery?: number;
  checkpointDir?: string;
  threadsPerWorker?: number;
  /** Fewest workers a re-formed group may have after a failure (cluster.minWorkers). */
  minWorkers?: number;
  /** Recoveries allowed before the job fails (cluster.maxRestarts). */
  maxRestarts?: number;
}

export { nonNegativeInt };

export function integer(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isInteger(n))
      throw new InvalidArgumentError(`${flag} must be an integer, got ${JSON.stringify(value)}`);
    return n;
  };
}

export function positiveNumber(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${flag} must be a positive number, got ${JSON.stringify(value)}`);
    return n;
  };
}

/** "mqar", "bytes:<file>" or "tokens:<file>" → a data section (as `lasp train --data`). */
export function dataFlag(value: string): Json {
  if (value === 'mqar') return { type: 'mqar' };
  const m = /^(bytes|tokens):(.+)$/.exec(value);
  if (!m) throw new InvalidArgumentError(`--data must be mqar, bytes:<file> or tokens:<file>, got ${JSON.stringify(value)}`);
  return { type: m[1], path: m[2] };
}

export const section = (o: Json, name: string): Json => {
  const s = o[name];
  if (s === undefined) return (o[name] = {});
  if (typeof s !== 'object' || s === null || Array.isArray(s)) return {}; // the server reports it
  return s as Json;
};

/**
 * The raw job config: the file (if any), then the flags on top, merged as `lasp train` merges them
 * (--seq-len alone selects the default MQAR data; --kind replaces model.kinds; --layers sets
 * model.kinds and model.layers; --window sets model.window). Not validated and no
 * defaults filled in: the coordinator does that.
 */
export async function jobConfigFromFlags(file: string | undefined, f: JobConfigFlags): Promise<Json> {
  let raw: Json = {};
  if (file !== undefined) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      throw new Error(`cannot read the job config ${file}: ${(e as Error).message}`);
    }
    try {
      raw = JSON.parse(text) as Json;
    } catch (e) {
      throw new Error(`the job config ${file} is not valid JSON: ${(e as Error).message}`);
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`the job config ${file} must hold a JSON object`);
  }
  if (f.data !== undefined) {
    const d = dataFlag(f.data);
    const old = raw.data as Json | undefined;
    raw.data = old && old.type === d.type ? { ...old, ...d } : d;
  }
  if (f.seqLen !== undefined) {
    if (raw.data === undefined) raw.data = { ...DEFAULT_DATA, seqLen: f.seqLen };
    else section(raw, 'data').seqLen = f.seqLen;
  }
  if (f.kind !== undefined && f.layers !== undefined)
    throw new InvalidArgumentError('give either --kind (every layer) or --layers (one kind per layer), not both');
  if (f.layers !== undefined) {
    const kinds = f.layers.split(',').map((k) => k.trim());
    if (kinds.length === 0 || kinds.some((k) => k === ''))
      throw new InvalidArgumentError(`--layers must be a comma-separated list of kinds, got ${JSON.stringify(f.layers)}`);
    const m = section(raw, 'model');
    delete m.kind;
    m.kinds = kinds;
    m.layers = kinds.length;
  }
  if (f.kind !== undefined) {
    const m = section(raw, 'model');
    delete m.kinds;
    m.kind = f.kind;
  }
  if (f.window !== undefined) section(raw, 'model').window = f.window;
  if (f.steps !== undefined) section(raw, 'training').steps = f.steps;
  if (f.seed !== undefined) section(raw, 'training').seed = f.seed;
  if (f.batchSize !== undefined) section(raw, 'training').batchSize = f.batchSize;
  if (f.lr !== undefined) section(raw, 'training').lr = f.lr;
  if (f.evalEvery !== undefined) section(raw, 'training').evalEvery = f.evalEvery;
  if (f.workers !== undefined) section(raw, 'cluster').workers = f.workers;
  if (f.threadsPerWorker !== undefined) section(raw, 'cluster').threadsPerWorker = f.threadsPerWorker;
  if (f.minWorkers !== undefined) section(raw, 'cluster').minWorkers = f.minWorkers;
  if (f.maxRestarts !== undefined) section(raw, 'cluster').maxRestarts = f.maxRestarts;
  if (f.checkpointEvery !== undefined) section(raw, 'checkpoint').every = f.checkpointEvery;
  if (f.checkpointDir !== undefined) section(raw, 'checkpoint').dir = f.checkpointDir;
  return raw;
}

/**
 * The flags of JobConfigFlags on a command (`lasp train` and `lasp submit`). With `remote`, the
 * help says that paths are read on the coordinator and its workers.
 */
export function addJobConfigOptions(cmd: Command, remote = false): Command {
  const where = remote ? ', a path on the coordinator and its workers' : '';
  return cmd
    .option('--workers <W>', 'worker processes (blocks per sequence)', positiveInt('--workers'))
    .option('--steps <N>', 'optimizer steps', positiveInt('--steps'))
    .option('--seed <S>', 'seed of the initial weights', nonNegativeInt('--seed'))
    .option('--seq-len <T>', 'tokens per sequence', positiveInt('--seq-len'))
    .option('--kind <kind>', `attention kind of every layer (${LAYER_KINDS.join(', ')})`)
    .option('--layers <kinds>', 'one attention kind per layer, comma-separated, e.g. gated_delta,gated_delta,gated_delta,softmax')
    .option('--window <w>', 'keys per query of the swa (sliding-window softmax) layers', positiveInt('--window'))
    .option('--data <spec>', `mqar, bytes:<file> or tokens:<file> (uint16)${where}`)
    .option('--batch-size <B>', 'sequences per step', positiveInt('--batch-size'))
    .option('--lr <x>', 'peak learning rate', positiveNumber('--lr'))
    .option('--eval-every <N>', 'evaluate every N steps (0: at the end only)', nonNegativeInt('--eval-every'))
    .option('--checkpoint-every <N>', 'checkpoint every N steps (0: at the end only)', nonNegativeInt('--checkpoint-every'))
    .option('--checkpoint-dir <dir>', `checkpoints, metrics.jsonl and loss.svg go here${where}`)
    .option('--threads-per-worker <n>', 'native threads per worker', positiveInt('--threads-per-worker'))
    .option(
      '--min-workers <n>',
      'fewest workers a group re-formed after a failure may have (default: --workers)',
      positiveInt('--min-workers'),
    )
    .option('--max-restarts <n>', 'recoveries from lost workers before the job fails (default 3)', nonNegativeInt('--max-restarts'));
}
