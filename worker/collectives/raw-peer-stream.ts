// The outgoing side of the 'raw' peer transport: the Peer.Stream call made on a plain TCP socket
// with HTTP/2 framing written by hand (raw-h2.ts), to a peer's raw listener (raw-peer-server.ts).
// Same protocol and behaviour as H2PeerStream: every piece is answered, in order, by a DeliverReply
// with its seq; when the call ends (peer down, connection lost, UNAUTHENTICATED at start, closed),
// every piece still waiting fails with the call's status. A piece goes out as one DATA frame (split
// only when the peer's frame size or windows require it): the 9-byte frame header, the small
// header buffer of encodePeerMessage and the caller's bytes, corked together, never copied.
//
// SwitchingPeerStream is what PeerClients uses for streamTransport 'raw': it makes the call over
// node:http2 first (H2PeerStream) and moves to the raw socket when the response headers announce a
// raw port (`lasp-raw-port`); without one (an older or TLS peer, a grpc-js server) it stays on http2.
import * as grpc from '@grpc/grpc-js';
import net from 'node:net';
import type { IncomingHttpHeaders } from 'node:http2';
import { debuglog } from 'node:util';
import { encodePeerMessage, GrpcFrameReader, type WirePeerMessage } from './peer-wire.js';
import { ReplyWaiters, trailerStatus } from './reply-waiters.js';
import { PEER_STREAM_PATH } from './h2-peer-server.js';
import { joinAddress } from './h2-peer-stream.js';
import type { PieceCallback, PieceStatus } from './peer-stream.js';
import {
  DEFAULT_MAX_FRAME_SIZE,
  DEFAULT_WINDOW,
  encodeHeaders,
  ErrorCode,
  Flag,
  frame,
  FrameParser,
  frameHeader,
  FrameType,
  H2Error,
  headerBlock,
  HpackDecoder,
  MAX_WINDOW,
  parseSettings,
  parseWindowUpdate,
  PREFACE,
  rstStreamFrame,
  Setting,
  settingsFrame,
  takeBytes,
  windowUpdateFrame,
} from './raw-h2.js';

/** The response header of an http2 Stream call that announces the peer's raw listener. */
export const RAW_PORT_HEADER = 'lasp-raw-port';

/** Receive window of the client side (replies only). */
const CLIENT_WINDOW = 1 << 20;
const WINDOW_UPDATE_BATCH = 256 << 10;
/** Largest reply accepted (a DeliverReply is a few bytes plus its details text). */
const MAX_REPLY_BYTES = 1 << 20;
const MAX_CONTROL_FRAME = 64 << 10;
const STREAM_ID = 1;
/** How long the raw listener may take to answer (its SETTINGS) before the call fails and the peer stays on http2. */
const ESTABLISH_TIMEOUT_MS = 5000;

const log = debuglog('lasp-raw');

/** Process-wide counters (tests and diagnostics). */
export const rawClientCounters = { connections: 0, pieces: 0, switches: 0 };

export interface RawPeerStreamOptions {
  /** Value of the `authorization` header (the cluster token), when set. */
  authorization?: string;
}

/** The request headers of a Peer.Stream call on a connection of our own (raw or native). */
export function streamRequestFields(authority: string, userAgent: string, authorization: string | undefined): [string, string][] {
  const fields: [string, string][] = [
    [':method', 'POST'],
    [':scheme', 'http'],
    [':path', PEER_STREAM_PATH],
    [':authority', authority],
    ['content-type', 'application/grpc+proto'],
    ['te', 'trailers'],
    ['user-agent', userAgent],
  ];
  if (authorization !== undefined) fields.push(['authorization', authorization]);
  return fields;
}

/** One Peer.Stream call on its own connection; once it has ended it stays ended (`ended`). */
export class RawPeerStream {
  /** Whether the peer has answered on this connection (its SETTINGS arrived). */
  established = false;
  private readonly socket: net.Socket;
  private readonly waiters = new ReplyWaiters();
  private readonly out: Buffer[] = [];
  private outBytes = 0;
  private connSendWindow = DEFAULT_WINDOW;
  private streamSendWindow = DEFAULT_WINDOW;
  private peerInitialWindow = DEFAULT_WINDOW;
  private peerMaxFrame = DEFAULT_MAX_FRAME_SIZE;
  private connRecvWindow = CLIENT_WINDOW;
  private streamRecvWindow = CLIENT_WINDOW;
  private recvPending = 0;
  private dataLength = 0;
  private dataFlags = 0;
  private dataForUs = false;
  private readonly parser: FrameParser;
  private readonly hpack = new HpackDecoder();
  private readonly reader: GrpcFrameReader;
  private readonly establishTimer: NodeJS.Timeout;

