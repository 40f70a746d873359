// The coordinator's job service: training jobs in a BullMQ queue on Redis, run on groups of the
// coordinator's workers.
//
// - submit: the config is validated (train/config.ts) before anything is queued; the job's
//   checkpoint directory is <dataDir>/jobs/<id> and, unless the config sets it, a checkpoint is
//   written every 50 steps, so an interrupted job continues from its last checkpoint.
// - A BullMQ Worker in this process takes jobs at once (high concurrency); each then waits in the
//   allocation queue below until enough workers are free. Waiting jobs get workers strictly by
//   priority (higher first), then by submission time; the head of the line is never overtaken.
// - Progress (phase, step, loss, tokens/s, ETA) goes to job.updateProgress; every step's
//   {step, loss, tokensPerSec} to a Redis hash per job (a re-run step overwrites its entry).
// - Cancel: a running job gets an abort signal (BullMQ cancelJob) and stops after the current
//   step, releasing its workers; a job not picked up yet is marked, and fails as cancelled when it
//   is. Cancelled jobs are failed BullMQ jobs with the reason "cancelled", never retried.
// - A coordinator that dies mid-job leaves the job's lock to expire; the next coordinator's stalled
//   check puts it back in the queue and it resumes from its checkpoint (restarts counts these).
// Nothing here blocks the event loop: the training steps run in the worker processes, and this
// process only awaits their RunTask replies, so BullMQ lock renewal and heartbeats keep flowing.
import { join } from 'node:path';
import { Job, Queue, UnrecoverableError, Worker, type ConnectionOptions } from 'bullmq';
import { Redis } from 'ioredis';
import { Counter, Gauge, Registry } from 'prom-client';
import { listCheckpoints } from '../train/checkpoint/index.js';
import { parseTrainConfig, type TrainConfig } from '../train/config.js';
import { RegroupError, runTraining, type GroupRunner } from '../train/driver.js';
import type { Coordinator } from './coordinator.js';
import type { Group } from './rendezvous.js';
import type { JobProgress, JobService, JobState, JobView, MetricPoint, SubmitOptions, WorkerView } from './job-types.js';

export interface JobServiceOptions {
  /** redis://host:port[/db]. */
  redisUrl: string;
  /** Where job checkpoints and metrics files go (<dataDir>/jobs/<id>). */
  dataDir: string;
  /** BullMQ queue name. Default "lasp-jobs". */
  queueName?: string;
  /** Jobs this coordinator runs at once (most wait for workers). Default 64. */
  concurrency?: number;
  /** BullMQ lock duration: how long after a coordinator dies its jobs are taken up again. Default 30000 ms. */
  lockDurationMs?: number;
  /** How often stalled jobs are looked for. Default 15000 ms. */
  stalledIntervalMs?: number;
  /** Checkpoint interval of jobs whose config does not set checkpoint.every. Default 50. */
  defaultCheckpointEvery?: number;
  log?: (line: string) => void;
}

interface JobData {
  config: TrainConfig;
  /** Higher runs first (the user's value; BullMQ's priority is derived from it). */
  priority: number;
  submittedAt: number;
}

const PRIORITY_BASE = 1_000_000;
/** Pause before a group is formed again after a failure (lets heartbeats mark a dead worker first). */
const RESTART_DELAY_MS = 1000;
const CANCELLED = 'cancelled';
/** Abort reason of the jobs of a coordinator that shuts down (they are not marked failed or cancelled). */
const SHUTDOWN = 'coordinator shutting down';

function emptyProgress(steps: number): JobProgress {
  return { phase: 'queued', step: 0, steps, loss: null, tokensPerSec: null, etaSeconds: null, workers: [] };
}

/** Waiting jobs get workers in order: priority (higher first), then submission time. */
class Allocation {
  private readonly waiting: { id: string; priority: number; at: number; world: number; wake: () => void }[] = [];

  constructor(private readonly free: () => number) {}

