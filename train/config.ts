// A training job's configuration (JSON): model, data, training, cluster and checkpoint sections.
// parseTrainConfig validates every field (reporting every problem, each by its dotted name with
// the expected type or range and what arrived) and fills in the defaults, so that nothing starts
// on an invalid config and every rank receives the same fully-resolved config.
import { LAYER_KINDS, type LayerKind } from '../model/backend.js';
import { parseSourceConfig, type SourceConfig } from './data/index.js';
import { mqarVocab } from './data/mqar.js';
import { MAX_SEED } from './data/rng.js';
import { checkEnum, checkInt, checkKnownFields, checkObject, checkString, ConfigError, show } from './data/validate.js';

export interface ModelSection {
  /** Vocabulary size. Default: the data source's vocabulary. */
  vocab: number;
  /** Width of the residual stream. Default 64. */
  dModel: number;
  /** Number of blocks. Default 2. */
  layers: number;
  /** Attention heads. Default 2. */
  heads: number;
  /** Key (and query) width per head. Default dModel / heads. */
  dk: number;
  /** Value width per head. Default dk. */
  dv: number;
  /** SwiGLU hidden width. Default 3 · dModel. */
  ffn: number;
  /**
   * Attention kind of each layer: a linear kind, softmax or swa (sliding-window softmax). Default
   * every layer "gated_delta" (set `kind` for one kind everywhere, or `kinds`).
   */
  kinds: LayerKind[];
  /** Keys per query of the swa layers, itself included. Default 64. */
  window: number;
  /** Attention kernel chunk size. Default 64. */
  chunk: number;
  /** Gate temperature τ: g = logsigmoid(x W_g) / τ. Default 16. */
  tau: number;
  /** Per-head RMSNorm of the attention output. Default true. */
  outNorm: boolean;
  /** Kernel size of the short causal convolution (+ SiLU) on q, k, v; 0 for none. Default 4. */
  conv: number;
}

export interface TrainingSection {
  /** Optimizer steps. Default 200. */
  steps: number;
  /** Sequences per step (each split into one block per worker). Default 32. */
  batchSize: number;
  /** Peak learning rate. Default 1e-2. */
  lr: number;
  /** Learning rate at the end of the cosine decay. Default lr / 10. */
  minLr: number;
  /** Linear warm-up steps. Default min(20, steps / 10). */
  warmupSteps: number;
  /** AdamW decoupled weight decay. Default 0.01. */
  weightDecay: number;
  /** Default 0.9. */
  beta1: number;
  /** Default 0.95. */
  beta2: number;
  /** Default 1e-8. */
  eps: number;
  /** Clip the global gradient norm to this (0: no clipping). Default 1. */
  gradClip: number;
  /** Seed of the initial weights. Default 0. */
  seed: number;
  /** Evaluate on held-out sequences every N steps (0: only at the end). Default 50. */
  evalEvery: number;
  /** Held-out sequences per evaluation. Default 64. */
  evalSequences: number;
}

export interface ClusterSection {
  /** Worker processes; every sequence is split into this many blocks. Default 2. */
  workers: number;
  /** Native threads per worker. Default max(1, CPUs / workers). */
  threadsPerWorker?: number;
  /** Elastic jobs (job service): fewest workers the job may go on with after losing workers when no replacement is free; it starts on `workers`. Default `workers` (not elastic). */
  minWorkers: number;
  /** Job service: recoveries from failures (new group, resume from the last checkpoint) before the job fails. Default 3. */
  maxRestarts: number;
}

export interface CheckpointSection {
  /** Where checkpoints, metrics.jsonl and loss.svg go. Default "runs/<UTC date-time>". */
  dir: string;
  /** Save every N steps (0: only at the end). Default 0. */
  every: number;
  /** Checkpoints kept. Default 3. */
  keep: number;
}

export interface TrainConfig {
  model: ModelSection;
  data: SourceConfig & { seqLen: number };
  training: TrainingSection;
  cluster: ClusterSection;
  checkpoint: CheckpointSection;
}