  constructor(
    private readonly host: string,
    private readonly port: number,
    opts: RawPeerStreamOptions = {},
  ) {
    rawClientCounters.connections++;
    this.reader = new GrpcFrameReader(
      MAX_REPLY_BYTES,
      (body) => this.onReply(body),
      (err) => this.end({ code: grpc.status.INTERNAL, details: err.message }),
    );
    this.parser = new FrameParser(
      {
        frame: (t, f, id, p) => this.onFrame(t, f, id, p),
        dataBegin: (id, f, n) => this.onDataBegin(id, f, n),
        data: (c) => {
          if (this.dataForUs) this.reader.push(c);
        },
        dataEnd: () => this.onDataEnd(),
      },
      DEFAULT_MAX_FRAME_SIZE, // we never raise SETTINGS_MAX_FRAME_SIZE: replies are small
      MAX_CONTROL_FRAME,
    );
    this.establishTimer = setTimeout(() => {
      if (!this.established)
        this.end({
          code: grpc.status.UNAVAILABLE,
          details: `raw peer listener ${this.where} did not answer within ${ESTABLISH_TIMEOUT_MS} ms`,
        });
    }, ESTABLISH_TIMEOUT_MS);
    this.establishTimer.unref();
    const socket = net.connect({ host, port, noDelay: true });
    this.socket = socket;
    socket.on('error', (err) =>
      this.end({ code: grpc.status.UNAVAILABLE, details: `raw peer connection to ${this.where}: ${err.message}` }),
    );
    socket.on('close', () => this.end({ code: grpc.status.UNAVAILABLE, details: `raw peer connection to ${this.where} closed` }));
    socket.on('data', (chunk: Buffer) => this.onChunk(chunk));
    const fields = streamRequestFields(this.where, 'lasp-peer-raw/1', opts.authorization);
    socket.cork();
    socket.write(PREFACE);
    socket.write(
      settingsFrame([
        [Setting.ENABLE_PUSH, 0],
        [Setting.INITIAL_WINDOW_SIZE, CLIENT_WINDOW],
      ]),
    );
    socket.write(windowUpdateFrame(0, CLIENT_WINDOW - DEFAULT_WINDOW));
    socket.write(frame(FrameType.HEADERS, Flag.END_HEADERS, STREAM_ID, encodeHeaders(fields)));
    socket.uncork();
  }

  /** The call's final status, once it has ended. */
  get ended(): PieceStatus | undefined {
    return this.waiters.ended;
  }

  private get where(): string {
    return joinAddress(this.host, this.port);
  }

  /** Send one piece; `cb` gets its outcome exactly once unless the returned cancel is called first. */
  send(msg: Omit<WirePeerMessage, 'seq'>, cb: PieceCallback): () => void {
    const seq = this.waiters.add(cb);
    if (seq === undefined) return () => {};
    rawClientCounters.pieces++;
    for (const p of encodePeerMessage({ ...msg, seq })) {
      this.out.push(p);
      this.outBytes += p.length;
    }
    this.flush();
    return () => this.waiters.cancel(seq);
  }

  /** End the call and the connection (pieces still waiting fail with CANCELLED). */
  close(): void {
    if (this.ended === undefined) {
      this.socket.write(rstStreamFrame(STREAM_ID, ErrorCode.CANCEL));
      this.socket.end();
    }
    this.end({ code: grpc.status.CANCELLED, details: 'peer channel closed' });
  }

  private flush(): void {
    while (this.outBytes > 0 && this.ended === undefined) {
      const n = Math.min(this.outBytes, this.connSendWindow, this.streamSendWindow, this.peerMaxFrame);
      if (n <= 0) return;
      this.socket.cork();
      this.socket.write(frameHeader(n, FrameType.DATA, 0, STREAM_ID));
      for (const part of takeBytes(this.out, n)) this.socket.write(part);
      this.socket.uncork();
      this.outBytes -= n;
      this.connSendWindow -= n;
      this.streamSendWindow -= n;
    }
  }

