// The Communicator of one group generation over gRPC: pieces go out as unary Deliver calls to the
// peers (send-message.ts) and come in through the PeerEndpoint into this group's Mailbox.
import { allGather } from './all-gather.js';
import { allReduceSum } from './all-reduce.js';
import type { CollectiveTag, CommStats, Communicator, GroupAssignment } from './communicator.js';
import { describeKey, type Mailbox } from './mailbox.js';
import { countCollectiveBytes, timeCollectiveOp } from './op-metrics.js';
import { OpScope } from './op-scope.js';
import type { PeerClients } from './peer-clients.js';
import { sendMessage } from './send-message.js';
import { wireOp, type ScopedTransport } from './transport.js';

/** Tuning of the collectives (resolved: every field set). */
export interface CollectiveOptions {
  /** Largest piece of a message in bytes. Default 1 MiB. */
  pieceBytes: number;
  /** Pieces of one message in flight at once. Default 4. */
  maxInFlight: number;
  /** Deadline of every collective op in ms. Default 30000. */
  timeoutMs: number;
  /** Largest message sent or accepted, in bytes. Default 1 GiB. */
  maxMessageBytes: number;
  /** AllGather blocks up to this size go directly to every peer, larger ones around the ring. Default 256 KiB. */
  gatherDirectMaxBytes: number;
  /** AllReduce buffers up to this size use AllGather + local sum, larger ones the ring. Default 64 KiB. */
  reduceDirectMaxBytes: number;
}

export const DEFAULT_COLLECTIVE_OPTIONS: CollectiveOptions = {
  pieceBytes: 1 << 20,
  maxInFlight: 4,
  timeoutMs: 30_000,
  maxMessageBytes: 1 << 30,
  gatherDirectMaxBytes: 256 << 10,
  reduceDirectMaxBytes: 64 << 10,
};

function describeTag(tag: CollectiveTag): string {
  return `step=${tag.step} layer=${tag.layer} op=${JSON.stringify(tag.op)}`;
}

function checkTag(tag: CollectiveTag): void {
  if (!Number.isSafeInteger(tag.step) || tag.step < 0) throw new RangeError(`tag.step must be a non-negative integer, got ${tag.step}`);
  if (!Number.isInteger(tag.layer) || tag.layer < 0 || tag.layer > 0xffffffff) {
    throw new RangeError(`tag.layer must be a uint32, got ${tag.layer}`);
  }
  if (typeof tag.op !== 'string' || tag.op.length === 0)
    throw new RangeError(`tag.op must be a non-empty string, got ${JSON.stringify(tag.op)}`);
}

export class GrpcCommunicator implements Communicator {
  readonly jobId: string;
  readonly generation: number;
  readonly rank: number;
  readonly world: number;
  private readonly peers: string[];
  private readonly active = new Set<OpScope>();
  private abortReason: string | undefined;
  private counters: CommStats = { bytesSent: 0, bytesReceived: 0, messagesSent: 0 };
  private readonly transport: ScopedTransport;

  constructor(
    a: GroupAssignment,
    private readonly mailbox: Mailbox,
    private readonly clients: PeerClients,
    private readonly opts: CollectiveOptions,
  ) {
    this.jobId = a.jobId;
    this.generation = a.generation;
    this.rank = a.rank;
    this.world = a.world;
    this.peers = [...a.peers];
    this.transport = {
      rank: this.rank,
      world: this.world,
      send: (...args) => this.sendPart(...args),
      recv: (...args) => this.recvPart(...args),
    };
  }

  get stats(): CommStats {
    return { ...this.counters };
  }

  resetStats(): void {
    this.counters = { bytesSent: 0, bytesReceived: 0, messagesSent: 0 };
  }

  /** Called by the endpoint for every accepted piece. */
  countReceived(bytes: number): void {
    this.counters.bytesReceived += bytes;
    countCollectiveBytes('received', bytes);
  }

  get aborted(): string | undefined {
    return this.abortReason;
  }

