// One rank's side of a training job: a model replica over the sequence-parallel backend, this
// rank's block of every sequence, and the optimizer. Per step (docs/training.md):
//   forward + backward on the block (attention layers exchange summaries through LASP-2),
//   AllGather of (loss sum, target count), ring AllReduce of the flat gradient buffer,
//   scale by 1 / (targets of the whole batch), clip by the global norm, AdamW.
// Every rank ends the step with bit-identical weights (the AllReduce hands every rank the same
// sums), so rank 0 alone writes checkpoints and every rank can resume from one.
import { withOutputScope } from '../native/kernels.js';
import { cpuKernels, type KernelSet } from '../native/kernel-set.js';
import { ops } from '../native/ops.js';
import { cudaMemInfo } from '../native/cuda.js';
import { Model, type ModelConfig } from '../model/model.js';
import type { Communicator } from '../worker/collectives/communicator.js';
import { SpBackend } from '../worker/sp/sp-backend.js';
import { learningRate, type TrainConfig } from './config.js';
import { readCheckpoint, writeCheckpoint, type CheckpointTensor, type WriteResult } from './checkpoint/index.js';
import { createSource, inputsOf, rankWindow, type SequenceSource, type Window } from './data/index.js';
import { MAX_SEED } from './data/rng.js';

export interface StepRecord {
  step: number;
  /** Mean loss over the batch's counted targets (all ranks). */
  loss: number;
  /** Counted targets of the batch (all ranks). */
  targets: number;
  /** Input positions of the batch (all ranks). */
  tokens: number;
  /** Learning rate used. */
  lr: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** This rank's wall time of the step (ms). */
  ms: number;
  /** Of which waiting for collectives (ms, this rank). */
  collectiveMs: number;
  /**
   * Collective payload bytes this rank sent during the step (its communicator's bytesSent counter,
   * after minus before): the layers' exchanges forward and backward, the loss AllGather and the
   * gradient AllReduce. 0 when W = 1.
   */
  bytesSent: number;
  /**
   * Of `bytesSent`, what the model's layers sent during forward + backward (attention summaries and
   * state gradients, softmax K/V and dK/dV, halos of sliding-window layers and of the short
   * convolution); the rest is the loss AllGather and the gradient AllReduce.
   */
  layerBytesSent: number;
  /**
   * Of `collectiveMs`, the wait inside the model's layers during forward + backward (the attention
   * layers' AllGathers, softmax K/V exchanges, halos); the rest is the loss AllGather and the
   * gradient AllReduce.
   */
  layerCollectiveMs: number;
  /** This worker process's resident set at the end of the step (process.memoryUsage.rss(), bytes). */
  rssBytes: number;
  /** The process's peak resident set so far (getrusage maxRSS, bytes): includes the step's transient peak. */
  peakRssBytes: number;
  /**
   * Where this rank's kernel set runs on CUDA: GPU memory in use at the end of the step (bytes,
   * total − free from cudaMemGetInfo). That is the whole GPU's usage, every process on it included
   * (ranks sharing a GPU report the same figure). null on the CPU.
   */
  gpuMemUsedBytes: number | null;
}

export interface EvalRecord {
  step: number;
  loss: number;
  targets: number;
  /** Arg-max accuracy at counted targets (MQAR: recall accuracy); null where not computed. */
  accuracy: number | null;
  sequences: number;
}

/** Model hyper-parameters of a job config. */
export function modelConfigOf(cfg: TrainConfig): ModelConfig {
  const m = cfg.model;
  return {
    vocab: m.vocab,
    dModel: m.dModel,
    nLayers: m.layers,
    heads: m.heads,
    dk: m.dk,
    dv: m.dv,
    ffn: m.ffn,
    kinds: m.kinds,
    chunk: m.chunk,
    tau: m.tau,
    outNorm: m.outNorm,
    conv: m.conv,
    window: m.window,
  };
}

/** A held-out stream: the same source options under another seed (different sequences for MQAR and shuffled files). */
function evalSourceConfig(cfg: TrainConfig): unknown {
  const seed = ((cfg.data.seed ?? 0) ^ 0x5eed5eed) >>> 0;
  return { ...cfg.data, seed: seed % (MAX_SEED + 1) };
}

/** GPU memory in use on this process's device (total − free), bytes. */
function gpuMemUsed(): number {
  const m = cudaMemInfo();
  return m.totalBytes - m.freeBytes;
}

export class RankTrainer {
  /** Completed steps. */
  step = 0;
  private readonly m: Float32Array;
  private readonly v: Float32Array;
  private readonly window: Window;
  private evals = 0;

