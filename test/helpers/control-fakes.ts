// Fakes for control-plane unit tests: a manual clock and a worker client that records calls.
import type { Clock } from '../../coordinator/clock.js';
import { RpcError } from '../../coordinator/grpc-call.js';
import type { TaskOutput, WorkerClient } from '../../coordinator/worker-client.js';
import type { GroupAssignment } from '../../worker/collectives/communicator.js';

/** A clock that only moves when told to; intervals fire from advance(). */
export class FakeClock implements Clock {
  private t = 1_000_000;
  private readonly timers = new Map<number, { fn: () => void; ms: number; next: number }>();
  private nextId = 1;

  now(): number {
    return this.t;
  }

  setInterval(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.set(id, { fn, ms, next: this.t + ms });
    return id;
  }

  clearInterval(handle: unknown): void {
    this.timers.delete(handle as number);
  }

  /** Moves time forward by `ms`, firing due intervals in order. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const due = [...this.timers.values()].filter((x) => x.next <= end).sort((a, b) => a.next - b.next)[0];
      if (!due) break;
      this.t = due.next;
      due.next += due.ms;
      due.fn();
    }
    this.t = end;
  }
}

export type FakeCall = { method: 'assign' | 'abort' | 'runTask'; workerId: string; arg: unknown };

/** A WorkerClient stand-in: records calls; `fail` decides per call whether it throws. */
export function fakeClientFactory(calls: FakeCall[], fail: (c: FakeCall) => RpcError | undefined = () => undefined) {
  return (workerId: string): WorkerClient => {
    const record = async (method: FakeCall['method'], arg: unknown) => {
      const c = { method, workerId, arg };
      calls.push(c);
      const err = fail(c);
      if (err) throw err;
    };
    return {
      workerId,
      address: `addr-${workerId}`,
      label: `worker ${workerId}`,
      assign: (a: GroupAssignment) => record('assign', a),
      abort: (jobId: string, generation: number, reason: string) => record('abort', { jobId, generation, reason }),
      runTask: async (req: { jobId: string; generation: number; type: string; config: unknown }): Promise<TaskOutput> => {
        await record('runTask', req);
        return { result: { workerId, config: req.config }, tensors: [] };
      },
      close: () => {},
    } as unknown as WorkerClient;
  };
}
