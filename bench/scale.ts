// `lasp bench scale`: WEAK scaling of training under sequence parallelism. For each worker count W
// the sequence length is T = W × (T/W) with T/W fixed, so every worker holds the same block and
// ideal scaling keeps the step time flat (tokens/s ∝ W). Per W: tokens/s of timed steps after a
// warm-up, each rank's wait in collectives, the bytes each rank's communicator sent, peak memory
// of the workers (process RSS; GPU memory on cuda), the scaling efficiency against the smallest
// W, and a check that sequence parallelism changed nothing: a reference run at the smallest W on
// the same T must give the same losses to float32 rounding (docs/scale-out.md).
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { intList, nonNegativeInt, positiveInt } from '../cli/args.js';
import { workerDevice } from '../cluster/local-cluster.js';
import { LAYER_KINDS, type LayerKind } from '../model/backend.js';
import { parseTrainConfig } from '../train/config.js';
import { runTraining, type StepEvent } from '../train/driver.js';
import { fmt, formatTable } from './table.js';
import { median, withTempDir } from './train.js';

export interface ScaleBenchOptions {
  /** Worker counts W (run in increasing order). Default [1, 2, 4]. */
  workers: number[];
  /** Tokens of each worker's block, T/W; a run with W workers trains on sequences of T = W × this. Default 1024. */
  seqLenPerWorker: number;
  /** One kind per layer (e.g. gated_delta,gated_delta,gated_delta,softmax). Default: the default model's (2 × gated_delta). */
  layers?: LayerKind[];
  /** Keys per query of swa layers. Default: the model's (64). */
  window?: number;
  /** Sequences per step. Default 1. */
  batchSize: number;
  /** Timed steps per W (after `warmup`). Default 3. */
  steps: number;
  /** Untimed first steps per W. Default 1. */
  warmup: number;
  /** Native threads per worker. Default: the local cluster's, max(1, floor(CPUs / W)) — a CPU run then shares the same cores among more workers. */
  threadsPerWorker?: number;
  /** The workers' device(s), as `lasp train --device`: "cpu", "cuda:N" or a list handed out in turn. Default "cpu". */
  device: string;
  /**
   * First steps whose losses are compared with a reference run of the smallest W on the same T (one
   * extra run per larger W, same schedule, stopped after this many steps); 0: no check
   * (maxRelLossDiff null). Default 2.
   */
  lossSteps: number;
}

export const DEFAULT_SCALE_OPTIONS: ScaleBenchOptions = {
  workers: [1, 2, 4],
  seqLenPerWorker: 1024,
  batchSize: 1,
  steps: 3,
  warmup: 1,
  device: 'cpu',
  lossSteps: 2,
};

