// `lasp train`: a whole local cluster (coordinator + W worker processes on loopback, no Redis)
// training a model with every sequence split between the workers. Defaults train a small
// gated_delta model on multi-query associative recall in about a minute.
import { readFile } from 'node:fs/promises';
import { InvalidArgumentError, type Command } from 'commander';
import { KINDS } from '../native/kernels.js';
import { parseTrainConfig, tokensPerStep, type TrainConfig } from '../train/config.js';
import { runTraining, type StepEvent, type TrainSummary } from '../train/driver.js';
import { formatDuration, formatRate, ProgressBar } from '../train/progress.js';
import { positiveInt } from './args.js';

interface TrainFlags {
  config?: string;
  workers?: number;
  steps?: number;
  seed?: number;
  seqLen?: number;
  kind?: string;
  data?: string;
  batchSize?: number;
  lr?: number;
  checkpointEvery?: number;
  checkpointDir?: string;
  resume?: boolean;
  evalEvery?: number;
  threadsPerWorker?: number;
  json?: boolean;
  verbose?: boolean;
}

function nonNegativeInt(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 0)
      throw new InvalidArgumentError(`${flag} must be a non-negative integer, got ${JSON.stringify(value)}`);
    return n;
  };
}

function positiveNumber(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${flag} must be a positive number, got ${JSON.stringify(value)}`);
    return n;
  };
}

/** "mqar", "bytes:<file>" or "tokens:<file>" → a data section (other data fields come from the config file). */
function dataFlag(value: string): Record<string, unknown> {
  if (value === 'mqar') return { type: 'mqar' };
  const m = /^(bytes|tokens):(.+)$/.exec(value);
  if (!m) throw new InvalidArgumentError(`--data must be mqar, bytes:<file> or tokens:<file>, got ${JSON.stringify(value)}`);
  return { type: m[1], path: m[2] };
}

type Json = Record<string, unknown>;
const section = (o: Json, name: string): Json => {
  const s = o[name];
  if (s === undefined) return (o[name] = {});
  if (typeof s !== 'object' || s === null || Array.isArray(s)) return {}; // parseTrainConfig reports it
  return s as Json;
};

/** The job config: the file (if any), then the flags on top; validated with every default filled in. */
export async function configFromFlags(f: TrainFlags): Promise<TrainConfig> {
  return (await rawConfigFromFlags(f)).config;
}

async function rawConfigFromFlags(f: TrainFlags): Promise<{ config: TrainConfig; raw: Json }> {
  let raw: Json = {};
  if (f.config) {
    let text: string;
    try {
      text = await readFile(f.config, 'utf8');
    } catch (e) {
      throw new Error(`--config: cannot read ${f.config}: ${(e as Error).message}`);
    }
    try {
      raw = JSON.parse(text) as Json;
    } catch (e) {
      throw new Error(`--config: ${f.config} is not valid JSON: ${(e as Error).message}`);
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`--config: ${f.config} must hold a JSON object`);
  }
  if (f.data !== undefined) {
    const d = dataFlag(f.data);
    const old = raw.data as Json | undefined;
    raw.data = old && old.type === d.type ? { ...old, ...d } : d;
  }
  if (f.seqLen !== undefined) {
    if (raw.data === undefined) raw.data = { type: 'mqar', seqLen: f.seqLen, vocabSize: 64, numKvPairs: 8, seed: 1 };
    else section(raw, 'data').seqLen = f.seqLen;
  }
  if (f.kind !== undefined) {
    const m = section(raw, 'model');
    delete m.kinds;
    m.kind = f.kind;
  }
  if (f.steps !== undefined) section(raw, 'training').steps = f.steps;
  if (f.seed !== undefined) section(raw, 'training').seed = f.seed;
  if (f.batchSize !== undefined) section(raw, 'training').batchSize = f.batchSize;
  if (f.lr !== undefined) section(raw, 'training').lr = f.lr;
  if (f.evalEvery !== undefined) section(raw, 'training').evalEvery = f.evalEvery;
  if (f.workers !== undefined) section(raw, 'cluster').workers = f.workers;
  if (f.threadsPerWorker !== undefined) section(raw, 'cluster').threadsPerWorker = f.threadsPerWorker;
  if (f.checkpointEvery !== undefined) section(raw, 'checkpoint').every = f.checkpointEvery;
  if (f.checkpointDir !== undefined) section(raw, 'checkpoint').dir = f.checkpointDir;
  return { config: parseTrainConfig(raw), raw };
}

const round = (x: number, digits: number) => Number(x.toPrecision(digits));

function describeRun(cfg: TrainConfig, startStep: number, parameters: number, resumedFrom?: string): string {
  const m = cfg.model;
  const kinds = [...new Set(m.kinds)].join('/');
  const d = cfg.data;
  const data = d.type === 'mqar' ? `MQAR (${d.numKvPairs ?? 16} pairs, vocab ${d.vocabSize ?? 8192})` : `${d.type} ${d.path}`;
  const lines = [
    `model   ${m.layers} × ${kinds}, d_model ${m.dModel}, ${m.heads} heads × ${m.dk}/${m.dv}, ffn ${m.ffn}, vocab ${m.vocab} — ${parameters.toLocaleString('en-US')} parameters`,
    `data    ${data}, T = ${d.seqLen} split over ${cfg.cluster.workers} worker${cfg.cluster.workers > 1 ? 's' : ''}, batch ${cfg.training.batchSize} (${tokensPerStep(cfg)} tokens/step)`,
    `train   ${cfg.training.steps} steps, lr ${cfg.training.lr} (warm-up ${cfg.training.warmupSteps}, cosine to ${cfg.training.minLr}), clip ${cfg.training.gradClip}, seed ${cfg.training.seed}`,
    `output  ${cfg.checkpoint.dir}`,
  ];
  if (resumedFrom) lines.push(`resumed ${resumedFrom} (step ${startStep})`);
  return lines.join('\n');
}

export async function trainCommand(f: TrainFlags): Promise<void> {
  const { config: cfg, raw } = await rawConfigFromFlags(f);
  const given = (sec: string, field: string) => {
    const o = raw[sec] as Json | undefined;
    return typeof o === 'object' && o !== null && o[field] !== undefined;
  };
  if (f.resume && !given('checkpoint', 'dir'))
    throw new Error('--resume needs the run directory: give --checkpoint-dir <dir> (or checkpoint.dir in --config)');
  const out = process.stdout;
  const err = process.stderr;
  const bar = !f.json && err.isTTY ? new ProgressBar({ total: cfg.training.steps, stream: err }) : undefined;
  const say = (line: string) => (bar ? bar.log(line) : err.write(`${line}\n`));
  const controller = new AbortController();
  let interrupts = 0;
  const onSigint = () => {
    interrupts++;
    if (interrupts > 1) process.exit(130);
    say('interrupted: stopping after this step and writing a checkpoint (Ctrl-C again to quit now)');
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  let total = cfg.training.steps;
  let plainEvery = 1;
  const onStep = (e: StepEvent) => {
    if (f.json) {
      out.write(
        `${JSON.stringify({ step: e.step, loss: e.loss, tokensPerSec: round(e.tokensPerSec, 6), lr: e.lr, gradNorm: round(e.gradNorm, 6), ms: round(e.wallMs, 6), collectiveMs: round(e.collectiveMs, 4) })}\n`,
      );
    } else if (bar) {
      bar.update(e.step, { loss: e.loss.toFixed(4), 'tok/s': formatRate(e.tokensPerSec) });
    } else if (e.step % plainEvery === 0 || e.step === total) {
      out.write(`step ${e.step}/${total}  loss ${e.loss.toFixed(4)}  tok/s ${formatRate(e.tokensPerSec)}  lr ${e.lr.toExponential(2)}\n`);
    }
  };
  let summary: TrainSummary;
  try {
    summary = await runTraining(cfg, {
      resume: f.resume ?? false,
      resumeSteps: given('training', 'steps') ? 'config' : 'checkpoint',
      signal: controller.signal,
      verbose: f.verbose ?? false,
      events: {
        start: (e) => {
          total = e.config.training.steps;
          plainEvery = Math.max(1, Math.round(total / 20));
          if (!f.json) say(describeRun(e.config, e.startStep, e.parameters, e.resumedFrom));
          if (e.startStep >= total) say(`already at step ${e.startStep} of ${total}: nothing to train (raise --steps to continue)`);
        },
        step: onStep,
        eval: (e) =>
          say(
            `eval    step ${e.step}: loss ${e.loss.toFixed(4)}${e.accuracy !== null ? `, recall accuracy ${(100 * e.accuracy).toFixed(1)}%` : ''} on ${e.sequences} held-out sequences`,
          ),
        checkpoint: (e) => say(`saved   ${e.path} (step ${e.step}, ${formatRate(e.bytes)}B)`),
        log: (m) => say(m),
      },
    });
  } finally {
    process.off('SIGINT', onSigint);
    bar?.done();
  }
  if (f.json) {
    out.write(`${JSON.stringify({ summary: true, ...summary, losses: undefined, tokensPerSec: round(summary.tokensPerSec, 6) })}\n`);
  } else {
    say(
      `done    ${summary.step - summary.startStep} steps in ${formatDuration(summary.wallSeconds * 1000)}, final loss ${summary.finalLoss.toFixed(4)}, ${formatRate(summary.tokensPerSec)} tokens/s`,
    );
    if (summary.metrics) say(`files   ${summary.metrics}, ${summary.lossCurve}`);
  }
  if (summary.stoppedEarly) process.exitCode = 130;
}

export function registerTrainCommand(program: Command): void {
  program
    .command('train')
    .description('train a model on a local cluster of worker processes, every sequence split between them')
    .option('--config <file>', 'job config (JSON: model, data, training, cluster, checkpoint sections)')
    .option('--workers <W>', 'worker processes (blocks per sequence)', positiveInt('--workers'))
    .option('--steps <N>', 'optimizer steps', positiveInt('--steps'))
    .option('--seed <S>', 'seed of the initial weights', nonNegativeInt('--seed'))
    .option('--seq-len <T>', 'tokens per sequence', positiveInt('--seq-len'))
    .option('--kind <kind>', `attention kind of every layer (${KINDS.join(', ')})`)
    .option('--data <spec>', 'mqar, bytes:<file> or tokens:<file> (uint16)')
    .option('--batch-size <B>', 'sequences per step', positiveInt('--batch-size'))
    .option('--lr <x>', 'peak learning rate', positiveNumber('--lr'))
    .option('--eval-every <N>', 'evaluate every N steps (0: at the end only)', nonNegativeInt('--eval-every'))
    .option('--checkpoint-every <N>', 'checkpoint every N steps (0: at the end only)', nonNegativeInt('--checkpoint-every'))
    .option('--checkpoint-dir <dir>', 'checkpoints, metrics.jsonl and loss.svg go here')
    .option('--resume', 'continue from the newest valid checkpoint in --checkpoint-dir')
    .option('--threads-per-worker <n>', 'native threads per worker', positiveInt('--threads-per-worker'))
    .option('--json', 'print one JSON object per step and a summary line')
    .option('--verbose', "copy the workers' log lines to stderr")
    .action((f: TrainFlags) => trainCommand(f));
}
