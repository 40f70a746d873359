// The incoming side of the 'native' peer transport: Peer.Stream served on a listener of the addon
// (native/h2-native.ts), whose threads read the sockets, cut HTTP/2 frames and gRPC messages and
// read every message body straight into a pooled block. Same protocol, announcement and checks as
// the raw listener (raw-peer-server.ts): a 'raw' client can use this listener and a 'native' client
// a raw one. What stays here is per call: the request headers (method, content type, path,
// encoding, token), decoding each PeerMessage, the endpoint's checks, and the DeliverReply.
//
// Protocol violations (bad preface, Huffman-coded or oversized headers, padded DATA, frames over
// the limits, flow-control errors) are found by the addon; the connection ends with GOAWAY and the
// reason (NODE_DEBUG=lasp-raw logs it), other connections are unaffected.
import * as grpc from '@grpc/grpc-js';
import { debuglog } from 'node:util';
import { H2NativeListener, type H2Event } from '../../native/h2-native.js';
import { answerPiece } from './h2-peer-server.js';
import { grpcStatusFields, RAW_RECEIVE_WINDOW, refusalOf, RESPONSE_HEADERS, type RawPeerServerDeps } from './raw-peer-server.js';

const log = debuglog('lasp-raw');

/** HTTP/2 error code NO_ERROR (RST_STREAM after our trailers while the client may still send). */
const NO_ERROR = 0;

/** Process-wide counters (tests and diagnostics). */
export const nativeServerCounters = { connections: 0, pieces: 0, closedWithError: 0, lastCloseReason: '' };

interface CallState {
  finished: boolean;
  remoteEnded: boolean;
}

/** A listener of the addon serving Peer.Stream (see the top of this file). */
export class NativePeerServer {
  private readonly listener: H2NativeListener;
  /** Calls by `${connId}/${streamId}`. */
  private readonly calls = new Map<string, CallState>();
  private readonly conns = new Set<number>();
  private closed = false;

  private constructor(
    host: string,
    private readonly deps: RawPeerServerDeps,
  ) {
    this.listener = new H2NativeListener(
      host,
      { maxMessageBytes: deps.maxMessageBytes, recvWindow: RAW_RECEIVE_WINDOW, windowBatch: 4 << 20, maxStreams: 16, establishMs: 10_000 },
      (e) => this.onEvent(e),
    );
  }

  /** Listen on `host`, port 0 (a free one). */
  static listen(host: string, deps: RawPeerServerDeps): Promise<NativePeerServer> {
    try {
      return Promise.resolve(new NativePeerServer(host, deps));
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  get port(): number {
    return this.listener.port;
  }

  /** Stop listening and close every connection (peers' pieces in flight fail with UNAVAILABLE). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.listener.close();
    this.calls.clear();
    this.conns.clear();
  }

  private onEvent(e: H2Event): void {
    if (this.closed) return;
    switch (e.kind) {
      case 'headers':
        return this.onHeaders(e.connId, e.streamId, e.fields, e.endStream);
      case 'message':
        return this.onMessage(e.connId, e.streamId, e.body);
      case 'stream-end': {
        const c = this.calls.get(`${e.connId}/${e.streamId}`);
        if (c === undefined) return;
        c.remoteEnded = true;
        if (e.insideMessage) this.finish(e.connId, e.streamId, c, grpc.status.INTERNAL, 'the stream ended inside a message');
        else this.finish(e.connId, e.streamId, c, grpc.status.OK, '');
        return;
      }
      case 'reset':
        this.calls.delete(`${e.connId}/${e.streamId}`);
        return;
      case 'stream-error': {
        const c = this.calls.get(`${e.connId}/${e.streamId}`);
        if (c !== undefined) this.finish(e.connId, e.streamId, c, grpc.status.RESOURCE_EXHAUSTED, e.reason);
        return;
      }
      case 'closed':
        if (e.goawayCode > 0) {
          nativeServerCounters.closedWithError++;
          nativeServerCounters.lastCloseReason = e.reason;
        }
        log('native peer connection %d closed: %s', e.connId, e.reason);
        for (const k of [...this.calls.keys()]) if (k.startsWith(`${e.connId}/`)) this.calls.delete(k);
        this.conns.delete(e.connId);
        this.listener.release(e.connId);
        return;
      case 'established':
        return;
    }
  }

  private onHeaders(connId: number, id: number, headers: Map<string, string>, endStream: boolean): void {
    if (!this.conns.has(connId)) {
      this.conns.add(connId);
      nativeServerCounters.connections++;
    }
    const key = `${connId}/${id}`;
    const existing = this.calls.get(key);
    if (existing !== undefined) {
      // Request trailers (not used by gRPC clients): they end the request.
      existing.remoteEnded = true;
      this.finish(connId, id, existing, grpc.status.OK, '');
      return;
    }
    const refusal = refusalOf(headers, this.deps, 'native');
    if (refusal !== undefined) {
      this.listener.respond(connId, id, refusal, true);
      if (!endStream) this.listener.reset(connId, id, NO_ERROR);
      return;
    }
    const c: CallState = { finished: false, remoteEnded: endStream };
    this.calls.set(key, c);
    this.listener.respond(connId, id, RESPONSE_HEADERS, false);
    if (endStream) this.finish(connId, id, c, grpc.status.OK, '');
  }

  private onMessage(connId: number, id: number, body: Buffer): void {
    const c = this.calls.get(`${connId}/${id}`);
    if (c === undefined || c.finished) return;
    const a = answerPiece(this.deps, body);
    if (typeof a === 'string') return this.finish(connId, id, c, grpc.status.INTERNAL, a);
    nativeServerCounters.pieces++;
    this.listener.send(connId, id, a);
  }

  /** End the call with trailers (after the replies queued before them); stop the client's side. */
  private finish(connId: number, id: number, c: CallState, code: grpc.status, details: string): void {
    if (c.finished) return;
    c.finished = true;
    this.listener.respond(connId, id, grpcStatusFields(code, details, false), true);
    // The client may still be sending: tell it to stop (RFC 9113 §8.1).
    if (!c.remoteEnded) this.listener.reset(connId, id, NO_ERROR);
    this.calls.delete(`${connId}/${id}`);
  }
}
