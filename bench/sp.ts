// `lasp bench sp`: W real worker processes on loopback run one attention layer forward+backward
// with sequence parallelism (LASP-2, and the LASP-1 and ring-KV baselines), and every rank
// checks its block against the single-process kernel on the whole sequence. Also the hybrid and
// local layers (DESIGN.md §3.1): --kind softmax (K/V gathered, dK/dV back to owners), --kind swa
// --window W (halo), --kind conv --conv-size K (halo), and --zigzag (rank r holds segments r and
// 2W−1−r of 2W); for these the "lasp2" fields describe the layer's sequence-parallel algorithm.
import type { Command } from 'commander';
import { InvalidArgumentError, Option } from 'commander';
import { positiveInt } from '../cli/args.js';
import { startLocalCluster } from '../cluster/local-cluster.js';
import { median } from './timing.js';
import { DEFAULT_STREAM_TRANSPORT, type StreamTransport } from '../worker/collectives/peer-clients.js';
import { KINDS, type Kind } from '../native/kernels.js';
import { LOCAL_KINDS, type LocalKind } from '../worker/sp/hybrid-layer.js';
import {
  combineErrors,
  GRAD_TENSORS,
  OUTPUT_TENSORS,
  SP_MODES,
  type SpLayerConfig,
  type SpLayerRankResult,
  type SpMode,
} from '../worker/sp/sp-layer-task.js';
import { fmt, formatTable } from './table.js';

const BENCH_KINDS: readonly string[] = [...KINDS, ...LOCAL_KINDS];

export interface SpBenchOptions {
  kind: Kind | LocalKind;
  /** swa: keys per query, itself included. */
  window?: number;
  /** conv: kernel size. Default 4. */
  convSize?: number;
  /** Zig-zag layout. Default false (contiguous). */
  zigzag?: boolean;
  workers: number;
  seqLen: number;
  heads: number;
  headDim: number;
  /** Default 1. */
  seed?: number;
  /** Default 3. */
  repeats?: number;
  /** Default all three. */
  modes?: SpMode[];
  /** Default true. */
  check?: boolean;
  /** Default false. */
  initialState?: boolean;
  /** Default true. */
  causal?: boolean;
  /** Kernel threads per worker. Default max(1, floor(cpus / workers)). */
  threadsPerWorker?: number;
  /** The workers' device(s), as for `lasp train --device` (the single-process check stays on the CPU). Default "cpu". */
  device?: string;
  /** What carries the workers' collective pieces (`lasp worker --stream-transport`). Default DEFAULT_STREAM_TRANSPORT. */
  streamTransport?: StreamTransport;
}

export interface SpBenchResult {
  kind: Kind | LocalKind;
  window: number | null;
  convSize: number | null;
  layout: 'contiguous' | 'zigzag';
  /** The workers' device(s). */
  device: string;
  /** What carried the collective pieces. */
  streamTransport: StreamTransport;
  workers: number;
  seqLen: number;
  heads: number;
  headDim: number;
  causal: boolean;
  maxRelErrorOutput: number | null;
  maxRelErrorGrad: number | null;
  /** Per baseline, the same comparison (null when not run or not checked). */
  baselineMaxRelError: Partial<Record<SpMode, number | null>>;
  /** Payload bytes a rank sends per layer, forward + backward (LASP-2; max over ranks). */
  bytesSentPerRankPerLayer: number | null;
  /** Forward+backward per layer, median of `repeats`, slowest rank (ms). */
  lasp2Ms: number | null;
  lasp1Ms: number | null;
  ringKvMs: number | null;
  /** Time inside LASP-2's collectives per layer (call to resolve; slowest rank, ms). */
  lasp2CollectiveMs: number | null;
  /** lasp2CollectiveMs / lasp2Ms. */
  lasp2CommFraction: number | null;
  /**
   * lasp2Ms − the largest rankComputeMs: how much longer the layer takes than its busiest rank's
   * own work — the communication that overlap did not hide, without the time faster ranks spend
   * waiting for slower ones (load skew, which lasp2CollectiveMs counts as waiting).
   */
  lasp2OverheadMs: number | null;
  /** lasp2OverheadMs / lasp2Ms. */
  lasp2OverheadFraction: number | null;
  /**
   * The time LASP-2's collectives add to the layer's critical path: per collective, from the moment
   * the last rank was ready for it to the moment the last rank had its result, summed over the
   * layer's collectives; median over iterations (ms). Unlike lasp2CollectiveMs it leaves out ranks
   * waiting for slower ones (at every collective, not only over the whole layer as lasp2OverheadMs
   * does). Null where the ranks' waits do not line up (not the LASP-2 linear-attention path).
   */
  lasp2CriticalCommMs: number | null;
  /** lasp2CriticalCommMs / lasp2Ms. */
  lasp2CriticalCommFraction: number | null;
  /** Per rank: median wall time of the layer, and of its own work (wall − collective wait), ms. */
  rankMs: number[];
  rankComputeMs: number[];
  /** Load balance: max / min over ranks of rankComputeMs (1 = balanced). */
  loadBalance: number | null;
}