/** Default data: a small multi-query associative recall task (8 key→value pairs in 128 tokens). */
export const DEFAULT_DATA = { type: 'mqar', seqLen: 128, vocabSize: 64, numKvPairs: 8, seed: 1 } as const;

const SECTIONS = ['model', 'data', 'training', 'cluster', 'checkpoint'] as const;
const MODEL_FIELDS = [
  'vocab',
  'dModel',
  'layers',
  'heads',
  'dk',
  'dv',
  'headDim',
  'ffn',
  'kind',
  'kinds',
  'chunk',
  'tau',
  'outNorm',
  'conv',
  'window',
];
const TRAINING_FIELDS = [
  'steps',
  'batchSize',
  'lr',
  'minLr',
  'warmupSteps',
  'weightDecay',
  'beta1',
  'beta2',
  'eps',
  'gradClip',
  'seed',
  'evalEvery',
  'evalSequences',
];
const CLUSTER_FIELDS = ['workers', 'threadsPerWorker', 'minWorkers', 'maxRestarts'];
const CHECKPOINT_FIELDS = ['dir', 'every', 'keep'];

/** Every problem found in a config, each a ConfigError naming its field. */
export class ConfigErrors extends Error {
  constructor(readonly errors: ConfigError[]) {
    super(
      errors.length === 1
        ? `invalid job config: ${errors[0]!.message}`
        : `invalid job config (${errors.length} problems):\n${errors.map((e) => `  - ${e.message}`).join('\n')}`,
    );
    this.name = 'ConfigErrors';
  }
}

function checkNumber(field: string, v: unknown, min: number, max: number, opts: { minExclusive?: boolean } = {}): number {
  const below = opts.minExclusive ? (x: number) => x <= min : (x: number) => x < min;
  if (typeof v !== 'number' || !Number.isFinite(v) || below(v) || v > max) {
    throw new ConfigError(field, `${field} must be a number in ${opts.minExclusive ? '(' : '['}${min}, ${max}], got ${show(v)}`);
  }
  return v;
}

function checkBool(field: string, v: unknown): boolean {
  if (typeof v !== 'boolean') throw new ConfigError(field, `${field} must be true or false, got ${show(v)}`);
  return v;
}

/**
 * Validates a job config (e.g. a parsed JSON file, with CLI flags merged in) and fills in every
 * default. Throws ConfigErrors listing every problem; nothing is started on an invalid config.
 */
