// Rendezvous (torchrun style): pick healthy workers for a job, give them ranks and a new
// generation, tell each its group; run a task on every rank; abort a generation on failure.
import { status as grpcStatus } from '@grpc/grpc-js';
import type { NamedTensor } from '../worker/tensor-bytes.js';
import { isUnreachable, RpcError } from './grpc-call.js';
import { describeWorkers, waitForRegistry, type WorkerInfo, type WorkerRegistry } from './registry.js';
import type { WorkerClient } from './worker-client.js';

export interface GroupMember {
  workerId: string;
  address: string;
  rank: number;
}

export interface Group {
  jobId: string;
  /** Monotonic per job; every peer message carries it and older generations are refused. */
  generation: number;
  world: number;
  /** Indexed by rank. */
  members: GroupMember[];
}

export interface TaskReply {
  rank: number;
  workerId: string;
  /** The task's result, parsed from JSON. */
  result: unknown;
  tensors: NamedTensor[];
}

export interface FormGroupOptions {
  /** Fewest workers the job can run on. */
  min: number;
  /** Most workers the job uses. */
  max: number;
  /** How long to wait for `min` available workers. Default 0 (fail at once). */
  waitMs?: number;
}

export interface RunTaskOptions {
  /** Deadline of each rank's RunTask call. Default 600000 ms (10 min). */
  timeoutMs?: number;
}

export interface RendezvousOptions {
  /** Deadline of Assign and Abort calls. Default 5000 ms. */
  controlTimeoutMs?: number;
}

/** A task failed on one rank; the generation has been aborted on every member. */
export class TaskError extends Error {
  constructor(
    message: string,
    readonly rank: number,
    readonly workerId: string,
    /** The gRPC status code when the failure came from the call (e.g. FAILED_PRECONDITION). */
    readonly code: number | undefined,
  ) {
    super(message);
    this.name = 'TaskError';
  }
}

export class Rendezvous {
  private readonly generations = new Map<string, number>();
  private readonly current = new Map<string, Group>();
  private readonly controlTimeoutMs: number;
  /** Tasks in flight: called with a member declared dead, so the task fails at once (see runTask). */
  private readonly inflight = new Set<(dead: WorkerInfo) => void>();

  constructor(
    private readonly registry: WorkerRegistry,
    private readonly clientFor: (workerId: string) => WorkerClient,
    opts: RendezvousOptions = {},
  ) {
    this.controlTimeoutMs = opts.controlTimeoutMs ?? 5000;
  }

  /** The group a job runs on now, if any. */
  groupOf(jobId: string): Group | undefined {
    return this.current.get(jobId);
  }

