// The incoming side of the 'raw' peer transport: Peer.Stream served on a listener of its own, with
// HTTP/2 framing written by hand (raw-h2.ts) instead of node:http2/nghttp2, which caps a peer
// connection well below what the socket carries (docs/collectives.md). It is still gRPC on the
// wire: HTTP/2 frames, gRPC length-prefixed messages, the PeerMessage/DeliverReply encoding of
// peer-wire.ts, grpc-status trailers. Only our own client (raw-peer-stream.ts) is expected here; it
// learns the port from the `lasp-raw-port` response header of an ordinary http2 Stream call
// (h2-peer-server.ts), so grpc-js peers and TLS connections never come here.
//
// Strict by design: the client preface must be exact, headers must fit one HEADERS frame and use
// the HPACK subset of raw-h2.ts (no Huffman), DATA frames must not be padded, every length is
// checked before anything is allocated (frames against our SETTINGS_MAX_FRAME_SIZE and a small
// limit for control frames, gRPC messages against maxMessageBytes, flow-control windows).
// Anything else closes the connection with GOAWAY and a reason (NODE_DEBUG=lasp-raw logs it); the
// process and the other connections are unaffected.
import * as grpc from '@grpc/grpc-js';
import net from 'node:net';
import { debuglog } from 'node:util';
import { GrpcFrameReader, type WirePeerMessage } from './peer-wire.js';
import { answerPiece, PEER_STREAM_PATH } from './h2-peer-server.js';
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
  goawayFrame,
  H2Error,
  headerBlock,
  HpackDecoder,
  MAX_FRAME_SIZE_LIMIT,
  MAX_HEADER_LIST_BYTES,
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

const log = debuglog('lasp-raw');

/** Receive window of every raw connection and of each stream on it. */
export const RAW_RECEIVE_WINDOW = 32 << 20;
/** Window consumed before it is given back (WINDOW_UPDATE), per stream and per connection. */
const WINDOW_UPDATE_BATCH = 4 << 20;
/** Largest frame other than DATA accepted. */
const MAX_CONTROL_FRAME = 64 << 10;
const MAX_CONCURRENT_STREAMS = 16;
/** How long a new connection may take to send the preface. */
const PREFACE_TIMEOUT_MS = 10_000;

export interface RawPeerServerDeps {
  /** Largest gRPC message accepted (a piece plus its header). */
  maxMessageBytes: number;
  /** Throws a status-bearing error when the `authorization` header is missing or wrong. */
  checkAuth(authorization: string | undefined): void;
  /** Check and apply one piece; throws a status-bearing error when refused. */
  deliver(m: WirePeerMessage): void;
  /** Status of an error thrown by checkAuth or deliver. */
  statusOf(err: unknown): { code: grpc.status; details: string };
}

/** Process-wide counters (tests and diagnostics). */
export const rawServerCounters = { connections: 0, pieces: 0, protocolErrors: 0, lastProtocolError: '' };

interface ServerStream {
  id: number;
  reader: GrpcFrameReader;
  sendWindow: number;
  recvWindow: number;
  recvPending: number;
  /** Reply bytes waiting for send window. */
  out: Buffer[];
  outBytes: number;
  /** Trailers to send once `out` is empty. */
  trailers: Buffer | undefined;
  /** We have finished the call (trailers queued or sent). */
  finished: boolean;
  remoteEnded: boolean;
}

class RawConnection {
  private prefaceHave = 0;
  private readonly parser: FrameParser;
  private readonly hpack = new HpackDecoder();
  private readonly streams = new Map<number, ServerStream>();
  private lastStreamId = 0;
  private connSendWindow = DEFAULT_WINDOW;
  private peerInitialWindow = DEFAULT_WINDOW;
  private peerMaxFrame = DEFAULT_MAX_FRAME_SIZE;
  private connRecvWindow = RAW_RECEIVE_WINDOW;
  private connRecvPending = 0;
  private dataStream: ServerStream | undefined;
  private dataLength = 0;
  private dataFlags = 0;
  private closed = false;
  private readonly prefaceTimer: NodeJS.Timeout;