function slowest(ranks: SpLayerRankResult[], mode: SpMode): number | null {
  const v = ranks.map((r) => r.ms[mode]).filter((x): x is number => typeof x === 'number');
  return v.length === ranks.length ? Math.max(...v) : null;
}

/**
 * LASP2's critical-path communication (SpBenchResult.lasp2CriticalCommMs) from every rank's waits per
 * iteration; null unless all ranks recorded the same number of iterations and of waits in each.
 */
export function criticalCommMs(perRank: ({ ready: number; done: number }[][] | undefined)[]): number | null {
  const first = perRank[0];
  if (!first || first.length === 0) return null;
  const iters = first.length;
  if (perRank.some((p) => !p || p.length !== iters || p.some((it, i) => it.length !== first[i]!.length))) return null;
  const sums: number[] = [];
  for (let i = 0; i < iters; i++) {
    let sum = 0;
    for (let k = 0; k < first[i]!.length; k++) {
      const ready = Math.max(...perRank.map((p) => p![i]![k]!.ready));
      const done = Math.max(...perRank.map((p) => p![i]![k]!.done));
      sum += Math.max(0, done - ready);
    }
    sums.push(sum);
  }
  return median(sums);
}

export async function runSpBench(o: SpBenchOptions): Promise<SpBenchResult> {
  const causal = o.causal ?? true;
  const local = (LOCAL_KINDS as readonly string[]).includes(o.kind);
  const zigzag = o.zigzag ?? false;
  const modes = o.modes ?? (causal && !local && !zigzag ? [...SP_MODES] : ['lasp2']);
  const config: SpLayerConfig = {
    kind: o.kind,
    layout: zigzag ? 'zigzag' : 'contiguous',
    ...(o.kind === 'swa' ? { window: o.window } : {}),
    ...(o.kind === 'conv' ? { convSize: o.convSize ?? 4 } : {}),
    T: o.seqLen,
    H: o.heads,
    dk: o.headDim,
    dv: o.headDim,
    seed: o.seed ?? 1,
    causal,
    withInitialState: o.initialState ?? false,
    withFinalGrad: !local,
    modes,
    repeats: o.repeats ?? 3,
    check: o.check ?? true,
  };
  const cluster = await startLocalCluster({
    workers: o.workers,
    ...(o.threadsPerWorker ? { threadsPerWorker: o.threadsPerWorker } : {}),
    ...(o.device !== undefined ? { device: o.device } : {}),
    ...(o.streamTransport !== undefined ? { streamTransport: o.streamTransport } : {}),
  });
  try {
    const group = await cluster.formGroup(`bench-sp-${process.pid}-${Date.now()}`, o.workers);
    const replies = await cluster.runTask(group, 'sp-layer', config, { timeoutMs: 30 * 60_000 });
    const ranks = replies.map((r) => r.result as SpLayerRankResult);
    const errs = (mode: SpMode, names: string[]) =>
      config.check
        ? combineErrors(
            ranks.map((r) => r.errors[mode] ?? {}),
            names,
          )
        : null;
    const lasp2Ms = slowest(ranks, 'lasp2');
    const coll = ranks.map((r) => r.lasp2CollectiveMs).filter((x): x is number => x !== null);
    const bytes = ranks.map((r) => r.lasp2BytesSent).filter((x): x is number => x !== null);
    const lasp2CollectiveMs = coll.length ? Math.max(...coll) : null;
    const rankComputeMs = ranks.map((r) => r.lasp2ComputeMs ?? NaN);
    const minCompute = Math.min(...rankComputeMs);
    const lasp2OverheadMs = lasp2Ms !== null && rankComputeMs.every(Number.isFinite) ? lasp2Ms - Math.max(...rankComputeMs) : null;
    const lasp2CriticalCommMs = criticalCommMs(ranks.map((r) => r.lasp2Phases));
    const baselineMaxRelError: Partial<Record<SpMode, number | null>> = {};
    for (const m of modes) if (m !== 'lasp2') baselineMaxRelError[m] = errs(m, [...OUTPUT_TENSORS, ...GRAD_TENSORS]);
    return {
      kind: o.kind,
      window: o.kind === 'swa' ? (o.window ?? null) : null,
      convSize: o.kind === 'conv' ? (o.convSize ?? 4) : null,
      layout: zigzag ? 'zigzag' : 'contiguous',
      device: o.device ?? 'cpu',
      streamTransport: o.streamTransport ?? DEFAULT_STREAM_TRANSPORT,
      workers: o.workers,
      seqLen: o.seqLen,
      heads: o.heads,
      headDim: o.headDim,
      causal,
      maxRelErrorOutput: modes.includes('lasp2') ? errs('lasp2', OUTPUT_TENSORS) : null,
      maxRelErrorGrad: modes.includes('lasp2') ? errs('lasp2', GRAD_TENSORS) : null,
      baselineMaxRelError,
      bytesSentPerRankPerLayer: bytes.length ? Math.max(...bytes) : null,
      lasp2Ms,
      lasp1Ms: slowest(ranks, 'lasp1'),
      ringKvMs: slowest(ranks, 'ringkv'),
      lasp2CollectiveMs,
      lasp2CommFraction: lasp2Ms && lasp2CollectiveMs !== null ? lasp2CollectiveMs / lasp2Ms : null,
      lasp2OverheadMs,
      lasp2OverheadFraction: lasp2Ms && lasp2OverheadMs !== null ? lasp2OverheadMs / lasp2Ms : null,
      lasp2CriticalCommMs,
      lasp2CriticalCommFraction: lasp2Ms && lasp2CriticalCommMs !== null ? lasp2CriticalCommMs / lasp2Ms : null,
      rankMs: ranks.map((r) => r.ms.lasp2 ?? NaN),
      rankComputeMs,
      loadBalance: minCompute > 0 ? Math.max(...rankComputeMs) / minCompute : null,
    };
  } finally {
    await cluster.stop();
  }
}