  /** Resolves when `world` workers are free and this job is first in line; rejects on abort. */
  async acquire(id: string, priority: number, at: number, world: number, signal: AbortSignal, onWait: () => void): Promise<void> {
    const entry = { id, priority, at, world, wake: () => {} };
    this.waiting.push(entry);
    this.waiting.sort((a, b) => b.priority - a.priority || a.at - b.at);
    const onAbort = () => entry.wake();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      let announced = false;
      for (;;) {
        if (signal.aborted) throw new Error(CANCELLED);
        if (this.waiting[0] === entry && this.free() >= world) return;
        if (!announced) {
          announced = true;
          onWait();
        }
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 250);
          entry.wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
      const i = this.waiting.indexOf(entry);
      if (i >= 0) this.waiting.splice(i, 1);
      this.poke();
    }
  }

  /** Something changed (workers freed, a job left the line). */
  poke(): void {
    for (const w of this.waiting) w.wake();
  }
}

export class BullJobService implements JobService {
  private readonly queue: Queue<JobData>;
  private readonly worker: Worker<JobData>;
  private readonly redis: Redis;
  private readonly allocation: Allocation;
  private readonly log: (line: string) => void;
  private readonly keyPrefix: string;
  /** Abort controllers of the jobs this process is running or allocating workers for. */
  private readonly running = new Set<AbortController>();
  private readonly registry = new Registry();
  private readonly stepsTotal = new Counter({
    name: 'lasp_job_steps_total',
    help: 'Training steps completed by jobs of this coordinator',
    registers: [this.registry],
  });
  private readonly restartsTotal = new Counter({
    name: 'lasp_job_restarts_total',
    help: 'Recoveries of jobs (new group, resumed from the last checkpoint) after a failure or a coordinator restart; each counts against the job cluster.maxRestarts',
    registers: [this.registry],
  });
  private readonly regroupsTotal = new Counter({
    name: 'lasp_job_drain_regroups_total',
    help: 'Jobs that checkpointed and moved to a new group because a member was draining (not counted as restarts)',
    registers: [this.registry],
  });
  private readonly tokensPerSec = new Gauge({
    name: 'lasp_job_tokens_per_second',
    help: 'Tokens per second of the last step, by job',
    labelNames: ['job'],
    registers: [this.registry],
  });
  private readonly collectiveSec = new Gauge({
    name: 'lasp_job_collective_seconds',
    help: 'Time rank 0 waited in collectives in the last step, by job',
    labelNames: ['job'],
    registers: [this.registry],
  });