  private constructor(
    readonly cfg: TrainConfig,
    readonly comm: Communicator,
    private readonly sp: SpBackend,
    readonly model: Model,
    private readonly source: SequenceSource,
    private readonly evalSource: SequenceSource,
    private readonly timing: { collectiveMs: number },
    private readonly kernels: KernelSet,
  ) {
    this.m = new Float32Array(model.params.size);
    this.v = new Float32Array(model.params.size);
    this.window = rankWindow(cfg.data.seqLen, comm.rank, comm.world);
  }

  /** Builds the replica: seeded weights, or the state of `resumeFrom` (a checkpoint file). */
  static async create(cfg: TrainConfig, comm: Communicator, resumeFrom?: string, kernels: KernelSet = cpuKernels): Promise<RankTrainer> {
    const timing = { collectiveMs: 0 };
    const sp = new SpBackend(comm, { timing, kernels });
    const model = new Model(modelConfigOf(cfg), sp.backend);
    const source = await createSource(cfg.data);
    const evalSource = await createSource(evalSourceConfig(cfg));
    if (source.vocabSize > cfg.model.vocab)
      throw new Error(`model.vocab = ${cfg.model.vocab} is smaller than the data's vocabulary ${source.vocabSize}`);
    const t = new RankTrainer(cfg, comm, sp, model, source, evalSource, timing, kernels);
    if (resumeFrom) await t.restore(resumeFrom);
    else await model.init(cfg.training.seed);
    return t;
  }

  private async batch(source: SequenceSource, first: number, count: number): Promise<{ inputs: Int32Array; targets: Int32Array }> {
    const n = this.window.end - this.window.start;
    const inputs = new Int32Array(count * n);
    const targets = new Int32Array(count * n);
    for (let b = 0; b < count; b++) {
      const s = await source.at(first + b, this.window);
      inputs.set(inputsOf(s), b * n);
      targets.set(s.targets, b * n);
    }
    return { inputs, targets };
  }

  /** Sums [loss, count, ...] over ranks (float64, rank order). */
  private async sumOverRanks(step: number, op: string, values: number[]): Promise<number[]> {
    const mine = new Float64Array(values);
    const parts = await this.comm.allGather({ step, layer: 0, op }, new Uint8Array(mine.buffer));
    const sums = values.map(() => 0);
    for (const [r, p] of parts.entries()) {
      if (p.byteLength !== mine.byteLength) throw new Error(`${op} from rank ${r}: expected ${mine.byteLength} bytes, got ${p.byteLength}`);
      const x = new Float64Array(p.buffer.slice(p.byteOffset, p.byteOffset + p.byteLength));
      for (let i = 0; i < sums.length; i++) sums[i]! += x[i]!;
    }
    return sums;
  }

  /**
   * Forward + backward of the step after the current one on this rank's blocks, then the
   * AllGather of (loss sum, count) and the AllReduce of the gradients, scaled to the gradient of
   * the mean loss: every rank ends with the whole batch's gradient in model.params.grads.
   * `layerBytesSent`: what this rank's communicator sent during forward + backward.
   */
  async computeGradients(s: number): Promise<{ lossSum: number; count: number; layerBytesSent: number; layerCollectiveMs: number }> {
    const B = this.cfg.training.batchSize;
    const P = this.model.params;
    const { inputs, targets } = await this.batch(this.source, (s - 1) * B, B);
    this.sp.step = s;
    this.sp.phase = '';
    P.zeroGrads();
    const bytes0 = this.comm.stats.bytesSent;
    const wait0 = this.timing.collectiveMs;
    // Every activation and intermediate gradient of the step goes back to the pool at its end.
    const fwd = await withOutputScope(async () => {
      const f = await this.model.forward({ inputs, targets, sequences: B }, { scale: 1 });
      await this.model.backward(f.cache);
      return { lossSum: f.lossSum, count: f.count };
    });
    const layerBytesSent = this.comm.stats.bytesSent - bytes0;
    const layerCollectiveMs = this.timing.collectiveMs - wait0;
    const c0 = performance.now();
    const [lossSum, count] = (await this.sumOverRanks(s, 'loss', [fwd.lossSum, fwd.count])) as [number, number];
    await this.comm.allReduceSum({ step: s, layer: 0, op: 'grad.allreduce' }, P.grads);
    this.timing.collectiveMs += performance.now() - c0;
    if (count > 0) await ops.scaleInPlace(P.grads, 1 / count);
    return { lossSum, count, layerBytesSent, layerCollectiveMs };
  }