export function printSpBench(r: SpBenchResult): string {
  const what = r.kind === 'swa' ? `swa (window ${r.window})` : r.kind === 'conv' ? `conv (kernel ${r.convSize})` : r.kind;
  const head = `Sequence-parallel ${what}${r.causal ? '' : ' (non-causal)'} layer, ${r.layout} layout, W=${r.workers}, T=${r.seqLen}, H=${r.heads}, d=${r.headDim}, ${r.streamTransport} transport`;
  const sp = KINDS.includes(r.kind as Kind) ? 'LASP-2' : 'SP';
  return [
    head,
    formatTable(
      ['metric', 'value'],
      [
        ['max rel. error, outputs', r.maxRelErrorOutput === null ? 'not checked' : fmt(r.maxRelErrorOutput)],
        ['max rel. error, gradients', r.maxRelErrorGrad === null ? 'not checked' : fmt(r.maxRelErrorGrad)],
        ['bytes sent per rank per layer (fwd+bwd)', r.bytesSentPerRankPerLayer ?? 'n/a'],
        [`${sp} fwd+bwd ms`, r.lasp2Ms === null ? 'n/a' : fmt(r.lasp2Ms)],
        ['  of which in collectives ms', r.lasp2CollectiveMs === null ? 'n/a' : fmt(r.lasp2CollectiveMs)],
        ["  beyond the busiest rank's own work ms", r.lasp2OverheadMs === null ? 'n/a' : fmt(r.lasp2OverheadMs)],
        [
          '  on the critical path ms (last ready → last done, per collective)',
          r.lasp2CriticalCommMs === null ? 'n/a' : `${fmt(r.lasp2CriticalCommMs)} (${fmt(100 * (r.lasp2CriticalCommFraction ?? NaN), 2)}%)`,
        ],
        ['LASP-1 fwd+bwd ms', r.lasp1Ms === null ? 'not run' : fmt(r.lasp1Ms)],
        ['ring-KV fwd+bwd ms', r.ringKvMs === null ? 'not run' : fmt(r.ringKvMs)],
        ['own work per rank ms (wall − collective wait)', r.rankComputeMs.map((x) => fmt(x)).join(' / ')],
        ['load balance (max / min own work)', r.loadBalance === null ? 'n/a' : fmt(r.loadBalance)],
      ],
    ),
  ].join('\n');
}