  abort(reason: string): void {
    if (this.abortReason !== undefined) return;
    this.abortReason = reason;
    const err = new Error(`group ${this.jobId} generation ${this.generation} aborted: ${reason}`);
    for (const s of [...this.active]) s.fail(err);
    this.mailbox.close(err.message);
  }

  allGather(tag: CollectiveTag, data: Uint8Array): Promise<Uint8Array[]> {
    return this.runOp('allGather', tag, (scope) =>
      allGather(this.transport, scope, tag, data, { directMaxBytes: this.opts.gatherDirectMaxBytes }),
    );
  }

  allReduceSum(tag: CollectiveTag, data: Float32Array): Promise<void> {
    return this.runOp('allReduceSum', tag, (scope) =>
      allReduceSum(this.transport, scope, tag, data, {
        directMaxBytes: this.opts.reduceDirectMaxBytes,
        gatherDirectMaxBytes: this.opts.gatherDirectMaxBytes,
      }),
    );
  }

  send(tag: CollectiveTag, to: number, data: Uint8Array): Promise<void> {
    return this.runOp(`send to rank ${to}`, tag, (scope) => {
      this.checkPeer('to', to);
      return this.sendPart(scope, tag, wireOp(tag, 'p2p'), to, data);
    });
  }

  recv(tag: CollectiveTag, from: number): Promise<Uint8Array> {
    return this.runOp(`recv from rank ${from}`, tag, (scope) => {
      this.checkPeer('from', from);
      return this.recvPart(scope, tag, wireOp(tag, 'p2p'), from);
    });
  }

  private checkPeer(name: string, r: number): void {
    if (!Number.isInteger(r) || r < 0 || r >= this.world || r === this.rank) {
      throw new RangeError(`${name} must be a rank in [0, ${this.world}) other than own rank ${this.rank}, got ${r}`);
    }
  }

  private async runOp<T>(what: string, tag: CollectiveTag, body: (scope: OpScope) => Promise<T>): Promise<T> {
    checkTag(tag);
    if (this.abortReason !== undefined) {
      throw new Error(`${what} ${describeTag(tag)}: group ${this.jobId} generation ${this.generation} aborted: ${this.abortReason}`);
    }
    const scope = new OpScope(`${what} ${describeTag(tag)} (rank ${this.rank} of ${this.world})`, this.opts.timeoutMs, () =>
      this.active.delete(scope),
    );
    this.active.add(scope);
    return timeCollectiveOp(
      what.split(' ')[0]!,
      performance.now(),
      scope.run(() => body(scope)),
    );
  }

  private sendPart(scope: OpScope, tag: CollectiveTag, op: string, to: number, data: Uint8Array): Promise<void> {
    if (data.byteLength > this.opts.maxMessageBytes) {
      return Promise.reject(
        new RangeError(`message to rank ${to} has ${data.byteLength} bytes, more than maxMessageBytes=${this.opts.maxMessageBytes}`),
      );
    }
    const address = this.peers[to]!;
    const { promise, cancel } = sendMessage(
      { clients: this.clients, address, toRank: to },
      { jobId: this.jobId, generation: this.generation, fromRank: this.rank, step: tag.step, layer: tag.layer, op },
      data,
      { pieceBytes: this.opts.pieceBytes, maxInFlight: this.opts.maxInFlight, deadline: scope.deadline },
    );
    const counted = promise.then(() => {
      this.counters.bytesSent += data.byteLength;
      this.counters.messagesSent++;
      countCollectiveBytes('sent', data.byteLength);
    });
    return scope.track(`send to rank ${to} (op ${JSON.stringify(op)})`, counted, cancel);
  }

  private recvPart(scope: OpScope, tag: CollectiveTag, op: string, from: number, expectedBytes?: number): Promise<Uint8Array> {
    const key = { step: tag.step, layer: tag.layer, op, from };
    const { promise, cancel } = this.mailbox.expect(key, expectedBytes);
    return scope.track(`recv ${describeKey(key)}`, promise, cancel);
  }
}