  async formGroup(jobId: string, opts: FormGroupOptions): Promise<Group> {
    const { min, max } = opts;
    if (!jobId) throw new Error('formGroup: jobId must not be empty');
    if (!Number.isInteger(min) || !Number.isInteger(max) || min < 1 || max < min)
      throw new Error(`formGroup ${jobId}: need integers 1 <= min <= max, got min=${min} max=${max}`);
    if ((opts.waitMs ?? 0) > 0) {
      await waitForRegistry(
        this.registry,
        () => this.registry.available(jobId).length >= min,
        opts.waitMs ?? 0,
        () => this.shortage(jobId, min),
      );
    }
    const candidates = this.registry.available(jobId);
    if (candidates.length < min) throw new Error(this.shortage(jobId, min));

    // Deterministic order: by host (ranks on one host are neighbours in rings), then id.
    candidates.sort((a, b) => (a.host < b.host ? -1 : a.host > b.host ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const chosen = candidates.slice(0, max);
    const generation = Math.max(this.generations.get(jobId) ?? 0, this.registry.reportedGeneration(jobId)) + 1;
    this.generations.set(jobId, generation);
    const group: Group = {
      jobId,
      generation,
      world: chosen.length,
      members: chosen.map((w, rank) => ({ workerId: w.id, address: w.address, rank })),
    };

    // The previous generation's members that are left out are released.
    const previous = this.current.get(jobId);
    this.current.set(jobId, group);
    for (const m of group.members) this.registry.markBusy(m.workerId, jobId, generation, m.rank);
    if (previous) {
      const kept = new Set(group.members.map((m) => m.workerId));
      const dropped = previous.members.filter((m) => !kept.has(m.workerId));
      await this.abortMembers(previous, dropped, `superseded by generation ${generation}`);
      for (const m of dropped) this.releaseMember(previous, m);
    }

    const peers = group.members.map((m) => m.address);
    const results = await Promise.allSettled(
      group.members.map((m) =>
        this.clientFor(m.workerId).assign({ jobId, generation, rank: m.rank, world: group.world, peers }, this.controlTimeoutMs),
      ),
    );
    const failures = results.flatMap((r, rank) => (r.status === 'rejected' ? [{ rank, err: r.reason as unknown }] : []));
    if (failures.length > 0) {
      for (const f of failures) this.markDeadIfUnreachable(group.members[f.rank]!.workerId, f.err);
      await this.abortMembers(group, group.members, 'rendezvous failed');
      for (const m of group.members) this.releaseMember(group, m);
      if (this.current.get(jobId) === group) this.current.delete(jobId);
      const why = failures.map((f) => `rank ${f.rank}: ${errorMessage(f.err)}`).join('; ');
      throw new Error(`formGroup ${jobId}: assigning generation ${generation} failed: ${why}`);
    }
    return group;
  }

  /**
   * Runs `type` on every rank concurrently. Resolves with the replies indexed by rank. If any rank
   * fails, aborts the generation on every member and rejects with a TaskError naming the rank.
   */
  runTask(group: Group, type: string, config: unknown, opts: RunTaskOptions = {}): Promise<TaskReply[]> {
    const timeoutMs = opts.timeoutMs ?? 600_000;
    const replies: TaskReply[] = new Array<TaskReply>(group.world);
    let pending = group.world;
    let failed = false;
    return new Promise((resolve, reject) => {
      const fail = (m: GroupMember, err: unknown, code: number | undefined) => {
        if (failed) return; // the first failure is the cause; later ones are usually the abort
        failed = true;
        this.inflight.delete(onDead);
        const msg = `task ${type} of job ${group.jobId} generation ${group.generation} failed on rank ${m.rank}: ${errorMessage(err)}`;
        void this.abortMembers(group, group.members, `rank ${m.rank} failed: ${errorMessage(err)}`).then(() =>
          reject(new TaskError(msg, m.rank, m.workerId, code)),
        );
      };
      // A member declared dead (missed heartbeats: e.g. a hung process, whose RunTask would only end
      // at its deadline) fails the task at once, even when the other ranks already replied and no
      // collective is left to notice it.
      const onDead = (dead: WorkerInfo) => {
        if (dead.job !== group.jobId || dead.generation !== group.generation) return;
        const m = group.members.find((x) => x.workerId === dead.id);
        if (m !== undefined && replies[m.rank] === undefined)
          fail(m, new Error(`worker ${dead.id} is dead: ${dead.deadReason ?? 'unknown reason'}`), grpcStatus.UNAVAILABLE);
      };
      this.inflight.add(onDead);
      for (const m of group.members) {
        this.clientFor(m.workerId)
          .runTask({ jobId: group.jobId, generation: group.generation, type, config }, timeoutMs)
          .then(
            (out) => {
              replies[m.rank] = { rank: m.rank, workerId: m.workerId, ...out };
              if (--pending === 0 && !failed) {
                this.inflight.delete(onDead);
                resolve(replies);
              }
            },
            (err: unknown) => {
              if (failed) return;
              // This error is the cause, not the death it may declare below.
              this.inflight.delete(onDead);
              // A slow task (deadline) is not a dead worker; a refused connection is.
              if (err instanceof RpcError && err.code === grpcStatus.UNAVAILABLE) this.markDeadIfUnreachable(m.workerId, err);
              fail(m, err, err instanceof RpcError ? err.code : undefined);
            },
          );
      }
    });
  }

  /** Aborts the generation on every member (best effort: unreachable members are skipped). */
  async abortGroup(group: Group, reason: string): Promise<void> {
    await this.abortMembers(group, group.members, reason);
  }

  /** The group is done: its members leave it and become idle. */
  async releaseGroup(group: Group): Promise<void> {
    if (this.current.get(group.jobId)?.generation === group.generation) this.current.delete(group.jobId);
    await this.abortMembers(group, group.members, 'released');
    for (const m of group.members) this.releaseMember(group, m);
  }

  /**
   * Called when the registry declares a worker dead: a task the group is running fails at once,
   * and the rest of its group is aborted.
   */
  async onWorkerDead(w: WorkerInfo): Promise<void> {
    if (w.job === undefined) return;
    for (const f of [...this.inflight]) f(w);
    const group = this.current.get(w.job);
    if (!group || group.generation !== w.generation) return;
    const others = group.members.filter((m) => m.workerId !== w.id);
    await this.abortMembers(group, others, `rank ${w.rank} (worker ${w.id}) is dead: ${w.deadReason ?? 'unknown reason'}`);
  }

  private releaseMember(group: Group, m: GroupMember): void {
    const w = this.registry.get(m.workerId);
    if (w && w.job === group.jobId && w.generation === group.generation) this.registry.markIdle(m.workerId);
  }

  private async abortMembers(group: Group, members: GroupMember[], reason: string): Promise<void> {
    await Promise.allSettled(
      members
        .filter((m) => {
          const w = this.registry.get(m.workerId);
          return w !== undefined && w.state !== 'dead'; // unknown: e.g. a group formed before a coordinator restart
        })
        .map((m) => this.clientFor(m.workerId).abort(group.jobId, group.generation, reason, this.controlTimeoutMs)),
    );
  }

  private markDeadIfUnreachable(workerId: string, err: unknown): void {
    if (isUnreachable(err)) this.registry.markDead(workerId, `unreachable: ${errorMessage(err)}`);
  }

  private shortage(jobId: string, min: number): string {
    const n = this.registry.available(jobId).length;
    return `formGroup ${jobId}: need at least ${min} idle workers, ${n} available (${describeWorkers(this.registry.list())})`;
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