  private constructor(
    private readonly coordinator: Coordinator,
    private readonly opts: JobServiceOptions,
  ) {
    this.log = opts.log ?? (() => {});
    const name = opts.queueName ?? 'lasp-jobs';
    this.keyPrefix = `lasp:${name}`;
    const connection: ConnectionOptions = { url: opts.redisUrl, maxRetriesPerRequest: null } as ConnectionOptions;
    this.redis = new Redis(opts.redisUrl, { maxRetriesPerRequest: 3, lazyConnect: false });
    this.redis.on('error', (err: Error) => this.log(`redis: ${err.message}`));
    this.queue = new Queue<JobData>(name, { connection });
    this.allocation = new Allocation(() => this.coordinator.registry.available().length);
    const registry = coordinator.registry;
    const queue = () => this.queue;
    new Gauge({
      name: 'lasp_workers',
      help: 'Registered workers by state',
      labelNames: ['state'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const s of ['idle', 'busy', 'draining', 'dead']) this.set({ state: s }, 0);
        for (const w of registry.list()) this.inc({ state: w.state });
      },
    });
    new Gauge({
      name: 'lasp_worker_heartbeat_age_seconds',
      help: 'Seconds since the last heartbeat, by worker',
      labelNames: ['worker'],
      registers: [this.registry],
      collect() {
        this.reset();
        const now = Date.now();
        for (const w of registry.list()) this.set({ worker: w.id }, (now - w.lastHeartbeat) / 1000);
      },
    });
    new Gauge({
      name: 'lasp_queue_jobs',
      help: 'Jobs in the BullMQ queue by BullMQ state (cancelled jobs count as failed)',
      labelNames: ['state'],
      registers: [this.registry],
      async collect() {
        const counts = await queue().getJobCounts('waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed');
        this.reset();
        for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
      },
    });
    this.worker = new Worker<JobData>(name, (job, _token, signal) => this.process(job, signal), {
      connection,
      concurrency: opts.concurrency ?? 64,
      lockDuration: opts.lockDurationMs ?? 30_000,
      stalledInterval: opts.stalledIntervalMs ?? 15_000,
      maxStalledCount: 100,
      autorun: true,
    });
    this.worker.on('error', (err) => this.log(`job queue: ${err.message}`));
    this.worker.on('failed', (job, err) => job && this.log(`job ${job.id} failed: ${err.message}`));
    this.worker.on('completed', (job) => this.log(`job ${job.id} completed`));
  }

  static async start(coordinator: Coordinator, opts: JobServiceOptions): Promise<BullJobService> {
    const s = new BullJobService(coordinator, opts);
    await Promise.all([s.queue.waitUntilReady(), s.worker.waitUntilReady()]);
    return s;
  }

  /**
   * Stops taking and running jobs. Running jobs stop after their current step (or their wait for
   * workers) without being marked: they stay active in Redis, and the next coordinator takes them
   * up when their locks expire.
   */
  async close(): Promise<void> {
    for (const c of this.running) c.abort(SHUTDOWN);
    await this.worker.close(true).catch(() => {});
    await this.queue.close().catch(() => {});
    this.redis.disconnect();
  }

  private metricsKey(id: string): string {
    return `${this.keyPrefix}:metrics:${id}`;
  }

  private cancelKey(id: string): string {
    return `${this.keyPrefix}:cancel:${id}`;
  }

  async submit(raw: unknown, opts: SubmitOptions = {}): Promise<JobView> {
    const priority = opts.priority ?? 0;
    if (!Number.isInteger(priority) || priority < -999_999 || priority > 999_999)
      throw new RangeError(`priority must be an integer in [-999999, 999999], got ${JSON.stringify(opts.priority)}`);
    const attempts = opts.attempts ?? 3;
    if (!Number.isInteger(attempts) || attempts < 1 || attempts > 100)
      throw new RangeError(`attempts must be an integer in [1, 100], got ${JSON.stringify(opts.attempts)}`);
    const config = parseTrainConfig(raw); // throws ConfigErrors naming every bad field
    const ck = (raw as { checkpoint?: { every?: unknown } } | null)?.checkpoint;
    if (ck?.every === undefined) config.checkpoint.every = this.opts.defaultCheckpointEvery ?? 50;
    const data: JobData = { config, priority, submittedAt: Date.now() };
    const job = await this.queue.add('train', data, {
      priority: PRIORITY_BASE - priority,
      attempts,
      backoff: { type: 'exponential', delay: 1000 },
      removeOnComplete: false,
      removeOnFail: false,
    });
    await job.updateProgress(emptyProgress(config.training.steps));
    this.log(`job ${job.id} queued (${config.cluster.workers} workers, ${config.training.steps} steps, priority ${priority})`);
    return (await this.get(job.id!))!;
  }

  private restartsKey(id: string): string {
    return `${this.keyPrefix}:restarts:${id}`;
  }

  /**
   * Counts one recovery of job `id` (persisted in Redis, so it survives coordinator restarts) and
   * returns the count; throws UnrecoverableError instead when the job's restart budget is spent.
   */
  private async countRestart(id: string, budget: number, cause: string): Promise<number> {
    const key = this.restartsKey(id);
    const made = Number(await this.redis.hget(key, 'restarts')) || 0;
    await this.redis.hset(key, 'lastError', cause);
    if (made >= budget)
      throw new UnrecoverableError(`restart budget spent (cluster.maxRestarts = ${budget}, ${made} restarts made); last error: ${cause}`);
    const n = await this.redis.hincrby(key, 'restarts', 1);
    this.restartsTotal.inc();
    this.log(`job ${id}: restart ${n} of at most ${budget}: ${cause}`);
    return n;
  }

  private async process(job: Job<JobData>, signal: AbortSignal | undefined): Promise<unknown> {
    const id = job.id!;
    const ctl = new AbortController();
    signal?.addEventListener('abort', () => ctl.abort(signal.reason), { once: true });
    this.running.add(ctl);
    if (await this.redis.exists(this.cancelKey(id))) throw new UnrecoverableError(CANCELLED);
    const poll = setInterval(() => {
      this.redis.exists(this.cancelKey(id)).then(
        (n) => n && ctl.abort(CANCELLED),
        () => {},
      );
    }, 500);
    const cfg: TrainConfig = {
      ...job.data.config,
      checkpoint: { ...job.data.config.checkpoint, dir: join(this.opts.dataDir, 'jobs', id) },
    };
    // Jobs queued before these fields existed have neither.
    const maxWorkers = cfg.cluster.workers;
    const minWorkers = Math.min(cfg.cluster.minWorkers ?? maxWorkers, maxWorkers);
    const budget = cfg.cluster.maxRestarts ?? 3;
    const steps = cfg.training.steps;
    let progress: JobProgress = { ...emptyProgress(steps), ...((job.progress as Partial<JobProgress>) ?? {}), phase: 'queued' };
    const setProgress = (p: Partial<JobProgress>) => {
      progress = { ...progress, ...p };
      return job.updateProgress(progress).catch(() => {});
    };
    // The first group waits for `workers`; a group re-formed after a failure or a drain takes what
    // is free, at least `minWorkers` (elastic jobs: the blocks are re-split, the checkpoint is independent of W).
    let reforming = false;
    const registry = this.coordinator.registry;
    const runner: GroupRunner = {
      formGroup: async (jobId) => {
        const need = reforming ? minWorkers : maxWorkers;
        for (let attempt = 1; ; attempt++) {
          await this.allocation.acquire(id, job.data.priority, job.data.submittedAt, need, ctl.signal, () => {
            void setProgress({ phase: 'waiting-for-workers' });
          });
          try {
            const g = await this.coordinator.formGroup(jobId, { min: need, max: maxWorkers });
            await setProgress({ phase: 'running', workers: g.members.map((m) => m.workerId) });
            if (reforming && g.world < maxWorkers)
              this.log(`job ${id}: going on with ${g.world} of ${maxWorkers} workers (minWorkers ${minWorkers})`);
            return g;
          } catch (err) {
            // Typically a worker that died without being noticed yet: Assign marks it dead; try again.
            if (attempt >= 5 || ctl.signal.aborted) throw err;
            this.log(`job ${id}: forming a group failed (${(err as Error).message}); trying again`);
            await new Promise((r) => setTimeout(r, 250 * attempt));
          }
        }
      },
      runTask: (g: Group, type, config, o) => this.coordinator.runTask(g, type, config, o),
      releaseGroup: async (g: Group) => {
        await this.coordinator.releaseGroup(g);
        this.allocation.poke();
      },
      regroupReason: (g: Group) => {
        const leaving = g.members.filter((m) => registry.get(m.workerId)?.state === 'draining').map((m) => m.workerId);
        return leaving.length > 0 ? `worker${leaving.length > 1 ? 's' : ''} ${leaving.join(', ')} draining` : undefined;
      },
    };
    // A job started before (a retried attempt, or taken over from a dead coordinator) is recovering.
    const runs = await this.redis.hincrby(this.restartsKey(id), 'runs', 1);
    const recent: { t: number; step: number }[] = [];
    try {
      if (runs > 1) {
        const cause =
          job.failedReason || (await this.redis.hget(this.restartsKey(id), 'lastError')) || 'the coordinator running it stopped';
        await this.countRestart(id, budget, `interrupted (${cause})`);
        reforming = true;
      }
      let summary: Awaited<ReturnType<typeof runTraining>> | undefined;
      while (summary === undefined) {
        const resume = (await listCheckpoints(cfg.checkpoint.dir)).length > 0;
        try {
          summary = await runTraining(cfg, {
            cluster: runner,
            jobId: `job-${id}`,
            resume,
            resumeSteps: 'config',
            signal: ctl.signal,
            events: {
              start: (e) => {
                if (e.resumedFrom) this.log(`job ${id}: resuming from ${e.resumedFrom} (step ${e.startStep})`);
              },
              step: (e) => {
                const point: MetricPoint = { step: e.step, loss: e.loss, tokensPerSec: e.tokensPerSec };
                this.stepsTotal.inc();
                this.tokensPerSec.set({ job: id }, e.tokensPerSec);
                this.collectiveSec.set({ job: id }, e.collectiveMs / 1000);
                void this.redis.hset(this.metricsKey(id), String(e.step), JSON.stringify(point)).catch(() => {});
                recent.push({ t: performance.now(), step: e.step });
                if (recent.length > 20) recent.shift();
                const first = recent[0]!;
                const rate = recent.length > 1 ? (e.step - first.step) / ((performance.now() - first.t) / 1000) : 1000 / e.wallMs;
                void setProgress({
                  step: e.step,
                  loss: e.loss,
                  tokensPerSec: e.tokensPerSec,
                  etaSeconds: rate > 0 ? (steps - e.step) / rate : null,
                });
              },
              log: (m) => this.log(`job ${id}: ${m}`),
            },
          });
        } catch (err) {
          if (ctl.signal.aborted) throw err;
          reforming = true;
          if (err instanceof RegroupError) {
            // Planned (a member drains): not a failure, not counted against the budget.
            this.regroupsTotal.inc();
            this.log(`job ${id}: ${err.message}; forming a new group`);
            continue;
          }
          const msg = err instanceof Error ? err.message : String(err);
          if (/the loss is/.test(msg)) throw new UnrecoverableError(msg); // diverged: a restart would diverge again
          await this.countRestart(id, budget, msg);
          await setProgress({ phase: 'waiting-for-workers' });
          await new Promise((r) => setTimeout(r, RESTART_DELAY_MS));
        }
      }
      if (ctl.signal.reason === SHUTDOWN) throw new Error(SHUTDOWN);
      if (summary.stoppedEarly) {
        await setProgress({ phase: 'done', etaSeconds: null });
        throw new UnrecoverableError(CANCELLED);
      }
      await setProgress({ phase: 'done', etaSeconds: 0 });
      return { ...summary, losses: undefined }; // the per-step losses are in the metrics
    } catch (err) {
      if (ctl.signal.reason === SHUTDOWN) throw new Error(SHUTDOWN);
      if (ctl.signal.aborted) {
        await setProgress({ phase: 'done', etaSeconds: null });
        throw new UnrecoverableError(CANCELLED);
      }
      throw err;
    } finally {
      clearInterval(poll);
      this.running.delete(ctl);
    }
  }

  private async view(job: Job<JobData>, withMetrics: boolean): Promise<JobView> {
    const id = job.id!;
    const bull = await job.getState();
    const cancelled = (await this.redis.exists(this.cancelKey(id))) > 0;
    let state: JobState;
    const p = { ...emptyProgress(job.data.config.training.steps), ...((job.progress as Partial<JobProgress>) ?? {}) };
    if (bull === 'completed') state = 'completed';
    else if (bull === 'failed') state = job.failedReason === CANCELLED ? 'cancelled' : 'failed';
    else if (cancelled && bull !== 'active') state = 'cancelled';
    else if (bull === 'active') state = p.phase === 'running' || p.phase === 'done' ? 'active' : 'waiting';
    else state = 'waiting';
    let metrics: MetricPoint[] = [];
    if (withMetrics) {
      const h = await this.redis.hgetall(this.metricsKey(id));
      metrics = Object.values(h)
        .map((s) => JSON.parse(s) as MetricPoint)
        .sort((a, b) => a.step - b.step);
    }
    return {
      id,
      state,
      priority: job.data.priority,
      createdAt: new Date(job.timestamp).toISOString(),
      startedAt: job.processedOn ? new Date(job.processedOn).toISOString() : null,
      finishedAt: job.finishedOn ? new Date(job.finishedOn).toISOString() : null,
      progress: p,
      restarts: Number(await this.redis.hget(this.restartsKey(id), 'restarts')) || 0,
      attemptsMade: job.attemptsMade,
      attempts: job.opts.attempts ?? 1,
      metrics,
      result: job.returnvalue ?? null,
      failedReason: job.failedReason ?? null,
      config: job.data.config,
    };
  }

  async get(id: string): Promise<JobView | undefined> {
    const job = await Job.fromId<JobData>(this.queue, id);
    return job ? this.view(job, true) : undefined;
  }

  async list(opts: { state?: JobState; limit?: number } = {}): Promise<JobView[]> {
    const limit = opts.limit ?? 100;
    const jobs = await this.queue.getJobs(['waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed'], 0, -1, false);
    jobs.sort((a, b) => b.timestamp - a.timestamp || Number(b.id) - Number(a.id));
    const out: JobView[] = [];
    for (const j of jobs) {
      if (!j) continue;
      const v = await this.view(j, false);
      if (!opts.state || v.state === opts.state) out.push(v);
      if (out.length >= limit) break;
    }
    return out;
  }

  async cancel(id: string): Promise<JobView | undefined> {
    const job = await Job.fromId<JobData>(this.queue, id);
    if (!job) return undefined;
    const state = await job.getState();
    if (state !== 'completed' && state !== 'failed') {
      await this.redis.set(this.cancelKey(id), '1');
      this.worker.cancelJob(id, CANCELLED);
      if (state === 'waiting' || state === 'prioritized' || state === 'delayed') {
        // Not picked up yet: leave it marked (the view says cancelled, the processor refuses it).
        this.log(`job ${id} cancelled while queued`);
      } else this.log(`job ${id} cancelled while running`);
    }
    return (await this.get(id))!;
  }

  drainWorker(id: string): WorkerView | undefined {
    const w = this.coordinator.registry.requestDrain(id);
    if (!w) return undefined;
    this.log(`worker ${id}: drain requested${w.job !== undefined ? ` (job ${w.job} regroups after its current step)` : ''}`);
    return this.workers().find((v) => v.id === id);
  }

  workers(): WorkerView[] {
    return this.coordinator.registry.list().map((w) => ({
      id: w.id,
      state: w.state,
      pid: w.pid,
      host: w.host,
      address: w.address,
      device: w.device,
      threads: w.threads,
      lastHeartbeat: new Date(w.lastHeartbeat).toISOString(),
      job: w.job ?? null,
      rank: w.rank ?? null,
    }));
  }

  metricsText(): Promise<string> {
    return this.registry.metrics();
  }

  async health(): Promise<{ ok: boolean; redis: boolean; workers: { idle: number; busy: number; dead: number } }> {
    const redis = await this.redis.ping().then(
      (r) => r === 'PONG',
      () => false,
    );
    const workers = { idle: 0, busy: 0, dead: 0 };
    for (const w of this.coordinator.registry.list()) {
      if (w.state === 'idle') workers.idle++;
      else if (w.state === 'busy') workers.busy++;
      else if (w.state === 'dead') workers.dead++;
    }
    return { ok: redis, redis, workers };
  }
}
