// What the job service exposes (HTTP API, CLI): jobs of the BullMQ queue as the coordinator sees
// them, and the workers of its registry. JSON-serialisable throughout.

/** A job's state as users see it (BullMQ's waiting/prioritized/delayed are all "waiting"). */
export type JobState = 'waiting' | 'active' | 'completed' | 'failed' | 'cancelled';
export const JOB_STATES: readonly JobState[] = ['waiting', 'active', 'completed', 'failed', 'cancelled'];

export interface JobProgress {
  /** queued: not picked up yet; waiting-for-workers: picked up, too few free workers; running; done. */
  phase: 'queued' | 'waiting-for-workers' | 'running' | 'done';
  /** Last completed step. */
  step: number;
  steps: number;
  loss: number | null;
  tokensPerSec: number | null;
  /** Seconds left at the recent rate, null before the first step. */
  etaSeconds: number | null;
  /** Worker ids of the current group, by rank. */
  workers: string[];
}

export interface MetricPoint {
  step: number;
  loss: number;
  tokensPerSec: number;
}

export interface JobView {
  id: string;
  state: JobState;
  /** Higher runs first among waiting jobs; 0 is the default. */
  priority: number;
  /** ISO times. */
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  progress: JobProgress;
  /** Recoveries so far (new group, resumed from the last checkpoint after a lost worker or a coordinator restart); at most the config's cluster.maxRestarts. */
  restarts: number;
  /** Attempts made so far, and allowed. */
  attemptsMade: number;
  attempts: number;
  /** Per-step metrics so far (GET /v1/jobs/:id only; empty in lists). */
  metrics: MetricPoint[];
  /** The training summary of a completed job. */
  result: unknown;
  failedReason: string | null;
  /** The validated job config (model, data, training, cluster, checkpoint). */
  config: unknown;
}

export interface WorkerView {
  id: string;
  /** idle, busy, draining (leaving once its job releases it) or dead. */
  state: string;
  pid: number;
  host: string;
  /** host:port of its gRPC server. */
  address: string;
  device: string;
  threads: number;
  /** ISO time of the last heartbeat. */
  lastHeartbeat: string;
  job: string | null;
  rank: number | null;
}

export interface SubmitOptions {
  /** Higher runs first. Default 0. */
  priority?: number;
  /** Attempts in all (a failed attempt is retried with exponential backoff from 1 s). Default 3. */
  attempts?: number;
}

/** The coordinator's job service; the HTTP API and the CLI are thin layers over it. */
export interface JobService {
  /** Validates and queues a job config; throws ConfigErrors (every bad field named) without queueing anything. */
  submit(rawConfig: unknown, opts?: SubmitOptions): Promise<JobView>;
  /** One job with its metrics, or undefined. */
  get(id: string): Promise<JobView | undefined>;
  /** Newest first, without metrics. */
  list(opts?: { state?: JobState; limit?: number }): Promise<JobView[]>;
  /** Cancels a waiting or running job (a running job's workers stop within a step and are released). Undefined if unknown. */
  cancel(id: string): Promise<JobView | undefined>;
  workers(): WorkerView[];
  /**
   * Asks a worker to drain: it gets no new group, its job checkpoints after the current step and
   * goes on without it, and the worker exits once released. Undefined when unknown or dead. Optional.
   */
  drainWorker?(id: string): WorkerView | undefined;
  /** Prometheus text exposition of the service's metrics (GET /metrics). Optional. */
  metricsText?(): Promise<string>;
  /** Liveness of the parts the service depends on. */
  health(): Promise<{ ok: boolean; redis: boolean; workers: { idle: number; busy: number; dead: number } }>;
}
