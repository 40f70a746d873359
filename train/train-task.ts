// The worker tasks of a training job, driven step by step by train/driver.ts through the
// coordinator's RunTask:
//   "train.start"      {config, resumeFrom?}  build this rank's replica (seeded, or from a checkpoint)
//   "train.steps"      {count}                run `count` steps; returns their StepRecords
//   "train.gradients"  {}                     the next step's gradient, no update (exactness checks)
//   "train.eval"       {sequences?}           held-out loss / recall accuracy
//   "train.checkpoint" {dir, keep}            rank 0 writes a checkpoint of the current step
//   "train.stop"       {}                     drop the replica
// A worker holds at most one replica; it belongs to the (job, generation) that started it.
import { registerTask, type TaskContext } from '../worker/tasks.js';
import { parseTrainConfig } from './config.js';
import { RankTrainer } from './rank-trainer.js';
import { checkInt, checkObject, checkString } from './data/validate.js';

let current: { jobId: string; generation: number; trainer: RankTrainer } | undefined;

/** What this worker's training tasks did, for its /metrics. */
export const trainStats = { steps: 0, lastTokensPerSec: 0, lastCollectiveMs: 0, lastStepMs: 0 };

function trainerFor(ctx: TaskContext): RankTrainer {
  const { jobId, generation } = ctx.assignment;
  if (!current || current.jobId !== jobId || current.generation !== generation) {
    const held = current ? `it holds job ${current.jobId} generation ${current.generation}` : 'it holds none';
    throw new Error(`no training replica for job ${jobId} generation ${generation} on this worker (${held}): run train.start first`);
  }
  return current.trainer;
}

function fields(config: unknown): Record<string, unknown> {
  return checkObject('task config', config ?? {});
}

async function drop(): Promise<void> {
  const c = current;
  current = undefined;
  if (c) await c.trainer.close();
}

registerTask('train.start', async (ctx) => {
  const o = fields(ctx.config);
  const cfg = parseTrainConfig(o.config);
  const resumeFrom = o.resumeFrom === undefined ? undefined : checkString('resumeFrom', o.resumeFrom);
  await drop();
  const trainer = await RankTrainer.create(cfg, ctx.comm, resumeFrom, ctx.kernels);
  current = { jobId: ctx.assignment.jobId, generation: ctx.assignment.generation, trainer };
  return { result: { step: trainer.step, parameters: trainer.model.params.size, rank: ctx.comm.rank } };
});

registerTask('train.steps', async (ctx) => {
  const trainer = trainerFor(ctx);
  const count = checkInt('count', fields(ctx.config).count ?? 1, 1, 1_000_000);
  const steps = [];
  for (let i = 0; i < count; i++) {
    if (ctx.signal.aborted) throw new Error(`train.steps aborted: ${String(ctx.signal.reason)}`);
    const rec = await trainer.trainStep();
    steps.push(rec);
    trainStats.steps++;
    trainStats.lastStepMs = rec.ms;
    trainStats.lastCollectiveMs = rec.collectiveMs;
    trainStats.lastTokensPerSec = (rec.tokens * 1000) / rec.ms;
  }
  return { result: { steps } };
});

/** The next step's gradient of the mean loss (after the AllReduce), without updating: for exactness checks. */
registerTask('train.gradients', async (ctx) => {
  const trainer = trainerFor(ctx);
  const { lossSum, count } = await trainer.computeGradients(trainer.step + 1);
  const grads = trainer.model.params.grads;
  return {
    result: { step: trainer.step + 1, loss: count > 0 ? lossSum / count : NaN },
    tensors: ctx.comm.rank === 0 ? [{ name: 'grads', shape: [grads.length], data: grads }] : [],
  };
});

registerTask('train.eval', async (ctx) => {
  const trainer = trainerFor(ctx);
  const o = fields(ctx.config);
  const sequences = o.sequences === undefined ? undefined : checkInt('sequences', o.sequences, 1, 1 << 20);
  return { result: await trainer.evaluate(sequences) };
});

registerTask('train.checkpoint', async (ctx) => {
  const trainer = trainerFor(ctx);
  const o = fields(ctx.config);
  const dir = checkString('dir', o.dir);
  const keep = checkInt('keep', o.keep ?? 3, 1, 1000);
  return { result: await trainer.saveCheckpoint(dir, keep) };
});

registerTask('train.stop', async () => {
  await drop();
  return { result: { stopped: true } };
});
