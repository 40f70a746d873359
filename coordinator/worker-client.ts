// The coordinator's client for one worker's WorkerControl service. Every call has a deadline and
// fails with an RpcError naming the worker.
import * as grpc from '@grpc/grpc-js';
import { withToken } from '../cluster/cluster-token.js';
import { channelCredentials, type TlsConfig } from '../cluster/tls.js';
import { protos } from '../proto/load.js';
import type { WorkerControlClient } from '../proto/generated/lasp/v1/WorkerControl.js';
import type { AbortReply__Output } from '../proto/generated/lasp/v1/AbortReply.js';
import type { AssignReply__Output } from '../proto/generated/lasp/v1/AssignReply.js';
import type { TaskReply__Output } from '../proto/generated/lasp/v1/TaskReply.js';
import type { GroupAssignment } from '../worker/collectives/communicator.js';
import { decodeTensor, type NamedTensor } from '../worker/tensor-bytes.js';
import { callUnary, CLIENT_CHANNEL_OPTIONS, RpcError } from './grpc-call.js';

export interface TaskOutput {
  /** The task's result, parsed from JSON. */
  result: unknown;
  tensors: NamedTensor[];
}

export class WorkerClient {
  private readonly client: WorkerControlClient;
  /** Names the worker in errors: "worker <id> (<address>)". */
  readonly label: string;

  constructor(
    readonly workerId: string,
    readonly address: string,
    token?: string,
    tls?: TlsConfig,
  ) {
    const Ctor = protos().worker.lasp.v1.WorkerControl;
    // Task replies may carry large tensors.
    this.client = new Ctor(
      address,
      channelCredentials(tls),
      withToken({ ...CLIENT_CHANNEL_OPTIONS, 'grpc.max_receive_message_length': 1 << 30 }, token),
    );
    this.label = `worker ${workerId} (${address})`;
  }

  async assign(a: GroupAssignment, timeoutMs: number): Promise<void> {
    const req = { jobId: a.jobId, generation: a.generation, rank: a.rank, world: a.world, peers: a.peers };
    await callUnary<AssignReply__Output>(this.label, 'Assign', timeoutMs, (o, cb) => this.client.Assign(req, o, cb));
  }

  async abort(jobId: string, generation: number, reason: string, timeoutMs: number): Promise<void> {
    await callUnary<AbortReply__Output>(this.label, 'Abort', timeoutMs, (o, cb) => this.client.Abort({ jobId, generation, reason }, o, cb));
  }

  async runTask(req: { jobId: string; generation: number; type: string; config: unknown }, timeoutMs: number): Promise<TaskOutput> {
    const configJson = JSON.stringify(req.config ?? null);
    const msg = { jobId: req.jobId, generation: req.generation, type: req.type, configJson };
    const reply = await callUnary<TaskReply__Output>(this.label, `RunTask ${req.type}`, timeoutMs, (o, cb) =>
      this.client.RunTask(msg, o, cb),
    );
    let result: unknown;
    try {
      result = reply.resultJson === '' ? null : JSON.parse(reply.resultJson);
    } catch (err) {
      throw new RpcError(this.label, `RunTask ${req.type}`, grpc.status.INTERNAL, `result is not JSON: ${(err as Error).message}`);
    }
    try {
      return { result, tensors: reply.tensors.map(decodeTensor) };
    } catch (err) {
      throw new RpcError(this.label, `RunTask ${req.type}`, grpc.status.INTERNAL, (err as Error).message);
    }
  }

  close(): void {
    this.client.close();
  }
}
