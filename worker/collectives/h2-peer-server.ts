// The fast path of the incoming side: Peer.Stream served straight from the HTTP/2 stream, with the
// gRPC framing and the protobuf decoding done by peer-wire.ts. It speaks the same protocol as the
// grpc-js handler (a stock client is served the same way) and applies the same checks, through the
// same `deliver` function; it skips grpc-js's per-message copies, generic decoding and stream layers,
// which cost far more than the bytes themselves (docs/collectives.md).
//
// It is installed on a grpc-js Server before it binds (installStreamFastPath): the server's HTTP/2
// stream handler is wrapped so that this one path is answered here and every other path (and this
// one, when the request is unusual: compressed, not application/grpc) goes on to grpc-js. That
// reaches into grpc-js internals; when they change, the hook is not installed and grpc-js serves
// Stream as before, only slower.
import * as grpc from '@grpc/grpc-js';
import { constants, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { decodePeerMessage, encodeDeliverReply, GrpcFrameReader, type WirePeerMessage } from './peer-wire.js';

/** The full gRPC path of Peer.Stream. */
export const PEER_STREAM_PATH = '/lasp.v1.Peer/Stream';

export interface PeerStreamHandlerDeps {
  /** Largest gRPC message accepted (a piece plus its header). */
  maxMessageBytes: number;
  /** Throws a status-bearing error when the `authorization` header is missing or wrong. */
  checkAuth(authorization: string | undefined): void;
  /** Check and apply one piece; throws a status-bearing error when refused. */
  deliver(m: WirePeerMessage): void;
  /** Status of an error thrown by checkAuth or deliver. */
  statusOf(err: unknown): { code: grpc.status; details: string };
  /** Called once with the HTTP/2 session of the stream (receive-window tuning). */
  onSession?(session: ServerHttp2Stream['session']): void;
  /**
   * streamTransport 'raw': the port of this endpoint's raw listener on `localAddress` (the address
   * the call came in on), announced in the `lasp-raw-port` response header; a promise while the
   * listener starts (the response waits for it); undefined: none. Not asked on TLS connections.
   */
  rawPort?(localAddress: string | undefined): number | Promise<number | undefined> | undefined;
}

/**
 * One PeerMessage body, checked and applied through `deps`: the DeliverReply to send back (OK, or
 * the status it was refused with), or — a string — why the body is not a PeerMessage (the call ends).
 */
export function answerPiece(deps: Pick<PeerStreamHandlerDeps, 'deliver' | 'statusOf'>, body: Uint8Array): Buffer | string {
  let m: WirePeerMessage;
  try {
    m = decodePeerMessage(body);
  } catch (err) {
    return `could not parse PeerMessage: ${err instanceof Error ? err.message : String(err)}`;
  }
  let reply;
  try {
    deps.deliver(m);
    reply = { seq: m.seq, code: grpc.status.OK, details: '' };
  } catch (err) {
    reply = { seq: m.seq, ...deps.statusOf(err) };
  }
  return encodeDeliverReply(reply);
}

/** grpc-message: percent-encoded (gRPC over HTTP/2 spec). */
function grpcMessage(details: string): string {
  return encodeURIComponent(details);
}

/**
 * Serve one Peer.Stream call on `stream`. Returns false (and touches nothing) when the request
 * should be left to grpc-js (content type not gRPC, or a message encoding other than identity).
 */
export function servePeerStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, deps: PeerStreamHandlerDeps): boolean {
  const contentType = headers['content-type'];
  if (typeof contentType !== 'string' || !contentType.startsWith('application/grpc')) return false;
  const encoding = headers['grpc-encoding'];
  if (encoding !== undefined && encoding !== 'identity') return false;
  stream.on('error', () => {}); // the sender went away; nothing is pending here
  if (stream.session !== undefined) deps.onSession?.(stream.session);

  const auth = headers.authorization;
  try {
    deps.checkAuth(typeof auth === 'string' ? auth : undefined);
  } catch (err) {
    const s = deps.statusOf(err);
    stream.respond(
      {
        [constants.HTTP2_HEADER_STATUS]: 200,
        'content-type': 'application/grpc+proto',
        'grpc-status': String(s.code),
        'grpc-message': grpcMessage(s.details),
      },
      { endStream: true },
    );
    return true;
  }

  const session = stream.session;
  const raw =
    deps.rawPort === undefined || session === undefined || session.encrypted ? undefined : deps.rawPort(session.socket?.localAddress);
  if (raw instanceof Promise) {
    raw.then(
      (port) => {
        if (!stream.destroyed) serveCall(stream, deps, port);
      },
      () => {
        if (!stream.destroyed) serveCall(stream, deps, undefined);
      },
    );
  } else serveCall(stream, deps, raw);
  return true;
}

/** The call after its headers passed: respond (announcing `rawPort`), then answer every piece. */
function serveCall(stream: ServerHttp2Stream, deps: PeerStreamHandlerDeps, rawPort: number | undefined): void {
  let trailers = { 'grpc-status': String(grpc.status.OK) } as Record<string, string>;
  let ended = false;
  const response: Record<string, string | number> = { [constants.HTTP2_HEADER_STATUS]: 200, 'content-type': 'application/grpc+proto' };
  if (rawPort !== undefined) response['lasp-raw-port'] = String(rawPort);
  stream.respond(response, { waitForTrailers: true });
  stream.on('wantTrailers', () => stream.sendTrailers(trailers));
  const finish = (code: grpc.status, details: string) => {
    if (ended) return;
    ended = true;
    trailers = { 'grpc-status': String(code) };
    if (details !== '') trailers['grpc-message'] = grpcMessage(details);
    if (!stream.destroyed) stream.end();
  };

  const reader = new GrpcFrameReader(
    deps.maxMessageBytes,
    (body) => {
      if (ended) return;
      const a = answerPiece(deps, body);
      // As grpc-js does with a body it cannot parse: the call ends (other calls are unaffected).
      if (typeof a === 'string') finish(grpc.status.INTERNAL, a);
      else stream.write(a);
    },
    (err) => finish(grpc.status.RESOURCE_EXHAUSTED, err.message),
  );
  stream.on('data', (chunk: Buffer) => reader.push(chunk));
  stream.on('end', () => {
    if (!reader.atBoundary) finish(grpc.status.INTERNAL, 'the stream ended inside a message');
    else finish(grpc.status.OK, '');
  });
}

type StreamHandler = (this: unknown, extraInterceptors: unknown, stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => void;

/**
 * Route `path` on `server` (a grpc-js Server, before bindAsync) to `serve` first; requests it
 * declines go on to grpc-js. Returns whether the hook could be installed.
 */
export function installStreamFastPath(
  server: unknown,
  path: string,
  serve: (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => boolean,
): boolean {
  try {
    const s = server as Record<string, unknown>;
    let installed = false;
    for (const name of ['_streamHandler', '_channelzHandler']) {
      const orig = s[name];
      if (typeof orig !== 'function') continue;
      const original = orig as StreamHandler;
      s[name] = function (this: unknown, extra: unknown, stream: ServerHttp2Stream, headers: IncomingHttpHeaders) {
        if (headers[constants.HTTP2_HEADER_PATH] === path && serve(stream, headers)) return;
        original.call(this, extra, stream, headers);
      };
      installed = true;
    }
    return installed;
  } catch {
    return false;
  }
}
