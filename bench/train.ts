// `lasp bench train`: training throughput of a model on a local cluster, for several sequence
// lengths T and worker counts W at a fixed number of tokens per step (so time per token can be
// compared across T: linear attention keeps it flat). `lasp bench mqar`: how fast a model learns
// multi-query associative recall (steps and wall time to a recall accuracy); --layers compares a
// hybrid (e.g. gated_delta,gated_delta,gated_delta,softmax) with a pure linear model of the same depth.
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { intList, positiveInt } from '../cli/args.js';
import { KINDS, type Kind } from '../native/kernels.js';
import { LAYER_KINDS, type LayerKind } from '../model/backend.js';
import { parseTrainConfig } from '../train/config.js';
import { runTraining, type StepEvent } from '../train/driver.js';
import type { EvalRecord } from '../train/rank-trainer.js';
import { fmt, formatTable } from './table.js';

function kindOption(v: string): Kind {
  if (!(KINDS as string[]).includes(v))
    throw new InvalidArgumentError(`--kind must be one of ${KINDS.join(', ')}, got ${JSON.stringify(v)}`);
  return v as Kind;
}

export async function withTempDir<T>(f: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'lasp-bench-'));
  try {
    return await f(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

export interface TrainBenchOptions {
  seqLens: number[];
  workers: number[];
  /** Tokens per step (batch = tokensPerStep / T, at least 1). Default 65536. */
  tokensPerStep: number;
  /** Timed steps per point (after `warmup`). Default 4. */
  steps: number;
  /** Untimed first steps. Default 1. */
  warmup: number;
  kind: Kind;
}

export interface TrainBenchRow {
  seqLen: number;
  workers: number;
  batchSize: number;
  tokensPerStep: number;
  /** Median over the timed steps, measured by the driver (whole step, all ranks). */
  msPerStep: number;
  tokensPerSec: number;
  usPerToken: number;
  /** Rank 0's time in collectives per step (median, ms) and its share of the step. */
  collectiveMs: number;
  commFraction: number;
  parameters: number;
}

export async function runTrainBench(o: TrainBenchOptions, log: (s: string) => void = () => {}): Promise<TrainBenchRow[]> {
  const rows: TrainBenchRow[] = [];
  for (const W of o.workers)
    for (const T of o.seqLens) {
      const B = Math.max(1, Math.round(o.tokensPerStep / T));
      const steps: StepEvent[] = [];
      let parameters = 0;
      await withTempDir(async (dir) => {
        const cfg = parseTrainConfig({
          model: { kind: o.kind },
          data: { type: 'mqar', seqLen: T, vocabSize: 64, numKvPairs: 8, seed: 1 },
          training: { steps: o.warmup + o.steps, batchSize: B, lr: 1e-3, warmupSteps: 0 },
          cluster: { workers: W },
          checkpoint: { dir },
        });
        await runTraining(cfg, {
          writeFiles: false,
          finalCheckpoint: false,
          finalEval: false,
          events: { step: (e) => steps.push(e), start: (e) => (parameters = e.parameters) },
        });
      });
      const timed = steps.slice(o.warmup);
      const ms = median(timed.map((s) => s.wallMs));
      const coll = median(timed.map((s) => s.collectiveMs));
      const row: TrainBenchRow = {
        seqLen: T,
        workers: W,
        batchSize: B,
        tokensPerStep: B * T,
        msPerStep: ms,
        tokensPerSec: (B * T * 1000) / ms,
        usPerToken: (ms * 1000) / (B * T),
        collectiveMs: coll,
        commFraction: coll / ms,
        parameters,
      };
      log(`T=${T} W=${W}: ${Math.round(row.tokensPerSec)} tokens/s`);
      rows.push(row);
    }
  return rows;
}

export function printTrainBench(rows: TrainBenchRow[], kind: Kind): string {
  const p = rows[0]?.parameters ?? 0;
  return [
    `Training throughput: default model (${kind}, ${p.toLocaleString('en-US')} parameters), driver-measured whole steps, median`,
    formatTable(
      ['T', 'W', 'batch', 'tokens/step', 'ms/step', 'tokens/s', 'µs/token', 'collectives ms (rank 0)', 'share'],
      rows.map((r) => [
        r.seqLen,
        r.workers,
        r.batchSize,
        r.tokensPerStep,
        Math.round(r.msPerStep),
        Math.round(r.tokensPerSec).toLocaleString('en-US'),
        fmt(r.usPerToken, 3),
        fmt(r.collectiveMs, 3),
        `${(100 * r.commFraction).toFixed(1)}%`,
      ]),
    ),
  ].join('\n');
}

export interface MqarBenchOptions {
  kind: Kind;
  /** One kind per layer (e.g. a 3:1 hybrid); replaces `kind` and the default two layers. */
  layers?: LayerKind[];
  /** Keys per query of swa layers. */
  window?: number;
  workers: number;
  steps: number;
  evalEvery: number;
  /** Stop at the first evaluation at or above this accuracy. Default 0.9. */
  target: number;
  seqLen: number;
  pairs: number;
  batchSize: number;
  lr: number;
  seed: number;
  /** Short convolution size on q/k/v (0: none). */
  conv: number;
}

export interface MqarBenchResult {
  options: MqarBenchOptions;
  parameters: number;
  evals: (EvalRecord & { wallSeconds: number })[];
  /** First evaluation at or above the target, or null. */
  reached: { step: number; accuracy: number; wallSeconds: number } | null;
  wallSeconds: number;
}

export async function runMqarBench(o: MqarBenchOptions, log: (s: string) => void = () => {}): Promise<MqarBenchResult> {
  const evals: MqarBenchResult['evals'] = [];
  let parameters = 0;
  const t0 = performance.now();
  const controller = new AbortController();
  let reached: MqarBenchResult['reached'] = null;
  await withTempDir(async (dir) => {
    const cfg = parseTrainConfig({
      model: o.layers
        ? { kinds: o.layers, layers: o.layers.length, conv: o.conv, ...(o.window !== undefined ? { window: o.window } : {}) }
        : { kind: o.kind, conv: o.conv },
      data: { type: 'mqar', seqLen: o.seqLen, vocabSize: 64, numKvPairs: o.pairs, seed: 1 },
      training: { steps: o.steps, batchSize: o.batchSize, lr: o.lr, seed: o.seed, evalEvery: o.evalEvery, evalSequences: 128 },
      cluster: { workers: o.workers },
      checkpoint: { dir },
    });
    await runTraining(cfg, {
      writeFiles: false,
      finalCheckpoint: false,
      finalEval: false,
      signal: controller.signal,
      events: {
        start: (e) => (parameters = e.parameters),
        eval: (e) => {
          const wallSeconds = (performance.now() - t0) / 1000;
          evals.push({ ...e, wallSeconds });
          log(`step ${e.step}: recall ${(100 * (e.accuracy ?? 0)).toFixed(1)}% (${wallSeconds.toFixed(0)} s)`);
          if (!reached && e.accuracy !== null && e.accuracy >= o.target) {
            reached = { step: e.step, accuracy: e.accuracy, wallSeconds };
            controller.abort();
          }
        },
      },
    });
  });
  return { options: o, parameters, evals, reached, wallSeconds: (performance.now() - t0) / 1000 };
}

export function registerTrainBench(bench: Command): void {
  bench
    .command('train')
    .description('training tokens/s of the default model for sequence lengths T and worker counts W (fixed tokens per step)')
    .option('--seq-lens <list>', 'sequence lengths', intList('--seq-lens'), [4096, 16384, 65536])
    .option('--workers <list>', 'worker counts', intList('--workers'), [1, 2])
    .option('--tokens-per-step <n>', 'tokens per step (batch = this / T)', positiveInt('--tokens-per-step'), 65536)
    .option('--steps <n>', 'timed steps per point', positiveInt('--steps'), 4)
    .option('--warmup <n>', 'untimed first steps', positiveInt('--warmup'), 1)
    .option('--kind <kind>', 'attention kind of every layer', kindOption, 'gated_delta' as Kind)
    .option('--json', 'print one JSON object')
    .action(async (o: TrainBenchOptions & { json?: boolean }) => {
      const rows = await runTrainBench(o, (s) => process.stderr.write(`${s}\n`));
      process.stdout.write(o.json ? `${JSON.stringify(rows)}\n` : `${printTrainBench(rows, o.kind)}\n`);
    });
  bench
    .command('mqar')
    .description('multi-query associative recall: steps and wall time until held-out recall reaches a target')
    .option('--kind <kind>', 'attention kind of every layer', kindOption, 'gated_delta' as Kind)
    .option('--workers <W>', 'worker processes', positiveInt('--workers'), 2)
    .option('--steps <n>', 'most steps', positiveInt('--steps'), 400)
    .option('--eval-every <n>', 'evaluate (128 held-out sequences) every n steps', positiveInt('--eval-every'), 25)
    .option(
      '--target <x>',
      'stop at this recall accuracy',
      (v: string) => {
        const x = Number(v);
        if (!(x > 0 && x <= 1)) throw new InvalidArgumentError(`--target must be in (0, 1], got ${JSON.stringify(v)}`);
        return x;
      },
      0.9,
    )
    .option('--seq-len <T>', 'tokens per sequence', positiveInt('--seq-len'), 128)
    .option('--pairs <n>', 'key-value pairs per sequence', positiveInt('--pairs'), 8)
    .option('--batch-size <B>', 'sequences per step', positiveInt('--batch-size'), 32)
    .option('--lr <x>', 'peak learning rate', (v: string) => Number(v), 1e-2)
    .option('--seed <S>', 'weights seed', (v: string) => Number(v), 0)
    .option('--conv <K>', 'short convolution size on q/k/v (0: none)', (v: string) => Number(v), 4)
    .option(
      '--layers <kinds>',
      `one kind per layer, comma-separated (${LAYER_KINDS.join(', ')}), e.g. gated_delta,gated_delta,gated_delta,softmax`,
      (v: string) => {
        const ks = v.split(',').map((k) => k.trim());
        for (const k of ks)
          if (!(LAYER_KINDS as readonly string[]).includes(k))
            throw new InvalidArgumentError(`--layers must list kinds of ${LAYER_KINDS.join(', ')}, got ${JSON.stringify(k)}`);
        return ks as LayerKind[];
      },
    )
    .option('--window <w>', 'keys per query of swa layers', positiveInt('--window'))
    .option('--json', 'print one JSON object')
    .action(async (o: MqarBenchOptions & { json?: boolean }) => {
      const r = await runMqarBench(o, (s) => process.stderr.write(`${s}\n`));
      if (o.json) process.stdout.write(`${JSON.stringify(r)}\n`);
      else {
        process.stdout.write(
          `MQAR ${o.pairs} pairs in ${o.seqLen} tokens (vocab 64), ${o.layers ? o.layers.join(',') : o.kind}, conv ${o.conv}, ${r.parameters.toLocaleString('en-US')} parameters, W=${o.workers}, batch ${o.batchSize}, lr ${o.lr}\n`,
        );
        process.stdout.write(
          formatTable(
            ['step', 'recall', 'eval loss', 'wall s'],
            r.evals.map((e) => [e.step, `${(100 * (e.accuracy ?? 0)).toFixed(1)}%`, fmt(e.loss), e.wallSeconds.toFixed(1)]),
          ) + '\n',
        );
        process.stdout.write(
          r.reached
            ? `reached ${(100 * r.reached.accuracy).toFixed(1)}% at step ${r.reached.step} after ${r.reached.wallSeconds.toFixed(1)} s\n`
            : `did not reach ${(100 * o.target).toFixed(0)}% in ${o.steps} steps (${r.wallSeconds.toFixed(1)} s)\n`,
        );
      }
    });
}
