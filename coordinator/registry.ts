// The coordinator's table of workers: who they are, where to reach them, their health and group.
import { systemClock, type Clock } from './clock.js';
import type { MonitoredRegistry } from './heartbeat-monitor.js';

export type WorkerState = 'idle' | 'busy' | 'draining' | 'dead';

export interface WorkerInfo {
  id: string;
  /** host:port of the worker's gRPC server. */
  address: string;
  host: string;
  pid: number;
  /** "cpu" or "cuda:N". */
  device: string;
  threads: number;
  state: WorkerState;
  /** ms since the epoch of the last Register or Heartbeat. */
  lastHeartbeat: number;
  registeredAt: number;
  /** The job and rank the coordinator assigned (while busy). */
  job?: string;
  generation?: number;
  rank?: number;
  /** What the worker itself last reported in a heartbeat. */
  reported?: { state: string; jobId: string; generation: number; step: number };
  /** Why it is dead (state "dead"). */
  deadReason?: string;
  /** The coordinator asked it to drain (requestDrain): heartbeat replies tell the worker to leave. */
  drainRequested?: boolean;
}

export interface RegisterInput {
  id: string;
  address: string;
  host: string;
  pid: number;
  device: string;
  threads: number;
}

export interface HeartbeatInput {
  id: string;
  state: string;
  jobId: string;
  generation: number;
  step: number;
}

export type RegistryEvent = 'registered' | 'dead' | 'changed';
export type RegistryListener = (event: RegistryEvent, worker: Readonly<WorkerInfo>) => void;

export class WorkerRegistry implements MonitoredRegistry {
  private readonly workers = new Map<string, WorkerInfo>();
  private readonly listeners = new Set<RegistryListener>();

  constructor(private readonly clock: Pick<Clock, 'now'> = systemClock) {}

  /** Adds or replaces a worker. A re-registration means the process lost its group: it is idle again. */
  register(input: RegisterInput): WorkerInfo {
    if (!input.id) throw new Error('worker id must not be empty');
    if (!input.address) throw new Error(`worker ${input.id}: address must not be empty`);
    const now = this.clock.now();
    const w: WorkerInfo = { ...input, state: 'idle', lastHeartbeat: now, registeredAt: now };
    this.workers.set(w.id, w);
    this.emit('registered', w);
    return w;
  }

  /**
   * Records a heartbeat. Returns false for a worker that is unknown or already declared dead: it
   * must register again (a dead worker never silently rejoins with stale state).
   */
  heartbeat(input: HeartbeatInput): boolean {
    const w = this.workers.get(input.id);
    if (!w || w.state === 'dead') return false;
    w.lastHeartbeat = this.clock.now();
    w.reported = { state: input.state, jobId: input.jobId, generation: input.generation, step: input.step };
    if (input.state === 'draining' && w.state !== 'draining') {
      w.state = 'draining';
      this.emit('changed', w);
    }
    return true;
  }

  /**
   * Marks a live worker draining: it gets no new group, its job checkpoints after the current step
   * and goes on without it, and the worker is told (heartbeat reply) to leave once released.
   * Returns the worker, or undefined when it is unknown or dead.
   */
  requestDrain(id: string): WorkerInfo | undefined {
    const w = this.workers.get(id);
    if (!w || w.state === 'dead') return undefined;
    w.drainRequested = true;
    if (w.state !== 'draining') {
      w.state = 'draining';
      this.emit('changed', w);
    }
    return w;
  }

  get(id: string): WorkerInfo | undefined {
    return this.workers.get(id);
  }

  list(): WorkerInfo[] {
    return [...this.workers.values()];
  }

  /** Workers that may join a group: idle, or already in a group of `jobId` (re-forming it). */
  available(jobId?: string): WorkerInfo[] {
    return this.list().filter((w) => w.state === 'idle' || (jobId !== undefined && w.state === 'busy' && w.job === jobId));
  }

  count(state: WorkerState): number {
    return this.list().filter((w) => w.state === state).length;
  }

  liveWorkers(): WorkerInfo[] {
    return this.list().filter((w) => w.state !== 'dead');
  }

  markDead(id: string, reason: string): void {
    const w = this.workers.get(id);
    if (!w || w.state === 'dead') return;
    w.state = 'dead';
    w.deadReason = reason;
    this.emit('dead', w);
  }

  markBusy(id: string, job: string, generation: number, rank: number): void {
    const w = this.mustGet(id);
    if (w.state === 'dead') return;
    Object.assign(w, { state: 'busy', job, generation, rank });
    this.emit('changed', w);
  }

  /** Back to idle (unless dead or draining), forgetting the group. */
  markIdle(id: string): void {
    const w = this.workers.get(id);
    if (!w) return;
    delete w.job;
    delete w.generation;
    delete w.rank;
    if (w.state === 'busy') w.state = 'idle';
    this.emit('changed', w);
  }

  /** Highest generation of `jobId` that any worker reports (survives a coordinator restart). */
  reportedGeneration(jobId: string): number {
    let g = 0;
    for (const w of this.workers.values()) if (w.reported?.jobId === jobId) g = Math.max(g, w.reported.generation);
    return g;
  }

  subscribe(listener: RegistryListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private mustGet(id: string): WorkerInfo {
    const w = this.workers.get(id);
    if (!w) throw new Error(`unknown worker ${id}`);
    return w;
  }

  private emit(event: RegistryEvent, w: WorkerInfo): void {
    for (const l of [...this.listeners]) l(event, w);
  }
}

/**
 * Resolves with the registry's workers once `ready(workers)` is true (checked now and on every
 * registry event); rejects after `timeoutMs` with `describe()` in the message.
 */
export function waitForRegistry(
  registry: WorkerRegistry,
  ready: (workers: WorkerInfo[]) => boolean,
  timeoutMs: number,
  describe: () => string,
): Promise<WorkerInfo[]> {
  return new Promise((resolve, reject) => {
    if (ready(registry.list())) return resolve(registry.list());
    const unsubscribe = registry.subscribe(() => {
      if (!ready(registry.list())) return;
      clearTimeout(timer);
      unsubscribe();
      resolve(registry.list());
    });
    const timer = setTimeout(() => {
      unsubscribe();
      reject(new Error(`timed out after ${timeoutMs} ms: ${describe()}`));
    }, timeoutMs);
  });
}

/** One line per worker, for error messages: "w-1 idle 127.0.0.1:4001, w-2 dead (missed 3 heartbeats)". */
export function describeWorkers(workers: WorkerInfo[]): string {
  if (workers.length === 0) return 'no workers registered';
  return workers
    .map(
      (w) =>
        `${w.id} ${w.state}${w.job !== undefined ? ` (job ${w.job} gen ${w.generation} rank ${w.rank})` : ''}${w.deadReason ? ` (${w.deadReason})` : ''}`,
    )
    .join(', ');
}
