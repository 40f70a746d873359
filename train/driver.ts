// Runs a training job on a local cluster (coordinator in this process, one worker process per
// block): forms the group, starts a replica on every rank, then drives it step by step through
// RunTask so that progress, evaluation and checkpoints are visible here as they happen. Writes
// metrics.jsonl and loss.svg next to the checkpoints.
import { mkdir, writeFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { startLocalCluster, type LocalCluster } from '../cluster/local-cluster.js';
import type { Group, TaskReply } from '../coordinator/rendezvous.js';
import { parseTrainConfig, type TrainConfig } from './config.js';
import { latestValid, type WriteResult } from './checkpoint/index.js';
import { writeLossCurve } from './loss-curve.js';
import { MetricsLog, readMetrics } from './metrics-log.js';
import type { EvalRecord, StepRecord } from './rank-trainer.js';

/** One rank's own measurements of a step (from its StepRecord). */
export type RankStepStats = Pick<
  StepRecord,
  'ms' | 'collectiveMs' | 'bytesSent' | 'layerBytesSent' | 'layerCollectiveMs' | 'rssBytes' | 'peakRssBytes' | 'gpuMemUsedBytes'
>;

/** A step as rank 0 reported it (the StepRecord fields are rank 0's), plus what the driver measured. */
export interface StepEvent extends StepRecord {
  /** Input positions per second of this step, measured here (the whole step, all ranks). */
  tokensPerSec: number;
  /** Wall time of this step measured here (ms). */
  wallMs: number;
  /** Every rank's own measurements, indexed by rank (not written to metrics.jsonl). */
  ranks: RankStepStats[];
}

function rankStats(r: StepRecord): RankStepStats {
  const { ms, collectiveMs, bytesSent, layerBytesSent, layerCollectiveMs, rssBytes, peakRssBytes, gpuMemUsedBytes } = r;
  return { ms, collectiveMs, bytesSent, layerBytesSent, layerCollectiveMs, rssBytes, peakRssBytes, gpuMemUsedBytes };
}

export interface StartEvent {
  config: TrainConfig;
  /** Steps already done (a resumed run starts after them). */
  startStep: number;
  parameters: number;
  /** Checkpoint the run resumed from. */
  resumedFrom?: string;
}

export interface TrainEvents {
  start?(e: StartEvent): void;
  step?(e: StepEvent): void;
  eval?(e: EvalRecord): void;
  checkpoint?(e: WriteResult): void;
  log?(message: string): void;
}

/** What the driver needs from a cluster: a local one (cluster/local-cluster.ts) or the coordinator of a service. */
export interface GroupRunner {
  /** A group of exactly `world` workers for `jobId`. */
  formGroup(jobId: string, world: number): Promise<Group>;
  runTask(group: Group, type: string, config: unknown, opts?: { timeoutMs?: number }): Promise<TaskReply[]>;
  releaseGroup(group: Group): Promise<void>;
  /**
   * Asked after every step: a reason to leave this group now (e.g. a member is draining). The
   * driver then saves a checkpoint and throws a RegroupError; the caller forms a new group and
   * resumes from that checkpoint. Default: never.
   */
  regroupReason?(group: Group): string | undefined;
}

/** The run stopped after `step` (checkpointed) because the group must change: `reason`. */
export class RegroupError extends Error {
  constructor(
    readonly reason: string,
    readonly step: number,
    readonly checkpoint: string | null,
  ) {
    super(`left the group after step ${step} (checkpoint ${checkpoint ?? 'none'}): ${reason}`);
    this.name = 'RegroupError';
  }
}

export interface RunTrainingOptions {
  /** Continue from the newest valid checkpoint in config.checkpoint.dir. Default false. */
  resume?: boolean;
  /** On resume, take training.steps from the checkpoint's config or from `config`. Default "config". */
  resumeSteps?: 'config' | 'checkpoint';
  /** Run on these workers (at least cluster.workers of them) instead of starting a local cluster. Default: start one. */
  cluster?: GroupRunner;
  events?: TrainEvents;
  /** Stops the run after the current step (a checkpoint is written). Default none. */
  signal?: AbortSignal;
  /** Job id for the coordinator. Default "train-<pid>-<time>". */
  jobId?: string;
  /** Write metrics.jsonl and loss.svg into checkpoint.dir. Default true. */
  writeFiles?: boolean;
  /** Copy worker log lines to stderr. Default false. */
  verbose?: boolean;
  /** The local cluster's workers' device(s) (LocalClusterOptions.device): "cpu", "cuda:N" or a comma-separated list. Default "cpu". */
  device?: string;
  /** The local cluster's workers' precision (LocalClusterOptions.precision). Default "fp32". */
  precision?: 'fp32' | 'bf16';
  /** The local cluster's workers' --stream-transport (http2, grpc-js, raw). Default: the worker's (http2). */
  streamTransport?: 'http2' | 'grpc-js' | 'raw' | 'native';
  /** Save a checkpoint when the run ends. Default true. */
  finalCheckpoint?: boolean;
  /** Evaluate when the run ends. Default true. */
  finalEval?: boolean;
}

export interface TrainSummary {
  startStep: number;
  /** Last completed step. */
  step: number;
  /** Loss of each step run here, in order (steps startStep+1 ..). */
  losses: number[];
  finalLoss: number;
  /** Tokens of the steps run here / their summed wall time. */
  tokensPerSec: number;
  wallSeconds: number;
  eval: EvalRecord | null;
  checkpoint: string | null;
  dir: string;
  metrics: string | null;
  lossCurve: string | null;
  stoppedEarly: boolean;
}

/**
 * The config of a resumed run: the checkpoint's model, data and training sections (they define
 * the run), with `training.steps`, the cluster and the checkpoint sections taken from `config`.
 */
export function mergeResumeConfig(saved: unknown, config: TrainConfig, steps: 'config' | 'checkpoint' = 'config'): TrainConfig {
  const s = parseTrainConfig(saved);
  const training = steps === 'config' ? { ...s.training, steps: config.training.steps } : s.training;
  return { ...s, training, cluster: config.cluster, checkpoint: config.checkpoint };
}

function resultOfRank0(replies: TaskReply[]): unknown {
  const r = replies.find((x) => x.rank === 0);
  if (!r) throw new Error('no reply from rank 0');
  return r.result;
}

export async function runTraining(initial: TrainConfig, opts: RunTrainingOptions = {}): Promise<TrainSummary> {
  const ev = opts.events ?? {};
  let config = initial;
  const dir = config.checkpoint.dir;
  let resumeFrom: string | undefined;
  if (opts.resume) {
    const found = await latestValid(dir, { log: (m) => ev.log?.(m) });
    if (!found.checkpoint) throw new Error(`--resume: no valid checkpoint in ${dir}`);
    resumeFrom = found.checkpoint.path;
    config = mergeResumeConfig(found.checkpoint.header.config, config, opts.resumeSteps);
  }
  await mkdir(dir, { recursive: true });
  const local: LocalCluster | undefined = opts.cluster
    ? undefined
    : await startLocalCluster({
        workers: config.cluster.workers,
        ...(config.cluster.threadsPerWorker ? { threadsPerWorker: config.cluster.threadsPerWorker } : {}),
        verbose: opts.verbose ?? false,
        ...(opts.device !== undefined ? { device: opts.device } : {}),
        ...(opts.precision !== undefined ? { precision: opts.precision } : {}),
        ...(opts.streamTransport !== undefined ? { streamTransport: opts.streamTransport } : {}),
      });
  const cluster: GroupRunner = opts.cluster ?? local!;
  const jobId = opts.jobId ?? `train-${process.pid}-${Date.now()}`;
  let group: Group | undefined;
  let metrics: MetricsLog | undefined;
  const writeFiles = opts.writeFiles ?? true;
  const metricsPath = join(dir, 'metrics.jsonl');
  const curvePath = join(dir, 'loss.svg');
  const points: { step: number; loss: number }[] = [];
  const evalPoints: { step: number; value: number; label: string }[] = [];
  try {
    group = await cluster.formGroup(jobId, config.cluster.workers);
    const run = (type: string, cfg: unknown) => cluster.runTask(group!, type, cfg, { timeoutMs: 24 * 3600_000 });
    const started = resultOfRank0(await run('train.start', { config, ...(resumeFrom ? { resumeFrom } : {}) })) as {
      step: number;
      parameters: number;
    };
    const startStep = started.step;
    if (writeFiles) {
      if (resumeFrom) {
        // Keep the history up to the checkpoint; a killed run may have logged steps after it.
        const old = await readMetrics(metricsPath).catch(() => [] as object[]);
        const kept = old.filter((r) => ((r as { step?: number }).step ?? 0) <= startStep);
        for (const r of kept) {
          const x = r as { type?: string; step: number; loss?: number; value?: number; accuracy?: number | null };
          if (x.type === 'step' && typeof x.loss === 'number') points.push({ step: x.step, loss: x.loss });
          if (x.type === 'eval' && typeof x.accuracy === 'number')
            evalPoints.push({ step: x.step, value: x.accuracy, label: 'eval accuracy' });
        }
        const tmp = `${metricsPath}.tmp`;
        await writeFile(tmp, kept.map((r) => JSON.stringify(r) + '\n').join(''));
        await rename(tmp, metricsPath);
        metrics = await MetricsLog.open(metricsPath, { append: true });
      } else {
        metrics = await MetricsLog.open(metricsPath);
      }
      await metrics.write({ type: 'start', step: startStep, time: new Date().toISOString(), resumedFrom: resumeFrom ?? null, config });
    }
    ev.start?.({ config, startStep, parameters: started.parameters, ...(resumeFrom ? { resumedFrom: resumeFrom } : {}) });

    const t0 = performance.now();
    const losses: number[] = [];
    let tokens = 0;
    let stepMs = 0;
    let lastCheckpoint: string | null = null;
    let lastEval: EvalRecord | null = null;
    let step = startStep;
    let stoppedEarly = false;
    const saveCheckpoint = async () => {
      const w = resultOfRank0(await run('train.checkpoint', { dir, keep: config.checkpoint.keep })) as WriteResult;
      lastCheckpoint = w.path;
      await metrics?.write({ type: 'checkpoint', step: w.step, path: w.path, bytes: w.bytes, sha256: w.sha256 });
      ev.checkpoint?.(w);
    };
    const evaluate = async () => {
      lastEval = resultOfRank0(await run('train.eval', {})) as EvalRecord;
      await metrics?.write({ type: 'eval', ...lastEval });
      if (lastEval.accuracy !== null) evalPoints.push({ step: lastEval.step, value: lastEval.accuracy, label: 'eval accuracy' });
      ev.eval?.(lastEval);
    };
    const { steps: total } = config.training;
    while (step < total) {
      if (opts.signal?.aborted) {
        stoppedEarly = true;
        break;
      }
      const s0 = performance.now();
      const replies = await run('train.steps', { count: 1 });
      const wallMs = performance.now() - s0;
      const r = (resultOfRank0(replies) as { steps: StepRecord[] }).steps;
      const byRank = [...replies].sort((a, b) => a.rank - b.rank).map((x) => (x.result as { steps: StepRecord[] }).steps);
      for (const [i, rec] of r.entries()) {
        step = rec.step;
        const e: StepEvent = {
          ...rec,
          wallMs: wallMs / r.length,
          tokensPerSec: (rec.tokens * r.length * 1000) / wallMs,
          ranks: byRank.map((steps) => rankStats(steps[i]!)),
        };
        losses.push(rec.loss);
        tokens += rec.tokens;
        stepMs += e.wallMs;
        points.push({ step: rec.step, loss: rec.loss });
        await metrics?.write({ type: 'step', ...e, ranks: undefined });
        ev.step?.(e);
        if (!Number.isFinite(rec.loss)) throw new Error(`step ${rec.step}: the loss is ${rec.loss}; stopping (lower training.lr?)`);
      }
      const every = config.training.evalEvery;
      if (every > 0 && step % every === 0 && step < total) await evaluate();
      const ck = config.checkpoint.every;
      const periodic = ck > 0 && step % ck === 0 && step < total;
      if (periodic) {
        await saveCheckpoint();
        if (writeFiles) await writeLossCurve(curvePath, points, { title: 'training loss', evalPoints });
      }
      const regroup = step < total ? cluster.regroupReason?.(group) : undefined;
      if (regroup !== undefined) {
        if (!periodic) await saveCheckpoint();
        throw new RegroupError(regroup, step, lastCheckpoint);
      }
    }
    if ((opts.finalEval ?? true) && (!stoppedEarly || step > startStep)) await evaluate();
    if ((opts.finalCheckpoint ?? true) && step > startStep) await saveCheckpoint();
    if (writeFiles) await writeLossCurve(curvePath, points, { title: `training loss (${config.model.kinds.join(', ')})`, evalPoints });
    const summary: TrainSummary = {
      startStep,
      step,
      losses,
      finalLoss: losses.at(-1) ?? NaN,
      tokensPerSec: stepMs > 0 ? (tokens * 1000) / stepMs : 0,
      wallSeconds: (performance.now() - t0) / 1000,
      eval: lastEval,
      checkpoint: lastCheckpoint,
      dir,
      metrics: writeFiles ? metricsPath : null,
      lossCurve: writeFiles ? curvePath : null,
      stoppedEarly,
    };
    await metrics?.write({ type: 'summary', ...summary, losses: undefined });
    return summary;
  } finally {
    await metrics?.close().catch(() => {});
    if (group) {
      await cluster.runTask(group, 'train.stop', {}).catch(() => {});
      await cluster.releaseGroup(group).catch(() => {});
    }
    await local?.stop();
  }
}