  constructor(
    private readonly socket: net.Socket,
    private readonly deps: RawPeerServerDeps,
    private readonly onClose: () => void,
  ) {
    this.parser = new FrameParser(
      {
        frame: (t, f, id, p) => this.onFrame(t, f, id, p),
        dataBegin: (id, f, n) => this.onDataBegin(id, f, n),
        data: (c) => this.dataStream?.reader.push(c),
        dataEnd: () => this.onDataEnd(),
      },
      MAX_FRAME_SIZE_LIMIT,
      MAX_CONTROL_FRAME,
    );
    socket.setNoDelay(true);
    socket.on('error', () => {}); // 'close' follows
    socket.on('close', () => this.cleanup());
    socket.on('data', (chunk: Buffer) => this.onChunk(chunk));
    this.prefaceTimer = setTimeout(() => this.abort('no client preface within 10 s'), PREFACE_TIMEOUT_MS);
    this.prefaceTimer.unref();
    socket.cork();
    socket.write(
      settingsFrame([
        [Setting.MAX_CONCURRENT_STREAMS, MAX_CONCURRENT_STREAMS],
        [Setting.INITIAL_WINDOW_SIZE, RAW_RECEIVE_WINDOW],
        [Setting.MAX_FRAME_SIZE, MAX_FRAME_SIZE_LIMIT],
        [Setting.MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST_BYTES],
      ]),
    );
    socket.write(windowUpdateFrame(0, RAW_RECEIVE_WINDOW - DEFAULT_WINDOW));
    socket.uncork();
  }

  /** Close at once (endpoint closing): the peer's pieces in flight fail with UNAVAILABLE. */
  destroy(): void {
    this.socket.destroy();
  }

  private onChunk(chunk: Buffer): void {
    if (this.closed) return;
    let pos = 0;
    if (this.prefaceHave < PREFACE.length) {
      const take = Math.min(PREFACE.length - this.prefaceHave, chunk.length);
      if (!chunk.subarray(0, take).equals(PREFACE.subarray(this.prefaceHave, this.prefaceHave + take))) {
        this.abort('bad client preface');
        return;
      }
      this.prefaceHave += take;
      pos = take;
      if (this.prefaceHave < PREFACE.length) return;
      clearTimeout(this.prefaceTimer);
    }
    this.socket.cork();
    try {
      this.parser.push(pos === 0 ? chunk : chunk.subarray(pos));
      this.flushWindowUpdates();
    } catch (err) {
      if (err instanceof H2Error) this.connectionError(err);
      else this.connectionError(new H2Error(ErrorCode.INTERNAL_ERROR, err instanceof Error ? err.message : String(err)));
    } finally {
      this.socket.uncork();
    }
  }

