// The Coordinator gRPC service (workers -> coordinator): Register and Heartbeat.
import * as grpc from '@grpc/grpc-js';
import type { CoordinatorHandlers } from '../proto/generated/lasp/v1/Coordinator.js';
import { serviceError } from './grpc-call.js';
import { identifierProblem } from './status-details.js';
import type { WorkerRegistry } from './registry.js';

export function coordinatorHandlers(
  registry: WorkerRegistry,
  heartbeatIntervalMs: number,
  log: (line: string) => void,
): CoordinatorHandlers {
  return {
    Register: (call, callback) => {
      const r = call.request;
      const invalid =
        identifierProblem('worker_id', r.workerId) ??
        identifierProblem('address', r.address, 255) ??
        (r.host === '' ? undefined : identifierProblem('host', r.host, 255)) ??
        (r.device === '' ? undefined : identifierProblem('device', r.device, 64));
      if (invalid) return callback(serviceError(grpc.status.INVALID_ARGUMENT, `Register: ${invalid}`));
      const known = registry.get(r.workerId);
      // Registering again while in a group means the process lost its group (restart, or it was
      // declared dead): the group's generation is broken, so its other members get aborted.
      if (known?.state === 'busy')
        registry.markDead(r.workerId, `registered again while rank ${known.rank} of job ${known.job} generation ${known.generation}`);
      registry.register({ id: r.workerId, address: r.address, host: r.host, pid: r.pid, device: r.device || 'cpu', threads: r.threads });
      log(
        `${known ? 're-registered' : 'registered'} worker ${r.workerId} at ${r.address} (pid ${r.pid}, ${r.device || 'cpu'}, ${r.threads} threads)`,
      );
      callback(null, { workerId: r.workerId, heartbeatIntervalMs });
    },
    Heartbeat: (call, callback) => {
      const r = call.request;
      const known = registry.heartbeat({ id: r.workerId, state: r.state, jobId: r.jobId, generation: r.generation, step: r.step });
      callback(null, { known, drain: known && registry.get(r.workerId)?.drainRequested === true });
    },
  };
}
