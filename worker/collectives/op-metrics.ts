// Process-wide Prometheus metrics of the collectives (every group generation of this worker):
// bytes sent and received, and the latency of every op by kind and outcome. GrpcCommunicator
// records them where ops finish and pieces arrive; `lasp worker --http-port` serves the registry
// at /metrics (worker/http-probes.ts).
import { Counter, Histogram, Registry } from 'prom-client';

export const collectiveRegistry = new Registry();

const bytes = new Counter({
  name: 'lasp_worker_collective_bytes_total',
  help: 'Collective payload bytes of this worker, by direction (sent: messages delivered to peers; received: pieces accepted from peers)',
  labelNames: ['direction'],
  registers: [collectiveRegistry],
});

const latency = new Histogram({
  name: 'lasp_worker_collective_op_seconds',
  help: 'Duration of collective ops (allGather, allReduceSum, send, recv), from call to completion, by outcome (ok, error)',
  labelNames: ['op', 'outcome'],
  buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  registers: [collectiveRegistry],
});

bytes.inc({ direction: 'sent' }, 0);
bytes.inc({ direction: 'received' }, 0);

export function countCollectiveBytes(direction: 'sent' | 'received', n: number): void {
  bytes.inc({ direction }, n);
}

/** Observes one op that started at `t0` (performance.now()) when `done` settles; returns `done`. */
export function timeCollectiveOp<T>(op: string, t0: number, done: Promise<T>): Promise<T> {
  done.then(
    () => latency.observe({ op, outcome: 'ok' }, (performance.now() - t0) / 1000),
    () => latency.observe({ op, outcome: 'error' }, (performance.now() - t0) / 1000),
  );
  return done;
}