  private onFrame(type: number, flags: number, id: number, payload: Buffer): void {
    switch (type) {
      case FrameType.HEADERS:
        return this.onHeaders(flags, id, payload);
      case FrameType.SETTINGS: {
        if (id !== 0) throw new H2Error(ErrorCode.PROTOCOL_ERROR, 'SETTINGS on a stream');
        if (flags & Flag.ACK) {
          if (payload.length !== 0) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, 'SETTINGS ACK with a payload');
          return;
        }
        const s = parseSettings(payload);
        const iw = s.get(Setting.INITIAL_WINDOW_SIZE);
        if (iw !== undefined) {
          const delta = iw - this.peerInitialWindow;
          this.peerInitialWindow = iw;
          for (const st of this.streams.values()) {
            st.sendWindow += delta;
            if (st.sendWindow > MAX_WINDOW) throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, 'stream window above 2^31-1');
          }
        }
        this.peerMaxFrame = s.get(Setting.MAX_FRAME_SIZE) ?? this.peerMaxFrame;
        this.socket.write(frame(FrameType.SETTINGS, Flag.ACK, 0));
        return this.flushAll();
      }
      case FrameType.PING:
        if (id !== 0) throw new H2Error(ErrorCode.PROTOCOL_ERROR, 'PING on a stream');
        if (payload.length !== 8) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, `PING of ${payload.length} bytes`);
        if (!(flags & Flag.ACK)) this.socket.write(frame(FrameType.PING, Flag.ACK, 0, payload));
        return;
      case FrameType.WINDOW_UPDATE: {
        const inc = parseWindowUpdate(payload);
        if (id === 0) {
          this.connSendWindow += inc;
          if (this.connSendWindow > MAX_WINDOW) throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, 'connection window above 2^31-1');
          return this.flushAll();
        }
        const st = this.streams.get(id);
        if (st === undefined) return;
        st.sendWindow += inc;
        if (st.sendWindow > MAX_WINDOW) throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, 'stream window above 2^31-1');
        return this.flush(st);
      }
      case FrameType.RST_STREAM:
        if (id === 0) throw new H2Error(ErrorCode.PROTOCOL_ERROR, 'RST_STREAM on stream 0');
        if (payload.length !== 4) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, `RST_STREAM of ${payload.length} bytes`);
        this.streams.delete(id);
        return;
      case FrameType.GOAWAY:
        // The client is going away: nothing of ours is pending on it.
        this.closed = true;
        this.socket.end();
        return;
      case FrameType.PUSH_PROMISE:
        throw new H2Error(ErrorCode.PROTOCOL_ERROR, 'PUSH_PROMISE from a client');
      case FrameType.CONTINUATION:
        throw new H2Error(ErrorCode.PROTOCOL_ERROR, 'CONTINUATION frames are not accepted (headers must fit one HEADERS frame)');
      default:
        return; // PRIORITY and unknown types are ignored (RFC 9113 §4.1, §5.3.2)
    }
  }

  private onHeaders(flags: number, id: number, payload: Buffer): void {
    if (id === 0 || id % 2 === 0) throw new H2Error(ErrorCode.PROTOCOL_ERROR, `HEADERS on stream ${id}`);
    if (!(flags & Flag.END_HEADERS))
      throw new H2Error(ErrorCode.PROTOCOL_ERROR, 'CONTINUATION frames are not accepted (headers must fit one HEADERS frame)');
    const headers = this.hpack.decode(headerBlock(flags, payload));
    const endStream = (flags & Flag.END_STREAM) !== 0;
    const existing = this.streams.get(id);
    if (existing !== undefined) {
      // Request trailers (not used by gRPC clients): they end the request.
      if (!endStream) throw new H2Error(ErrorCode.PROTOCOL_ERROR, `second HEADERS on stream ${id} without END_STREAM`);
      this.remoteEnd(existing);
      return;
    }
    if (id <= this.lastStreamId) throw new H2Error(ErrorCode.STREAM_CLOSED, `HEADERS on closed stream ${id}`);
    this.lastStreamId = id;
    if (this.streams.size >= MAX_CONCURRENT_STREAMS) {
      this.socket.write(rstStreamFrame(id, ErrorCode.REFUSED_STREAM));
      return;
    }
    const refusal = refusalOf(headers, this.deps, 'raw');
    if (refusal !== undefined) {
      this.writeHeaders(id, refusal, true);
      if (!endStream) this.socket.write(rstStreamFrame(id, ErrorCode.NO_ERROR));
      return;
    }
    const st: ServerStream = {
      id,
      reader: undefined as unknown as GrpcFrameReader,
      sendWindow: this.peerInitialWindow,
      recvWindow: RAW_RECEIVE_WINDOW,
      recvPending: 0,
      out: [],
      outBytes: 0,
      trailers: undefined,
      finished: false,
      remoteEnded: false,
    };
    st.reader = new GrpcFrameReader(
      this.deps.maxMessageBytes,
      (body) => this.onMessage(st, body),
      (err) => this.finish(st, grpc.status.RESOURCE_EXHAUSTED, err.message),
    );
    this.streams.set(id, st);
    this.writeHeaders(id, RESPONSE_HEADERS);
    if (endStream) this.remoteEnd(st);
  }

  private onMessage(st: ServerStream, body: Uint8Array): void {
    if (st.finished) return;
    const a = answerPiece(this.deps, body);
    if (typeof a === 'string') return this.finish(st, grpc.status.INTERNAL, a);
    rawServerCounters.pieces++;
    st.out.push(a);
    st.outBytes += a.length;
    this.flush(st);
  }

  private onDataBegin(id: number, flags: number, length: number): void {
    if (id === 0) throw new H2Error(ErrorCode.PROTOCOL_ERROR, 'DATA on stream 0');
    if (length > this.connRecvWindow)
      throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, `DATA of ${length} bytes exceeds the connection window ${this.connRecvWindow}`);
    this.connRecvWindow -= length;
    this.dataLength = length;
    this.dataFlags = flags;
    const st = this.streams.get(id);
    if (st === undefined || st.remoteEnded) {
      if (id > this.lastStreamId) throw new H2Error(ErrorCode.PROTOCOL_ERROR, `DATA on idle stream ${id}`);
      this.dataStream = undefined; // a stream we ended or reset: discarded (the connection window is still given back)
      return;
    }
    if (length > st.recvWindow)
      throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, `DATA of ${length} bytes exceeds stream ${id}'s window ${st.recvWindow}`);
    st.recvWindow -= length;
    this.dataStream = st.finished ? undefined : st;
  }

  private onDataEnd(): void {
    const st = this.dataStream;
    this.dataStream = undefined;
    this.connRecvPending += this.dataLength;
    if (st !== undefined) {
      st.recvPending += this.dataLength;
      if (this.dataFlags & Flag.END_STREAM) this.remoteEnd(st);
    }
  }

  private remoteEnd(st: ServerStream): void {
    st.remoteEnded = true;
    if (!st.reader.atBoundary) this.finish(st, grpc.status.INTERNAL, 'the stream ended inside a message');
    else this.finish(st, grpc.status.OK, '');
    if (st.finished && st.trailers === undefined) this.streams.delete(st.id);
  }

  /** Give back consumed receive window in batches. */
  private flushWindowUpdates(): void {
    if (this.closed) return;
    for (const st of this.streams.values()) {
      if (st.recvPending >= WINDOW_UPDATE_BATCH && !st.remoteEnded) {
        this.socket.write(windowUpdateFrame(st.id, st.recvPending));
        st.recvWindow += st.recvPending;
        st.recvPending = 0;
      }
    }
    if (this.connRecvPending >= WINDOW_UPDATE_BATCH) {
      this.socket.write(windowUpdateFrame(0, this.connRecvPending));
      this.connRecvWindow += this.connRecvPending;
      this.connRecvPending = 0;
    }
  }

  /** End the call with trailers (after any queued replies); stop reading the client's stream. */
  private finish(st: ServerStream, code: grpc.status, details: string): void {
    if (st.finished) return;
    st.finished = true;
    st.trailers = headersFrame(st.id, grpcStatusFields(code, details, false), true);
    this.flush(st);
  }

  private flushAll(): void {
    for (const st of [...this.streams.values()]) this.flush(st);
  }

  private flush(st: ServerStream): void {
    if (this.closed) return;
    while (st.outBytes > 0) {
      const n = Math.min(st.outBytes, st.sendWindow, this.connSendWindow, this.peerMaxFrame);
      if (n <= 0) return;
      this.socket.write(frameHeader(n, FrameType.DATA, 0, st.id));
      for (const part of takeBytes(st.out, n)) this.socket.write(part);
      st.outBytes -= n;
      st.sendWindow -= n;
      this.connSendWindow -= n;
    }
    if (st.trailers !== undefined) {
      this.socket.write(st.trailers);
      st.trailers = undefined;
      // The client may still be sending: tell it to stop (RFC 9113 §8.1).
      if (!st.remoteEnded) this.socket.write(rstStreamFrame(st.id, ErrorCode.NO_ERROR));
      this.streams.delete(st.id);
    }
  }

  private writeHeaders(id: number, fields: readonly [string, string][], endStream = false): void {
    this.socket.write(headersFrame(id, fields, endStream));
  }

  private connectionError(err: H2Error): void {
    rawServerCounters.protocolErrors++;
    rawServerCounters.lastProtocolError = err.message;
    log('closing connection from %s: %s', this.socket.remoteAddress, err.message);
    if (this.closed) return;
    this.closed = true;
    this.socket.write(goawayFrame(this.lastStreamId, err.code, err.message));
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  /** Close without GOAWAY (not HTTP/2 at all). */
  private abort(reason: string): void {
    rawServerCounters.protocolErrors++;
    rawServerCounters.lastProtocolError = reason;
    log('closing connection from %s: %s', this.socket.remoteAddress, reason);
    this.closed = true;
    this.socket.destroy();
  }

  private cleanup(): void {
    this.closed = true;
    clearTimeout(this.prefaceTimer);
    this.streams.clear();
    this.onClose();
  }
}

