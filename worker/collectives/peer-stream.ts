// The fast path of the outgoing side: one long-lived Peer.Stream call per peer address carries
// every piece sent to that peer. A piece costs one gRPC message on an open HTTP/2 stream — no new
// stream, no headers, no per-call setup — and is answered, in order, by a DeliverReply with the
// status the unary Deliver would have returned. When the call itself ends (peer down, connection
// lost, UNAUTHENTICATED at start, closed), every piece still waiting for its reply fails with the
// call's status, and the next piece opens a new call.
import * as grpc from '@grpc/grpc-js';
import type { PeerClient } from '../../proto/generated/lasp/v1/Peer.js';
import type { PeerMessage } from '../../proto/generated/lasp/v1/PeerMessage.js';
import type { DeliverReply__Output } from '../../proto/generated/lasp/v1/DeliverReply.js';

/** The outcome of one piece: null when accepted, else a gRPC status. */
export interface PieceStatus {
  code: grpc.status;
  details: string;
}

export type PieceCallback = (err: PieceStatus | null) => void;

export class PeerStream {
  private call: grpc.ClientDuplexStream<PeerMessage, DeliverReply__Output> | undefined;
  private nextSeq = 1;
  private readonly waiting = new Map<number, PieceCallback>();

  /**
   * @param client the peer's client (its channel)
   * @param metadata returns the metadata of a new call (the token)
   * @param onUnimplemented called when the peer does not serve Stream (an older worker)
   */
  constructor(
    private readonly client: PeerClient,
    private readonly metadata: () => grpc.Metadata,
    private readonly onUnimplemented: () => void,
  ) {}

  /** Send one piece; `cb` gets its outcome exactly once unless the returned cancel is called first. */
  send(msg: PeerMessage, cb: PieceCallback): () => void {
    const call = this.open();
    const seq = this.nextSeq++;
    this.waiting.set(seq, cb);
    call.write({ ...msg, seq });
    return () => {
      // The piece may already be on the wire; only its reply is ignored.
      this.waiting.delete(seq);
    };
  }

  /** End the call (pieces still waiting fail with CANCELLED). */
  close(): void {
    const call = this.call;
    if (call === undefined) return;
    this.detach(call, { code: grpc.status.CANCELLED, details: 'peer channel closed' });
    call.end();
  }

  private open(): grpc.ClientDuplexStream<PeerMessage, DeliverReply__Output> {
    if (this.call !== undefined) return this.call;
    const call = this.client.Stream(this.metadata());
    this.call = call;
    call.on('data', (r: DeliverReply__Output) => {
      const cb = this.waiting.get(r.seq);
      if (cb === undefined) return; // cancelled
      this.waiting.delete(r.seq);
      cb(r.code === grpc.status.OK ? null : { code: r.code, details: r.details });
    });
    call.on('error', (err: grpc.ServiceError) => {
      if (err.code === grpc.status.UNIMPLEMENTED) this.onUnimplemented();
      this.detach(call, { code: err.code, details: err.details });
    });
    call.on('status', (s: grpc.StatusObject) => {
      // OK: the peer ended the call (it is shutting down); pieces without a reply were not accepted.
      if (s.code === grpc.status.OK) this.detach(call, { code: grpc.status.UNAVAILABLE, details: 'peer ended the stream' });
    });
    return call;
  }

  /** Forget `call` (if still current) and fail every piece waiting for a reply on it. */
  private detach(call: grpc.ClientDuplexStream<PeerMessage, DeliverReply__Output>, status: PieceStatus): void {
    if (this.call !== call) return;
    this.call = undefined;
    const cbs = [...this.waiting.values()];
    this.waiting.clear();
    for (const cb of cbs) cb(status);
  }
}
