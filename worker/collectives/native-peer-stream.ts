// The outgoing side of the 'native' peer transport: the Peer.Stream call on a connection of the
// addon (native/h2-native.ts), whose threads do the socket work: a piece is handed over as the small
// header buffer of encodePeerMessage plus the caller's bytes (referenced, not copied, until written),
// framed and written by the addon's writer thread within the peer's windows and frame size; replies
// come back as one event each. Same protocol and behaviour as RawPeerStream (raw-peer-stream.ts),
// which SwitchingPeerStream uses in its place for streamTransport 'raw'.
import * as grpc from '@grpc/grpc-js';
import { debuglog } from 'node:util';
import { H2NativeClient, type H2Event } from '../../native/h2-native.js';
import { encodePeerMessage, type WirePeerMessage } from './peer-wire.js';
import { joinAddress } from './h2-peer-stream.js';
import { ReplyWaiters, trailerStatus } from './reply-waiters.js';
import type { PieceCallback, PieceStatus } from './peer-stream.js';
import { streamRequestFields, type RawPeerStreamOptions } from './raw-peer-stream.js';

const log = debuglog('lasp-raw');
const STREAM_ID = 1;
/** HTTP/2 error code CANCEL. */
const CANCEL = 8;
/** Receive window of the client side (replies only), given back in batches. */
const CLIENT_WINDOW = 1 << 20;
/** Largest reply accepted (a DeliverReply is a few bytes plus its details text). */
const MAX_REPLY_BYTES = 1 << 20;
/** How long the peer's listener may take to answer (its SETTINGS) before the call fails. */
const ESTABLISH_TIMEOUT_MS = 5000;

/** Process-wide counters (tests and diagnostics). */
export const nativeClientCounters = { connections: 0, pieces: 0, completedWhenWritten: 0, lateFailures: 0 };

/** Which message a piece belonged to (for a late failure). */
export type PieceOrigin = Pick<WirePeerMessage, 'jobId' | 'generation' | 'fromRank' | 'step' | 'layer' | 'op' | 'piece' | 'pieces'>;

/**
 * A piece that completed when written (see NativePeerStream.send) was refused after all, or its call
 * ended before the peer answered it: the receiver may not have it.
 */
export type LateFailure = (piece: PieceOrigin, status: PieceStatus) => void;

/** One Peer.Stream call on its own native connection; once it has ended it stays ended (`ended`). */
export class NativePeerStream {
  /** Whether the peer has answered on this connection (its SETTINGS arrived). */
  established = false;
  private readonly client: H2NativeClient;
  private readonly waiters = new ReplyWaiters();
  /** The job and generation (`jobId/generation`) the peer last accepted a piece of. */
  private confirmed: string | undefined;

  /**
   * @param onLateFailure where a piece that completed when written learns that it failed after all
   *   (without it, every piece waits for its reply)
   */
  constructor(
    private readonly host: string,
    private readonly port: number,
    opts: RawPeerStreamOptions = {},
    private readonly onLateFailure?: LateFailure,
  ) {
    nativeClientCounters.connections++;
    this.client = new H2NativeClient(
      host,
      port,
      { maxMessageBytes: MAX_REPLY_BYTES, recvWindow: CLIENT_WINDOW, windowBatch: 256 << 10, establishMs: ESTABLISH_TIMEOUT_MS },
      (e) => this.onEvent(e),
    );
    const fields = streamRequestFields(this.where, 'lasp-peer-native/1', opts.authorization);
    this.client.request(STREAM_ID, fields);
  }

  /** The call's final status, once it has ended. */
  get ended(): PieceStatus | undefined {
    return this.waiters.ended;
  }

  private get where(): string {
    return joinAddress(this.host, this.port);
  }

  /**
   * Send one piece; `cb` gets its outcome exactly once unless the returned cancel is called first.
   *
   * The outcome is the peer's reply, except when the peer has already accepted a piece of the same
   * job and generation on this call and every byte of this one went into the socket at once: then
   * the piece completes right away (the caller's bytes are free, and the reply trip leaves the op's
   * critical path). The only refusal that asks for the same bytes again, FAILED_PRECONDITION (the
   * peer has not joined the generation yet), cannot come then; any other refusal, or the call ending
   * before the reply, goes to `onLateFailure` (the receiver's own op fails too: it lacks the piece).
   */
  send(msg: Omit<WirePeerMessage, 'seq'>, cb: PieceCallback): () => void {
    const key = `${msg.jobId}/${msg.generation}`;
    let completed = false;
    const seq = this.waiters.add((s) => {
      if (s === null) this.confirmed = key;
      if (!completed) {
        completed = true;
        cb(s);
      } else if (s !== null) {
        nativeClientCounters.lateFailures++;
        this.onLateFailure?.(msg, s);
      }
    });
    if (seq === undefined) return () => {};
    nativeClientCounters.pieces++;
    const [head, data] = encodePeerMessage({ ...msg, seq });
    // When the connection is already over, its 'closed' event (queued) fails this piece.
    const r = this.client.send(STREAM_ID, head!, data);
    if (r === 'written' && this.onLateFailure !== undefined && this.confirmed === key) {
      completed = true;
      nativeClientCounters.completedWhenWritten++;
      queueMicrotask(() => cb(null));
      return () => {};
    }
    return () => this.waiters.cancel(seq);
  }

  /** End the call and the connection (pieces still waiting fail with CANCELLED). */
  close(): void {
    if (this.ended === undefined) this.client.reset(STREAM_ID, CANCEL);
    this.end({ code: grpc.status.CANCELLED, details: 'peer channel closed' });
  }

  private onEvent(e: H2Event): void {
    if (this.ended !== undefined) return;
    switch (e.kind) {
      case 'established':
        this.established = true;
        return;
      case 'message': {
        const bad = this.waiters.reply(e.body);
        if (bad !== undefined) this.end(bad);
        return;
      }
      case 'headers': {
        const httpStatus = e.fields.get(':status');
        if (httpStatus !== undefined && httpStatus !== '200') {
          this.end({ code: grpc.status.UNKNOWN, details: `native peer answered HTTP status ${httpStatus}` });
          return;
        }
        const s = trailerStatus(e.fields);
        if (s !== undefined) {
          // OK: the peer ended the call (it is shutting down); pieces without a reply were not accepted.
          this.end(s.code === grpc.status.OK ? { code: grpc.status.UNAVAILABLE, details: 'peer ended the stream' } : s);
        } else if (e.endStream) this.end({ code: grpc.status.UNKNOWN, details: 'trailers without grpc-status' });
        return;
      }
      case 'stream-end':
        this.end({ code: grpc.status.UNKNOWN, details: 'native peer ended the stream without trailers' });
        return;
      case 'reset':
        this.end({ code: grpc.status.UNAVAILABLE, details: `native peer reset the stream (code ${e.code})` });
        return;
      case 'stream-error':
        this.end({ code: grpc.status.INTERNAL, details: `native peer connection to ${this.where}: ${e.reason}` });
        return;
      case 'closed':
        this.end({ code: grpc.status.UNAVAILABLE, details: `native peer connection to ${this.where}: ${e.reason}` });
        return;
    }
  }

  /** The call is over: fail every waiting piece with `s`, drop the connection. */
  private end(s: PieceStatus): void {
    if (this.ended !== undefined) return;
    log('native call to %s ended: %s (%d)', this.where, s.details, s.code);
    // After the queued frames (the reset of close()) had their chance: the writer stops at once.
    setImmediate(() => this.client.close());
    this.waiters.end(s);
  }
}