  /** Runs the next step on this rank. */
  async trainStep(): Promise<StepRecord> {
    const t0 = performance.now();
    this.timing.collectiveMs = 0;
    const { training: tc } = this.cfg;
    const s = this.step + 1;
    const P = this.model.params;
    const bytes0 = this.comm.stats.bytesSent;
    const { lossSum, count, layerBytesSent, layerCollectiveMs } = await this.computeGradients(s);
    const gradNorm = await ops.gradNorm([P.grads]);
    if (tc.gradClip > 0 && gradNorm > tc.gradClip) await ops.scaleInPlace(P.grads, tc.gradClip / gradNorm);
    const lr = learningRate(tc, s);
    await ops.adamW(
      { params: P.data, grads: P.grads, m: this.m, v: this.v },
      { lr, beta1: tc.beta1, beta2: tc.beta2, eps: tc.eps, weightDecay: tc.weightDecay, step: s },
    );
    this.step = s;
    return {
      step: s,
      loss: count > 0 ? lossSum / count : NaN,
      targets: count,
      tokens: tc.batchSize * this.cfg.data.seqLen,
      lr,
      gradNorm,
      ms: performance.now() - t0,
      collectiveMs: this.timing.collectiveMs,
      bytesSent: this.comm.stats.bytesSent - bytes0,
      layerBytesSent,
      layerCollectiveMs,
      rssBytes: process.memoryUsage.rss(),
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
      gpuMemUsedBytes: this.kernels.device === 'cuda' ? gpuMemUsed() : null,
    };
  }

  /** Loss (and, on MQAR, recall accuracy) on `sequences` held-out sequences; no weights change. */
  async evaluate(sequences = this.cfg.training.evalSequences): Promise<EvalRecord> {
    const B = this.cfg.training.batchSize;
    const predict = this.cfg.data.type === 'mqar';
    let lossSum = 0;
    let count = 0;
    let correct = 0;
    const pass = this.evals++;
    for (let first = 0, i = 0; first < sequences; first += B, i++) {
      const n = Math.min(B, sequences - first);
      const { inputs, targets } = await this.batch(this.evalSource, first, n);
      this.sp.step = this.step;
      this.sp.phase = `eval${pass}.${i}`;
      const r = await withOutputScope(() => this.model.forward({ inputs, targets, sequences: n }, { scale: 1, predict }));
      lossSum += r.lossSum;
      count += r.count;
      if (r.predictions) for (let j = 0; j < targets.length; j++) if (targets[j]! >= 0 && r.predictions[j] === targets[j]) correct++;
    }
    const [l, c, k] = (await this.sumOverRanks(this.step, `eval${pass}.totals`, [lossSum, count, correct])) as [number, number, number];
    return { step: this.step, loss: c > 0 ? l / c : NaN, targets: c, accuracy: predict && c > 0 ? k / c : null, sequences };
  }

  private tensors(): CheckpointTensor[] {
    const out: CheckpointTensor[] = [];
    for (const p of this.model.params.params) {
      const at = (a: Float32Array) => a.subarray(p.offset, p.offset + p.size);
      out.push({ name: `param/${p.name}`, shape: [...p.shape], data: p.value });
      out.push({ name: `adam_m/${p.name}`, shape: [...p.shape], data: at(this.m) });
      out.push({ name: `adam_v/${p.name}`, shape: [...p.shape], data: at(this.v) });
    }
    return out;
  }

  /** Rank 0 writes a checkpoint of the current step (weights, AdamW moments, data cursor); other ranks return null. */
  async saveCheckpoint(dir: string, keep: number): Promise<WriteResult | null> {
    if (this.comm.rank !== 0) return null;
    const cursor = { ...this.source.state(), index: this.step * this.cfg.training.batchSize };
    return writeCheckpoint(
      dir,
      {
        step: this.step,
        config: this.cfg,
        data: cursor,
        rng: { initSeed: this.cfg.training.seed, evalPasses: this.evals },
        tensors: this.tensors(),
      },
      { keep },
    );
  }

  private async restore(path: string): Promise<void> {
    const ck = await readCheckpoint(path);
    const B = this.cfg.training.batchSize;
    const cursor = ck.header.data as { index?: unknown } | null;
    this.source.restore(cursor);
    const index = this.source.state().index;
    if (index !== ck.header.step * B)
      throw new Error(`${path}: data cursor at sequence ${index} does not match step ${ck.header.step} × batchSize ${B}`);
    for (const t of this.tensors()) {
      const saved = ck.tensors.get(t.name);
      if (!saved) throw new Error(`${path}: tensor ${t.name} is missing (was the checkpoint written for another model config?)`);
      if (saved.shape.join(',') !== t.shape.join(','))
        throw new Error(`${path}: tensor ${t.name} has shape [${saved.shape.join(',')}], the model expects [${t.shape.join(',')}]`);
      t.data.set(saved.data);
    }
    this.step = ck.header.step;
  }

  async close(): Promise<void> {
    await Promise.all([this.source.close(), this.evalSource.close()]);
  }
}
