// Best-effort HTTP/2 tuning of the connections that carry incoming pieces. The worker's gRPC
// server is created elsewhere and @grpc/grpc-js has no server option for flow-control windows, so
// the Node defaults apply: 64 KiB windows, which make a 1 MiB piece wait for ~16 WINDOW_UPDATE
// round trips. On the first Deliver call of every HTTP/2 session we raise the session's receive
// windows. This reaches into grpc-js internals (call → intercepting call → http2 stream); when they
// change, it silently does nothing and only throughput suffers.
import type { Http2Session } from 'node:http2';

/** Receive window of each peer connection (and of every stream on it), in bytes. */
export const PEER_RECEIVE_WINDOW = 32 << 20;

const tuned = new WeakSet<Http2Session>();

function sessionOf(call: unknown): Http2Session | undefined {
  let c = (call as { call?: unknown }).call;
  for (let depth = 0; depth < 4 && c !== null && typeof c === 'object'; depth++) {
    const session = (c as { stream?: { session?: Http2Session } }).stream?.session;
    if (session !== undefined) return session;
    c = (c as { nextCall?: unknown }).nextCall;
  }
  return undefined;
}

/** Raise the receive windows of the session that carries `call` (once per session). */
export function tuneIncomingSession(call: unknown): void {
  try {
    const s = sessionOf(call);
    if (s === undefined || tuned.has(s) || s.destroyed) return;
    tuned.add(s);
    if (typeof s.setLocalWindowSize === 'function') s.setLocalWindowSize(PEER_RECEIVE_WINDOW);
    s.settings({ initialWindowSize: PEER_RECEIVE_WINDOW });
    // Replies are tiny: send them at once (no Nagle delay behind the previous reply's ACK).
    (s.socket as { setNoDelay?: (on: boolean) => void } | undefined)?.setNoDelay?.(true);
  } catch {
    // best effort only
  }
}
