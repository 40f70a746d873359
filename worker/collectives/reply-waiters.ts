// The pieces of one Peer.Stream call waiting for their DeliverReply: sequence numbers, one outcome
// per piece, and failing every waiting piece when the call ends. Shared by the calls that frame the
// stream themselves (RawPeerStream, NativePeerStream).
import * as grpc from '@grpc/grpc-js';
import { decodeDeliverReply } from './peer-wire.js';
import type { PieceCallback, PieceStatus } from './peer-stream.js';

export class ReplyWaiters {
  /** The call's final status, once it has ended. */
  ended: PieceStatus | undefined;
  private readonly waiting = new Map<number, PieceCallback>();
  private nextSeq = 1;

  /**
   * The seq of a new piece whose outcome goes to `cb`; undefined when the call has ended (then `cb`
   * gets the call's status, asynchronously).
   */
  add(cb: PieceCallback): number | undefined {
    const ended = this.ended;
    if (ended !== undefined) {
      queueMicrotask(() => cb(ended));
      return undefined;
    }
    const seq = this.nextSeq++;
    this.waiting.set(seq, cb);
    return seq;
  }

  /** Stop waiting for `seq` (the piece may already be on the wire; only its reply is ignored). */
  cancel(seq: number): void {
    this.waiting.delete(seq);
  }

  /** One DeliverReply body: its piece's callback. Returns the status the call must end with when it cannot be parsed. */
  reply(body: Uint8Array): PieceStatus | undefined {
    let r;
    try {
      r = decodeDeliverReply(body);
    } catch (err) {
      return { code: grpc.status.INTERNAL, details: `could not parse DeliverReply: ${(err as Error).message}` };
    }
    const cb = this.waiting.get(r.seq);
    if (cb === undefined) return undefined; // cancelled
    this.waiting.delete(r.seq);
    cb(r.code === grpc.status.OK ? null : { code: r.code, details: r.details });
    return undefined;
  }

  /** The call is over: every waiting piece fails with `s`. False when it had already ended. */
  end(s: PieceStatus): boolean {
    if (this.ended !== undefined) return false;
    this.ended = s;
    const cbs = [...this.waiting.values()];
    this.waiting.clear();
    for (const cb of cbs) cb(s);
    return true;
  }
}

/** The status of a response's trailers (`grpc-status`, `grpc-message`), undefined when they carry none. */
export function trailerStatus(headers: Map<string, string>): PieceStatus | undefined {
  const raw = headers.get('grpc-status');
  if (raw === undefined) return undefined;
  const code = Number(raw);
  let details = headers.get('grpc-message') ?? '';
  try {
    details = decodeURIComponent(details);
  } catch {
    // keep it as sent
  }
  return { code: Number.isInteger(code) ? code : grpc.status.UNKNOWN, details };
}
