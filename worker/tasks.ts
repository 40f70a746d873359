// The registry of tasks a worker can run (RunTask dispatches here by type). Other modules add
// their tasks with registerTask, e.g. worker/sp registers "sp-layer".
import type { Communicator, GroupAssignment } from './collectives/communicator.js';
import type { NamedTensor } from './tensor-bytes.js';
import type { KernelSet } from '../native/kernel-set.js';

export interface TaskContext {
  /** The communicator of the current group. */
  comm: Communicator;
  assignment: GroupAssignment;
  /** The request's config_json, parsed (null when empty). The task validates it. */
  config: unknown;
  /** Aborted when the generation is aborted, the worker re-assigned or shut down, or the caller gives up. */
  signal: AbortSignal;
  /** The kernels of this worker's device (`lasp worker --device`). */
  kernels: KernelSet;
}

export interface TaskResult {
  /** Sent back as JSON. */
  result: unknown;
  /** Sent back as little-endian float32 bytes. */
  tensors?: NamedTensor[];
}

export type TaskHandler = (ctx: TaskContext) => Promise<TaskResult>;

const tasks = new Map<string, TaskHandler>();

/** Adds (or replaces) the handler of `type`. */
export function registerTask(type: string, handler: TaskHandler): void {
  if (!type) throw new Error('registerTask: type must not be empty');
  tasks.set(type, handler);
}

export function getTask(type: string): TaskHandler | undefined {
  return tasks.get(type);
}

export function taskTypes(): string[] {
  return [...tasks.keys()].sort();
}

/**
 * "echo": returns its config with the rank's place in the group. With `config.tensor` (an array of
 * numbers) it also returns tensor "echo" = tensor + rank; with `config.failOnRank` equal to the
 * rank it throws; with `config.sleepMs` it waits that long first (abortable; only on rank
 * `config.sleepOnRank` when that is given); with `config.allGather` the ranks then AllGather one
 * float each (a collective whose deadline a sleeping rank can run out).
 */
registerTask('echo', async ({ comm, assignment, config, signal }) => {
  const c = (config ?? {}) as { tensor?: unknown; failOnRank?: unknown; sleepMs?: unknown; sleepOnRank?: unknown; allGather?: unknown };
  const sleeps = c.sleepOnRank === undefined || c.sleepOnRank === assignment.rank;
  if (typeof c.sleepMs === 'number' && c.sleepMs > 0 && sleeps) await sleep(c.sleepMs, signal);
  if (c.failOnRank === assignment.rank) throw new Error(`echo: asked to fail on rank ${assignment.rank}`);
  if (c.allGather === true) await comm.allGather({ step: 0, layer: 0, op: 'echo' }, new Uint8Array(4).fill(assignment.rank));
  const tensors: NamedTensor[] = [];
  if (c.tensor !== undefined) {
    if (!Array.isArray(c.tensor) || !c.tensor.every((x) => typeof x === 'number'))
      throw new Error('echo: config.tensor must be an array of numbers');
    const data = Float32Array.from(c.tensor as number[], (x) => x + assignment.rank);
    tensors.push({ name: 'echo', shape: [data.length], data });
  }
  const { jobId, generation, rank, world } = assignment;
  return { result: { jobId, generation, rank, world, config: config ?? null }, tensors };
});

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new Error(`aborted: ${String(signal.reason)}`));
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(new Error(`aborted: ${String(signal.reason)}`));
    });
  });
}
