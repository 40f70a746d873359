// HTTP/2 tuning of the connections that carry incoming pieces. Pieces flow from a peer's client to
// this worker's server, so what limits them is this side's receive windows and the largest frame
// this side accepts. @grpc/grpc-js has no server option for either, so the Node defaults would
// apply: 64 KiB windows (a 1 MiB piece waits for ~16 WINDOW_UPDATE round trips) and 16 KiB DATA
// frames (64 frames, each a separate trip through nghttp2 and the JS stream machinery, per MiB).
//
// Two best-effort steps, both reaching into grpc-js internals (when they change, they silently do
// nothing and only throughput suffers):
// - tuneServerSettings(server), before the server is bound: the initial SETTINGS of every incoming
//   connection advertise PEER_RECEIVE_WINDOW per stream and PEER_MAX_FRAME_SIZE (the server's
//   private `commonServerOptions.settings`, passed to http2.createServer at bind time);
// - tuneIncomingSession(call), on the first call of each connection: raise the connection-level
//   receive window (Node has no setting for it) and repeat the SETTINGS (for a server bound before
//   tuneServerSettings ran).
import type { Http2Session, Settings } from 'node:http2';

/** Receive window of each peer connection (and of every stream on it), in bytes. */
export const PEER_RECEIVE_WINDOW = 32 << 20;

/** Largest HTTP/2 frame accepted from peers (the protocol maximum is 2^24 − 1). */
export const PEER_MAX_FRAME_SIZE = (1 << 24) - 1;

const PEER_SETTINGS: Settings = { initialWindowSize: PEER_RECEIVE_WINDOW, maxFrameSize: PEER_MAX_FRAME_SIZE };

const tuned = new WeakSet<Http2Session>();

/** Make every connection `server` accepts from now on start with PEER_SETTINGS. Returns whether it could. */
export function tuneServerSettings(server: unknown): boolean {
  try {
    const o = (server as { commonServerOptions?: { settings?: Settings; noDelay?: boolean } }).commonServerOptions;
    if (o === undefined || o === null || typeof o !== 'object') return false;
    o.settings = { ...o.settings, ...PEER_SETTINGS };
    // Replies are tiny: send them at once (no Nagle delay behind the previous reply's ACK). Node's
    // HTTP/2 sockets refuse setNoDelay once wrapped, so it is a server (net.Server) option.
    o.noDelay = true;
    return true;
  } catch {
    return false;
  }
}

function sessionOf(call: unknown): Http2Session | undefined {
  let c = (call as { call?: unknown }).call;
  for (let depth = 0; depth < 4 && c !== null && typeof c === 'object'; depth++) {
    const session = (c as { stream?: { session?: Http2Session } }).stream?.session;
    if (session !== undefined) return session;
    c = (c as { nextCall?: unknown }).nextCall;
  }
  return undefined;
}

/** Raise the receive windows of the session that carries `call` (once per session). Returns the session when found. */
export function tuneIncomingSession(call: unknown): Http2Session | undefined {
  const s = sessionOf(call);
  return s === undefined ? undefined : tuneSession(s);
}

/** Raise the receive windows of an incoming session (once per session). Returns it, or undefined when it is gone. */
export function tuneSession(s: Http2Session): Http2Session | undefined {
  try {
    if (s.destroyed) return undefined;
    if (tuned.has(s)) return s;
    tuned.add(s);
    if (typeof s.setLocalWindowSize === 'function') s.setLocalWindowSize(PEER_RECEIVE_WINDOW);
    const local = s.localSettings;
    if (local.initialWindowSize !== PEER_RECEIVE_WINDOW || local.maxFrameSize !== PEER_MAX_FRAME_SIZE) s.settings(PEER_SETTINGS);
    return s;
  } catch {
    return undefined;
  }
}