  private onChunk(chunk: Buffer): void {
    if (this.ended !== undefined) return;
    try {
      this.parser.push(chunk);
      if (this.recvPending >= WINDOW_UPDATE_BATCH && this.ended === undefined) {
        this.socket.cork();
        this.socket.write(windowUpdateFrame(0, this.recvPending));
        this.socket.write(windowUpdateFrame(STREAM_ID, this.recvPending));
        this.socket.uncork();
        this.connRecvWindow += this.recvPending;
        this.streamRecvWindow += this.recvPending;
        this.recvPending = 0;
      }
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      this.end({ code: grpc.status.UNAVAILABLE, details: `raw peer connection to ${this.where}: ${msg}` });
    }
  }

  private onFrame(type: number, flags: number, id: number, payload: Buffer): void {
    switch (type) {
      case FrameType.SETTINGS: {
        if (id !== 0) throw new H2Error(ErrorCode.PROTOCOL_ERROR, 'SETTINGS on a stream');
        if (flags & Flag.ACK) return;
        this.established = true;
        clearTimeout(this.establishTimer);
        const s = parseSettings(payload);
        const iw = s.get(Setting.INITIAL_WINDOW_SIZE);
        if (iw !== undefined) {
          this.streamSendWindow += iw - this.peerInitialWindow;
          this.peerInitialWindow = iw;
        }
        this.peerMaxFrame = s.get(Setting.MAX_FRAME_SIZE) ?? this.peerMaxFrame;
        this.socket.write(frame(FrameType.SETTINGS, Flag.ACK, 0));
        return this.flush();
      }
      case FrameType.PING:
        if (payload.length !== 8) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, `PING of ${payload.length} bytes`);
        if (!(flags & Flag.ACK)) this.socket.write(frame(FrameType.PING, Flag.ACK, 0, payload));
        return;
      case FrameType.WINDOW_UPDATE: {
        const inc = parseWindowUpdate(payload);
        if (id === 0) this.connSendWindow += inc;
        else if (id === STREAM_ID) this.streamSendWindow += inc;
        if (this.connSendWindow > MAX_WINDOW || this.streamSendWindow > MAX_WINDOW)
          throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, 'window above 2^31-1');
        return this.flush();
      }
      case FrameType.HEADERS: {
        if (!(flags & Flag.END_HEADERS)) throw new H2Error(ErrorCode.PROTOCOL_ERROR, 'CONTINUATION frames are not accepted');
        const h = this.hpack.decode(headerBlock(flags, payload));
        if (id !== STREAM_ID) return;
        const httpStatus = h.get(':status');
        if (httpStatus !== undefined && httpStatus !== '200') {
          this.end({ code: grpc.status.UNKNOWN, details: `raw peer answered HTTP status ${httpStatus}` });
          return;
        }
        const s = trailerStatus(h);
        if (s !== undefined) {
          // OK: the peer ended the call (it is shutting down); pieces without a reply were not accepted.
          this.end(s.code === grpc.status.OK ? { code: grpc.status.UNAVAILABLE, details: 'peer ended the stream' } : s);
        } else if (flags & Flag.END_STREAM) this.end({ code: grpc.status.UNKNOWN, details: 'trailers without grpc-status' });
        return;
      }
      case FrameType.RST_STREAM:
        if (id === STREAM_ID) {
          const code = payload.length === 4 ? payload.readUInt32BE(0) : -1;
          this.end({ code: grpc.status.UNAVAILABLE, details: `raw peer reset the stream (code ${code})` });
        }
        return;
      case FrameType.GOAWAY: {
        const code = payload.length >= 8 ? payload.readUInt32BE(4) : -1;
        const why = payload.length > 8 ? `: ${payload.toString('utf8', 8, Math.min(payload.length, 208))}` : '';
        this.end({ code: grpc.status.UNAVAILABLE, details: `raw peer sent GOAWAY (code ${code})${why}` });
        return;
      }
      default:
        return;
    }
  }

  private onDataBegin(id: number, flags: number, length: number): void {
    if (length > this.connRecvWindow || (id === STREAM_ID && length > this.streamRecvWindow))
      throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, `DATA of ${length} bytes exceeds the window`);
    this.connRecvWindow -= length;
    if (id === STREAM_ID) this.streamRecvWindow -= length;
    this.dataForUs = id === STREAM_ID;
    this.dataLength = length;
    this.dataFlags = flags;
  }

  private onDataEnd(): void {
    this.recvPending += this.dataLength;
    if (this.dataForUs && this.dataFlags & Flag.END_STREAM)
      this.end({ code: grpc.status.UNKNOWN, details: 'raw peer ended the stream without trailers' });
  }

  private onReply(body: Uint8Array): void {
    const bad = this.waiters.reply(body);
    if (bad !== undefined) this.end(bad);
  }

  /** The call is over: fail every waiting piece with `s`, drop the connection. */
  private end(s: PieceStatus): void {
    if (this.ended !== undefined) return;
    clearTimeout(this.establishTimer);
    log('raw call to %s ended: %s (%d)', this.where, s.details, s.code);
    this.out.length = 0;
    this.outBytes = 0;
    if (!this.socket.destroyed && !this.socket.writableEnded) this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
    this.waiters.end(s);
  }
}