export interface ScaleBenchRow {
  workers: number;
  /** Tokens per sequence, T = workers × seqLenPerWorker. */
  seqLen: number;
  batchSize: number;
  tokensPerStep: number;
  /** Whole step (all ranks) as the driver measured it, median over the timed steps (ms). */
  msPerStep: number;
  /** tokensPerStep / msPerStep. */
  tokensPerSec: number;
  /** tokensPerSec / ((workers / W0) × tokensPerSec of W0), W0 = the smallest W (1 when listed): 1 is perfect weak scaling. */
  efficiency: number;
  /** Each rank's time waiting in collectives per step (median over the timed steps, ms): the largest over ranks… */
  collectiveMsMax: number;
  /** … and the mean over ranks. */
  collectiveMsMean: number;
  /** collectiveMsMean / msPerStep. */
  collectiveShare: number;
  /**
   * Collective payload bytes a rank sent per step, measured by its communicator (mean over ranks and
   * timed steps): every collective of the step — the layers' forward and backward exchanges, the
   * loss AllGather and the gradient AllReduce (the last grows with the parameters, not with T).
   */
  bytesSentPerRankPerStep: number;
  /** The same, the rank that sent most. */
  bytesSentMaxRankPerStep: number;
  /**
   * Bytes the model's layers sent per rank per step (forward + backward: attention summaries and
   * state gradients, softmax K/V and dK/dV, swa and short-convolution halos; no loss sums, no
   * gradient AllReduce), divided by the number of layers: a mean over the layers' kinds for hybrids.
   */
  bytesSentPerRankPerLayer: number;
  /**
   * Time a rank waited in the layers' collectives per step (forward + backward: the attention
   * AllGathers, softmax K/V exchanges, halos; no loss sums, no gradient AllReduce), median over the
   * timed steps, mean over ranks, divided by the number of layers (ms).
   */
  layerCollectiveMsPerLayer: number;
  /** Peak resident set of a worker process (getrusage maxRSS at the end of the last step), the largest over workers (MiB). */
  peakRssMiB: number;
  /** Resident set at the end of the timed steps (process.memoryUsage.rss()), the largest over workers and steps (MiB). */
  rssMiB: number;
  /**
   * cuda: GPU memory in use at the end of the timed steps (total − free, cudaMemGetInfo), the largest
   * over workers and steps (MiB). That is the whole GPU's usage, shared by workers on one GPU and
   * including other processes. null on the CPU.
   */
  gpuMemMiB: number | null;
  /**
   * Largest |loss − reference| / |reference| over the first lossSteps steps, the reference being the
   * smallest W trained on the same T with the same seeds (the same sequences, split differently).
   * null for the smallest W itself and when lossSteps is 0.
   */
  maxRelLossDiff: number | null;
  /** Loss of every step (warm-up included). */
  losses: number[];
}

export interface ScaleBenchResult {
  config: ScaleBenchOptions & { layers: LayerKind[]; parameters: number };
  rows: ScaleBenchRow[];
}

const MiB = 1 << 20;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const max = (xs: number[]) => xs.reduce((a, b) => Math.max(a, b), -Infinity);

interface Run {
  steps: StepEvent[];
  parameters: number;
  layers: LayerKind[];
}

/** Trains `steps` steps of the benchmark's job at W workers on sequences of T tokens, stopping after `stopAfter` (the schedule stays that of `steps`). */
async function train(o: ScaleBenchOptions, W: number, T: number, steps: number, stopAfter = steps): Promise<Run> {
  const run: Run = { steps: [], parameters: 0, layers: [] };
  const stop = new AbortController();
  await withTempDir(async (dir) => {
    const cfg = parseTrainConfig({
      model: o.layers ? { kinds: o.layers, layers: o.layers.length, ...(o.window !== undefined ? { window: o.window } : {}) } : {},
      data: { type: 'mqar', seqLen: T, vocabSize: 64, numKvPairs: 8, seed: 1 },
      training: { steps, batchSize: o.batchSize, lr: 1e-3, warmupSteps: 0, evalEvery: 0 },
      cluster: { workers: W, ...(o.threadsPerWorker !== undefined ? { threadsPerWorker: o.threadsPerWorker } : {}) },
      checkpoint: { dir },
    });
    run.layers = cfg.model.kinds;
    await runTraining(cfg, {
      writeFiles: false,
      finalCheckpoint: false,
      finalEval: false,
      device: o.device,
      signal: stop.signal,
      events: {
        step: (e) => {
          if (run.steps.push(e) >= stopAfter) stop.abort();
        },
        start: (e) => (run.parameters = e.parameters),
      },
    });
  });
  return run;
}

function maxRelDiff(a: number[], ref: number[]): number {
  let m = 0;
  for (let i = 0; i < Math.min(a.length, ref.length); i++) m = Math.max(m, Math.abs(a[i]! - ref[i]!) / Math.abs(ref[i]!));
  return m;
}

