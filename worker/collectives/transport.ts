// What the collective algorithms (all-gather.ts, all-reduce.ts) need from the communicator:
// point-to-point sends and receives that belong to one op (OpScope) and fail with it.
import type { CollectiveTag } from './communicator.js';
import type { OpScope } from './op-scope.js';

export interface ScopedTransport {
  readonly rank: number;
  readonly world: number;
  /** Send `data` to `to` as message (tag.step, tag.layer, `op`). */
  send(scope: OpScope, tag: CollectiveTag, op: string, to: number, data: Uint8Array): Promise<void>;
  /** Receive message (tag.step, tag.layer, `op`) from `from`; `expectedBytes` is checked when given. */
  recv(scope: OpScope, tag: CollectiveTag, op: string, from: number, expectedBytes?: number): Promise<Uint8Array>;
}

/** The wire op of an internal phase of a collective: the caller's op, '|', the phase. */
export function wireOp(tag: CollectiveTag, phase: string): string {
  return `${tag.op}|${phase}`;
}