/**
 * Whether a Peer.Stream request on a listener of our own (`transport` 'raw' or 'native') may go on:
 * undefined, or the response that refuses it — 415 when it is not a gRPC POST, trailers-only
 * UNIMPLEMENTED for another path or message encoding, the token's status when it is missing or wrong.
 */
export function refusalOf(
  headers: Map<string, string>,
  deps: Pick<RawPeerServerDeps, 'checkAuth' | 'statusOf'>,
  transport: 'raw' | 'native',
): [string, string][] | undefined {
  const ct = headers.get('content-type');
  if (headers.get(':method') !== 'POST' || ct === undefined || !ct.startsWith('application/grpc')) return [[':status', '415']];
  if (headers.get(':path') !== PEER_STREAM_PATH)
    return grpcStatusFields(grpc.status.UNIMPLEMENTED, `the ${transport} peer transport serves only ${PEER_STREAM_PATH}`, true);
  const enc = headers.get('grpc-encoding');
  if (enc !== undefined && enc !== 'identity')
    return grpcStatusFields(grpc.status.UNIMPLEMENTED, `grpc-encoding ${enc} is not supported`, true);
  try {
    deps.checkAuth(headers.get('authorization'));
  } catch (err) {
    const s = deps.statusOf(err);
    return grpcStatusFields(s.code, s.details, true);
  }
  return undefined;
}