export function registerSpBench(bench: Command): void {
  bench
    .command('sp')
    .description('distributed attention layer over W worker processes: exactness, bytes, LASP-2 vs LASP-1 vs ring-KV')
    .requiredOption('--kind <kind>', `layer kind: ${BENCH_KINDS.join(', ')}`, (v: string) => {
      if (!BENCH_KINDS.includes(v))
        throw new InvalidArgumentError(`--kind must be one of ${BENCH_KINDS.join(', ')}, got ${JSON.stringify(v)}`);
      return v as Kind | LocalKind;
    })
    .option('--window <W>', 'swa: keys per query, itself included', positiveInt('--window'))
    .option('--conv-size <K>', 'conv: kernel size (default 4)', positiveInt('--conv-size'))
    .option('--zigzag', 'zig-zag layout: rank r holds blocks r and 2W−1−r of 2W')
    .option('--workers <W>', 'worker processes', positiveInt('--workers'), 2)
    .option('--seq-len <T>', 'tokens of the whole sequence (e.g. 16384 or 16k)', positiveInt('--seq-len'), 16384)
    .option('--heads <H>', 'heads', positiveInt('--heads'), 4)
    .option('--head-dim <D>', 'head dimension (dk = dv)', positiveInt('--head-dim'), 64)
    .option('--seed <S>', 'random seed', positiveInt('--seed'), 1)
    .option('--repeats <N>', 'timed iterations per algorithm', positiveInt('--repeats'), 3)
    .option('--modes <list>', `algorithms to run (${SP_MODES.join(',')})`, (v: string) => {
      const m = v.split(',').map((x) => x.trim());
      if (!m.every((x) => (SP_MODES as readonly string[]).includes(x)))
        throw new InvalidArgumentError(`--modes must list ${SP_MODES.join(', ')}`);
      return m as SpMode[];
    })
    .option('--initial-state', 'use a random initial state S_0')
    .option('--non-causal', 'bidirectional (linear only; LASP-2 only)')
    .option('--no-check', 'skip the comparison with the single-process kernel')
    .option('--threads-per-worker <N>', 'kernel threads per worker (default: cores / workers)', positiveInt('--threads-per-worker'))
    .option('--device <dev>', "the workers' device: cpu, cuda:N, or a list handed out in turn (cuda:0,cuda:1)", 'cpu')
    .addOption(
      new Option('--stream-transport <t>', "what carries the workers' collective pieces (lasp worker --stream-transport)")
        .choices(['native', 'http2', 'grpc-js', 'raw'])
        .default(DEFAULT_STREAM_TRANSPORT),
    )
    .option('--json', 'print one JSON object')
    .action(async (o: SpBenchOptions & { json?: boolean; nonCausal?: boolean; initialState?: boolean }) => {
      if (o.seqLen < o.workers) throw new InvalidArgumentError(`--seq-len (${o.seqLen}) must be at least --workers (${o.workers})`);
      if (o.kind === 'swa' && o.window === undefined) throw new InvalidArgumentError('--kind swa needs --window <W>');
      if (o.window !== undefined && o.kind !== 'swa')
        throw new InvalidArgumentError(`--window applies to --kind swa, got --kind ${o.kind}`);
      if (o.convSize !== undefined && o.kind !== 'conv')
        throw new InvalidArgumentError(`--conv-size applies to --kind conv, got --kind ${o.kind}`);
      const r = await runSpBench({ ...o, causal: !o.nonCausal });
      // Non-finite errors (a NaN or Inf in the results) print as strings, not as JSON's null.
      const json = JSON.stringify(r, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v));
      process.stdout.write(o.json ? `${json}\n` : `${printSpBench(r)}\n`);
    });
}
