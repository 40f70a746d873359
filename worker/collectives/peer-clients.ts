// Outgoing side: one gRPC channel per peer address, opened lazily and reused across groups, and on
// it one long-lived Peer.Stream call that carries the pieces (peer-stream.ts). Unary Deliver is
// used when streams are off, and for a peer that does not serve Stream.
import * as grpc from '@grpc/grpc-js';
import { protos } from '../../proto/load.js';
import type { PeerClient } from '../../proto/generated/lasp/v1/Peer.js';
import type { PeerMessage } from '../../proto/generated/lasp/v1/PeerMessage.js';
import { PeerStream, type PieceCallback, type PieceStatus } from './peer-stream.js';
import { H2PeerStream, splitAddress } from './h2-peer-stream.js';
import { SwitchingPeerStream } from './raw-peer-stream.js';
import { NativePeerStream, type PieceOrigin } from './native-peer-stream.js';

/**
 * Channel options of the peer clients. Retries are off (a piece is never re-sent behind our back:
 * a duplicate would be refused) and messages are never compressed (float32 data does not compress).
 */
export const PEER_CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.enable_retries': 0,
  'grpc.default_compression_algorithm': 0,
  'grpc.max_send_message_length': -1,
  'grpc.max_receive_message_length': -1,
  // Receive window of the channel's connection and streams (replies only: pieces flow the other way,
  // and their window is the server's, see session-tuning.ts).
  'grpc-node.flow_control_window': 16 * 1024 * 1024,
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 1000,
};

/**
 * Which implementation carries the Stream call: 'native' (default: http2 until the peer announces
 * its listener, then HTTP/2 connections run by the addon's threads; native-peer-stream.ts,
 * native-peer-server.ts; plaintext only, with TLS it stays on http2), 'http2' (peer-wire.ts framing
 * on node:http2), 'grpc-js', or 'raw' (as 'native', with our own HTTP/2 framing in JavaScript on a
 * plain socket; raw-peer-stream.ts, raw-peer-server.ts).
 */
export type StreamTransport = 'http2' | 'grpc-js' | 'raw' | 'native';

/**
 * Whether `t` moves a call to the listener a peer announces ('raw', 'native'); plaintext only, so
 * with TLS such a transport stays on http2.
 */
export function movesToAnnouncedListener(t: StreamTransport, tls: boolean): boolean {
  return (t === 'raw' || t === 'native') && !tls;
}

/** The default stream transport (docs/collectives.md: 1.6–2× the AllGather rate of 'http2' at 1–16 MiB). */
export const DEFAULT_STREAM_TRANSPORT: StreamTransport = 'native';

/** The outgoing Stream call to one peer (PeerStream over grpc-js, or H2PeerStream over node:http2). */
interface PieceStream {
  send(msg: PeerMessage, cb: PieceCallback): () => void;
  close(): void;
}

function num(v: number | string | { toString(): string } | undefined): number {
  return v === undefined ? 0 : Number(v);
}

/** The grpc-js PeerMessage as the fast path's plain record (numbers, a byte view). */
function wireOf(msg: PeerMessage) {
  const d = msg.data;
  const data = d === undefined ? new Uint8Array(0) : typeof d === 'string' ? Buffer.from(d, 'base64') : d;
  return {
    jobId: msg.jobId ?? '',
    generation: num(msg.generation),
    fromRank: msg.fromRank ?? 0,
    step: num(msg.step),
    layer: msg.layer ?? 0,
    op: msg.op ?? '',
    piece: msg.piece ?? 0,
    pieces: msg.pieces ?? 0,
    totalBytes: num(msg.totalBytes),
    offset: num(msg.offset),
    data,
  };
}

export class PeerClients {
  private readonly clients = new Map<string, PeerClient>();
  private readonly streams = new Map<string, PieceStream>();
  /** Addresses whose server answered Stream with UNIMPLEMENTED: unary Deliver only. */
  private readonly unaryOnly = new Set<string>();
  private readonly metadata: grpc.Metadata;