/** The headers of an accepted Peer.Stream call, before its replies. */
export const RESPONSE_HEADERS: readonly [string, string][] = [
  [':status', '200'],
  ['content-type', 'application/grpc+proto'],
];

/** The fields of a response's trailers (or of a trailers-only response, `withResponseHeaders`). */
export function grpcStatusFields(code: grpc.status, details: string, withResponseHeaders: boolean): [string, string][] {
  const f: [string, string][] = withResponseHeaders ? [...RESPONSE_HEADERS] : [];
  f.push(['grpc-status', String(code)]);
  // Bounded so that the HEADERS frame stays under the client's 16 KiB SETTINGS_MAX_FRAME_SIZE.
  if (details !== '') f.push(['grpc-message', encodeURIComponent(details).slice(0, 8192)]);
  return f;
}

function headersFrame(id: number, fields: readonly [string, string][], endStream: boolean): Buffer {
  return frame(FrameType.HEADERS, Flag.END_HEADERS | (endStream ? Flag.END_STREAM : 0), id, encodeHeaders(fields));
}

/** A listener serving Peer.Stream with our own HTTP/2 framing (see the top of this file). */
export class RawPeerServer {
  private readonly conns = new Set<RawConnection>();

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  /** Listen on `host`, port 0 (a free one). */
  static listen(host: string, deps: RawPeerServerDeps): Promise<RawPeerServer> {
    const server = net.createServer({ noDelay: true });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, host, () => {
        server.off('error', reject);
        server.on('error', (err) => log('raw peer listener on %s: %s', host, err.message));
        const addr = server.address();
        if (addr === null || typeof addr === 'string') {
          server.close();
          reject(new Error(`raw peer listener on ${host}: no port`));
          return;
        }
        const s = new RawPeerServer(server, addr.port);
        server.on('connection', (socket) => {
          rawServerCounters.connections++;
          const c: RawConnection = new RawConnection(socket, deps, () => s.conns.delete(c));
          s.conns.add(c);
        });
        resolve(s);
      });
    });
  }

  /** Stop listening and close every connection (peers' pieces in flight fail with UNAVAILABLE). */
  close(): void {
    this.server.close();
    for (const c of this.conns) c.destroy();
    this.conns.clear();
  }
}
