// The fast path of the outgoing side: one long-lived Peer.Stream call per peer address, made
// directly on a node:http2 session with the framing and encoding of peer-wire.ts. Same protocol and
// same behaviour as PeerStream (peer-stream.ts, over grpc-js): every piece is answered, in order,
// by a DeliverReply with its seq; when the call ends (peer down, connection lost, UNAUTHENTICATED
// at start, closed), every piece still waiting fails with the call's status and the next piece
// opens a new call. A piece goes out as a small header buffer followed by the caller's bytes,
// without a copy: the data must stay unchanged until the piece's reply arrives (or it is cancelled).
import * as grpc from '@grpc/grpc-js';
import http2, { constants, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders } from 'node:http2';
import net, { isIP } from 'node:net';
import { connect as tlsConnect, type SecureContextOptions } from 'node:tls';
import { decodeDeliverReply, encodePeerMessage, GrpcFrameReader, type WirePeerMessage } from './peer-wire.js';
import { PEER_STREAM_PATH } from './h2-peer-server.js';
import type { PieceCallback, PieceStatus } from './peer-stream.js';

/** Receive window of the client side (replies only; pieces flow the other way). */
const CLIENT_WINDOW = 1 << 20;

/** Largest reply accepted (a DeliverReply is a few bytes plus its details text). */
const MAX_REPLY_BYTES = 1 << 20;

export interface H2PeerStreamOptions {
  /** Value of the `authorization` header (the cluster token), when set. */
  authorization?: string;
  /** TLS options (ca, cert, key) when the peer serves TLS; plain HTTP/2 when undefined. */
  tls?: SecureContextOptions & { servername?: string };
  /** Called when the peer does not serve Stream (an older worker). */
  onUnimplemented?: () => void;
  /** Called with the response headers of each call (streamTransport 'raw' reads the raw port there). */
  onResponse?: (headers: IncomingHttpHeaders) => void;
}

function decodeGrpcMessage(v: string | string[] | undefined): string {
  if (typeof v !== 'string') return '';
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}

/** The gRPC status in `headers` (trailers, or a trailers-only response), when present. */
function statusIn(headers: IncomingHttpHeaders): PieceStatus | undefined {
  const raw = headers['grpc-status'];
  if (typeof raw !== 'string') return undefined;
  const code = Number(raw);
  return { code: Number.isInteger(code) ? code : grpc.status.UNKNOWN, details: decodeGrpcMessage(headers['grpc-message']) };
}

/** host and port of "host:port" or "[v6]:port". */
export function splitAddress(address: string): { host: string; port: number } {
  const m = /^\[(.+)\]:(\d+)$/.exec(address) ?? /^([^:]+):(\d+)$/.exec(address);
  if (m === null) throw new RangeError(`peer address must be host:port, got ${JSON.stringify(address)}`);
  return { host: m[1]!, port: Number(m[2]) };
}

