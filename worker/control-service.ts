// The WorkerControl gRPC service (coordinator -> worker): Assign joins a group, Abort aborts a
// generation, RunTask runs a registered task on the current group.
import * as grpc from '@grpc/grpc-js';
import type { WorkerControlHandlers } from '../proto/generated/lasp/v1/WorkerControl.js';
import type { TaskReply } from '../proto/generated/lasp/v1/TaskReply.js';
import { serviceError } from '../coordinator/grpc-call.js';
import { cpuKernels, type KernelSet } from '../native/kernel-set.js';
import { clampDetails, identifierProblem, quoteUntrusted } from '../coordinator/status-details.js';
import type { Communicator, GroupAssignment } from './collectives/communicator.js';
import { encodeTensor } from './tensor-bytes.js';
import { getTask, taskTypes } from './tasks.js';

/** What the control service needs from the peer endpoint (worker/peer-endpoint.ts). */
export interface PeerService {
  joinGroup(a: GroupAssignment): Communicator;
  abortGroup(jobId: string, generation: number, reason: string): void;
  leaveGroup(): void;
}

/** The worker's view of itself, sent in heartbeats. */
export interface WorkerStatus {
  state: 'idle' | 'busy';
  jobId: string;
  generation: number;
  step: number;
}

interface Membership {
  assignment: GroupAssignment;
  comm: Communicator;
  /** Set once the generation is aborted or released: no more tasks run on it. */
  aborted?: string;
  task?: { type: string; controller: AbortController };
}

export class ControlService {
  private current: Membership | undefined;

  constructor(
    private readonly peer: PeerService,
    private readonly log: (line: string) => void = () => {},
    /** The kernels tasks run on (the worker's device). Default the CPU's. */
    private readonly kernels: KernelSet = cpuKernels,
  ) {}

  status(): WorkerStatus {
    const m = this.current;
    if (!m || m.aborted !== undefined)
      return { state: 'idle', jobId: m?.assignment.jobId ?? '', generation: m?.assignment.generation ?? 0, step: 0 };
    return { state: 'busy', jobId: m.assignment.jobId, generation: m.assignment.generation, step: 0 };
  }

  /** The current assignment, if any (aborted ones included). */
  assignment(): GroupAssignment | undefined {
    return this.current?.assignment;
  }

  /** Aborts the running task and leaves the group (worker shutdown). */
  shutdown(reason: string): void {
    const m = this.current;
    if (!m) return;
    m.task?.controller.abort(reason);
    if (m.aborted === undefined) this.peer.abortGroup(m.assignment.jobId, m.assignment.generation, reason);
    m.aborted = reason;
    this.peer.leaveGroup();
  }