/** The row of one W from its run's step events (efficiency and the loss check are filled in later). */
function rowOf(W: number, T: number, o: ScaleBenchOptions, run: Run): ScaleBenchRow {
  const timed = run.steps.slice(o.warmup);
  const ms = median(timed.map((s) => s.wallMs));
  const tokensPerStep = o.batchSize * T;
  const ranks = timed[0]!.ranks.map((_, k) => timed.map((s) => s.ranks[k]!));
  const coll = ranks.map((r) => median(r.map((x) => x.collectiveMs)));
  const sent = ranks.map((r) => mean(r.map((x) => x.bytesSent)));
  const layerSent = ranks.map((r) => mean(r.map((x) => x.layerBytesSent)));
  const layerWait = ranks.map((r) => median(r.map((x) => x.layerCollectiveMs)));
  const all = ranks.flat();
  const gpu = all.map((x) => x.gpuMemUsedBytes).filter((x): x is number => x !== null);
  return {
    workers: W,
    seqLen: T,
    batchSize: o.batchSize,
    tokensPerStep,
    msPerStep: ms,
    tokensPerSec: (tokensPerStep * 1000) / ms,
    efficiency: NaN,
    collectiveMsMax: max(coll),
    collectiveMsMean: mean(coll),
    collectiveShare: mean(coll) / ms,
    bytesSentPerRankPerStep: mean(sent),
    bytesSentMaxRankPerStep: max(sent),
    bytesSentPerRankPerLayer: mean(layerSent) / run.layers.length,
    layerCollectiveMsPerLayer: mean(layerWait) / run.layers.length,
    peakRssMiB: max(all.map((x) => x.peakRssBytes)) / MiB,
    rssMiB: max(all.map((x) => x.rssBytes)) / MiB,
    gpuMemMiB: gpu.length > 0 ? max(gpu) / MiB : null,
    maxRelLossDiff: null,
    losses: run.steps.map((s) => s.loss),
  };
}

export async function runScaleBench(opts: Partial<ScaleBenchOptions> = {}, log: (s: string) => void = () => {}): Promise<ScaleBenchResult> {
  const o: ScaleBenchOptions = { ...DEFAULT_SCALE_OPTIONS, ...opts };
  const Ws = [...new Set(o.workers)].sort((a, b) => a - b);
  if (Ws.length === 0 || Ws.some((w) => !Number.isInteger(w) || w < 1))
    throw new Error(`workers must be positive integers, got ${o.workers.join(',')}`);
  if (!(o.steps >= 1)) throw new Error(`steps must be at least 1, got ${o.steps}`);
  workerDevice(o.device, 0); // a bad device list fails before any run
  const W0 = Ws[0]!;
  const rows: ScaleBenchRow[] = [];
  let parameters = 0;
  let layers: LayerKind[] = [];
  const total = o.warmup + o.steps;
  const lossSteps = Math.min(o.lossSteps, total);
  for (const W of Ws) {
    const T = W * o.seqLenPerWorker;
    const run = await train(o, W, T, total);
    parameters = run.parameters;
    layers = run.layers;
    const row = rowOf(W, T, o, run);
    const base = rows[0] ?? row;
    row.efficiency = (row.tokensPerSec * W0) / (W * base.tokensPerSec);
    if (W !== W0 && lossSteps > 0) {
      const ref = await train(o, W0, T, total, lossSteps);
      row.maxRelLossDiff = maxRelDiff(
        row.losses.slice(0, lossSteps),
        ref.steps.map((s) => s.loss),
      );
    }
    rows.push(row);
    log(
      `W=${W} T=${T}: ${Math.round(row.tokensPerSec)} tokens/s, efficiency ${row.efficiency.toFixed(3)}, ` +
        `collectives ${row.collectiveMsMax.toFixed(1)} ms max (${(100 * row.collectiveShare).toFixed(1)}% of the step), ` +
        `${Math.round(row.bytesSentPerRankPerStep)} B sent/rank/step, peak RSS ${row.peakRssMiB.toFixed(0)} MiB` +
        (row.gpuMemMiB !== null ? `, GPU ${row.gpuMemMiB.toFixed(0)} MiB` : '') +
        (row.maxRelLossDiff !== null ? `, loss vs W=${W0}: ${row.maxRelLossDiff.toExponential(2)}` : ''),
    );
  }
  return { config: { ...o, workers: Ws, layers, parameters }, rows };
}