  /**
   * @param token cluster token sent as `authorization: Bearer <token>` on every call (none when undefined)
   * @param channelOptions options of every channel (default PEER_CHANNEL_OPTIONS)
   * @param useStreams send pieces on one long-lived Stream call per peer (default) instead of one Deliver call each
   * @param streamTransport what carries the Stream call (see StreamTransport)
   * @param tls TLS material of the 'http2' Stream calls (default none: plaintext); grpc-js channels take theirs from channelOptions
   * @param onLateFailure 'native': a piece to `address` that completed when written failed after all
   *   (NativePeerStream.send); default none: every piece waits for its reply
   */
  constructor(
    private readonly token: string | undefined,
    private readonly channelOptions: grpc.ChannelOptions = PEER_CHANNEL_OPTIONS,
    private readonly useStreams = true,
    private readonly streamTransport: StreamTransport = 'http2',
    private readonly tls?: { cert: Buffer; key: Buffer; ca?: Buffer },
    private readonly onLateFailure?: (address: string, piece: PieceOrigin, status: PieceStatus) => void,
  ) {
    this.metadata = new grpc.Metadata();
    if (token !== undefined) this.metadata.set('authorization', `Bearer ${token}`);
  }

  /** The client for `address` (host:port), created on first use. */
  get(address: string): PeerClient {
    let c = this.clients.get(address);
    if (c === undefined) {
      const Peer = protos().peer.lasp.v1.Peer;
      c = new Peer(address, grpc.credentials.createInsecure(), this.channelOptions);
      this.clients.set(address, c);
    }
    return c;
  }

  /** Metadata of every call (a fresh copy: gRPC may modify it). */
  callMetadata(): grpc.Metadata {
    return this.metadata.clone();
  }

  /**
   * Send one piece to `address`; `cb` gets its outcome (null: accepted) exactly once unless the
   * returned cancel function is called first. `deadline` (ms since the epoch) bounds a unary call;
   * on the stream the op's own deadline (OpScope) cancels the wait.
   */
  deliver(address: string, msg: PeerMessage, deadline: number, cb: PieceCallback): () => void {
    if (!this.useStreams || this.unaryOnly.has(address)) return this.deliverUnary(address, msg, deadline, cb);
    let stream = this.streams.get(address);
    if (stream === undefined) {
      stream = this.openStream(address);
      this.streams.set(address, stream);
    }
    let cancelUnary: (() => void) | undefined;
    const cancelStream = stream.send(msg, (err) => {
      // A peer without Stream refused the call before reading the piece: send it as a unary call.
      if (err?.code === grpc.status.UNIMPLEMENTED && this.unaryOnly.has(address))
        cancelUnary = this.deliverUnary(address, msg, deadline, cb);
      else cb(err);
    });
    return () => {
      cancelStream();
      cancelUnary?.();
    };
  }

  private openStream(address: string): PieceStream {
    const onUnimplemented = () => this.unaryOnly.add(address);
    if (this.streamTransport === 'grpc-js') return new PeerStream(this.get(address), () => this.callMetadata(), onUnimplemented);
    const authorization = this.token === undefined ? {} : { authorization: `Bearer ${this.token}` };
    const h2Options = {
      ...authorization,
      ...(this.tls === undefined ? {} : { tls: { cert: this.tls.cert, key: this.tls.key, ...(this.tls.ca ? { ca: this.tls.ca } : {}) } }),
      onUnimplemented,
    };
    if (movesToAnnouncedListener(this.streamTransport, this.tls !== undefined)) {
      const s = new SwitchingPeerStream(
        splitAddress(address).host,
        (onResponse) => new H2PeerStream(address, { ...h2Options, onResponse }),
        authorization,
        this.streamTransport === 'native'
          ? (h, p, o) => {
              const late = this.onLateFailure;
              return new NativePeerStream(h, p, o, late && ((piece, s) => late(address, piece, s)));
            }
          : undefined,
      );
      return { send: (msg, cb) => s.send(wireOf(msg), cb), close: () => s.close() };
    }
    const h2 = new H2PeerStream(address, h2Options);
    return { send: (msg, cb) => h2.send(wireOf(msg), cb), close: () => h2.close() };
  }

  private deliverUnary(address: string, msg: PeerMessage, deadline: number, cb: PieceCallback): () => void {
    const call = this.get(address).Deliver(msg, this.callMetadata(), { deadline: new Date(deadline) }, (err) =>
      cb(err ? { code: err.code, details: err.details } : null),
    );
    return () => call.cancel();
  }

  close(): void {
    for (const s of this.streams.values()) s.close();
    this.streams.clear();
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