  handlers(): WorkerControlHandlers {
    return {
      Assign: (call, callback) => {
        const r = call.request;
        const a: GroupAssignment = { jobId: r.jobId, generation: r.generation, rank: r.rank, world: r.world, peers: [...r.peers] };
        const invalid = validateAssignment(a);
        if (invalid) return callback(serviceError(grpc.status.INVALID_ARGUMENT, `Assign: ${invalid}`));
        const cur = this.current?.assignment;
        if (cur && cur.jobId === a.jobId && cur.generation > a.generation)
          return callback(
            serviceError(
              grpc.status.FAILED_PRECONDITION,
              `Assign: generation ${a.generation} of job ${a.jobId} is older than the current ${cur.generation}`,
            ),
          );
        this.current?.task?.controller.abort(`re-assigned to job ${a.jobId} generation ${a.generation}`);
        let comm: Communicator;
        try {
          comm = this.peer.joinGroup(a);
        } catch (err) {
          return callback(serviceError(grpc.status.INTERNAL, `Assign: joining the group failed: ${(err as Error).message}`));
        }
        this.current = { assignment: a, comm };
        this.log(`assigned job ${a.jobId} generation ${a.generation}: rank ${a.rank} of ${a.world}`);
        callback(null, {});
      },

      Abort: (call, callback) => {
        const { jobId, generation, reason } = call.request;
        const m = this.current;
        // Idempotent: aborting another or an already aborted generation is a no-op.
        if (m && m.assignment.jobId === jobId && m.assignment.generation === generation && m.aborted === undefined) {
          m.aborted = clampDetails(reason || 'aborted');
          m.task?.controller.abort(m.aborted);
          this.peer.abortGroup(jobId, generation, m.aborted);
          this.log(`aborted job ${jobId} generation ${generation}: ${m.aborted}`);
        }
        callback(null, {});
      },

      RunTask: (call, callback) => {
        const r = call.request;
        const handler = getTask(r.type);
        if (!handler)
          return callback(
            serviceError(grpc.status.INVALID_ARGUMENT, `unknown task type ${quoteUntrusted(r.type)} (known: ${taskTypes().join(', ')})`),
          );
        let config: unknown;
        try {
          config = r.configJson === '' ? null : JSON.parse(r.configJson);
        } catch (err) {
          return callback(serviceError(grpc.status.INVALID_ARGUMENT, `task ${r.type}: config_json is not JSON: ${(err as Error).message}`));
        }
        const m = this.current;
        const refusal = preconditionFailure(m, r.jobId, r.generation);
        if (refusal || !m) return callback(serviceError(grpc.status.FAILED_PRECONDITION, `task ${r.type}: ${refusal}`));

        const controller = new AbortController();
        m.task = { type: r.type, controller };
        call.on('cancelled', () => controller.abort('the caller cancelled the task (deadline or disconnect)'));
        handler({ comm: m.comm, assignment: m.assignment, config, signal: controller.signal, kernels: this.kernels })
          .then((out) => {
            const reply: TaskReply = { resultJson: JSON.stringify(out.result ?? null), tensors: (out.tensors ?? []).map(encodeTensor) };
            callback(null, reply);
          })
          .catch((err: unknown) => {
            const msg = err instanceof Error ? err.message : String(err);
            const code = controller.signal.aborted ? grpc.status.ABORTED : grpc.status.INTERNAL;
            callback(serviceError(code, `task ${r.type} on rank ${m.assignment.rank}: ${msg}`));
          })
          .finally(() => {
            if (m.task?.controller === controller) delete m.task;
          });
      },
    };
  }
}

function validateAssignment(a: GroupAssignment): string | undefined {
  const bad = identifierProblem('job_id', a.jobId, 256);
  if (bad) return bad;
  if (!(a.generation >= 1)) return `generation must be >= 1, got ${a.generation}`;
  if (!(a.world >= 1)) return `world must be >= 1, got ${a.world}`;
  if (a.rank >= a.world) return `rank ${a.rank} out of range for world ${a.world}`;
  if (a.peers.length !== a.world) return `${a.peers.length} peer addresses for world ${a.world}`;
  for (const [i, p] of a.peers.entries()) {
    const badPeer = identifierProblem(`peers[${i}]`, p, 255);
    if (badPeer) return badPeer;
  }
  return undefined;
}

/** Why a task of (jobId, generation) may not run on membership `m`; undefined when it may. */
function preconditionFailure(m: Membership | undefined, jobId: string, generation: number): string | undefined {
  if (!m) return `no group assigned (task is for job ${quoteUntrusted(jobId)} generation ${generation})`;
  const a = m.assignment;
  if (a.jobId !== jobId || a.generation !== generation)
    return `task is for job ${quoteUntrusted(jobId)} generation ${generation}, but this worker is in job ${quoteUntrusted(a.jobId)} generation ${a.generation}`;
  if (m.aborted !== undefined) return `generation ${generation} of job ${jobId} was aborted: ${m.aborted}`;
  if (m.task) return `already running task ${m.task.type} of job ${jobId} generation ${generation}`;
  return undefined;
}