export function parseTrainConfig(raw: unknown, opts: { cpus?: number; now?: Date } = {}): TrainConfig {
  const errors: ConfigError[] = [];
  const attempt = <T>(f: () => T, fallback: T): T => {
    try {
      return f();
    } catch (e) {
      if (e instanceof ConfigError) errors.push(e);
      else throw e;
      return fallback;
    }
  };
  const root = attempt(() => checkObject('config', raw ?? {}), {});
  attempt(() => checkKnownFields('config', root, SECTIONS, 'a job config'), undefined);
  const section = (name: string, fields: readonly string[]): Record<string, unknown> => {
    const o = attempt(() => checkObject(name, root[name] ?? {}), {});
    attempt(() => checkKnownFields(name, o, fields, `the ${name} section`), undefined);
    return o;
  };
  const get = <T>(o: Record<string, unknown>, sec: string, name: string, dflt: T, check: (f: string, v: unknown) => T): T =>
    o[name] === undefined ? dflt : attempt(() => check(`${sec}.${name}`, o[name]), dflt);
  const int = (min: number, max: number) => (f: string, v: unknown) => checkInt(f, v, min, max);
  const num =
    (min: number, max: number, minExclusive = false) =>
    (f: string, v: unknown) =>
      checkNumber(f, v, min, max, { minExclusive });

  // data
  const dataRaw = root.data === undefined ? { ...DEFAULT_DATA } : root.data;
  let data = attempt(() => parseSourceConfig(dataRaw, 'data'), undefined);
  if (data && data.seqLen === undefined) data = { ...data, seqLen: data.type === 'mqar' ? 256 : 1024 };
  const seqLen = data?.seqLen ?? 1;
  const sourceVocab = data ? (data.type === 'bytes' ? 256 : (data.vocabSize ?? (data.type === 'mqar' ? 8192 : 65536))) : 1;
  if (data?.type === 'mqar') {
    const pairs = data.numKvPairs ?? 16;
    const queries = data.numQueries ?? pairs;
    if (2 * pairs + queries > seqLen)
      errors.push(
        new ConfigError('data.seqLen', `data.seqLen must be at least 2·numKvPairs + numQueries = ${2 * pairs + queries}, got ${seqLen}`),
      );
    if (mqarVocab(sourceVocab).numKeys < pairs)
      errors.push(
        new ConfigError(
          'data.vocabSize',
          `data.vocabSize ${sourceVocab} has ${mqarVocab(sourceVocab).numKeys} keys, fewer than data.numKvPairs = ${pairs}`,
        ),
      );
  }

  // model
  const m = section('model', MODEL_FIELDS);
  const vocab = get(m, 'model', 'vocab', sourceVocab, int(2, 1 << 24));
  if (m.vocab !== undefined && vocab < sourceVocab)
    errors.push(new ConfigError('model.vocab', `model.vocab must be at least the data's vocabulary (${sourceVocab}), got ${vocab}`));
  const dModel = get(m, 'model', 'dModel', 64, int(1, 1 << 16));
  const layers = get(m, 'model', 'layers', 2, int(1, 256));
  const heads = get(m, 'model', 'heads', 2, int(1, 1024));
  const headDim = get(m, 'model', 'headDim', undefined as number | undefined, int(1, 1024));
  if (headDim !== undefined && (m.dk !== undefined || m.dv !== undefined))
    errors.push(new ConfigError('model.headDim', 'model.headDim sets both dk and dv: give either headDim or dk/dv, not both'));
  const dk = get(m, 'model', 'dk', headDim ?? Math.max(1, Math.floor(dModel / heads)), int(1, 1024));
  const dv = get(m, 'model', 'dv', headDim ?? dk, int(1, 1024));
  const ffn = get(m, 'model', 'ffn', 3 * dModel, int(1, 1 << 20));
  const kindOf = (f: string, v: unknown) => checkEnum(f, v, LAYER_KINDS);
  let kinds: LayerKind[] = Array.from({ length: layers }, () => 'gated_delta' as LayerKind);
  if (m.kind !== undefined && m.kinds !== undefined)
    errors.push(new ConfigError('model.kinds', 'give either model.kind (every layer) or model.kinds (one per layer), not both'));
  else if (m.kind !== undefined) {
    const k = get(m, 'model', 'kind', 'gated_delta' as LayerKind, kindOf);
    kinds = kinds.map(() => k);
  } else if (m.kinds !== undefined) {
    if (!Array.isArray(m.kinds) || m.kinds.length !== layers)
      errors.push(new ConfigError('model.kinds', `model.kinds must be a list of ${layers} kinds (one per layer), got ${show(m.kinds)}`));
    else kinds = m.kinds.map((k, i) => attempt(() => kindOf(`model.kinds[${i}]`, k), 'gated_delta' as LayerKind));
  }
  const chunk = get(m, 'model', 'chunk', 64, int(1, 4096));
  const tau = get(m, 'model', 'tau', 16, num(0, 1e6, true));
  const outNorm = get(m, 'model', 'outNorm', true, checkBool);
  const conv = get(m, 'model', 'conv', 4, int(0, 64));
  const window = get(m, 'model', 'window', 64, int(1, 1 << 24));

  // training
  const t = section('training', TRAINING_FIELDS);
  const steps = get(t, 'training', 'steps', 200, int(1, 1e9));
  const batchSize = get(t, 'training', 'batchSize', 32, int(1, 1 << 20));
  const lr = get(t, 'training', 'lr', 1e-2, num(0, 10));
  const minLr = get(t, 'training', 'minLr', lr / 10, num(0, 10));
  if (minLr > lr) errors.push(new ConfigError('training.minLr', `training.minLr must be at most training.lr = ${lr}, got ${minLr}`));
  const warmupSteps = get(t, 'training', 'warmupSteps', Math.min(20, Math.floor(steps / 10)), int(0, 1e9));
  const training: TrainingSection = {
    steps,
    batchSize,
    lr,
    minLr,
    warmupSteps,
    weightDecay: get(t, 'training', 'weightDecay', 0.01, num(0, 10)),
    beta1: get(t, 'training', 'beta1', 0.9, num(0, 0.999999)),
    beta2: get(t, 'training', 'beta2', 0.95, num(0, 0.999999)),
    eps: get(t, 'training', 'eps', 1e-8, num(0, 1, true)),
    gradClip: get(t, 'training', 'gradClip', 1, num(0, 1e9)),
    seed: get(t, 'training', 'seed', 0, int(0, MAX_SEED)),
    evalEvery: get(t, 'training', 'evalEvery', 50, int(0, 1e9)),
    evalSequences: get(t, 'training', 'evalSequences', 64, int(1, 1 << 20)),
  };

  // cluster
  const c = section('cluster', CLUSTER_FIELDS);
  const workers = get(c, 'cluster', 'workers', 2, int(1, 1024));
  if (workers > seqLen)
    errors.push(
      new ConfigError('cluster.workers', `cluster.workers must be at most data.seqLen = ${seqLen} (one block each), got ${workers}`),
    );
  if (conv > 1 && workers <= seqLen && Math.floor(seqLen / workers) < conv - 1)
    errors.push(
      new ConfigError(
        'model.conv',
        `model.conv = ${conv} needs blocks of at least ${conv - 1} tokens, but data.seqLen = ${seqLen} over ${workers} workers gives ${Math.floor(seqLen / workers)}`,
      ),
    );
  if (kinds.includes('swa') && workers > 1 && workers <= seqLen && Math.floor(seqLen / workers) < window - 1)
    errors.push(
      new ConfigError(
        'model.window',
        `model.window = ${window} needs blocks of at least ${window - 1} tokens (a halo from the previous block), but data.seqLen = ${seqLen} over ${workers} workers gives ${Math.floor(seqLen / workers)}`,
      ),
    );
  const minWorkers = get(c, 'cluster', 'minWorkers', workers, int(1, 1024));
  if (minWorkers > workers)
    errors.push(
      new ConfigError('cluster.minWorkers', `cluster.minWorkers must be at most cluster.workers = ${workers}, got ${minWorkers}`),
    );
  const maxRestarts = get(c, 'cluster', 'maxRestarts', 3, int(0, 1000));
  const cluster: ClusterSection = { workers, minWorkers, maxRestarts };
  const threads = get(c, 'cluster', 'threadsPerWorker', undefined as number | undefined, int(1, 1024));
  if (threads !== undefined) cluster.threadsPerWorker = threads;

  // checkpoint
  const k = section('checkpoint', CHECKPOINT_FIELDS);
  const stamp = (opts.now ?? new Date()).toISOString().replace(/[:]/g, '-').replace(/\..*$/, '');
  const checkpoint: CheckpointSection = {
    dir: get(k, 'checkpoint', 'dir', `runs/${stamp}`, checkString),
    every: get(k, 'checkpoint', 'every', 0, int(0, 1e9)),
    keep: get(k, 'checkpoint', 'keep', 3, int(1, 1000)),
  };

  if (errors.length > 0 || !data) throw new ConfigErrors(errors);
  return {
    model: { vocab, dModel, layers, heads, dk, dv, ffn, kinds, chunk, tau, outNorm, conv, window },
    data: { ...data, seqLen },
    training,
    cluster,
    checkpoint,
  };
}

/** Learning rate of step s (1-based): linear warm-up to lr, then cosine decay to minLr at the last step. */
export function learningRate(t: TrainingSection, step: number): number {
  if (t.warmupSteps > 0 && step <= t.warmupSteps) return (t.lr * step) / t.warmupSteps;
  const span = Math.max(1, t.steps - t.warmupSteps);
  const progress = Math.min(1, Math.max(0, (step - t.warmupSteps) / span));
  return t.minLr + 0.5 * (t.lr - t.minLr) * (1 + Math.cos(Math.PI * progress));
}

/** Tokens (input positions) per step. */
export function tokensPerStep(cfg: TrainConfig): number {
  return cfg.training.batchSize * cfg.data.seqLen;
}
