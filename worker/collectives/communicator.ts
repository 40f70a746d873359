// The collective operations a rank of a group can call. Implemented over gRPC between peers
// (grpc-communicator.ts); the distributed layers depend only on this interface.

/** Identifies one collective call; every message of the call carries it with job id, generation and rank. */
export interface CollectiveTag {
  /** Training step (or benchmark iteration). */
  step: number;
  /** Layer index. */
  layer: number;
  /** Phase inside the layer, e.g. "fwd.summary", "bwd.stategrad", "grad.allreduce". */
  op: string;
}

/** One rank's membership in a group (the rendezvous result). */
export interface GroupAssignment {
  jobId: string;
  /** Incremented by the coordinator each time the group is (re)formed; older generations are refused. */
  generation: number;
  rank: number;
  world: number;
  /** host:port of every rank's gRPC server, indexed by rank. */
  peers: string[];
}

export interface CommStats {
  bytesSent: number;
  bytesReceived: number;
  messagesSent: number;
}

export interface Communicator {
  readonly jobId: string;
  readonly generation: number;
  readonly rank: number;
  readonly world: number;
  /** Every rank's `data`, indexed by rank (own data included, not copied over the network). */
  allGather(tag: CollectiveTag, data: Uint8Array): Promise<Uint8Array[]>;
  /** Elementwise sum over ranks, in place (ring reduce-scatter + all-gather for large buffers). */
  allReduceSum(tag: CollectiveTag, data: Float32Array): Promise<void>;
  /** Point-to-point: resolves when the peer has accepted the message. */
  send(tag: CollectiveTag, to: number, data: Uint8Array): Promise<void>;
  /** Point-to-point: resolves with the message `from` sent with the same tag. */
  recv(tag: CollectiveTag, from: number): Promise<Uint8Array>;
  /** Counters since the group was joined (resettable for benchmarks). */
  readonly stats: CommStats;
  resetStats(): void;
  /** Fails every pending and future operation of this group with `reason`. */
  abort(reason: string): void;
}