/** host:port, with an IPv6 host in brackets (what splitAddress takes apart). */
export function joinAddress(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

export class H2PeerStream {
  private session: ClientHttp2Session | undefined;
  private call: ClientHttp2Stream | undefined;
  private nextSeq = 1;
  private readonly waiting = new Map<number, PieceCallback>();

  /** @param address host:port of the peer's gRPC server */
  constructor(
    private readonly address: string,
    private readonly opts: H2PeerStreamOptions = {},
  ) {}

  /** Send one piece; `cb` gets its outcome exactly once unless the returned cancel is called first. */
  send(msg: Omit<WirePeerMessage, 'seq'>, cb: PieceCallback): () => void {
    const seq = this.nextSeq++;
    let call: ClientHttp2Stream;
    try {
      call = this.open();
    } catch (err) {
      queueMicrotask(() => cb({ code: grpc.status.UNAVAILABLE, details: err instanceof Error ? err.message : String(err) }));
      return () => {};
    }
    this.waiting.set(seq, cb);
    const parts = encodePeerMessage({ ...msg, seq });
    call.cork();
    for (const p of parts) call.write(p);
    call.uncork();
    return () => {
      // The piece may already be on the wire; only its reply is ignored.
      this.waiting.delete(seq);
    };
  }

  /** End the call and the connection (pieces still waiting fail with CANCELLED). */
  close(): void {
    const call = this.call;
    if (call !== undefined) {
      this.detach(call, { code: grpc.status.CANCELLED, details: 'peer channel closed' });
      call.close(constants.NGHTTP2_CANCEL);
    }
    this.session?.close();
    this.session = undefined;
  }

  private openSession(): ClientHttp2Session {
    if (this.session !== undefined && !this.session.closed && !this.session.destroyed) return this.session;
    const tls = this.opts.tls;
    const authority = `${tls === undefined ? 'http' : 'https'}://${this.address}`;
    const { host, port } = splitAddress(this.address);
    const session = http2.connect(authority, {
      settings: { initialWindowSize: CLIENT_WINDOW, enablePush: false },
      // Pieces end in a partial segment: send it at once rather than behind the previous ACK
      // (TCP_NODELAY, which Node's HTTP/2 sockets refuse to change once wrapped).
      createConnection: () => {
        const socket =
          tls === undefined
            ? net.connect({ host, port })
            : tlsConnect({ ...tls, host, port, ALPNProtocols: ['h2'], servername: tls.servername ?? (isIP(host) ? undefined : host) });
        socket.setNoDelay(true);
        return socket;
      },
    });
    this.session = session;
    session.on('error', () => {}); // reported through the call's 'close'
    session.on('connect', () => {
      try {
        session.setLocalWindowSize(CLIENT_WINDOW);
      } catch {
        // best effort
      }
    });
    const forget = () => {
      if (this.session === session) this.session = undefined;
    };
    session.on('close', forget);
    session.on('goaway', forget);
    return session;
  }

  private open(): ClientHttp2Stream {
    if (this.call !== undefined) return this.call;
    const session = this.openSession();
    const headers: Record<string, string> = {
      [constants.HTTP2_HEADER_METHOD]: 'POST',
      [constants.HTTP2_HEADER_PATH]: PEER_STREAM_PATH,
      'content-type': 'application/grpc+proto',
      te: 'trailers',
      'user-agent': 'lasp-peer/1',
    };
    if (this.opts.authorization !== undefined) headers.authorization = this.opts.authorization;
    const call = session.request(headers);
    this.call = call;
    let ended: PieceStatus | undefined;
    const end = (s: PieceStatus) => {
      ended ??= s;
      this.detach(call, ended);
    };
    const reader = new GrpcFrameReader(
      MAX_REPLY_BYTES,
      (body) => {
        let r;
        try {
          r = decodeDeliverReply(body);
        } catch (err) {
          end({ code: grpc.status.INTERNAL, details: `could not parse DeliverReply: ${(err as Error).message}` });
          call.close(constants.NGHTTP2_CANCEL);
          return;
        }
        const cb = this.waiting.get(r.seq);
        if (cb === undefined) return; // cancelled
        this.waiting.delete(r.seq);
        cb(r.code === grpc.status.OK ? null : { code: r.code, details: r.details });
      },
      (err) => {
        end({ code: grpc.status.INTERNAL, details: err.message });
        call.close(constants.NGHTTP2_CANCEL);
      },
    );
    call.on('response', (h) => {
      this.opts.onResponse?.(h);
      const s = statusIn(h); // trailers-only: the call ended at once (UNAUTHENTICATED, UNIMPLEMENTED)
      if (s !== undefined) this.finished(call, s, end);
    });
    call.on('trailers', (h) =>
      this.finished(call, statusIn(h) ?? { code: grpc.status.UNKNOWN, details: 'trailers without grpc-status' }, end),
    );
    call.on('data', (chunk: Buffer) => reader.push(chunk));
    call.on('error', (err: Error) => end({ code: grpc.status.UNAVAILABLE, details: err.message }));
    call.on('close', () => end({ code: grpc.status.UNAVAILABLE, details: `stream to ${this.address} closed (code ${call.rstCode ?? 0})` }));
    return call;
  }

  private finished(call: ClientHttp2Stream, s: PieceStatus, end: (s: PieceStatus) => void): void {
    if (s.code === grpc.status.UNIMPLEMENTED) this.opts.onUnimplemented?.();
    // OK: the peer ended the call (it is shutting down); pieces without a reply were not accepted.
    end(s.code === grpc.status.OK ? { code: grpc.status.UNAVAILABLE, details: 'peer ended the stream' } : s);
  }

  /** Forget `call` (if still current) and fail every piece waiting for a reply on it. */
  private detach(call: ClientHttp2Stream, status: PieceStatus): void {
    if (this.call !== call) return;
    this.call = undefined;
    const cbs = [...this.waiting.values()];
    this.waiting.clear();
    for (const cb of cbs) cb(status);
  }
}