/** The stream SwitchingPeerStream moves to: RawPeerStream, or NativePeerStream (native-peer-stream.ts). */
export interface DirectPeerStream {
  readonly ended: PieceStatus | undefined;
  readonly established: boolean;
  send(msg: Omit<WirePeerMessage, 'seq'>, cb: PieceCallback): () => void;
  close(): void;
}

/** The part of H2PeerStream that SwitchingPeerStream uses. */
export interface H2Like {
  send(msg: Omit<WirePeerMessage, 'seq'>, cb: PieceCallback): () => void;
  close(): void;
}

/**
 * The Stream call to one peer for streamTransport 'raw' and 'native': over http2 until the peer announces its raw
 * listener, then over the raw socket (pieces already sent on http2 complete there). When the raw call
 * ends, the next piece goes over http2 again (and a new announcement moves it back); a raw listener
 * that could not be reached at all is not tried again for this peer.
 */
export class SwitchingPeerStream {
  private readonly h2: H2Like;
  private raw: DirectPeerStream | undefined;
  private h2Pending = 0;
  private rawUnreachable = false;
  private closed = false;

  /**
   * @param host the peer's host (the raw listener is on the same address)
   * @param makeH2 creates the http2 stream; it must call `onResponse` with each call's response headers
   * @param makeDirect opens the call on the announced port (default: RawPeerStream, our framing in JavaScript)
   */
  constructor(
    private readonly host: string,
    makeH2: (onResponse: (headers: IncomingHttpHeaders) => void) => H2Like,
    private readonly rawOpts: RawPeerStreamOptions = {},
    private readonly makeDirect: (host: string, port: number, opts: RawPeerStreamOptions) => DirectPeerStream = (h, p, o) =>
      new RawPeerStream(h, p, o),
  ) {
    this.h2 = makeH2((h) => this.onResponse(h));
  }

  /** Whether pieces currently go over the raw socket. */
  get onRaw(): boolean {
    return this.raw !== undefined && this.raw.ended === undefined;
  }

  send(msg: Omit<WirePeerMessage, 'seq'>, cb: PieceCallback): () => void {
    const raw = this.raw;
    if (raw !== undefined && raw.ended === undefined) return raw.send(msg, cb);
    if (raw !== undefined) {
      this.raw = undefined;
      if (!raw.established) this.rawUnreachable = true;
      // Reopen the http2 call (a fresh announcement) unless it still carries pieces.
      if (this.h2Pending === 0) this.h2.close();
    }
    this.h2Pending++;
    let done = false;
    const settle = () => {
      if (done) return;
      done = true;
      this.h2Pending--;
      this.maybeCloseH2();
    };
    const cancel = this.h2.send(msg, (err) => {
      settle();
      cb(err);
    });
    return () => {
      settle();
      cancel();
    };
  }

  close(): void {
    this.closed = true;
    this.raw?.close();
    this.raw = undefined;
    this.h2.close();
  }

  private onResponse(headers: IncomingHttpHeaders): void {
    const v = headers[RAW_PORT_HEADER];
    if (this.closed || this.rawUnreachable || this.onRaw || typeof v !== 'string' || !/^\d{1,5}$/.test(v)) return;
    const port = Number(v);
    if (port < 1 || port > 65535) return;
    rawClientCounters.switches++;
    log('Stream calls to %s move to its raw listener on port %d', this.host, port);
    this.raw = this.makeDirect(this.host, port, this.rawOpts);
    this.maybeCloseH2();
  }

  /** Once on raw and nothing is waiting on the http2 call, end it (it is idle from now on). */
  private maybeCloseH2(): void {
    if (this.h2Pending !== 0 || !this.onRaw) return;
    setImmediate(() => {
      if (this.h2Pending === 0 && this.onRaw) this.h2.close();
    });
  }
}