export function printScaleBench(r: ScaleBenchResult): string {
  const c = r.config;
  const kib = (b: number) => (b / 1024).toFixed(1);
  return [
    `Weak scaling: ${c.layers.join(',')} (${c.parameters.toLocaleString('en-US')} parameters), T/W = ${c.seqLenPerWorker}, batch ${c.batchSize}, ` +
      `device ${c.device}, threads/worker ${c.threadsPerWorker ?? 'CPUs / W'}, ${c.steps} timed steps after ${c.warmup} (medians); efficiency against W=${c.workers[0]}`,
    formatTable(
      [
        'W',
        'T',
        'ms/step',
        'tokens/s',
        'efficiency',
        'coll. ms max',
        'coll. ms mean',
        'share',
        'KiB sent/rank/step',
        'KiB/rank/layer',
        'layer coll. ms/layer',
        'peak RSS MiB',
        'GPU MiB',
        'max rel. loss diff',
      ],
      r.rows.map((x) => [
        x.workers,
        x.seqLen,
        Math.round(x.msPerStep),
        Math.round(x.tokensPerSec).toLocaleString('en-US'),
        x.efficiency.toFixed(3),
        fmt(x.collectiveMsMax),
        fmt(x.collectiveMsMean),
        `${(100 * x.collectiveShare).toFixed(1)}%`,
        kib(x.bytesSentPerRankPerStep),
        kib(x.bytesSentPerRankPerLayer),
        fmt(x.layerCollectiveMsPerLayer),
        x.peakRssMiB.toFixed(0),
        x.gpuMemMiB === null ? '—' : x.gpuMemMiB.toFixed(0),
        x.maxRelLossDiff === null ? '—' : x.maxRelLossDiff.toExponential(2),
      ]),
    ),
  ].join('\n');
}

export function layerList(v: string): LayerKind[] {
  const ks = v.split(',').map((k) => k.trim());
  for (const k of ks)
    if (!(LAYER_KINDS as readonly string[]).includes(k))
      throw new InvalidArgumentError(`--layers must list kinds of ${LAYER_KINDS.join(', ')}, got ${JSON.stringify(k)}`);
  return ks as LayerKind[];
}

export function registerScaleBench(bench: Command): void {
  const d = DEFAULT_SCALE_OPTIONS;
  bench
    .command('scale')
    .description(
      'weak scaling of training: T = W × (T/W) for each worker count W; tokens/s, efficiency, collectives, bytes, memory, loss check',
    )
    .option('--workers <list>', 'worker counts W', intList('--workers'), d.workers)
    .option(
      '--seq-len-per-worker <n>',
      'tokens per worker block T/W (T = W × this)',
      positiveInt('--seq-len-per-worker'),
      d.seqLenPerWorker,
    )
    .option('--layers <kinds>', `one kind per layer, comma-separated (${LAYER_KINDS.join(', ')}); default: the default model's`, layerList)
    .option('--window <w>', 'keys per query of swa layers', positiveInt('--window'))
    .option('--batch-size <B>', 'sequences per step', positiveInt('--batch-size'), d.batchSize)
    .option('--steps <n>', 'timed steps per W', positiveInt('--steps'), d.steps)
    .option('--warmup <n>', 'untimed first steps per W', nonNegativeInt('--warmup'), d.warmup)
    .option('--threads-per-worker <n>', 'native threads per worker (default: CPUs / W)', positiveInt('--threads-per-worker'))
    .option('--device <dev>', "the workers' device, as lasp train --device: cpu, cuda:N or a list handed out in turn", d.device)
    .option(
      '--loss-steps <n>',
      'first steps compared with the smallest W on the same T (an extra run per W; 0: skip)',
      nonNegativeInt('--loss-steps'),
      d.lossSteps,
    )
    .option('--json', 'print one JSON object {config, rows}')
    .action(async (f: ScaleBenchOptions & { json?: boolean }) => {
      const { json, ...o } = f;
      const r = await runScaleBench(o, (s) => process.stderr.write(`${s}\n`));
      process.stdout.write(json ? `${JSON.stringify(r)}\n` : `${printScaleBench(r)}\n`);
    });
}
