// Messages between a collectives test (parent) and its worker processes (collectives-worker.ts), over IPC.
import type { CollectiveTag, CommStats, GroupAssignment } from '../../worker/collectives/communicator.js';
import type { PeerEndpointOptions } from '../../worker/peer-endpoint.js';

export type Step =
  /** allGather of rankBytes(seed, rank, sizes[rank]). */
  | { kind: 'allGather'; tag: CollectiveTag; sizes: number[]; seed: number }
  /** allReduceSum of rankFloats(seed, rank, n). */
  | { kind: 'allReduce'; tag: CollectiveTag; n: number; seed: number }
  /** send rankBytes(seed, rank, size) to `to`. */
  | { kind: 'send'; tag: CollectiveTag; to: number; size: number; seed: number }
  | { kind: 'recv'; tag: CollectiveTag; from: number }
  /** Run the steps concurrently. */
  | { kind: 'parallel'; steps: Step[] }
  /** Run `step` `count` times (tag.step incremented each time). */
  | { kind: 'repeat'; step: Step; count: number };

export type StepResult =
  | { kind: 'allGather'; hashes: string[]; lengths: number[] }
  | { kind: 'allReduce'; hash: string; head: number[] }
  | { kind: 'send' }
  | { kind: 'recv'; hash: string; length: number }
  | { kind: 'parallel'; results: StepResult[] }
  | { kind: 'repeat'; count: number };

export type ToWorker =
  | { type: 'join'; assignment: GroupAssignment }
  | { type: 'run'; id: number; steps: Step[] }
  | { type: 'abort'; jobId: string; generation: number; reason: string }
  | { type: 'exit' };

export type FromWorker =
  | { type: 'ready'; port: number }
  | { type: 'joined' }
  | { type: 'result'; id: number; ok: true; results: StepResult[]; elapsedMs: number; stats: CommStats }
  | { type: 'result'; id: number; ok: false; error: string; elapsedMs: number };

/** Passed to the worker in the LASP_COLLECTIVES_TEST_OPTS environment variable (JSON). */
export type WorkerOptions = PeerEndpointOptions;
